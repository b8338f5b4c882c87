"""`--device` / `trainer.device`: a device that does not exist here is one sentence before any work."""

from __future__ import annotations

import pytest
import torch

from srdistill.core.devices import user_device
from srdistill.core.errors import UserError
from srdistill.evaluate.cli import main as evaluate_main


def test_cpu_is_accepted():
    assert user_device("cpu", "x") == torch.device("cpu")


def test_a_name_torch_does_not_know_is_one_sentence():
    with pytest.raises(UserError, match="'gpu0' is not a torch device name.*use cpu"):
        user_device("gpu0", "use cpu")


def test_a_gpu_index_beyond_the_visible_gpus_names_the_count(monkeypatch):
    # Two visible GPUs (as CUDA_VISIBLE_DEVICES=0,1 would give): cuda:1 is fine, cuda:2 is not.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert user_device("cuda:1", "x") == torch.device("cuda:1")
    assert user_device("cuda", "x") == torch.device("cuda")
    with pytest.raises(UserError, match=r"sees 2 GPU\(s\) \(cuda:0 to cuda:1"):
        user_device("cuda:2", "x")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_evaluate_with_cuda_on_a_machine_without_it_stops_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert evaluate_main(["leaderboard", "--methods", "bicubic", "--device", "cuda", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "CUDA is not available" in err and "--device cpu" in err
    assert not out.exists() or not any(out.iterdir())
