"""What every stage shares: errors, atomic output, storage, Ray work units, parquet parts, downloads and the hub, pyiqa metrics and their weights."""
