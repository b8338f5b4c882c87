"""bench/gpu_check.py: its --quick CPU run (the same code as on a GPU, tiny shapes), its wheels, its bad input."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_quick_run_measures_every_section_and_resume_repeats(gpu_check, tmp_path):
    out = tmp_path / "out"
    assert gpu_check.main(["--quick", "--recipes", "vpdsr", "--out", str(out), "--wheels", str(tmp_path / "none")]) == 0
    report = json.loads((out / "gpu_check.json").read_text())
    r = report["recipe:vpdsr"]
    assert r["status"] == "ok", r.get("traceback")
    assert r["fits"] and (r["batch"], r["grad_accum"], r["resolution"]) == (2, 1, 32)
    assert len(r["losses"]) == r["steps"] == 4 and r["losses_finite"] and set(r["losses"][0]) == {"g/loss", "d/loss"}
    assert r["resume_matches"] and r["resume_max_rel_diff"] == 0.0
    assert 0 <= r["data_wait_s"] < r["step_s"] and abs(r["data_wait_s"] + r["compute_s"] - r["step_s"]) < 1e-9
    assert r["step_flops"] > 0 and r["mfu"] is None          # no GPU peak on the CPU: no MFU invented
    m = report["metrics"]["metrics"]
    assert m["psnry"]["matches_cpu"] and m["ssim"]["matches_cpu"] and m["psnry"]["img_per_s"] > 0
    assert [(s["in"], s["out"]) for s in report["realesrgan"]["sizes"]] == [(16, 64), (32, 128)]
    md = (out / "gpu_check.md").read_text()
    assert "| vpdsr | 32 | 2 | yes | 2 x 1 |" in md and "| psnry |" in md and "| 32->128 |" in md


def test_flop_count_of_a_known_step(gpu_check):
    # FlopCounterMode counts 2*M*N*K per matmul and twice that again in backward (grad input + grad weight).
    from torch.utils.flop_counter import FlopCounterMode

    lin = torch.nn.Linear(64, 32, bias=False)
    x = torch.randn(8, 64, requires_grad=True)
    with FlopCounterMode(display=False) as c:
        lin(x).sum().backward()
    assert c.get_total_flops() == 3 * 2 * 8 * 64 * 32


def test_peak_lookup_names_the_gpu(gpu_check):
    assert gpu_check.bf16_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert gpu_check.bf16_peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert gpu_check.bf16_peak_tflops("NVIDIA H200") == 989.0
    assert gpu_check.bf16_peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert gpu_check.bf16_peak_tflops("Some Future GPU") is None


def test_wheels_are_unpacked_and_fill_gaps_only(gpu_check, tmp_path):
    wheels = tmp_path / "whl"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "gpucheckprobe-1.0-py3-none-any.whl", "w") as z:
        z.writestr("gpucheckprobe/__init__.py", "VALUE = 42\n")
        z.writestr("gpucheckprobe-1.0.dist-info/METADATA", "Name: gpucheckprobe\nVersion: 1.0\n")
    before = list(sys.path)
    try:
        names = gpu_check.unpack_wheels(wheels, tmp_path / "site")
        assert names == ["gpucheckprobe-1.0-py3-none-any.whl"] and sys.path[-1] == str(tmp_path / "site")
        assert importlib.import_module("gpucheckprobe").VALUE == 42
    finally:
        sys.path[:] = before
        sys.modules.pop("gpucheckprobe", None)
    assert gpu_check.unpack_wheels(tmp_path / "missing", tmp_path / "site2") == []


def test_failing_section_is_recorded_and_the_check_goes_on(gpu_check):
    report = {}
    gpu_check.section(report, "needs", lambda: __import__("a_module_that_is_not_there"))
    gpu_check.section(report, "breaks", lambda: 1 / 0)
    gpu_check.section(report, "works", lambda: {"x": 1})
    assert report["needs"]["status"] == "skipped" and "a_module_that_is_not_there" in report["needs"]["reason"]
    assert report["breaks"]["status"] == "failed" and "ZeroDivisionError" in report["breaks"]["reason"]
    assert report["works"]["status"] == "ok" and report["works"]["x"] == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_asked_for_without_cuda_is_one_sentence(gpu_check, tmp_path, capsys):
    assert gpu_check.main(["--device", "cuda", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sees no CUDA device" in err and "Traceback" not in err
    assert not (tmp_path / "gpu_check.json").exists()


@pytest.mark.slow
def test_a_batch_that_does_not_fit_falls_back_to_a_smaller_one_with_accumulation(gpu_check, tmp_path, monkeypatch):
    # The out-of-memory error is raised where CUDA raises it, inside the student's forward, whenever a
    # micro-batch holds more than one sample: the check must settle on batch 1 x 2 accumulated steps.
    from srdistill.training import perf

    real_build = gpu_check._build

    def build_that_fits_one_sample(*args, **kwargs):
        recipe = real_build(*args, **kwargs)

        def out_of_memory(module, inputs):
            if inputs[0].shape[0] > 1:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

        perf.student_backbone(recipe).register_forward_pre_hook(out_of_memory)
        return recipe

    monkeypatch.setattr(gpu_check, "_build", build_that_fits_one_sample)
    out = tmp_path / "out"
    assert gpu_check.main(["--quick", "--recipes", "vpdsr", "--skip", "metrics", "realesrgan", "--out", str(out),
                           "--wheels", str(tmp_path / "none")]) == 0
    r = json.loads((out / "gpu_check.json").read_text())["recipe:vpdsr"]
    assert r["status"] == "ok", r.get("traceback")
    assert (r["fits"], r["batch"], r["grad_accum"], r["tried_batches"]) == (False, 1, 2, [2, 1])
    assert r["losses_finite"] and r["resume_matches"] and r["samples_per_s"] > 0
    assert "| vpdsr | 32 | 2 | no | 1 x 2 |" in (out / "gpu_check.md").read_text()


def test_source_tree_is_importable_without_an_install(tmp_path):
    # On the GPU machine srdistill is not installed: the check must import it from the checkout it sits in.
    script = tmp_path / "probe.py"
    script.write_text(
        "import importlib.util, sys\n"
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]\n"
        "try:\n"
        "    import srdistill.training\n"
        "    sys.exit('srdistill is still importable: the probe removed nothing')\n"
        "except ImportError:\n"
        "    pass\n"
        f"spec = importlib.util.spec_from_file_location('gpu_check', {str(ROOT / 'bench' / 'gpu_check.py')!r})\n"
        "mod = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(mod)\n"
        "print(mod.import_source_tree())\n"
        "from srdistill.training.config import load_run_config\n"
        "import srdistill.training.config as c\n"
        "print(c.__file__)\n"
        "print(load_run_config('vpdsr').trainer.crop)\n")
    import subprocess

    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "source tree" and lines[1] == str(ROOT / "srdistill" / "training" / "config.py") and int(lines[2]) > 0
