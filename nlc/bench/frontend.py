"""Front-end time of every examples/*.nl: `nlc.load` (parse + lower + all checking passes), and the
whole compile front end `nlc.generate` (load, then generate the PyTorch source).

The lark parser is built once per process; a warm-up load builds it before anything is
timed. A spec with errors is still timed: reporting errors is part of the front end.
"""

from __future__ import annotations

from pathlib import Path

import nlc
from nlc.bench.build import examples_dir
from nlc.bench.config import BenchConfig, BenchError
from nlc.bench.report import progress
from nlc.bench.timing import best_time

TARGET_MS = 20.0

COLUMNS = [["file", "file", ""], ["lines", "lines", "d"], ["load_ms", "load ms", ".2f"],
           ["generate_ms", "load+generate ms", ".2f"], ["generated_lines", "generated lines", "d"],
           ["ok", "ok", ""]]


def _quietly(fn, path: Path):
    try:
        return fn(path)
    except nlc.SpecError:
        return None


def measure(path: Path, repeats: int) -> dict:
    """{file, lines, load_ms, generate_ms, generated_lines, ok} of one spec, best of `repeats`."""
    text = path.read_text(encoding="utf-8")
    source = _quietly(nlc.generate, path)
    load_s = best_time(lambda: _quietly(nlc.load, path), repeats)
    generate_s = best_time(lambda: _quietly(nlc.generate, path), repeats)
    return {"file": path.name, "lines": len(text.splitlines()), "load_ms": 1000 * load_s,
            "generate_ms": 1000 * generate_s, "generated_lines": len(source.splitlines()) if source else None,
            "ok": source is not None}


def run(cfg: BenchConfig) -> dict:
    specs = sorted(examples_dir().glob("*.nl"))
    if not specs:
        raise BenchError(f"no specs in {examples_dir()}")
    _quietly(nlc.load, specs[0])  # builds (and caches) the parser: not part of any timing
    rows = [measure(p, cfg.frontend_repeats) for p in progress(specs, "frontend")]
    slow = [r["file"] for r in rows if r["load_ms"] > TARGET_MS]
    notes = [f"target {TARGET_MS:g} ms a load: " + (f"over it: {', '.join(slow)}" if slow else "all within"),
             f"total load {sum(r['load_ms'] for r in rows):.1f} ms, load+generate "
             f"{sum(r['generate_ms'] for r in rows):.1f} ms for {len(rows)} specs"]
    return {"title": f"front end: ms a spec (warm parser, best of {cfg.frontend_repeats})",
            "columns": COLUMNS, "rows": rows, "notes": notes}
