"""nlc's generated Hope block against nested-learning's SelfModifyingTitans, side by side.

The peer is `nested-learning` 0.2.0 (the most complete public Hope): its self-modifying Titans
(NL arXiv:2512.24695 eqs. 83-93: memories M_k, M_v, M_eta, M_alpha, M_memory, residual MLPs,
dgd updates on self-generated values, a local convolution, l2-normalised q and k) run with
`forward_with_updates` under torch.no_grad(): the in-context forward only, because the peer
takes no gradient through its updates (its output does not require grad). Configuration as
the peer's self-modifying configs: chunks of 8 tokens for M_k, M_v, M_eta, M_alpha and 64 for
M_memory, hidden = dim, batch 2.

nlc's side is one block of examples/hope.nl (`-p chunk=8 -p memory_chunk=64 -p layers=1`):
the same memories and rule, plus what the peer leaves out (its CMS, RMSNorm), forward and
forward+backward *through* the in-context updates (a training step's work without the
optimizer), eager and compiled. Targets (issue 18): forward >= 20x the peer's forward,
forward+backward >= 10x the peer's forward.

The peer is a benchmark-only extra: pip install --no-deps nested-learning==0.2.0 (this module
needs only torch and einops).
"""

from __future__ import annotations

import time

import torch

from nlc.bench.build import build, example, modes
from nlc.bench.config import BenchConfig
from nlc.bench.report import progress
from nlc.bench.timing import forward_backward, ratio, throughputs

MISSING = ("nested-learning is not installed: it is a benchmark-only extra, "
           "pip install --no-deps nested-learning==0.2.0 (and einops)")

COLUMNS = [["dim", "dim", "d"], ["seq", "seq", "d"], ["peer_fwd", "peer fwd (in-context, no grad)", ".0f"]]


def _columns(cfg: BenchConfig) -> list[list[str]]:
    out = list(COLUMNS)
    for label, _ in modes(cfg):
        out += [[f"nlc_{label}_fwd", f"nlc {label} fwd", ".0f"], [f"{label}_fwd_ratio", "/peer", ".1f"],
                [f"nlc_{label}_fwd_bwd", f"nlc {label} f+b", ".0f"], [f"{label}_fwd_bwd_ratio", "/peer fwd", ".1f"]]
    return out + ([["compile_s", "compile s", ".0f"]] if cfg.compile else [])


def nlc_hope(dim: int, cfg: BenchConfig, compiled: int = 0):
    """x -> one Hope block's output (examples/hope.nl, the peer's chunk sizes)."""
    model = build(example("hope"), cfg.device, compiled, dim=dim, layers=1, chunk=cfg.hope_chunk,
                  memory_chunk=cfg.hope_memory_chunk)
    block = model.blocks[0]
    return lambda x: block(x, block.init_state(x.shape[0], x))[0]


def peer_hope(dim: int, cfg: BenchConfig):
    from nested_learning.titan.self_modifying import SelfModifyingTitans, SelfModifyingTitansConfig

    torch.manual_seed(0)
    module = SelfModifyingTitans(SelfModifyingTitansConfig(
        dim=dim, chunk_size_other=cfg.hope_chunk, chunk_size_memory=cfg.hope_memory_chunk)).to(cfg.device)

    def forward(x):
        with torch.no_grad():
            return module.forward_with_updates(x, module.init_fast_state())[0]

    return forward


def run(cfg: BenchConfig) -> dict:
    title = (f"nested-learning SelfModifyingTitans (peer) vs nlc's Hope block: tokens/s (batch {cfg.batch}, "
             f"chunks {cfg.hope_chunk}/{cfg.hope_memory_chunk}, {cfg.device})")
    columns = _columns(cfg)
    try:
        import nested_learning  # noqa: F401
    except ImportError:
        return {"title": title, "columns": columns, "rows": [], "notes": [MISSING]}
    rows = []
    for dim, seq in progress(cfg.hope_peer_configs, "hope_peer"):
        x = torch.randn(cfg.batch, seq, dim, device=cfg.device)
        row = {"dim": dim, "seq": seq}
        fns = {"peer": peer_hope(dim, cfg)}
        for label, compiled in modes(cfg):
            fn = nlc_hope(dim, cfg, compiled)
            fns[label] = lambda t, fn=fn: fn(t.detach().requires_grad_())
            if compiled:  # the first call compiles the chunk step's graphs (forward and backward)
                start = time.perf_counter()
                forward_backward(fns[label], x)
                row["compile_s"] = time.perf_counter() - start
        # all timed in the same rounds, so the ratios compare the same moments of a noisy machine
        measured = throughputs(fns, x, cfg.repeats, cfg.device, forward_only=("peer",))  # (it takes no gradient)
        row["peer_fwd"] = measured.pop("peer")[0]
        for label, (fwd, fwd_bwd) in measured.items():
            row[f"nlc_{label}_fwd"], row[f"nlc_{label}_fwd_bwd"] = fwd, fwd_bwd
            row[f"{label}_fwd_ratio"] = ratio(fwd, row["peer_fwd"])
            row[f"{label}_fwd_bwd_ratio"] = ratio(fwd_bwd, row["peer_fwd"])
        rows.append(row)
    notes = ["the peer's forward runs its in-context updates without gradients (it takes none through them); "
             "nlc's forward+backward differentiates through every update",
             "ratios: nlc tokens/s over the peer's forward tokens/s (> 1: nlc is faster); targets: fwd >= 20, "
             "f+b >= 10"]
    return {"title": title, "columns": columns, "rows": rows, "notes": notes}
