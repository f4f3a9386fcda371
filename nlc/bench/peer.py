"""nlc's generated Titans memory against titans-pytorch's NeuralMemory, side by side.

Matched configuration: same dim, a 2-layer MLP memory with expansion 4, chunk 16,
momentum and decay, batch 2; dims 64/128/256, sequences 256..4096; forward and
forward+backward tokens/s on this machine, eager (and nlc compiled when compile is on).
Matched: titans-pytorch with batch_size = chunk, so both take every gradient inside a
chunk at the chunk-start weights ("peer" columns). titans-pytorch's default
(batch_size=None) takes all gradients of the whole sequence at the initial weights,
a cheaper but different algorithm; it is reported separately ("peer default"
columns). They also differ in where momentum and decay act: titans-pytorch sums a chunk's
gradients into one surprise and scans momentum/decay across chunks (per-chunk gates); nlc
runs the per-token rule inside the chunk (S_t = beta_t S_{t-1} - eta_t g_t, per-token gates)
in closed form. Memory models differ slightly: titans-pytorch normalises the memory
output (LayerNorm) before its residual; nlc's memory is x + MLP(x).

The nlc side is nlc/bench/specs/titans_memory.nl (shipped with the package). titans-pytorch
is a benchmark-only extra: pip install -e '.[bench]'.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product
from pathlib import Path

import torch

from nlc.bench.build import build
from nlc.bench.config import BenchConfig
from nlc.bench.report import progress
from nlc.bench.timing import ratio, throughputs

SPEC = Path(__file__).parent / "specs" / "titans_memory.nl"
MISSING = "titans-pytorch is not installed: it is a benchmark-only extra, pip install -e '.[bench]'"

COLUMNS = [["dim", "dim", "d"], ["seq", "seq", "d"],
           ["peer_fwd", "peer fwd", ".0f"], ["nlc_fwd", "nlc fwd", ".0f"], ["fwd_ratio", "nlc/peer", ".2f"],
           ["peer_fwd_bwd", "peer f+b", ".0f"], ["nlc_fwd_bwd", "nlc f+b", ".0f"],
           ["fwd_bwd_ratio", "nlc/peer", ".2f"]]
COMPILED_COLUMNS = [["nlc_compiled_fwd", "nlc compiled fwd", ".0f"], ["compiled_fwd_ratio", "nlc/peer", ".2f"],
                    ["nlc_compiled_fwd_bwd", "nlc compiled f+b", ".0f"],
                    ["compiled_fwd_bwd_ratio", "nlc/peer", ".2f"]]
DEFAULT_COLUMNS = [["peer_default_fwd", "peer default fwd", ".0f"],
                   ["peer_default_fwd_bwd", "peer default f+b", ".0f"],
                   ["default_fwd_bwd_ratio", "nlc f+b/default", ".2f"]]
COMPILED_DEFAULT_COLUMNS = [["compiled_default_fwd_bwd_ratio", "nlc compiled f+b/default", ".2f"]]


def nlc_memory(dim: int, cfg: BenchConfig, compiled: int = 0):
    """x -> the memory layer's output (one block of titans_memory.nl)."""
    model = build(SPEC, cfg.device, compiled, dim=dim, chunk=cfg.chunk)
    block = model.blocks[0]
    return lambda x: block(x, block.init_state(x.shape[0], x))[0]


def peer_memory(dim: int, cfg: BenchConfig, matched: bool = True):
    from titans_pytorch import NeuralMemory

    torch.manual_seed(0)
    mem = NeuralMemory(dim=dim, chunk_size=cfg.chunk, batch_size=cfg.chunk if matched else None, heads=1,
                       momentum=True, default_model_kwargs={"depth": 2, "expansion_factor": 4.0}).to(cfg.device)
    return lambda x: mem(x)[0]


def peer_gradient_bytes(dim: int, seq: int, cfg: BenchConfig) -> int:
    """What titans-pytorch's forward+backward holds at its peak: a gradient of its memory MLP (8 dim^2
    weights) for every token of the batch (per-sample gradients), in float32. Measured peaks are 1.0-1.4x
    this plus about 0.5 GB (dim 256, 1k tokens: 4.3 GB here, 4.3 GB peak in the default mode, 6.0 GB
    matched); at dim 256 and 4k tokens it is 17 GB."""
    return cfg.batch * seq * 8 * dim * dim * 4


def available_bytes(device: str) -> int | None:
    """Memory free for a new allocation on `device` (Linux MemAvailable on the CPU), None where unknown."""
    if device.startswith("cuda"):
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


PEER_MARGIN = 1.5  # the measured peak over peer_gradient_bytes, rounded up


def run(cfg: BenchConfig) -> dict:
    title = (f"titans-pytorch NeuralMemory (peer) vs nlc: tokens/s (batch {cfg.batch}, chunk {cfg.chunk}, "
             f"{cfg.device})")
    columns = COLUMNS + (COMPILED_COLUMNS if cfg.compile else []) + DEFAULT_COLUMNS \
        + (COMPILED_DEFAULT_COLUMNS if cfg.compile else [])
    try:
        import titans_pytorch  # noqa: F401
    except ImportError:
        return {"title": title, "columns": columns, "rows": [], "notes": [MISSING]}

    @lru_cache(maxsize=1)
    def memories(dim: int) -> dict:
        out = {"peer": peer_memory(dim, cfg), "nlc": nlc_memory(dim, cfg),
               "peer_default": peer_memory(dim, cfg, matched=False)}
        if cfg.compile:
            out["nlc_compiled"] = nlc_memory(dim, cfg, compiled=cfg.chunks_per_graph)
        return out

    rows, skipped = [], []
    for dim, seq in progress(product(cfg.peer_dims, cfg.peer_seqs), "peer"):
        x = torch.randn(cfg.batch, seq, dim, device=cfg.device)
        row = {"dim": dim, "seq": seq}
        fns = {name: lambda t, fn=fn: fn(t.detach().requires_grad_()) for name, fn in memories(dim).items()}
        need, free = PEER_MARGIN * peer_gradient_bytes(dim, seq, cfg), available_bytes(cfg.device)
        if free is not None and need > free:  # the peer would be killed for memory, and the whole run with it
            fns = {name: fn for name, fn in fns.items() if not name.startswith("peer")}
            skipped.append(f"dim {dim} x {seq} tokens (about {need / 1e9:.1f} GB, {free / 1e9:.1f} GB available)")
        # all timed in the same rounds, so the ratios compare the same moments of a noisy machine
        measured = throughputs(fns, x, cfg.repeats, cfg.device)
        for name in memories(dim):  # (a memory left out: None, "not measured")
            row[f"{name}_fwd"], row[f"{name}_fwd_bwd"] = measured.get(name, (None, None))
        for prefix, ours in [("", "nlc")] + ([("compiled_", "nlc_compiled")] if cfg.compile else []):
            for kind in ("fwd", "fwd_bwd"):
                row[f"{prefix}{kind}_ratio"] = ratio(row.get(f"{ours}_{kind}"), row.get(f"peer_{kind}"))
            # issue 18's target: nlc's forward+backward against the peer's default (cheaper) mode
            row[f"{prefix}default_fwd_bwd_ratio"] = ratio(row.get(f"{ours}_fwd_bwd"), row.get("peer_default_fwd_bwd"))
        rows.append(row)
    notes = ["matched: peer batch_size = chunk (gradients at chunk-start weights, as nlc); peer default: "
             "batch_size=None (all gradients at the initial weights, a cheaper, different algorithm)",
             "nlc/peer > 1: nlc is faster; f+b/default: nlc's forward+backward over the peer default's "
             "(target >= 2)"]
    if skipped:
        notes.append("titans-pytorch not run (its per-token gradients would not fit in memory; nlc still timed) at "
                     + "; ".join(skipped))
    return {"title": title, "columns": columns, "rows": rows, "notes": notes}
