"""The `degrade` command line: help texts, one-sentence errors with exit 2, and build/verify/replay/preview end to end."""

from __future__ import annotations

import pytest

from srdistill import cli as umbrella
from srdistill.degrade.cli import main


@pytest.mark.parametrize("argv", [["--help"], *[[cmd, "--help"] for cmd in ("build", "preview", "verify", "replay", "regen", "diff")]])
def test_help_texts(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: degrade")
    if argv == ["--help"]:
        assert all(cmd in text for cmd in ("build", "preview", "verify", "replay", "regen", "diff")) and "byte-identical" in text
        assert "--preset bsrgan" in text and "Real-ESRGAN style" not in text  # any preset or YAML, not one pipeline
    if argv[0] == "build":
        for opt in ("--src", "--out", "--preset", "--spec", "--scale", "--crop", "--crops-per-image", "--shard-samples",
                    "--seed", "--workers", "--address", "--limit", "--data-root", "--split"):
            assert opt in text
        assert "LSDIR/HR/train/0001000/0000001.png" in text and "SRDISTILL_DATA" in text


def test_umbrella_command_forwards_to_degrade(capsys):
    with pytest.raises(SystemExit):
        umbrella.main(["degrade", "verify", "--help"])
    assert "usage: degrade verify" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["build", "--src", "LSDIR", "--out", "o", "--data-root", "{tmp}"], ["source LSDIR not found", "LSDIR/HR/train"]),
        (["build", "--src", "{tmp}/nope", "--out", "o"], ["not a known data set"]),
        (["build", "--src", "sample", "--out", "o", "--crop", "30"], ["multiple of the scale"]),
        (["build", "--src", "sample", "--out", "o", "--spec", "{tmp}/missing.yaml"], ["missing.yaml"]),
        (["verify", "{tmp}"], ["holds no manifest.json"]),
        (["preview", "{tmp}", "--out", "{tmp}/g.png"], ["holds no manifest.json"]),
    ],
)
def test_user_errors_are_one_sentence_and_exit_2(argv, words, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main([a.format(tmp=tmp_path) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("degrade: ") and err.count("\n") == 1 and "Traceback" not in err
    for word in words:
        assert word in err


@pytest.mark.slow
def test_build_verify_replay_preview_end_to_end(tmp_path, capsys, ray_cluster):
    out = tmp_path / "shards"
    assert main(["build", "--src", "sample", "--out", str(out), "--preset", "realesrgan", "--crop", "64", "--limit", "3",
                 "--shard-samples", "2", "--workers", "1", "--seed", "4", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "3 samples in 2 shards" in text and "img/s" in text and "0 source files skipped" in text
    assert main(["verify", str(out)]) == 0
    assert "ok: 2 shards, 3 samples" in capsys.readouterr().out
    assert main(["replay", str(out), "--samples", "0"]) == 0
    assert "ok: 3 samples re-derived bit-exactly" in capsys.readouterr().out
    assert main(["preview", str(out), "--out", str(tmp_path / "grid.png"), "--samples", "3"]) == 0
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["replay", str(out), "--key", "nope"]) == 2
    (out / "train-000001.tar").write_bytes(b"\0" * 1024)
    assert main(["verify", str(out)]) == 1
    captured = capsys.readouterr()
    assert "train-000001.tar has 1024 bytes" in captured.out and "problems in" in captured.err


def test_presets_lists_every_preset_with_description_and_source(capsys):
    from srdistill.degrade.spec.schema import PRESETS, load_spec

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in PRESETS:
        spec = load_spec(name)
        assert spec.description and spec.source
        assert f"{name}  " in out and spec.description in out and f"source: {spec.source}" in out
