"""The one output check the four tools share (srdistill/core/outputs.py), and `evaluate --out` through it."""

from __future__ import annotations

import errno
import os

import pytest
from srdistill.evaluate.cli import main as evaluate_main

from srdistill.core.errors import UserError
from srdistill.core.outputs import check_output_dir, check_output_file


def test_a_creatable_folder_passes_and_nothing_is_created(tmp_path):
    target = tmp_path / "a" / "b"
    assert check_output_dir(target) == target
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []   # the write probe left nothing
    assert check_output_dir("s3://bucket/prefix") is not None                 # remote: its storage layer's job


def _unusable(kind: str, tmp):
    if kind == "link":
        (tmp / "link").symlink_to(tmp / "gone")
        return tmp / "link"
    (tmp / "f").write_text("x")
    return tmp / "f" if kind == "file" else tmp / "f" / "sub" / "dir"


@pytest.mark.parametrize("kind, words", [
    ("file", "is a file, not a folder"),
    ("under a file", "cannot be created: {t}/f is a file"),
    ("link", "is a broken symbolic link"),
])
def test_unusable_folders_are_one_sentence(kind, words, tmp_path):
    target = _unusable(kind, tmp_path)
    with pytest.raises(UserError, match=words.format(t=tmp_path)) as err:
        check_output_dir(target, "--history")
    assert str(err.value).startswith(f"--history {target} ")


def test_read_only_folder_and_file_outputs(tmp_path, read_only_dir):
    with pytest.raises(UserError, match=r"is not writable \(.* in .*read-only\); choose a folder you can write to"):
        check_output_dir(read_only_dir / "new")
    with pytest.raises(UserError, match="is not writable"):
        check_output_file(read_only_dir / "grid.png")
    with pytest.raises(UserError, match="is a folder; give a file name"):
        check_output_file(tmp_path)
    assert check_output_file(tmp_path / "grid.png") == tmp_path / "grid.png"


def test_evaluate_out_that_is_a_file_or_read_only_is_one_sentence(tmp_path, read_only_dir, capsys):
    afile = tmp_path / "results"
    afile.write_text("x")
    for out, words in ((afile, f"--out {afile} is a file, not a folder"), (read_only_dir / "eval", "is not writable")):
        code = evaluate_main(["leaderboard", "--methods", "bicubic", "--datasets", "sample", "--metrics", "psnr",
                              "--out", str(out), "--quiet"])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith("evaluate: ") and err.count("\n") == 1 and words in err, err


def test_a_full_disk_anywhere_in_a_command_is_one_sentence(capsys):
    from srdistill.core.errors import run_command

    def write_to_full_device() -> int:
        with open("/dev/full", "w") as f:   # a real device whose every write fails with ENOSPC
            f.write("manifest")
        return 0

    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    assert run_command("degrade", write_to_full_device, "interrupted") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("degrade: no space left on the device") and "resume" in err and "\n" not in err

    def rename_on_full_disk() -> int:   # os.replace and os.open report the path; the sentence names it
        raise OSError(errno.ENOSPC, "No space left on device", "/runs/x/manifest.json")

    assert run_command("train", rename_on_full_disk, "interrupted") == 2
    assert "while writing /runs/x/manifest.json" in capsys.readouterr().err

    def other_os_error() -> int:
        raise FileNotFoundError(2, "No such file or directory", "/nowhere")

    with pytest.raises(FileNotFoundError):   # not the user's disk: a bug must still show its traceback
        run_command("degrade", other_os_error, "interrupted")


@pytest.mark.parametrize("command", [["diff", "A", "B"], ["regen", "--from", "A", "--preset", "bicubic"]])
def test_degrade_diff_and_regen_out_that_is_a_file_is_one_sentence_before_any_work(tmp_path, capsys, command):
    from srdistill.degrade.cli import main as degrade_main

    (tmp_path / "taken").write_text("x")
    args = [a if a not in ("A", "B") else str(tmp_path / a) for a in command] + ["--out", str(tmp_path / "taken")]
    assert degrade_main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "is a file, not a folder" in err and "\n" not in err
