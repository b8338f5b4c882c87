"""The shard format (schema 2): member names, the manifest, and reading a finished build back."""
