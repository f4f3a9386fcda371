"""The `nlc` command line: check, fmt, compile, graph (and fuzz, train, eval, compare, bench).

Exit codes: 0 success, 1 the spec has errors (or `fmt --check` found files to
reformat), 2 bad usage, 3 an internal error (a bug in nlc: please report it).
A bad spec never produces a Python traceback, only diagnostics.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Sequence

import nlc
from nlc.bench.cli import register as register_bench
from nlc.cli_options import add_size_options, param, size_limits
from nlc.errors import Diagnostic, SpecError
from nlc.files import atomic_write_text
from nlc.graph import draw, level_graph
from nlc.ir import all_levels
from nlc.passes.pipeline import check_ir
from nlc.testing.fuzz_cli import register as register_fuzz
from nlc.train.cli import register as register_train
from nlc.version import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlc", description="Compiler for Nested Learning level graphs.")
    parser.add_argument("--version", action="version", version=f"nlc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", help="parse and check specs; diagnostics on stderr")
    p.add_argument("specs", nargs="+", type=Path, metavar="SPEC")
    p.add_argument("--json", action="store_true", help="print diagnostics as JSON on stdout")
    p.add_argument("-p", "--param", action="append", type=param, default=[], metavar="NAME=VALUE",
                   help="override a parameter (repeatable)")
    add_size_options(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("fmt", help="rewrite specs in canonical form")
    p.add_argument("specs", nargs="+", type=Path, metavar="SPEC")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file is not canonical")
    p.add_argument("--diff", action="store_true", help="print a diff instead of writing")
    p.add_argument("--stdout", action="store_true", help="print the canonical text instead of writing")
    p.add_argument("--to", choices=("nl", "yaml"), help="convert: write SPEC's other form next to it (a.nl -> a.yaml, "
                   "comments kept; never over a different file), or print it with --stdout")
    p.set_defaults(func=cmd_fmt)

    p = sub.add_parser("compile", help="generate the PyTorch module of a spec")
    p.add_argument("spec", type=Path, metavar="SPEC")
    p.add_argument("-o", "--output", type=Path, help="write the module here (default: print it)")
    p.add_argument("-p", "--param", action="append", type=param, default=[], metavar="NAME=VALUE")
    add_size_options(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("graph", help="draw the level graph (levels banded by frequency)")
    p.add_argument("specs", nargs="+", type=Path, metavar="SPEC")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="FILE.png, FILE.svg or FILE.dot; with several specs a folder, one SPEC_NAME.png each")
    p.add_argument("-p", "--param", action="append", type=param, default=[], metavar="NAME=VALUE")
    add_size_options(p)
    p.set_defaults(func=cmd_graph)
    register_fuzz(sub)
    register_train(sub)
    register_bench(sub)
    return parser


def _eprint(text: str) -> None:
    print(text, file=sys.stderr)


def cmd_check(args) -> int:
    failed = False
    report = []
    for path in args.specs:
        options = {**dict(args.param), **size_limits(args)}
        try:
            checked = nlc.api.load_checked(path, **options)
            prog, warnings = checked.program, checked.warnings
        except SpecError as e:
            failed = True
            report.append({"file": str(path), "ok": False, "diagnostics": [d.to_json() for d in e.diagnostics]})
            if not args.json:
                _eprint(e.render() + "\n")
            continue
        report.append({"file": str(path), "ok": True, "diagnostics": [d.to_json() for d in warnings]})
        if not args.json:
            for w in warnings:
                _eprint(w.render() + "\n")
            n, w = len(all_levels(prog)), len(warnings)
            print(f"ok  {path}  ({prog.kind.value} {prog.name}: {n} level{'s' if n != 1 else ''}"
                  + (f", {w} warning{'s' if w != 1 else ''}" if w else "") + ")")
    if args.json:
        print(json.dumps(report, indent=2))
    elif failed:
        n = sum(not r["ok"] for r in report)
        _eprint(f"{n} of {len(report)} spec{'s' if len(report) != 1 else ''} failed")
    return 1 if failed else 0


def cmd_fmt(args) -> int:
    if args.to is not None:
        return _convert(args)
    status = 0
    for path in args.specs:
        try:
            text = nlc.api.read_spec(path)
            prog = nlc.loads(text, str(path))
        except SpecError as e:
            _eprint(e.render() + "\n")
            status = 1
            continue
        canonical = nlc.print_program(prog)
        is_yaml = path.suffix in (".yaml", ".yml")
        if args.stdout:
            sys.stdout.write(canonical)
        elif is_yaml:
            _eprint(f"{path}: fmt rewrites .nl files; `nlc fmt --stdout {path}` prints its nlc text")
            status = max(status, 1)
        elif canonical != text:
            if args.diff or args.check:
                sys.stdout.writelines(difflib.unified_diff(text.splitlines(True), canonical.splitlines(True),
                                                           str(path), f"{path} (formatted)"))
            if args.check:
                _eprint(f"would reformat {path}")
                status = 1
            elif not args.diff:
                atomic_write_text(path, canonical)
                print(f"reformatted {path}")
    return status


def _convert(args) -> int:
    """`nlc fmt --to nl|yaml`: each spec in the other form (canonical, comments kept), printed or
    written next to it; an existing file with other text is never overwritten (E635)."""
    if args.check or args.diff:
        _eprint(Diagnostic("E635", "--to converts; --check and --diff compare a file with its own canonical form",
                           hint="leave out --check/--diff, or --to").render())
        return 1
    from nlc.yaml_printer import print_yaml  # pyyaml: only when YAML is asked for

    status = 0
    for path in args.specs:
        try:
            prog = nlc.loads(nlc.api.read_spec(path), str(path))
        except SpecError as e:
            _eprint(e.render() + "\n")
            status = 1
            continue
        text = print_yaml(prog) if args.to == "yaml" else nlc.print_program(prog)
        if args.stdout:
            sys.stdout.write(text)
            continue
        target = path.with_suffix("." + args.to)
        if target.exists() and target.resolve() != path.resolve() and _read_or_none(target) != text:
            _eprint(Diagnostic("E635", f"{target} exists and holds other text; nothing was written",
                               hint=f"move it away, or print the conversion: `nlc fmt --to {args.to} --stdout {path}`"
                               ).render())
            status = 1
            continue
        atomic_write_text(target, text)
        print(f"wrote {target}")
    return status


def _read_or_none(path: Path) -> str | None:
    try:
        return nlc.api.read_spec(path)
    except SpecError:
        return None


def cmd_compile(args) -> int:
    source = nlc.generate(args.spec, **{**dict(args.param), **size_limits(args)})
    if args.output is None:
        sys.stdout.write(source)
        return 0
    atomic_write_text(args.output, source)
    print(f"wrote {args.output} ({len(source.splitlines())} lines)")
    return 0


def cmd_graph(args) -> int:
    """Draw each spec's level graph; several specs (or an existing folder as -o) draw into a folder, in one
    process (each `nlc graph` pays the imports again: seconds a file)."""
    into_folder = len(args.specs) > 1 or args.output.is_dir() or not args.output.suffix
    if not into_folder and args.output.suffix not in (".png", ".svg", ".dot"):
        _eprint(f"error: cannot draw to {args.output}: use a .png, .svg or .dot file (or a folder)")
        return 2
    if into_folder and args.output.exists() and not args.output.is_dir():
        _eprint(f"error: cannot draw {len(args.specs)} specs into {args.output}: it is a file, not a folder")
        return 2
    options = {**dict(args.param), **size_limits(args)}
    status = 0
    for spec in args.specs:
        try:
            checked = check_ir(nlc.load(spec, **options), options)
        except SpecError as e:
            _eprint(e.render())
            status = 1
            continue
        output = args.output / f"{spec.stem}.png" if into_folder else args.output
        output.parent.mkdir(parents=True, exist_ok=True)
        g = level_graph(checked.program, checked.facts)
        draw(g, output)
        n = sum(1 for _, d in g.nodes(data=True) if d["kind"] == "level")
        print(f"wrote {output} ({n} level{'s' if n != 1 else ''}, {g.number_of_edges()} flows)")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `nlc train --nproc N` starts itself again
    try:
        return args.func(args)
    except SpecError as e:  # a command that let one through still shows diagnostics only
        _eprint(e.render())
        return 1
    except KeyboardInterrupt:
        _eprint("interrupted")
        return 130
    except Exception as e:  # noqa: BLE001 - the last line of defence: no tracebacks for users
        if os.environ.get("NLC_DEBUG"):
            traceback.print_exc()
        _eprint(f"internal error in nlc: {type(e).__name__}: {e}\n"
                "This is a bug in nlc, not in your spec; please report it (NLC_DEBUG=1 shows the traceback).")
        return 3


def run() -> None:
    """The `nlc` command (console script, `python -m nlc`): main's exit code, a rank of a torchrun run
    ending without interpreter finalization (nlc.train.dist.exit_process)."""
    code = main()
    from nlc.train.dist import exit_process

    exit_process(code)


if __name__ == "__main__":
    run()
