"""`nlc fuzz`: its command line, without hypothesis.

hypothesis is an optional dependency (the `test` extra), so every other `nlc` command must
start without it: this module defines the `fuzz` arguments and imports the fuzzer
(nlc.testing.fuzz, which needs hypothesis) only when `nlc fuzz` runs; without hypothesis that
command says how to install it.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nlc
from nlc.api import read_spec
from nlc.cli_options import param
from nlc.files import atomic_write_text
from nlc.testing.properties import PROPERTIES, SPEC_PROPERTIES


def register(subparsers) -> argparse.ArgumentParser:
    """Add `fuzz` to an argparse subparsers object (the `nlc` command's)."""
    p = subparsers.add_parser("fuzz", help="run the nlc.testing properties on a spec or on random specs",
                              description="Run the nlc.testing properties (hypothesis) on SPEC with drawn inputs, "
                                          "or on random specs; print the smallest failing spec as nlc source.")
    p.add_argument("spec", nargs="?", type=Path, metavar="SPEC", help="the spec to test (or --random)")
    p.add_argument("--random", action="store_true", help="draw random specs instead")
    p.add_argument("--examples", type=int, default=20, metavar="N", help="examples to try (default 20)")
    p.add_argument("--seed", type=int, default=None, metavar="S", help="random seed (default: derandomised)")
    p.add_argument("--property", action="append", choices=sorted(PROPERTIES), dest="properties", metavar="P",
                   help=f"run only these properties (repeatable): {', '.join(PROPERTIES)}")
    p.add_argument("-p", "--param", action="append", type=param, default=[], metavar="NAME=VALUE",
                   help="override a parameter of SPEC (repeatable)")
    p.add_argument("--tiny", action="store_true", help="test a tiny instance of SPEC (dim 8, one layer)")
    p.add_argument("--max-blocks", type=int, default=2, metavar="N", help="--random: blocks per spec (2)")
    p.add_argument("--max-levels", type=int, default=3, metavar="N", help="--random: levels per block (3)")
    p.add_argument("-o", "--output", type=Path, help="write the smallest failing spec here")
    p.set_defaults(func=cmd_fuzz)
    return p


def cmd_fuzz(args) -> int:
    try:
        from nlc.testing.fuzz import _tiny, fuzz_random, fuzz_spec
    except ModuleNotFoundError as e:
        if e.name != "hypothesis":
            raise
        print("nlc fuzz needs hypothesis, an optional dependency: pip install 'nlc[test]'", file=sys.stderr)
        return 2
    if (args.spec is None) == (not args.random):
        print("nlc fuzz: give a SPEC or --random (not both)", file=sys.stderr)
        return 2
    if args.examples < 1:
        print("nlc fuzz: --examples must be at least 1", file=sys.stderr)
        return 2
    props = tuple(args.properties or PROPERTIES)
    t0 = time.perf_counter()
    if args.random:
        what = "random specs"
        failure, n = fuzz_random(args.examples, args.seed, props, max_blocks=args.max_blocks,
                                 max_levels=args.max_levels)
    else:
        what = str(args.spec)
        try:
            text = read_spec(args.spec)  # E601/E602/E604/E121: a FIFO or /dev/zero must not hang
            prog = nlc.loads(text, str(args.spec))
            params = {**(_tiny(prog) if args.tiny and prog.is_model else {}), **dict(args.param)}
            nlc.check(prog, **params)
            if not prog.is_model:
                props = tuple(p for p in props if p in SPEC_PROPERTIES)
        except nlc.SpecError as e:
            print(e.render(), file=sys.stderr)
            print(f"nlc fuzz: {args.spec} does not check", file=sys.stderr)
            return 1
        try:
            failure, n = fuzz_spec(text, args.examples, args.seed, params, props)
        except nlc.SpecError as e:  # it checks but does not build (E5xx)
            print(e.render(), file=sys.stderr)
            return 1
    took = time.perf_counter() - t0
    if failure is None:
        if not props:
            print(f"nlc fuzz: none of the chosen properties applies to {what} (an optimizer: "
                  f"{', '.join(SPEC_PROPERTIES)})", file=sys.stderr)
            return 2
        print(f"ok: {len(props)} propert{'ies hold' if len(props) != 1 else 'y holds'} on {n} "
              f"example{'s' if n != 1 else ''} of {what} "
              f"({took:.1f} s): {', '.join(props)}")
        return 0
    print(f"FAILED after {n} passing example{'s' if n != 1 else ''} of {what} ({took:.1f} s): "
          + failure.render())
    if args.output is not None:
        atomic_write_text(args.output, failure.text)
        print(f"wrote the failing spec to {args.output}")
    return 1


def main(argv=None) -> int:
    """`python -m nlc.testing.fuzz_cli ...`: the same as `nlc fuzz ...`."""
    parser = argparse.ArgumentParser(prog="nlc")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["fuzz", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
