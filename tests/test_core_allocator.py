"""The malloc thresholds a shard task sets: image-sized temporaries stop page-faulting once freed memory is kept.

Each case runs in a fresh interpreter (the setting is process-wide and cannot be undone), counting the minor page
faults of a loop that allocates and frees four 512x512 float32 images at a time, as an op chain does. The untuned
run is the control: it shows the loop does fault under glibc's own thresholds, so the tuned run's near-zero count
is the setting's doing."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")

_CHURN = textwrap.dedent("""
    import resource, sys
    import numpy as np
    from srdistill.core.allocator import keep_freed_memory
    if sys.argv[1] == "tuned":
        assert keep_freed_memory() is True
        assert keep_freed_memory() is True  # a second call (every shard task makes one) is harmless
    def churn():
        arrays = [np.ones((512, 512, 3), np.float32) for _ in range(4)]
        del arrays
    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        churn()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")
PAGES_PER_IMAGE = 512 * 512 * 3 * 4 // 4096  # 768 pages of 4 KiB


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHURN, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


def test_untuned_control_faults_on_every_round():
    # 10 rounds of 4 images: glibc trims the freed heap after each round and faults it back in on the next.
    assert _faults("plain") >= 10 * 4 * PAGES_PER_IMAGE * 0.9


def test_kept_memory_serves_the_next_round_without_faults():
    assert _faults("tuned") < PAGES_PER_IMAGE // 4


def test_shard_task_sets_the_thresholds(monkeypatch, tmp_path):
    """The build's worker entry point is where the setting is made: a shard task calls it before any image."""
    from srdistill.core import allocator
    from srdistill.degrade.build import runner

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append("set") or True)

    def write_shard(storage, name, jobs, spec, seed, on_sample):
        assert calls == ["set"], "the shard was written before the thresholds were set"
        return "record"

    monkeypatch.setattr(runner, "write_shard", write_shard)
    assert runner.shard_task(str(tmp_path), {}, None, 0, "train-000000.tar", [], None, report=lambda n: None) == "record"
    assert calls == ["set"]
