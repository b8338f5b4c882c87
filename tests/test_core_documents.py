"""Preset-or-file documents: a name finds the shipped file, anything else is a path, and every failure is one
sentence naming what was tried."""

from pathlib import Path

import pytest

from srdistill.core.documents import find_document, preset_names, read_document
from srdistill.core.errors import UserError


@pytest.fixture
def folder(tmp_path):
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "beta.yaml").write_text("a: 2\n")
    (shipped / "alpha.yaml").write_text("a: 1\n")
    (shipped / "notes.txt").write_text("not a preset")
    return shipped


def test_preset_names_are_the_sorted_yaml_stems(folder):
    assert preset_names(folder) == ("alpha", "beta")


def test_a_name_finds_the_preset_and_a_path_the_file(folder, tmp_path):
    assert find_document("beta", what="thing", folder=folder) == (folder / "beta.yaml", "beta")
    mine = tmp_path / "mine.yaml"
    mine.write_text("a: 3\n")
    assert find_document(str(mine), what="thing", folder=folder) == (mine, None)


def test_a_path_object_is_never_taken_for_a_preset(folder):
    with pytest.raises(UserError):
        find_document(Path("alpha"), what="thing", folder=folder)


def test_an_unknown_name_lists_the_presets_in_one_sentence(folder):
    with pytest.raises(UserError) as info:
        find_document("gamma", what="thing", folder=folder, formats="YAML/JSON")
    assert str(info.value) == "thing 'gamma' is neither a preset (alpha, beta) nor an existing YAML/JSON file."


def test_json_by_suffix_and_yaml_otherwise(tmp_path):
    (tmp_path / "d.json").write_text('{"a": [1, 2]}')
    (tmp_path / "d.yaml").write_text("a: [1, 2]\n")
    assert read_document(tmp_path / "d.json", what="x") == read_document(tmp_path / "d.yaml", what="x") == {"a": [1, 2]}


@pytest.mark.parametrize("name, data, message", [
    ("bad.yaml", b"a: 1\nb: [2\n", "thing {path} is not valid YAML at line 3"),
    ("bad.json", b'{"a":\n', "thing {path} is not valid JSON at line 2."),
    ("bad.yaml", b"\xff\xfe", "thing {path} is not a UTF-8 text file."),
])
def test_read_failures_are_one_sentence(tmp_path, name, data, message):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UserError) as info:
        read_document(path, what="thing")
    assert str(info.value).startswith(message.format(path=path)) and "\n" not in str(info.value)
