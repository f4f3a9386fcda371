"""Timing shared by every suite: warm up once, then the best of several repeats.

These machines are shared and noisy; the minimum of a few runs is the most stable
estimate of what the code itself costs, and every table reports ratios measured
side by side in one run. On CUDA every timed call ends with a synchronisation:
kernels run asynchronously, and an unsynchronised clock measures only the launch.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch

import nlc


def sync(device) -> None:
    """Wait for the device's queued work (CUDA); nothing to do on the CPU."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def best_time(fn, repeats: int = 3, device="cpu") -> float:
    """Seconds of the fastest of `repeats` calls of fn, after one warm-up call (`interleaved_best` of one)."""
    return interleaved_best({"fn": fn}, repeats, device)["fn"]


def forward_backward(fn, x) -> None:
    """fn(x), then the backward pass of a scalar loss of its output (a training step without the update)."""
    fn(x).float().square().mean().backward()


def interleaved_best(calls: dict, repeats: int = 3, device="cpu") -> dict:
    """Seconds of the fastest call of each of `calls` ({name: fn}), after one warm-up call each, timed in
    `repeats` rounds that run every call once, in order. On a shared machine whose speed drifts from
    one minute to the next (by up to 30% here), the calls compared see the same moments, so their
    ratios are steadier than when each is timed in a block of its own."""
    for fn in calls.values():
        fn()
        sync(device)
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            sync(device)
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def throughputs(fns: dict, x, repeats: int = 3, device="cpu", forward_only=()) -> dict:
    """{name: (forward, forward+backward) tokens/s} of each of `fns` on a batch x of shape (batch, seq, ...),
    the forward without gradients, then `forward_backward`, all interleaved (`interleaved_best`); the
    names in `forward_only` get their forward alone (forward+backward None)."""
    n = x.shape[0] * x.shape[1]

    def fwd(fn):
        def call():
            with torch.no_grad():
                fn(x)
        return call

    calls = {}
    for name, fn in fns.items():
        calls[name, "fwd"] = fwd(fn)
        if name not in forward_only:
            calls[name, "fwd_bwd"] = lambda fn=fn: forward_backward(fn, x)
    best = interleaved_best(calls, repeats, device)
    return {name: (n / best[name, "fwd"], n / best[name, "fwd_bwd"] if (name, "fwd_bwd") in best else None)
            for name in fns}


def throughput(fn, x, repeats: int = 3, device="cpu") -> tuple[float, float]:
    """(forward, forward+backward) tokens/s of fn on a batch x of shape (batch, seq, ...), each the best
    of `repeats`: the forward without gradients, then `forward_backward` (`throughputs` of one fn)."""
    return throughputs({"fn": fn}, x, repeats, device)["fn"]


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing (a variant that did not run)."""
    return None if a is None or b is None else a / b


def device_name(device) -> str:
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device="cpu") -> dict:
    """What the numbers were measured on: versions, threads, device."""
    return {"nlc": nlc.__version__, "torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "device": str(device), "device_name": device_name(device)}
