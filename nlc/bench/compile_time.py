"""torch.compile across block kinds: what compiling costs (seconds, graphs) and buys, one example a row.

Each model is built eager and compiled (`nlc.build(compile=True)`, `chunks_per_graph` as configured)
from the same seed, at the example's own sizes. The compiled model's first forward+backward and
first forward without gradients are timed with inductor's caches off, so `compile s` is what a
first run on a fresh machine pays (less the eager time of the same two calls); `graphs` counts the
distinct graphs compiled for them (dynamo's unique graphs: first chunk, later chunks, a period's
end, a partial last chunk; never one a chunk). `max |diff|` compares the compiled logits with
eager's: compiled code must compute what eager does. Then both are timed interleaved (the
forward without gradients and forward+backward, best of the repeats).
"""

from __future__ import annotations

import time
import warnings

import torch

from nlc.bench.build import build, example
from nlc.bench.config import BenchConfig
from nlc.bench.report import progress
from nlc.bench.timing import forward_backward, sync, throughputs

COLUMNS = [["model", "model", ""], ["compiled", "compiled", ""], ["graphs", "graphs", "d"],
           ["compile_s", "compile s", ".0f"], ["max_diff", "max |diff|", ".1e"],
           ["eager_fwd_bwd", "eager f+b tok/s", ".0f"], ["compiled_fwd_bwd", "compiled f+b tok/s", ".0f"],
           ["fwd_bwd_speedup", "f+b x", ".2f"], ["eager_fwd", "eager fwd tok/s", ".0f"],
           ["compiled_fwd", "compiled fwd tok/s", ".0f"], ["fwd_speedup", "fwd x", ".2f"]]


def compiled_parts(model) -> str:
    """What compile_chunks compiled: chunk steps, period steps, whole blocks (no chunk loop, or all of a
    model with shared levels) and the shared levels' step."""
    steps = sum(1 for b in model.blocks if getattr(b, "compiled_step", None) is not None)
    periods = sum(1 for b in model.blocks if getattr(b, "compiled_period", None) is not None)
    whole = sum(1 for b in model.blocks if b._compiled_call_impl is not None)
    shared = int("learn_shared" in vars(model))
    parts = [(steps, "chunk step"), (periods, "period step"), (whole, "whole block"), (shared, "shared step")]
    return ", ".join(f"{n} {what}{'s' if n > 1 else ''}" for n, what in parts if n)


def first_calls(model, tokens, device) -> float:
    """Seconds of a model's first forward+backward and first forward without gradients."""
    start = time.perf_counter()
    forward_backward(model, tokens)
    with torch.no_grad():
        model(tokens)
    sync(device)
    return time.perf_counter() - start


def measure(name: str, cfg: BenchConfig) -> dict:
    from torch._dynamo.utils import counters

    eager = build(example(name), cfg.device)
    tokens = torch.randint(0, 256, (cfg.batch, cfg.compile_seq), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(cfg.device)
    eager_first = first_calls(eager, tokens, cfg.device)
    torch._dynamo.reset()
    counters.clear()
    with torch._inductor.config.patch(force_disable_caches=True), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")  # (the caches being off)
        compiled = build(example(name), cfg.device, cfg.chunks_per_graph)
        compile_s = first_calls(compiled, tokens, cfg.device) - eager_first
    row = {"model": name, "compiled": compiled_parts(compiled), "graphs": counters["stats"]["unique_graphs"],
           "compile_s": max(compile_s, 0.0)}
    with torch.no_grad():
        row["max_diff"] = (compiled(tokens) - eager(tokens)).abs().max().item()
    timed = throughputs({"eager": eager, "compiled": compiled}, tokens, cfg.repeats, cfg.device)
    for label, (fwd, fwd_bwd) in timed.items():
        row[f"{label}_fwd"], row[f"{label}_fwd_bwd"] = fwd, fwd_bwd
    row["fwd_speedup"] = row["compiled_fwd"] / row["eager_fwd"]
    row["fwd_bwd_speedup"] = row["compiled_fwd_bwd"] / row["eager_fwd_bwd"]
    return row


def run(cfg: BenchConfig) -> dict:
    title = (f"torch.compile across block kinds: compile time and speed-up (batch {cfg.batch}, seq "
             f"{cfg.compile_seq}, each example's own sizes, {cfg.device})")
    if not cfg.compile:
        return {"title": title, "columns": COLUMNS, "rows": [], "notes": ["--no-compile: nothing to measure"]}
    rows = [measure(name, cfg) for name in progress(cfg.compile_models, "compile")]
    notes = ["compile s: the compiled model's first forward+backward and first forward, inductor's caches off, "
             "less the eager time of the same two calls",
             "graphs: distinct graphs dynamo compiled for those calls, all blocks together (each with its "
             "backward)",
             "max |diff|: compiled logits against eager's, float32"]
    return {"title": title, "columns": COLUMNS, "rows": rows, "notes": notes}
