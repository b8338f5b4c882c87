"""pyiqa metrics for every stage: building them by name with their options, and their weight files."""
