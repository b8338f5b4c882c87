"""Session-wide test settings: offline, headless, quiet Ray."""

import os

# Nothing may reach a hub during tests: a missing weight must surface as our own message, not a download attempt.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
