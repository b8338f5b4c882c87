"""`reports` under faults: a crash is never the regression exit code, outputs are checked before the suite runs,
a mistyped history is an error, and the help points at the suite file that exists."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import yaml
from srdistill.reports.cli import main

EXIT_REGRESSION, EXIT_CRASH = 1, 4   # as documented in `reports --help`


def _suite(tmp: Path) -> Path:
    path = tmp / "suite.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "datasets": ["sample"], "methods": ["bicubic"], "metrics": ["psnr"]}))
    return path


def test_a_crash_exits_with_the_crash_code_not_the_regression_code(tmp_path):
    history = tmp_path / "history"
    (history / "BASELINE").mkdir(parents=True)   # a fault no check anticipates: the baseline file is a folder
    cmd = [sys.executable, "-m", "srdistill.reports.cli", "nightly", "--suite", str(_suite(tmp_path)),
           "--history", str(history), "--out", str(tmp_path / "out"), "--date", "2026-01-01", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == EXIT_CRASH != EXIT_REGRESSION, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("reports: nightly crashed (IsADirectoryError") and "not a regression (exit 4)" in last
    assert "Traceback" in proc.stderr   # a crash is a bug report: the traceback stays
    assert not (history / "runs").exists()


def test_unusable_history_or_out_fail_before_the_suite_runs(tmp_path, read_only_dir, capsys):
    suite = str(_suite(tmp_path))
    afile = tmp_path / "afile"
    afile.write_text("x")
    out = tmp_path / "out"
    cases = [
        (["--history", str(afile), "--out", str(out)], f"--history {afile} is a file, not a folder"),
        (["--history", str(tmp_path / "h"), "--out", str(afile)], f"--out {afile} is a file, not a folder"),
        (["--history", str(read_only_dir / "h"), "--out", str(out)], f"--history {read_only_dir / 'h'} is not writable"),
    ]
    for args, words in cases:
        assert main(["nightly", "--suite", suite, "--date", "2026-01-01", "--quiet", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("reports: ") and err.count("\n") == 1 and words in err, err
    assert not out.exists() and not (tmp_path / "h").exists()   # nothing ran


@pytest.mark.parametrize("command", [["nights"], ["pin", "2026-01-01"]])
def test_a_history_that_does_not_exist_is_an_error_not_an_empty_history(command, tmp_path, capsys):
    typo = tmp_path / "histroy"
    assert main([*command, "--history", str(typo)]) == 2
    assert capsys.readouterr().err == (f"reports: --history {typo} does not exist; give the --history folder of "
                                       "earlier `reports nightly` runs.\n")
    assert not typo.exists()


def test_nightly_help_points_at_the_packaged_default_suite(capsys):
    with pytest.raises(SystemExit):
        main(["nightly", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "reports/suites/default.yaml in a source checkout" in text
    shown = re.search(r"here (\S+default\.yaml)", text).group(1)
    packaged = resources.files("srdistill.reports") / "suites" / "default.yaml"
    assert Path(shown).is_file() and Path(shown).read_text() == packaged.read_text()
