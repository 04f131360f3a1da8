"""Benchmarks (`make bench`): medians over repeated runs, printed as a table and written to a file.

Each module here exposes `run(threads: int, repeats: int) -> list[Result]`; `__main__` runs them all
(or the ones named with --only) for each thread count. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Result:
    group: str  # which part of the product: vision, quality, store, sync
    stage: str
    threads: int
    median: float
    unit: str = "ms"
    runs: int = 0
    note: str = ""


def median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> float:
    """Median wall time of fn in milliseconds after a few warm-up calls (first calls pay for allocation)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(samples)
