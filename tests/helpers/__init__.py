"""Plain helpers for the tests (no fixtures: those live in tests/conftest.py).

`images`: synthetic and real photos, image folders with good and bad files; `shards`: reading shards back.
Importable as `helpers.*` because pyproject's pytest `pythonpath` puts tests/ on sys.path.
"""
