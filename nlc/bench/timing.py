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
    """Seconds of the fastest of `repeats` calls of fn, after one warm-up call."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def forward_backward(fn, x) -> None:
    """fn(x), then the backward pass of a scalar loss of its output (a training step without the update)."""
    fn(x).float().square().mean().backward()


def throughput(fn, x, repeats: int = 3, device="cpu") -> tuple[float, float]:
    """(forward, forward+backward) tokens/s of fn on a batch x of shape (batch, seq, ...), each the best
    of `repeats`: the forward without gradients, then `forward_backward`."""
    n = x.shape[0] * x.shape[1]

    def fwd():
        with torch.no_grad():
            fn(x)

    return n / best_time(fwd, repeats, device), n / best_time(lambda: forward_backward(fn, x), repeats, device)


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
