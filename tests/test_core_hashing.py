"""The one canonical-JSON hash: key order and whitespace never change it, and it is the sha256 of the written form."""

import hashlib

from srdistill.core.hashing import canonical_hash, canonical_json, short_sha256


def test_canonical_json_sorts_keys_at_every_level_without_whitespace():
    assert canonical_json({"b": 1, "a": {"d": [1, 2.5], "c": None}}) == b'{"a":{"c":null,"d":[1,2.5]},"b":1}'


def test_canonical_hash_is_the_short_sha256_of_the_canonical_text():
    expected = hashlib.sha256(b'{"a":true,"b":"x"}').hexdigest()[:16]
    assert canonical_hash({"b": "x", "a": True}) == expected
    assert canonical_hash({"a": True, "b": "x"}) == expected
    assert short_sha256(b"") == "e3b0c44298fc1c14"  # sha256 of nothing, as published


def test_default_converts_what_json_cannot_hold():
    assert canonical_json({"p": {1, }}, default=lambda v: sorted(v)) == b'{"p":[1]}'
