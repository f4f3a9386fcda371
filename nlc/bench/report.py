"""Tables of a suite's rows: fixed-width text for the terminal, markdown for notes, JSON for tools.

A suite returns {"title", "columns", "rows", "notes"} (and optionally "extra_tables", a list of
more such tables); columns are [key, header, format] with a format spec such as ".0f" or "" (str).
A missing value (None) prints as "-".
"""

from __future__ import annotations

import sys
from pathlib import Path

from tqdm import tqdm

from nlc.files import atomic_write_text, dumps_json


def tables(result: dict) -> list[dict]:
    """A suite's main table followed by its extra tables."""
    return [result, *result.get("extra_tables", [])]


def _cell(value, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, fmt) if fmt and isinstance(value, (int, float)) else str(value)


def _grid(table: dict) -> tuple[list[str], list[list[str]], list[bool]]:
    """(headers, cells, left-aligned per column): text columns left, numbers right."""
    cols = table["columns"]
    cells = [[_cell(row.get(key), fmt) for key, _, fmt in cols] for row in table["rows"]]
    left = [any(isinstance(row.get(key), str) for row in table["rows"]) for key, _, _ in cols]
    return [header for _, header, _ in cols], cells, left


def format_table(table: dict) -> str:
    """Fixed-width text: a title line, the header, the rows, then the notes."""
    headers, cells, left = _grid(table)
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values):
        return "  ".join(v.ljust(w) if lf else v.rjust(w) for v, w, lf in zip(values, widths, left)).rstrip()

    out = [table["title"], line(headers), *(line(r) for r in cells)]
    if not table["rows"]:
        out.append("(no rows)")
    return "\n".join(out + [f"  note: {n}" for n in table.get("notes", [])])


def markdown_table(table: dict) -> str:
    headers, cells, _ = _grid(table)
    out = [f"### {table['title']}", "", "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in cells]
    if table.get("notes"):
        out += [""] + [f"- {n}" for n in table["notes"]]
    return "\n".join(out)


def markdown(run: dict) -> str:
    """bench.md: the environment, then every table of every suite."""
    env = ", ".join(f"{k} {v}" for k, v in run["environment"].items())
    parts = ["# nlc bench", "", env]
    for result in run["suites"].values():
        parts += ["", *(markdown_table(t) + "\n" for t in tables(result))]
    return "\n".join(parts).rstrip() + "\n"


def write(out: Path, run: dict) -> list[Path]:
    """Write out/bench.json and out/bench.md atomically; return their paths."""
    out = Path(out)
    paths = [out / "bench.json", out / "bench.md"]
    atomic_write_text(paths[0], dumps_json(run, indent=2) + "\n")  # NaN and Infinity are not JSON
    atomic_write_text(paths[1], markdown(run))
    return paths


def progress(items, desc: str):
    """A progress bar (stderr, only on a terminal) across a suite's configurations."""
    return tqdm(list(items), desc=desc, leave=False, file=sys.stderr, disable=None)
