"""`srdistill.core.parts`: a keyed parquet table of atomic part files (local and S3), merged, indexed, and robust to a
damaged part or a foreign table; `evaluate`'s ResultStore is its instance and writes the same bytes as before."""

from __future__ import annotations

import io

import pandas as pd

from srdistill.evaluate.harness import run_evaluation
from srdistill.evaluate.results import COLUMNS, KEY, PARTS_DIR, RESULTS_NAME, ResultStore
from srdistill.core.parts import PartsStore, TableSchema

SCHEMA = TableSchema(columns={"item": "object", "score": "float64", "model": "object", "state": "object"},
                     key=("item",), fingerprint=("model",), usable=lambda f: f["state"] == "ok")


def row(item: str, score: float, model: str = "m1", state: str = "ok") -> dict:
    return {"item": item, "score": score, "model": model, "state": state}


def test_parts_survive_a_restart_and_merge_sorts_by_key_keeping_the_last_write(tmp_path):
    store = PartsStore(str(tmp_path), SCHEMA, name="scores")
    store.add([row("b", 1.0)])
    store.add([row("a", 2.0), row("b", 3.0)])
    parts = sorted((tmp_path / "scores.parts").glob("*.parquet"))
    assert len(parts) == 2 and not (tmp_path / "scores.parquet").exists()
    again = PartsStore(str(tmp_path), SCHEMA, name="scores")  # as after a kill: the parts are read back
    assert again.has(("a",), ("m1",)) and again.has(("b",), ("m1",))
    frame = again.merge()
    assert frame["item"].tolist() == ["a", "b"] and frame["score"].tolist() == [2.0, 3.0]
    assert not list((tmp_path / "scores.parts").glob("*.parquet"))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "scores.parquet"), frame)


def test_a_row_counts_only_when_usable_and_with_the_same_fingerprint(tmp_path):
    store = PartsStore(str(tmp_path), SCHEMA, name="scores")
    store.add([row("a", 1.0), row("b", float("nan"), state="error: oom")])
    assert store.has(("a",), ("m1",))
    assert not store.has(("a",), ("m2",))  # another model version: compute again
    assert not store.has(("b",), ("m1",))  # an error row is retried
    assert not store.has(("c",), ("m1",))
    store.merge()
    reopened = PartsStore(str(tmp_path), SCHEMA, name="scores")
    assert reopened.has(("a",), ("m1",)) and not reopened.has(("b",), ("m1",))


def test_a_truncated_part_and_a_foreign_table_are_set_aside_and_their_rows_counted_missing(tmp_path):
    store = PartsStore(str(tmp_path), SCHEMA, name="scores")
    store.add([row("a", 1.0)])
    store.merge()
    store.add([row("b", 2.0)])
    (part,) = (tmp_path / "scores.parts").glob("*.parquet")
    data = part.read_bytes()
    part.write_bytes(data[: len(data) // 2])
    notes = []
    reopened = PartsStore(str(tmp_path), SCHEMA, name="scores", notify=notes.append)
    assert reopened.has(("a",), ("m1",)) and not reopened.has(("b",), ("m1",))
    assert (part.parent / (part.name + ".damaged")).read_bytes() == data[: len(data) // 2]
    assert len(notes) == 1 and part.name in notes[0] and "computed again" in notes[0]

    pd.DataFrame({"method": ["x"], "mean": [1.0]}).to_parquet(tmp_path / "scores.parquet")
    notes.clear()
    foreign = PartsStore(str(tmp_path), SCHEMA, name="scores", notify=notes.append)
    assert not foreign.has(("a",), ("m1",)) and len(foreign.frame) == 0
    assert (tmp_path / "scores.parquet.damaged").exists() and not (tmp_path / "scores.parquet").exists()
    assert "lacks the column(s) item, score, model, state" in notes[0]
    (tmp_path / "scores.parquet").write_bytes(b"not parquet at all")
    PartsStore(str(tmp_path), SCHEMA, name="scores", notify=notes.append)
    assert (tmp_path / "scores.parquet.damaged2").read_bytes() == b"not parquet at all"


def test_the_store_works_on_s3(s3):
    url = f"s3://{s3.bucket}/scores-run"
    store = PartsStore(url, SCHEMA, name="scores", storage_options=s3.options)
    store.add([row("b", 1.0)])
    store.add([row("a", 2.0)])
    again = PartsStore(url, SCHEMA, name="scores", storage_options=s3.options)
    assert again.has(("a",), ("m1",)) and again.has(("b",), ("m1",))
    frame = again.merge()
    keys = [o["Key"] for o in s3.client.list_objects_v2(Bucket=s3.bucket, Prefix="scores-run/")["Contents"]]
    assert keys == ["scores-run/scores.parquet"]
    body = s3.client.get_object(Bucket=s3.bucket, Key=keys[0])["Body"].read()
    pd.testing.assert_frame_equal(pd.read_parquet(io.BytesIO(body)), frame)
    assert frame["item"].tolist() == ["a", "b"]


def result_row(image: str, value: float, status: str = "ok") -> dict:
    return {"method": "bicubic", "dataset": "set5", "protocol": "srdistill", "image": image, "metric": "psnry",
            "value": value, "status": status, "metric_version": "pyiqa-0.1.16", "method_fingerprint": "opencv-x4",
            "dataset_fingerprint": "abcd", "dataset_meta": "{}", "seconds": 0.5, "protocol_hash": "p1"}


def test_result_store_writes_the_bytes_it_wrote_before_the_parts_store(tmp_path):
    batches = [[result_row("b", 30.0), result_row("a", 31.0, "error: x")], [result_row("a", 32.0)]]
    store = ResultStore(tmp_path)
    for batch in batches:
        store.add(batch)
    store.merge()
    # What evaluate wrote before: parts concatenated, last write of a key kept, sorted by key, pandas to_parquet.
    expected = pd.concat([pd.DataFrame(b, columns=COLUMNS) for b in batches], ignore_index=True)
    expected = expected.drop_duplicates(KEY, keep="last").sort_values(KEY).reset_index(drop=True)
    expected.to_parquet(tmp_path / "expected.parquet", index=False)
    assert (tmp_path / RESULTS_NAME).read_bytes() == (tmp_path / "expected.parquet").read_bytes()
    reopened = ResultStore(tmp_path)
    assert reopened.has(("bicubic", "set5", "srdistill", "a", "psnry"), "pyiqa-0.1.16", "opencv-x4", "abcd", "p1")
    assert not reopened.has(("bicubic", "set5", "srdistill", "a", "psnry"), "pyiqa-0.1.16", "opencv-x4", "abcd", "p2")


def test_results_written_before_protocols_are_kept_under_unrecorded_and_not_reused(tmp_path, capsys):
    old = pd.DataFrame([{k: v for k, v in result_row("a", 30.0).items() if k not in ("protocol", "protocol_hash")}])
    old.to_parquet(tmp_path / RESULTS_NAME, index=False)
    store = ResultStore(tmp_path)
    assert store.frame[["protocol", "protocol_hash"]].values.tolist() == [["unrecorded", ""]]
    assert list(store.frame.columns) == COLUMNS and "aside" not in capsys.readouterr().err
    assert not store.has(("bicubic", "set5", "srdistill", "a", "psnry"), "pyiqa-0.1.16", "opencv-x4", "abcd", "p1")


def test_evaluate_recomputes_the_rows_of_a_damaged_part_and_a_foreign_results_file(tmp_path, pair_dirs,
                                                                                   offline_weights, capsys):
    hr, lr = pair_dirs
    out = tmp_path / "out"
    first = run_evaluation("bicubic", "", "psnry", out, hr=str(hr), lr=str(lr), progress=False)
    assert first.rows_computed == 3
    before = pd.read_parquet(out / RESULTS_NAME)
    parts = out / PARTS_DIR
    parts.mkdir(exist_ok=True)
    data = (out / RESULTS_NAME).read_bytes()
    (parts / "part-killed.parquet").write_bytes(data[: len(data) // 3])  # a kill or full disk mid-upload
    pd.DataFrame({"method": ["bicubic"], "mean": [27.0]}).to_parquet(out / RESULTS_NAME)  # a leaderboard, misplaced
    capsys.readouterr()
    again = run_evaluation("bicubic", "", "psnry", out, hr=str(hr), lr=str(lr), progress=False)
    err = capsys.readouterr().err
    assert again.rows_computed == 3 and err.count("evaluate: set ") == 2 and "computed again" in err
    assert (parts / "part-killed.parquet.damaged").exists() and (out / "results.parquet.damaged").exists()
    cols = ["method", "dataset", "image", "metric", "value", "status"]
    pd.testing.assert_frame_equal(pd.read_parquet(out / RESULTS_NAME)[cols], before[cols])

