"""A run folder's state: checkpoints, resume rules, the JSONL log."""
