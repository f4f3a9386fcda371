"""Shared timing for the benchmarks: warm up once, then the best of several repeats.

These machines are shared and noisy; the minimum of a few runs is the most stable
estimate of what the code itself costs, and every table reports ratios measured
side by side in one run.
"""

from __future__ import annotations

import time


def best_time(fn, repeats: int = 3) -> float:
    """Seconds of the fastest of `repeats` calls of fn, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)
