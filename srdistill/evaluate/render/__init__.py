"""Renderers of evaluation results: leaderboard markdown, plots, the reproduction table, visual grids."""
