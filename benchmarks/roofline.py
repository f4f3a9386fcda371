"""Achieved GFLOP/s of generated models as a fraction of this machine's fp32 matmul peak.

FLOPs per token come from the plan (`nlc.flops.model_flops`) and are checked here
against torch.utils.flop_counter on one configuration. The matmul peak is measured
in the same run (best of several square matmuls). Forward+backward is counted as 3x
the forward flops.

    python benchmarks/roofline.py [--dims 128 256] [--seq 1024]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nlc  # noqa: E402
from timing import best_time  # noqa: E402
from nlc.files import atomic_write_text  # noqa: E402
from nlc.flops import model_flops  # noqa: E402
from nlc.passes.pipeline import check_ir  # noqa: E402
from nlc.plan import plan_model  # noqa: E402


def matmul_peak(n: int = 1024) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_time(lambda: a @ b, 5) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["titans_lmm", "hope", "transformer"])
    ap.add_argument("--dims", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "roofline.json")
    args = ap.parse_args()
    peak = matmul_peak()
    print(f"fp32 matmul peak: {peak:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
    rows = []
    print(f"{'model':12s} {'dim':>4s} {'MFLOP/tok':>10s} {'counter':>8s} {'fwd GF/s':>9s} {'%peak':>6s} "
          f"{'f+b GF/s':>9s} {'%peak':>6s}")
    for name in args.models:
        for dim in args.dims:
            program = nlc.load(ROOT / "examples" / f"{name}.nl")
            checked = check_ir(program, {"dim": dim})
            per_token = model_flops(plan_model(checked.program, checked.params), args.seq)["total"]
            torch.manual_seed(0)
            model = nlc.build(program, dim=dim)
            tokens = torch.randint(0, 256, (args.batch, args.seq))
            with FlopCounterMode(display=False) as counter:
                model(tokens)
            counted = counter.get_total_flops() / tokens.numel()

            def fwd():
                with torch.no_grad():
                    model(tokens)

            def fwd_bwd():
                model(tokens).square().mean().backward()

            n = tokens.numel()
            f = per_token * n / best_time(fwd) / 1e9
            fb = 3 * per_token * n / best_time(fwd_bwd) / 1e9
            rows.append({"model": name, "dim": dim, "flops_per_token": per_token, "counter_flops_per_token": counted,
                         "fwd_gflops": f, "fwd_bwd_gflops": fb, "peak_gflops": peak})
            print(f"{name:12s} {dim:4d} {per_token / 1e6:10.2f} {counted / per_token:8.2f} {f:9.1f} "
                  f"{100 * f / peak:5.1f}% {fb:9.1f} {100 * fb / peak:5.1f}%", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(rows, indent=2))
    print(f"wrote {args.out}  ('counter' = torch FlopCounterMode flops / nlc.flops count)")


if __name__ == "__main__":
    main()
