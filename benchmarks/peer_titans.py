"""nlc's generated Titans memory against titans-pytorch's NeuralMemory, side by side.

Matched configuration: same dim, a 2-layer MLP memory with expansion 4, chunk 16,
momentum and decay, batch 2; dims 64/128/256, sequences 256..4096; forward and
forward+backward tokens/s on this machine, eager (and nlc compiled with --compile).
Matched: titans-pytorch with batch_size = chunk, so both take every gradient inside a
chunk at the chunk-start weights ("peer" columns). titans-pytorch's default
(batch_size=None) takes all gradients of the whole sequence at the initial weights,
a cheaper but different algorithm; it is reported separately ("peer default"
columns). They also differ in where momentum and decay act: titans-pytorch sums a chunk's gradients into one
surprise and scans momentum/decay across chunks (per-chunk gates); nlc runs the
per-token rule inside the chunk (S_t = beta_t S_{t-1} - eta_t g_t, per-token gates)
in closed form. Memory models differ slightly: titans-pytorch normalises the memory
output (LayerNorm) before its residual; nlc's memory is x + MLP(x).

    pip install -e '.[bench]'; python benchmarks/peer_titans.py [--dims 64 128] [--seqs 256 1024]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nlc  # noqa: E402
from timing import best_time  # noqa: E402
from nlc.files import atomic_write_text  # noqa: E402


def nlc_memory(dim: int, chunk: int):
    torch.manual_seed(0)
    model = nlc.build(nlc.load(ROOT / "benchmarks" / "specs" / "titans_memory.nl"), dim=dim, chunk=chunk)
    block = model.blocks[0]
    return lambda x: block(x, block.init_state(x.shape[0], x))[0]


def peer_memory(dim: int, chunk: int, matched: bool = True):
    from titans_pytorch import NeuralMemory

    torch.manual_seed(0)
    mem = NeuralMemory(dim=dim, chunk_size=chunk, batch_size=chunk if matched else None, heads=1, momentum=True,
                       default_model_kwargs={"depth": 2, "expansion_factor": 4.0})
    return lambda x: mem(x)[0]


def measure(fn, x, repeats):
    def fwd():
        with torch.no_grad():
            fn(x)

    def fwd_bwd():
        xx = x.detach().requires_grad_()
        fn(xx).square().mean().backward()

    n = x.shape[0] * x.shape[1]
    return n / best_time(fwd, repeats), n / best_time(fwd_bwd, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dims", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--seqs", type=int, nargs="+", default=[256, 1024, 4096])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peer_titans.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    try:
        import titans_pytorch  # noqa: F401
    except ImportError:
        sys.exit("titans-pytorch is a benchmark-only extra: pip install -e '.[bench]'")
    rows = []
    print(f"{'dim':>4s} {'seq':>5s} {'peer fwd':>9s} {'nlc fwd':>9s} {'x':>5s} {'peer f+b':>9s} {'nlc f+b':>9s} "
          f"{'x':>5s} | {'peer default fwd':>16s} {'f+b':>7s}   (tokens/s, batch {args.batch}, chunk {args.chunk}, "
          f"{torch.get_num_threads()} threads, eager)")
    for dim in args.dims:
        ours, peer = nlc_memory(dim, args.chunk), peer_memory(dim, args.chunk)
        peer_default = peer_memory(dim, args.chunk, matched=False)
        for seq in args.seqs:
            x = torch.randn(args.batch, seq, dim)
            pf, pfb = measure(peer, x, args.repeats)
            nf, nfb = measure(ours, x, args.repeats)
            df, dfb = measure(peer_default, x, args.repeats)
            rows.append({"dim": dim, "seq": seq, "peer_fwd": pf, "nlc_fwd": nf, "peer_fwd_bwd": pfb,
                         "nlc_fwd_bwd": nfb, "peer_default_fwd": df, "peer_default_fwd_bwd": dfb})
            print(f"{dim:4d} {seq:5d} {pf:9.0f} {nf:9.0f} {nf / pf:5.2f} {pfb:9.0f} {nfb:9.0f} {nfb / pfb:5.2f} | "
                  f"{df:16.0f} {dfb:7.0f}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
