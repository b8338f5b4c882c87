"""Image sources, benchmark sets and shard readers."""
