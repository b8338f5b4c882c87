"""SR methods scored with pyiqa into parquet leaderboards."""
