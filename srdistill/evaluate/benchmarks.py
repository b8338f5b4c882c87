"""The benchmark sets an evaluation runs on: named sets found by srdistill.datasets.benchmarks, with the LR of sets
released without it synthesized (srdistill.evaluate.synthesis), and `--hr/--lr` folders."""

from __future__ import annotations

import os
from pathlib import Path

from srdistill.datasets.benchmarks import (
    BENCHMARK_NAMES,
    Benchmark,
    MissingBenchmark,
    ToSynthesize,
    canonical_name,
    find_benchmark,
    folder_benchmark,
)
from srdistill.evaluate.synthesis import synthesize

from srdistill.core.errors import UserError


def load_benchmark(name: str, *, data_root: str | os.PathLike | None, cache: Path,
                   partial: bool = False) -> Benchmark | MissingBenchmark:
    """A named set (any case, or `sample`), its LR synthesized if released without, or why it cannot be loaded."""
    found = find_benchmark(name, data_root=data_root, cache=cache, partial=partial)
    return synthesize(found, cache) if isinstance(found, ToSynthesize) else found


def resolve_benchmarks(spec: str, *, data_root: str | os.PathLike | None, cache: Path,
                       hr: str | None = None, lr: str | None = None,
                       partial: bool = False) -> tuple[list[Benchmark], list[MissingBenchmark]]:
    """`all` -> every set found (missing ones reported); `a,b` -> exactly those (a missing one is a UserError).

    `--hr/--lr` folders are added as one more set named after the LR folder.
    """
    found: list[Benchmark] = []
    missing: list[MissingBenchmark] = []
    every = (spec or "").strip().lower() == "all"
    given = list(BENCHMARK_NAMES) if every else [s.strip() for s in (spec or "").split(",") if s.strip()]
    names = list(dict.fromkeys(canonical_name(n) for n in given))  # any case; a set named twice is loaded once
    for name in names:
        result = load_benchmark(name, data_root=data_root, cache=cache, partial=partial)
        if isinstance(result, MissingBenchmark):
            if not every:
                raise UserError(result.sentence())
            missing.append(result)
        else:
            found.append(result)
    if lr:
        found.append(folder_benchmark(hr, lr))
    elif hr:
        raise UserError("--hr needs --lr: give the folder of LR inputs that pair with the HR images.")
    if not found:
        raise UserError("no benchmark to evaluate: " + ("; ".join(m.sentence() for m in missing) or "pass --datasets or --lr."))
    return found, missing
