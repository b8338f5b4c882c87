"""Fetching what a run lacks: the download policy (online, offline, mirror), the Hugging Face hub, and the checks a downloaded file passes before it is kept."""
