"""Markdown reports, plots and nightly benchmark history."""
