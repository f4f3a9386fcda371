"""A suite run in several fresh processes, one after another, and reported as the median.

On these shared machines one process can run nlc's small compiled kernels about 1.6x slower than
the next for its whole life (benchmarks/README.md, "One process, one draw"), while the peer's
larger kernels change less: a ratio timed side by side in one process is then a single draw of a
process-level variable. `nlc bench --processes N` runs each suite in N worker processes
(`python -m nlc.bench.processes`), each with its own warm-up and best-of-`repeats`, and reports,
per row, the median of each measured column over the processes (the lower middle value when N is
even: always a value one process measured), plus a table of the
range of every ratio across the processes. Every process's rows stay in bench.json
(`per_process`). A ratio in the median table is the median of the per-process ratios, not the
ratio of the medians beside it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from nlc.bench.config import BenchConfig, BenchError, config_from_json, config_json
from nlc.bench.report import progress, tables
from nlc.files import atomic_write_text, dumps_json


def run_in_processes(name: str, cfg: BenchConfig) -> dict:
    """The suite `name` run in cfg.processes fresh worker processes, combined (`combine`)."""
    with tempfile.TemporaryDirectory(prefix="nlc-bench-") as tmp:
        config = Path(tmp) / "config.json"
        atomic_write_text(config, config_json(replace(cfg, processes=1)))
        results = []
        for i in progress(range(cfg.processes), f"{name} processes"):
            out = Path(tmp) / f"{i}.json"
            done = subprocess.run([sys.executable, "-m", "nlc.bench.processes", name, str(config), str(out)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                tail = "\n".join(done.stderr.strip().splitlines()[-15:])
                raise BenchError(f"suite {name}: worker process {i + 1} of {cfg.processes} failed "
                                 f"(exit {done.returncode}):\n{tail}")
            result = json.loads(out.read_text())
            nonfinite = result.pop("nonfinite", None)  # NaN or inf, written as null: say where
            if nonfinite:
                result.setdefault("notes", []).append(
                    f"process {i + 1}: non-finite values (left out of the medians): "
                    + ", ".join(f"{k} {v}" for k, v in nonfinite.items()))
            results.append(result)
    return combine(results)


def combine(results: list[dict]) -> dict:
    """One suite's results from several processes -> one result: the first process's titles and
    columns, each row's measured columns as the median over the processes (`median_low`; None
    where no process measured it), yes/no columns yes only where every process said yes, the
    notes of all; an extra table of the range of each ratio; every process's rows in
    `per_process`. The rows must describe the same configurations in the same order."""
    first = results[0]
    parts = [tables(r) for r in results]
    if len({len(p) for p in parts}) != 1:
        raise BenchError(f"{first['title']}: the processes returned different numbers of tables")
    by_table = list(zip(*parts))  # each table's versions, one a process
    combined = [_combine_table(versions) for versions in by_table]
    out = {**combined[0], "per_process": [r["rows"] for r in results]}
    spreads = [s for s in (_spread(t, versions) for t, versions in zip(combined, by_table)) if s]
    extra = combined[1:] + spreads
    if extra:
        out["extra_tables"] = extra
    return out


def _combine_table(versions: tuple[dict, ...]) -> dict:
    first = versions[0]
    if len({len(v["rows"]) for v in versions}) != 1:
        raise BenchError(f"{first['title']}: the processes returned different numbers of rows")
    labels = _labels(first)
    rows = []
    for same in zip(*(v["rows"] for v in versions)):
        row = {}
        for key in same[0]:
            values = [r.get(key) for r in same]
            if key in labels:
                if len({str(v) for v in values}) != 1:
                    raise BenchError(f"{first['title']}: the processes' rows differ in {key!r}: {values}")
                row[key] = values[0]
            else:
                row[key] = _median(values)
        rows.append(row)
    notes = list(dict.fromkeys(note for v in versions for note in v.get("notes", [])))
    notes.append(f"median of {len(versions)} processes (the lower middle value when even), each with its own "
                 "warm-up and best of its repeats; a ratio is the median of the per-process ratios")
    return {**{k: v for k, v in first.items() if k not in ("rows", "notes", "extra_tables")},
            "rows": rows, "notes": notes}


def _labels(table: dict) -> set[str]:
    """The keys that name a configuration (model, dim, seq, mode) rather than measure it: text, or
    whole numbers (format "d"); decided once a table, from its columns and rows."""
    rows = table["rows"]
    formats = {k: f for k, _, f in table["columns"]}

    def is_label(key: str) -> bool:
        if key not in formats:  # a key outside the columns (bench.json only): a label unless it is a float
            return not any(isinstance(r.get(key), float) for r in rows)
        return formats[key] in ("", "d") and not any(isinstance(r.get(key), bool) for r in rows)

    return {key for key in {*formats, *(k for r in rows for k in r)} if is_label(key)}


def _median(values: list):
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, bool) for v in present):
        return all(present)
    if all(isinstance(v, (int, float)) for v in present):
        return statistics.median_low(present)
    return present[0]


def _spread(combined: dict, versions: list[dict]) -> dict | None:
    """min and max over the processes of every ratio column (keys ending in "ratio"), per row."""
    ratios = [k for k, _, _ in combined["columns"] if k.endswith("ratio")]
    label_keys = _labels(combined)
    labels = [(k, h, f) for k, h, f in combined["columns"] if k in label_keys]
    if not ratios:
        return None
    columns = [[k, h, f] for k, h, f in labels]
    for key in ratios:  # by key: several columns share a header ("nlc/peer"), told apart by their neighbours
        columns += [[f"{key}_min", f"{key} min", ".2f"], [f"{key}_max", f"{key} max", ".2f"]]
    rows = []
    for i, row in enumerate(combined["rows"]):
        out = {k: row[k] for k, _, _ in labels}
        for key in ratios:
            values = [v["rows"][i].get(key) for v in versions if v["rows"][i].get(key) is not None]
            out[f"{key}_min"], out[f"{key}_max"] = (min(values), max(values)) if values else (None, None)
        rows.append(out)
    return {"title": f"{combined['title']}: range of each ratio over {len(versions)} processes",
            "columns": columns, "rows": rows, "notes": []}


def worker(argv: list[str]) -> int:
    """`python -m nlc.bench.processes SUITE CONFIG.json OUT.json`: one suite, its result as JSON."""
    import torch

    from nlc.bench.suites import SUITES

    name, config, out = argv
    cfg = config_from_json(Path(config).read_text())
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    atomic_write_text(Path(out), dumps_json(SUITES[name](cfg)))
    return 0


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
