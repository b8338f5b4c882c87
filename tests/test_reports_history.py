"""History: append and same-date replacement semantics of the partitioned parquet store."""

import shutil

import pandas as pd
import pyarrow.dataset as pads
import pytest

from srdistill.core.errors import UserError
from srdistill.reports import history as h


def _night(date, value, methods=("bicubic",), images=("a", "b")):
    rows = [
        dict(method=m, dataset="sample", image=i, metric="psnr", value=value, lower_better=False,
             method_fingerprint="fp-" + m, dataset_fingerprint="ds", status="ok", seconds=0.1)
        for m in methods for i in images
    ]
    tp = pd.DataFrame([dict(name="degrade", value=10.0 * value, unit="images/s", items=4, seconds=0.4)])
    run = dict(commit="abc", dirty=False, versions={"numpy": "2"}, machine={"host": "x"},
               spec_hashes={"realesrgan": "123"}, fingerprints={}, suite={"name": "t"})
    return h.Night(date=date, run=run, results=pd.DataFrame(rows), throughput=tp)


def test_append_keeps_every_night_and_reads_back(tmp_path):
    h.write_night(tmp_path, _night("2026-01-02", 30.0))
    h.write_night(tmp_path, _night("2026-01-01", 29.0))
    assert h.nights(tmp_path) == ["2026-01-01", "2026-01-02"]
    res = h.read_results(tmp_path)
    assert len(res) == 4
    assert res.groupby("date")["value"].first().to_dict() == {"2026-01-01": 29.0, "2026-01-02": 30.0}
    night = h.read_night(tmp_path, "2026-01-02")
    assert night.run["versions"] == {"numpy": "2"} and night.run["commit"] == "abc"
    assert night.throughput["value"].tolist() == [300.0]
    assert h.previous_night(tmp_path, "2026-01-02") == "2026-01-01"
    assert h.previous_night(tmp_path, "2026-01-01") is None
    # A third-party reader sees a plain hive-partitioned dataset.
    ds = pads.dataset(tmp_path / "results", format="parquet", partitioning="hive")
    assert ds.count_rows() == 4


def test_rerunning_a_date_replaces_its_partition(tmp_path):
    h.write_night(tmp_path, _night("2026-01-01", 29.0))
    h.write_night(tmp_path, _night("2026-01-02", 30.0, methods=("bicubic", "lanczos")))
    h.write_night(tmp_path, _night("2026-01-02", 31.0, methods=("bicubic",)))
    res = h.read_results(tmp_path)
    tonight = res[res["date"] == "2026-01-02"]
    assert len(tonight) == 2 and set(tonight["value"]) == {31.0}
    assert len(h.read_runs(tmp_path)) == 2
    assert len(h.read_throughput(tmp_path)) == 2
    leftovers = [p.name for p in (tmp_path / "results").iterdir() if not p.name.startswith("date=")]
    assert leftovers == []


def test_night_without_run_row_is_not_complete(tmp_path):
    h.write_night(tmp_path, _night("2026-01-01", 29.0))
    h.write_night(tmp_path, _night("2026-01-02", 30.0))
    # Simulate a crash between the results swap and the runs row.
    shutil.rmtree(tmp_path / "runs" / "date=2026-01-02")
    assert h.nights(tmp_path) == ["2026-01-01"]
    assert set(h.read_results(tmp_path)["date"]) == {"2026-01-01"}


def test_baseline_pin_and_bad_dates(tmp_path):
    h.write_night(tmp_path, _night("2026-01-01", 29.0))
    assert h.pinned_baseline(tmp_path) is None
    h.pin_baseline(tmp_path, "2026-01-01")
    assert h.pinned_baseline(tmp_path) == "2026-01-01"
    with pytest.raises(UserError, match="no complete night"):
        h.pin_baseline(tmp_path, "2026-03-01")
    with pytest.raises(UserError, match="YYYY-MM-DD"):
        h.check_date("01/02/2026")
    with pytest.raises(UserError, match="calendar"):
        h.check_date("2026-02-30")
    with pytest.raises(UserError, match="no complete night"):
        h.read_night(tmp_path, "2026-01-05")


def test_empty_history_reads_empty(tmp_path):
    assert h.nights(tmp_path / "none") == []
    assert len(h.read_results(tmp_path / "none")) == 0
