"""Inspecting a finished build: verify and replay, the preview grid, build-to-build and reference diffs."""
