"""Achieved GFLOP/s of generated models as a fraction of this machine's fp32 matmul peak.

FLOPs per token come from the plan (`nlc.flops.model_flops`) and are checked against
torch.utils.flop_counter on every eager configuration ("counter" = counted / planned).
The matmul peak is measured in the same run (best of several square matmuls).
Forward+backward is counted as 3x the forward flops. Eager rows, and compiled rows
(nlc.build(compile=True)) when compile is on.
"""

from __future__ import annotations

from itertools import product

import torch
from torch.utils.flop_counter import FlopCounterMode

import nlc
from nlc.bench.build import build, example, modes
from nlc.bench.config import BenchConfig
from nlc.bench.report import progress
from nlc.bench.timing import best_time, throughput
from nlc.flops import model_flops
from nlc.passes.pipeline import check_ir
from nlc.plan.model import plan_model

COLUMNS = [["model", "model", ""], ["dim", "dim", "d"], ["mode", "mode", ""],
           ["mflops_per_token", "MFLOP/tok", ".2f"], ["counter_ratio", "counter", ".2f"],
           ["fwd_gflops", "fwd GF/s", ".1f"], ["fwd_peak", "% peak", ".1f"],
           ["fwd_bwd_gflops", "f+b GF/s", ".1f"], ["fwd_bwd_peak", "% peak", ".1f"]]


def matmul_peak(device: str = "cpu", repeats: int = 10) -> float:
    """GFLOP/s of the best square fp32 matmul over a few sizes (up to 2048 on a CPU, 8192 on a GPU).

    The peak is the denominator of every `% peak`: the best of several sizes and repeats, so
    that a noisy moment does not make it low and the fractions flattering."""
    sizes = (1024, 4096, 8192) if device.startswith("cuda") else (512, 1024, 2048)
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        best = max(best, 2 * n**3 / best_time(lambda: a @ b, repeats, device) / 1e9)
    return best


def planned_flops(name: str, dim: int, seq: int) -> float:
    """nlc.flops.model_flops per token of an example at `dim`."""
    checked = check_ir(nlc.load(example(name)), {"dim": dim})
    return model_flops(plan_model(checked), seq)["total"]


def counted_flops(model, tokens) -> float:
    """torch.utils.flop_counter's forward flops per token."""
    with FlopCounterMode(display=False) as counter:
        model(tokens)
    return counter.get_total_flops() / tokens.numel()


def measure(name: str, dim: int, label: str, compiled: int, peak: float, cfg: BenchConfig) -> dict:
    per_token = planned_flops(name, dim, cfg.roofline_seq)
    row = {"model": name, "dim": dim, "mode": label, "mflops_per_token": per_token / 1e6}
    model = build(example(name), cfg.device, compiled, dim=dim)
    tokens = torch.randint(0, 256, (cfg.batch, cfg.roofline_seq), device=cfg.device)
    if not compiled:
        row["counter_ratio"] = counted_flops(model, tokens) / per_token
    fwd, fwd_bwd = throughput(model, tokens, cfg.repeats, cfg.device)
    row["fwd_gflops"], row["fwd_bwd_gflops"] = per_token * fwd / 1e9, 3 * per_token * fwd_bwd / 1e9
    row["fwd_peak"], row["fwd_bwd_peak"] = (100 * row[k] / peak for k in ("fwd_gflops", "fwd_bwd_gflops"))
    return row


def run(cfg: BenchConfig) -> dict:
    peak = matmul_peak(cfg.device)
    configs = product(cfg.roofline_models, cfg.roofline_dims, modes(cfg))
    rows = [measure(name, dim, label, compiled, peak, cfg)
            for name, dim, (label, compiled) in progress(configs, "roofline")]
    notes = [f"fp32 matmul peak {peak:.1f} GFLOP/s, measured in this run",
             "counter = torch FlopCounterMode flops / nlc.flops count (eager rows); above 1 with attention: "
             "torch counts the whole T x T score matrix, nlc the causal half that is used",
             "f+b counted as 3x forward flops"]
    return {"title": f"roofline: achieved GFLOP/s (batch {cfg.batch}, seq {cfg.roofline_seq}, {cfg.device})",
            "columns": COLUMNS, "rows": rows, "notes": notes, "peak_gflops": peak}
