"""Atomic writes: the target holds the old content or the whole new one, and a failed write leaves no temporary."""

import pytest

from srdistill.core import atomic


def test_write_bytes_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    atomic.write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_a_failed_write_keeps_the_old_content_and_removes_its_temporary(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic.atomic_file(target) as fh:
        fh.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_temporary_names_are_hidden_beside_the_target_and_distinct(tmp_path):
    a, b = atomic.temporary_name(tmp_path / "x.tar"), atomic.temporary_name(tmp_path / "x.tar")
    assert a != b and a.parent == tmp_path
    assert a.name.startswith(".x.tar.") and a.name.endswith(".tmp") and len(a.name) == len(".x.tar.") + 8 + 4


def test_write_json_and_text(tmp_path):
    atomic.write_json(tmp_path / "m.json", {"b": 1, "a": "é"}, indent=1, sort_keys=True)
    assert (tmp_path / "m.json").read_bytes() == b'{\n "a": "\\u00e9",\n "b": 1\n}\n'
    atomic.write_text(tmp_path / "t.txt", "é\n")
    assert (tmp_path / "t.txt").read_bytes() == b"\xc3\xa9\n"


def test_replace_folder_swaps_in_the_new_folder_and_drops_the_old(tmp_path):
    final, staged = tmp_path / "out", tmp_path / "staged"
    final.mkdir()
    (final / "old.txt").write_text("old")
    staged.mkdir()
    (staged / "new.txt").write_text("new")
    atomic.replace_folder(staged, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
