#!/usr/bin/env python3
"""Front-end time of every example: parse + lower + all checking passes (`nlc.load`).

The lark parser is built once per process; one warm-up `nlc.load` builds it before
anything is timed. Each file is timed `--repeat` times (best of, via timeit) and
the table and a JSON file report milliseconds per load.

    python benchmarks/frontend.py                 # examples/*.nl -> benchmarks/results/frontend.json
    python benchmarks/frontend.py a.nl b.yaml --repeat 50 --out out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import nlc  # noqa: E402

TARGET_MS = 20.0


def measure(path: Path, repeat: int, number: int) -> dict:
    """Return {file, lines, ms, ok} for one spec: best of `repeat` rounds of `number` loads."""
    text = path.read_text(encoding="utf-8")
    try:
        nlc.load(path)
        ok, error = True, None
    except nlc.SpecError as e:  # still timed: reporting errors is part of the front end
        ok, error = False, e.codes
    times = timeit.repeat(lambda: _load(path), repeat=repeat, number=number)
    row = {"file": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
           "lines": text.count("\n") + (not text.endswith("\n") and bool(text)),
           "ms": round(min(times) / number * 1000, 3), "ok": ok}
    if error:
        row["errors"] = error
    return row


def _load(path: Path) -> None:
    try:
        nlc.load(path)
    except nlc.SpecError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="*", type=Path, help="spec files (default: examples/*.nl)")
    ap.add_argument("--repeat", type=int, default=20, help="rounds; the best is reported (default 20)")
    ap.add_argument("--number", type=int, default=1, help="loads per round (default 1)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "frontend.json",
                    help="where to write the JSON results")
    args = ap.parse_args(argv)
    specs = args.specs or sorted((ROOT / "examples").glob("*.nl"))
    if not specs:
        print("no specs to time", file=sys.stderr)
        return 1

    warm = specs[0]
    _load(warm)  # builds (and caches) the lark parser: not part of any timing

    rows = [measure(p.resolve(), args.repeat, args.number) for p in specs]
    width = max(len(r["file"]) for r in rows)
    print(f"{'file':<{width}}  {'lines':>5}  {'ms':>8}")
    for r in rows:
        flag = "" if r["ok"] else "  (has errors: " + ", ".join(r["errors"]) + ")"
        slow = "  > target" if r["ms"] > TARGET_MS else ""
        print(f"{r['file']:<{width}}  {r['lines']:>5}  {r['ms']:>8.2f}{slow}{flag}")
    total = sum(r["ms"] for r in rows)
    print(f"{'total':<{width}}  {sum(r['lines'] for r in rows):>5}  {total:>8.2f}")

    result = {
        "what": "nlc front end (parse + lower + all passes) per spec, warm parser, best of repeats",
        "unit": "ms",
        "repeat": args.repeat,
        "number": args.number,
        "target_ms": TARGET_MS,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
