#!/usr/bin/env python3
"""Data-parallel throughput on this machine: 2 processes x 1 thread against 1 process x 2 threads.

The same `nlc train` run (spec, global batch, sequence length, steps) three ways:

    1 process  x 1 thread      the baseline
    1 process  x 2 threads     torch's intra-op threads (OMP_NUM_THREADS=2)
    2 processes x 1 thread     nlc train --nproc 2 (torchrun, gloo): each rank half the batch

and reports global training tokens per second, from the wall time of the steps after the first
`--warm` (metrics.jsonl's "time" of rank 0; the first steps pay for allocation and caches). The
2-process number includes the per-step all-reduces (loss/token count/stop flag, and the main
gradients) and the process start-up is not in it. Numbers on a shared machine move with its load:
compare columns of one run, not runs.

    python benchmarks/dist_throughput.py                       # about 2 minutes on 2 idle CPU cores
    python benchmarks/dist_throughput.py --ways 1x1,2x1        # some of the ways
    python benchmarks/dist_throughput.py --spec examples/titans_lmm.nl -p dim=64 --batch 16 --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(args, out: Path, threads: int, nproc: int) -> dict:
    """Train once; (tokens/s over the steps after the warm-up, final loss)."""
    command = [sys.executable, "-m", "nlc", "train", args.spec, "--out", str(out), "--batch", str(args.batch),
               "--seq", str(args.seq), "--steps", str(args.steps), "--ckpt-every", str(args.steps + 1),
               "--eval-batches", "1", "--quiet", *[x for p in args.param for x in ("-p", p)]]
    if args.optimizer:
        command += ["--optimizer", args.optimizer]
    if nproc > 1:
        command += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in records if "loss" in r and "eval" not in r}
    first, last = steps[args.warm], steps[args.steps]
    tokens = (args.steps - args.warm) * args.batch * args.seq
    return {"tok_s": tokens / (last["time"] - first["time"]), "loss": last["loss"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", default=str(ROOT / "examples" / "hope.nl"))
    p.add_argument("-p", "--param", action="append", default=None, metavar="NAME=VALUE")
    p.add_argument("--optimizer", help="an optimizer spec (default AdamW)")
    p.add_argument("--batch", type=int, default=16, help="the global batch")
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--warm", type=int, default=5, help="steps left out of the timing")
    p.add_argument("--ways", default="1x1,1x2,2x1", help="PROCESSESxTHREADS to run, comma-separated")
    args = p.parse_args()
    args.param = args.param if args.param is not None else ["dim=64", "layers=2", "chunk=16"]
    ways = []
    for way in args.ways.split(","):
        nproc, threads = (int(x) for x in way.split("x"))
        ways.append((f"{nproc} process{'es' if nproc > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}",
                     threads, nproc))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, threads, nproc) in enumerate(ways):
            result = run(args, Path(tmp) / str(i), threads, nproc)
            rows.append((name, result))
            print(f"{name}: {result['tok_s']:,.0f} tok/s", file=sys.stderr)
    base = rows[0][1]["tok_s"]
    print(f"\n{Path(args.spec).name} {' '.join(args.param)}, global batch {args.batch} x {args.seq} tokens, "
          f"steps {args.warm + 1}-{args.steps} timed\n")
    print("| how | tokens/s | vs 1 x 1 | final loss |\n|---|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['tok_s']:,.0f} | {r['tok_s'] / base:.2f}x | {r['loss']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
