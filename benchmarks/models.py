"""Throughput and memory of generated models against the reference interpreter.

For titans_lmm and hope at a small config: tokens/s of the reference interpreter,
generated eager and generated torch.compile'd, forward and forward+backward; then
streaming peak memory against sequence length (state must not grow with length).
Ratios are measured side by side in one run (best of --repeats after a warm-up).

    python benchmarks/models.py [--dim 64] [--seq 256] [--no-compile] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nlc  # noqa: E402
from timing import best_time  # noqa: E402


def make(name: str, backend: str, dim: int, chunk: int):
    program = nlc.load(ROOT / "examples" / f"{name}.nl")
    torch.manual_seed(0)
    return nlc.build(program, backend=backend, dim=dim, chunk=chunk, layers=2)


def throughput(name, args) -> list[dict]:
    rows = []
    B, T = args.batch, args.seq
    tokens = torch.randint(0, 256, (B, T))
    variants = [("reference", make(name, "reference", args.dim, args.chunk), args.ref_seq),
                ("generated eager", make(name, "compiled", args.dim, args.chunk), T)]
    if args.compile:
        gen = make(name, "compiled", args.dim, args.chunk)
        t0 = time.perf_counter()
        compiled = torch.compile(gen, fullgraph=True)
        compiled(tokens).sum().backward()  # compile forward and backward once
        variants.append((f"generated compiled (compile {time.perf_counter() - t0:.0f}s)", compiled, T))
    for label, model, length in variants:
        tok = tokens[:, :length]

        def fwd():
            with torch.no_grad():
                model(tok)

        def fwd_bwd():
            model(tok).float().square().mean().backward()

        f = best_time(fwd, args.repeats)
        fb = best_time(fwd_bwd, args.repeats)
        rows.append({"model": name, "variant": label, "tokens": B * length,
                     "fwd_tok_s": B * length / f, "fwd_bwd_tok_s": B * length / fb})
    return rows


def streaming_memory(name: str, length: int, args) -> dict:
    """Run in a fresh process: stream `length` tokens in pieces; report peak RSS and state size."""
    code = f"""
import resource, torch, sys
sys.path.insert(0, {str(ROOT)!r})
import nlc
torch.manual_seed(0)
m = nlc.build(nlc.load({str(ROOT / 'examples' / (name + '.nl'))!r}), dim={args.dim}, chunk={args.chunk}, layers=2)
state = m.init_state(1)
piece = {args.piece}
with torch.no_grad():
    for s in range(0, {length}, piece):
        _, state = m(torch.randint(0, 256, (1, piece)), state=state)
def size(x):
    if isinstance(x, dict): return sum(size(v) for v in x.values())
    if isinstance(x, (list, tuple)): return sum(size(v) for v in x)
    return x.numel() * x.element_size() if isinstance(x, torch.Tensor) else 0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, size(state))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return {"model": name, "tokens": length, "peak_rss_mb": int(out[0]) / 1024, "state_kb": int(out[1]) / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["titans_lmm", "hope"])
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--ref-seq", type=int, default=32, help="the reference interpreter is slow: a shorter sequence")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--piece", type=int, default=1024)
    ap.add_argument("--lengths", type=int, nargs="+", default=[1024, 4096, 16384])
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "models.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [r for name in args.models for r in throughput(name, args)]
    print(f"\nthroughput (dim {args.dim}, 2 layers, chunk {args.chunk}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, {'cuda' if torch.cuda.is_available() else 'cpu'})")
    print(f"{'model':12s} {'variant':40s} {'tokens':>7s} {'fwd tok/s':>10s} {'fwd+bwd tok/s':>14s}")
    for r in rows:
        print(f"{r['model']:12s} {r['variant']:40s} {r['tokens']:7d} {r['fwd_tok_s']:10.0f} {r['fwd_bwd_tok_s']:14.0f}")
    mem = [streaming_memory(name, n, args) for name in args.models for n in args.lengths]
    print(f"\nstreaming memory (pieces of {args.piece} tokens, no grad)")
    print(f"{'model':12s} {'tokens':>7s} {'peak RSS MB':>12s} {'state KB':>9s}")
    for m in mem:
        print(f"{m['model']:12s} {m['tokens']:7d} {m['peak_rss_mb']:12.1f} {m['state_kb']:9.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from nlc.files import atomic_write_text

    atomic_write_text(args.out, json.dumps({"throughput": rows, "memory": mem}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
