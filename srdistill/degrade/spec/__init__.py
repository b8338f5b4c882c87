"""Degradation specs as data: the schema-2 pipeline, version-1 conversion, step-by-step comparison, the shipped presets."""
