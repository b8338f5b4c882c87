"""Network architectures written here so that their authors' released checkpoints load by key."""
