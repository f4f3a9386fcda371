"""The `bench` subcommand (added to `nlc` by `register`).

    nlc bench [SUITE ...] [--suite NAME] [--quick] [--threads N] [--device cpu|cuda] [--repeats N]
              [--processes N] [--no-compile] [--lengths 1k,2k,...] [--piece N] [--train-cap N] [--out DIR]

Exit codes: 0 done, 2 a bad request (unknown suite, no CUDA, no examples/), 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nlc.bench import SUITES, BenchError, run_suites
from nlc.bench.config import default_out, profile
from nlc.errors import SpecError


def _length(text: str) -> int:
    """"4k" -> 4096, "512" -> 512."""
    from nlc.train.tasks import parse_length  # numpy and torch: not while `nlc` starts

    try:
        return parse_length(text)
    except SpecError:
        raise argparse.ArgumentTypeError(f"expected a length like 512 or 4k, got {text!r}") from None


def _count(text: str) -> int:
    """A whole number of at least 1 (repeats, threads, processes): 0 repeats would time nothing and report inf."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return n


def _lengths(text: str) -> tuple[int, ...]:
    return tuple(_length(x) for x in text.split(",") if x.strip())


def register(sub) -> None:
    """Add `bench` to an argparse subparsers object."""
    p = sub.add_parser("bench", help="run the benchmarks; tables on stdout, OUT/bench.json and OUT/bench.md",
                       description="Run nlc's benchmark suites: " + ", ".join(SUITES) + " (default: all).")
    p.add_argument("suites", nargs="*", metavar="SUITE", help="suites to run (default: all)")
    p.add_argument("--suite", action="append", default=[], dest="more_suites", metavar="NAME",
                   help="a suite to run (repeatable; same as a positional name)")
    p.add_argument("--quick", action="store_true", help="small sizes: a few minutes on 2 CPU cores")
    p.add_argument("--threads", type=_count, metavar="N", help="torch threads (default: torch's current setting)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda if available, else cpu")
    p.add_argument("--repeats", type=_count, metavar="N",
                   help="timed repeats after a warm-up; the best counts (default 3; the front end 20, 5 with --quick)")
    p.add_argument("--processes", type=_count, metavar="N",
                   help="run each suite in N fresh processes and report the median and the range of every "
                        "ratio (default 1: in this process); a process can be slower than the next for its "
                        "whole life")
    p.add_argument("--no-compile", dest="compile", action="store_false",
                   help="leave out the compiled (nlc.build(compile=True)) columns and rows")
    p.add_argument("--chunks-per-graph", type=_count, dest="chunks_per_graph", metavar="K",
                   help="compiled variants: run K consecutive chunks as one compiled graph (nlc.build's "
                        "chunks_per_graph; default 1)")
    p.add_argument("--lengths", type=_lengths, metavar="1k,2k,...",
                   help="scaling: sequence lengths (default 1k,2k,...,64k)")
    p.add_argument("--piece", type=_length, metavar="N", help="scaling: streaming piece in tokens (default 1024)")
    p.add_argument("--train-cap", type=_length, dest="train_cap", metavar="N",
                   help="scaling: longest whole-sequence forward+backward (default 8k)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="results folder (default: benchmarks/results in the repository, else ./bench-results)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    import torch  # not while `nlc` starts: every command registers `bench`

    names = [*args.suites, *args.more_suites] or list(SUITES)
    repeats = {} if args.repeats is None else {"repeats": args.repeats, "frontend_repeats": args.repeats}
    cfg = profile(args.quick, device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
                  threads=args.threads or torch.get_num_threads(), compile=args.compile, lengths=args.lengths,
                  piece=args.piece, train_cap=args.train_cap, processes=args.processes,
                  chunks_per_graph=args.chunks_per_graph, **repeats)
    out = args.out or default_out()
    try:
        run_suites(list(dict.fromkeys(names)), cfg, out)
    except BenchError as e:
        print(f"nlc bench: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'}")
    return 0
