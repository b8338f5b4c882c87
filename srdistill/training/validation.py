"""Validation during training: the student on held-out shard samples, scored through the evaluation harness's
metric path (srdistill.core.iqa.metrics: pyiqa, the leaderboard's PSNR/SSIM convention, uint8 SR as stored)."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice

import torch
from srdistill.core.iqa.metrics import MetricPool, MetricUnavailable, to_tensor, to_uint8


@torch.no_grad()
def score_student(student, samples: Iterable[dict], limit: int, device, metrics: Iterable[str]) -> dict:
    """Mean of each metric over the first `limit` samples (SR of the LR against the HR); unavailable metrics are left out."""
    pool = MetricPool(device=str(device))
    scorers = {}
    for name in metrics:
        try:
            scorers[name] = pool.get(name)
        except MetricUnavailable:
            continue
    totals = {name: 0.0 for name in scorers}
    n = 0
    for sample in islice(samples, limit):
        sr = to_uint8(student(to_tensor(sample["lr"]).to(device)))
        if sr.shape != sample["hr"].shape:
            raise ValueError(f"student output {sr.shape} does not match HR {sample['hr'].shape} for {sample['key']}")
        for name, scorer in scorers.items():
            totals[name] += scorer.score(sr, sample["hr"])
        n += 1
    return {name: total / n for name, total in totals.items()} if n else {}
