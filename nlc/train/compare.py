"""`nlc compare`: train several specs on the same tasks with the same data, seed and token budget.

    nlc compare examples/transformer.nl examples/titans_mag.nl examples/hope.nl \\
        --task lm,mqar,niah --budget 300k -p dim=32 -p layers=2 --out out/compare

For every task and spec, a run folder out/runs/TASK/SPEC (an ordinary `nlc train` run: a
finished one is reused, an interrupted one resumed), then its evaluation. Every spec sees
the same batches (they depend only on the seed and the step) and the same number of tokens.
`-p NAME=VALUE` goes to every spec that declares NAME (`-p SPEC.NAME=VALUE` to one spec).
A task may set its own sequence length (`mqar:kv=8,seq=64`: the budget then buys more
steps) and its own token budget (`mqar:kv=4,budget=2M`: recall needs more tokens than the
language-modelling default). `jobs=N` trains the runs in N processes first (`--jobs`);
`compile=True` trains them with each block's chunk step under torch.compile (`--compile`: the same
losses up to float rounding; whether it pays for its minute of compiling a run depends on the run:
`make demo`'s comparison took 16.6 minutes with it and 15.8 without, 2026-11-30), and
`chunks_per_graph=K` with it runs K consecutive chunks as one compiled graph (`--chunks-per-graph`).
On `lm`, a spec whose memories carry state at test time (levels marked `online`, a
bounded state) trains with --stream, reading the corpus as consecutive pieces with its state
carried, as its test-time learning reads the test text; the others read random windows
(`stream=False`, `--no-stream`: random windows for every spec). The test text is read in
segments of the training sequence length (docs/training.md, "online and frozen").
`--match-params first` (or a spec's name, or a number) sets each spec's `dim` so that its
parameter count is as close as it gets to that spec's (or to that number). Writes compare.md
(the table, the details, the plots), compare.json, and the plots: loss_TASK.png, niah.png,
forgetting.png.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import nlc
from nlc.api import check_with_params
from nlc.errors import SpecError
from nlc.files import atomic_write_text, dumps_json, read_regular_bytes
from nlc.train import plots
from nlc.train.checkpoint import check_output
from nlc.train.data import resolve_data_path
from nlc.train.errors import train_error
from nlc.train.evaluate import (bounded_state, carries_state, eval_accuracy, eval_lm, eval_mqar, eval_niah,
                                 load_run, markdown_table)
from nlc.train.loop import (TrainConfig, build_model, check_chunks_per_graph, continual_rows, continual_summary,
                            count_parameters, read_metrics, read_run_config, read_spec, spec_identity, train, train_curve)
from nlc.train.tasks import Continual, LanguageModel, MQAR, NIAH, make_task, parse_length, parse_task

DEFAULT_NIAH_LENGTHS = ("512", "1k", "2k")


def parse_budget(text: str | int) -> int:
    """"300k" -> 300000, "1.5M" -> 1500000 (tokens)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgG]?)\s*", str(text))
    if not m:
        raise train_error("E633", f"not a token budget: {text!r}", "write budgets like 200000, 300k or 1.5M")
    scale = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def _declared(spec_text: str, path: str) -> set[str]:
    return set(check_with_params(nlc.loads(spec_text, path)).params)


def spec_params(specs: list[str], params: dict) -> list[dict]:
    """Each spec's overrides: the -p values whose names it declares (E633 for a name none declares).

    `NAME` goes to every spec that declares it; `LABEL.NAME` (LABEL a spec's file stem) to that spec only.
    """
    declared = [_declared(read_spec(s), str(s)) for s in specs]
    labels = _label(specs)
    out = [{} for _ in specs]
    for key, value in params.items():
        label, _, name = key.rpartition(".")
        targets = [i for i, d in enumerate(declared) if name in d and (not label or labels[i] == label)]
        if label and label not in labels:
            raise train_error("E633", f"-p {key}: no spec is called `{label}`", "specs: " + ", ".join(labels))
        if not targets:
            raise train_error("E633", f"no spec {'called `' + label + '` ' if label else ''}declares a parameter "
                              f"`{name}`", "check the name: -p NAME=V goes to every spec that declares NAME, "
                              "-p SPEC.NAME=V to one spec")
        for i in targets:
            if label or name not in out[i]:
                out[i][name] = value
    return out


def parameter_count(spec: str, params: dict) -> int:
    model = build_model(read_spec(spec), str(spec), params, 0)
    return count_parameters(model)["total"]


def match_dim(spec: str, params: dict, target: int, step: int = 8, limit: int = 4096) -> tuple[int, int]:
    """The multiple of `step` for `dim` whose parameter count is closest to target: (dim, count)."""
    cache: dict[int, int | None] = {}

    def count(d: int):
        if d not in cache:
            try:
                cache[d] = parameter_count(spec, {**params, "dim": d})
            except SpecError:
                cache[d] = None
        return cache[d]

    lo, hi = step, step
    while hi <= limit and (count(hi) is None or count(hi) < target):
        lo, hi = hi, hi * 2
    hi = min(hi, limit)
    while hi - lo > step:  # counts grow with dim: bisect on multiples of step
        mid = (lo + hi) // 2 // step * step
        c = count(mid)
        if c is None or c < target:
            lo = mid
        else:
            hi = mid
    options = [(abs(c - target), d, c) for d in range(max(step, lo - step), hi + 2 * step, step)
               if (c := count(d)) is not None]
    if not options:
        raise train_error("E633", f"no `dim` up to {limit} gives {spec} a parameter count near {target:,}")
    _, d, c = min(options)
    return d, c


def streams_lm(spec: str, params: dict, seq: int) -> bool:
    """Whether a spec trains on `lm` with --stream in a comparison: its test-time learning carries its
    state from segment to segment (`online` in-context levels), so it learns to read from a carried
    state, not only from a fresh one; its state is bounded (full attention's cache would grow every
    step); and `seq` is a whole number of its chunks (E603 otherwise)."""
    model = build_model(read_spec(spec), str(spec), params, 0)
    return carries_state(model) and bounded_state(model) and seq % int(getattr(model, "alignment", 1)) == 0


def split_run_options(task_text: str, seq: int, budget: int) -> tuple[str, int, int]:
    """"mqar:kv=8,seq=64,budget=2M" -> ("mqar:kv=8", 64, 2000000): a task's own sequence length and
    token budget in a comparison (the rest are the task's options)."""
    name, colon, rest = task_text.partition(":")
    items, own_seq, own_budget = [], seq, budget
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, _, value = item.partition("=")
        if key == "seq":
            try:
                own_seq = int(value)
            except ValueError:
                raise train_error("E614", f"task option seq={value!r} is not a whole number") from None
            if own_seq < 1:
                raise train_error("E614", f"task option seq={value} must be at least 1")
        elif key == "budget":
            own_budget = parse_budget(value)
        else:
            items.append(item)
    return name + (":" + ",".join(items) if items else ""), own_seq, own_budget


def _label(specs: list[str]) -> list[str]:
    labels, seen = [], {}
    for s in specs:
        base = Path(s).stem
        seen[base] = seen.get(base, 0) + 1
        labels.append(base if seen[base] == 1 else f"{base}_{seen[base]}")
    return labels


def _run_one(spec, run: Path, cfg: dict, quiet: bool) -> dict:
    """Train (or reuse / resume) one run; return its summary."""
    summary_path = run / "summary.json"
    if (run / "config.json").exists():
        stored = read_run_config(run)
        same = all(stored["train"].get(k) == v for k, v in cfg.items() if k not in ("quiet", "device"))

        _, h = spec_identity(read_spec(spec), str(spec), cfg.get("params", {}))
        if not same or stored["spec"]["hash"] != h:
            raise train_error("E622", f"{run} holds a run with other settings",
                              "remove it, or pass another --out folder (nothing was changed)")
        if summary_path.exists():
            if not quiet:
                print(f"reusing {run}")
            return _read_summary(summary_path)
        return train(spec, run, resume=True, **cfg)
    return train(spec, run, **cfg)


def _train_job(spec: str, run: Path, cfg: dict, threads: int | None) -> str | None:
    """One run in a worker process; its error, if any, as text (the comparison meets it again when it
    takes the run: a finished run is reused there, a failed one resumed and fails the same way)."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        _run_one(spec, run, {**cfg, "quiet": True}, True)
    except SpecError as e:
        return e.render()
    return None


def train_in_parallel(jobs_list: list[tuple[str, Path, dict]], jobs: int, quiet: bool) -> None:
    """Train the runs of a comparison in `jobs` processes before they are evaluated one by one.

    Each process gets cores / jobs torch threads, unless OMP_NUM_THREADS fixes them. The runs are
    ordinary run folders: nothing here decides a result, and the serial pass that follows reuses them
    (or meets a run's error again). The workers are spawned: a Python script that calls
    `compare(..., jobs=2)` must do so under `if __name__ == "__main__":`."""
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm import tqdm

    threads = None if "OMP_NUM_THREADS" in os.environ else max(1, (os.cpu_count() or 1) // jobs)
    # the largest token budgets first, so that the longest runs do not start last
    jobs_list = sorted(jobs_list, key=lambda job: -job[2]["steps"] * job[2]["batch"] * job[2]["seq"])
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(_train_job, spec, run, cfg, threads): run for spec, run, cfg in jobs_list}
        bar = tqdm(as_completed(futures), total=len(futures), desc=f"training in {jobs} processes",
                   unit="run", disable=quiet)
        for done in bar:
            run = futures[done]
            bar.set_postfix_str(f"{run.parent.name}/{run.name}" + (" (failed)" if done.result() else ""))


def _read_summary(path: Path) -> dict:
    """A finished run's summary.json (E626 when it is not one: the run is then not reused blindly)."""
    try:
        summary = json.loads(read_regular_bytes(path))
    except (OSError, ValueError) as e:
        raise train_error("E626", f"{path} cannot be read: {e}",
                          "remove the run folder to train it again") from None
    if not isinstance(summary, dict):
        raise train_error("E626", f"{path} is not a run summary", "remove the run folder to train it again")
    return summary


def compare(specs: list[str], tasks: list[str], budget: int | str, out: str | Path, batch: int = 16,
            seq: int = 128, lr: float = 3e-3, seed: int = 0, params: dict | None = None,
            match_params: str | int | None = None, device: str = "cpu", niah_lengths=None, niah_depths=None,
            niah_samples: int = 4, eval_batches: int = 4, eval_tokens: int = 32768, data=None,
            quiet: bool = False, stream: bool = True, jobs: int = 1, compile: bool = False,
            chunks_per_graph: int = 1) -> dict:
    out = Path(out)
    for name in ("compare.json", "compare.md"):  # before any training
        check_output(out / name)
    check_output(out / "runs", folder=True)
    if len(specs) < 1:
        raise train_error("E633", "nothing to compare", "pass one or more specs")
    if jobs < 1:
        raise train_error("E633", f"--jobs {jobs}: at least one process is needed", "use --jobs 1 or more")
    check_chunks_per_graph(chunks_per_graph, compile, "comparison")  # (its value: by each run's own checks)
    budget = parse_budget(budget)
    plan = [split_run_options(t, seq, budget) for t in tasks]
    for t, tseq, tbudget in plan:  # fail before training anything
        if tbudget // (batch * tseq) < 1:
            raise train_error("E633", f"a budget of {tbudget:,} tokens is less than one step "
                              f"({batch} x {tseq} = {batch * tseq:,} tokens)",
                              "raise --budget (or the task's budget=) or lower --batch/--seq")
        make_task(t, data).check(tseq)
    labels = _label(specs)
    overrides = spec_params(specs, dict(params or {}))
    counts = {}
    if match_params is not None:
        mp = str(match_params)
        if mp == "first" or mp in labels:
            i = 0 if mp == "first" else labels.index(mp)
            target = parameter_count(specs[i], overrides[i])
        elif re.fullmatch(r"\s*[0-9]*\.?[0-9]+\s*[kKmMgG]?\s*", mp):
            target = parse_budget(mp)
        else:
            raise train_error("E633", f"--match-params {mp}: not `first`, a spec name or a number",
                              "specs: " + ", ".join(labels))
        for i, s in enumerate(specs):
            d, c = match_dim(s, overrides[i], target)
            overrides[i] = {**overrides[i], "dim": d}
            counts[labels[i]] = c
    for i, s in enumerate(specs):
        counts.setdefault(labels[i], parameter_count(s, overrides[i]))
    lengths = [parse_length(x) if isinstance(x, str) else int(x) for x in (niah_lengths or DEFAULT_NIAH_LENGTHS)]
    depths = list(niah_depths) if niah_depths is not None else [0.0, 0.25, 0.5, 0.75, 1.0]
    results: dict = {"budget": budget, "steps": budget // (batch * seq), "batch": batch, "seq": seq, "lr": lr,
                     "seed": seed,
                     "stream": stream,
                     "threads": __import__("torch").get_num_threads(),
                     "specs": {lab: {"path": str(s), "params": overrides[i], "parameters": counts[lab]}
                               for i, (lab, s) in enumerate(zip(labels, specs))}, "tasks": {}}
    plots_written = []

    def run_config(task_text: str, seq: int, task_budget: int, i: int) -> tuple[Path, dict]:
        """The run folder and `train` settings of spec i on one task."""
        name, _ = parse_task(task_text)
        steps = task_budget // (batch * seq)
        cfg = dict(task=task_text, data=[resolve_data_path(d) for d in data or []], params=overrides[i],
                   steps=steps, batch=batch, seq=seq, lr=lr, seed=seed, device=device, quiet=quiet,
                   ckpt_every=max(50, steps // 4))
        if stream and name == "lm" and streams_lm(specs[i], overrides[i], seq):
            cfg["stream"] = True
        if compile:  # only when asked: runs trained without it keep their settings (and are reused)
            cfg["compile"] = True
            if chunks_per_graph != 1:
                cfg["chunks_per_graph"] = chunks_per_graph
        return out / "runs" / name / labels[i], cfg

    if jobs > 1:
        train_in_parallel([(specs[i], *run_config(*p, i)) for p in plan for i in range(len(specs))], jobs, quiet)

    for (task_text, seq, task_budget), given in zip(plan, tasks):
        name, _ = parse_task(task_text)
        task = make_task(task_text, data)
        steps = task_budget // (batch * seq)
        per = results["tasks"].setdefault(name, {"task": given, "seq": seq, "steps": steps, "budget": task_budget,
                                                 "runs": {}})
        curves = {}
        for i, (lab, spec) in enumerate(zip(labels, specs)):
            run, cfg = run_config(task_text, seq, task_budget, i)
            try:
                summary = _run_one(spec, run, cfg, quiet or jobs > 1)  # after --jobs: no "reusing" lines
            except SpecError as e:
                if "E630" not in e.codes:
                    raise
                # a diverging spec is a result, not the end of the comparison
                print(e.render(), file=sys.stderr)
                per["runs"][lab] = {"run": str(run), "diverged": e.diagnostics[0].message,
                                    "tok_s": _median_rate(run)}
                curves[lab] = [(s * batch * seq, loss) for s, loss in train_curve(run)]
                continue
            rec = {"run": str(run), "train_loss": summary.get("loss"), "val": summary.get("val"),
                   "tok_s": _median_rate(run), "stream": bool(cfg.get("stream"))}
            loaded = load_run(run, device)
            dev = loaded.device
            if isinstance(task, LanguageModel):
                # segments of the training length: what a frozen model was trained to read from a fresh state
                rec["test"] = eval_lm(loaded.model, task, False, dev, eval_tokens, default_segment=seq)
                frozen = load_run(run, device)
                rec["test_frozen"] = eval_lm(frozen.model, task, True, dev, eval_tokens, default_segment=seq)
            elif isinstance(task, NIAH):
                rec["niah"] = eval_niah(loaded.model, task, False, dev, lengths, depths, niah_samples)
            elif isinstance(task, MQAR):
                rec["mqar"] = eval_mqar(loaded.model, task, False, dev, eval_batches, batch, seq)
            elif isinstance(task, Continual):
                rows = continual_rows(run)
                rec["continual"] = continual_summary(rows, [n for n, _ in task.domains])
            else:
                rec["accuracy"] = eval_accuracy(loaded.model, task, False, dev, eval_batches, batch, seq)
            per["runs"][lab] = rec
            curves[lab] = [(s * batch * seq, loss) for s, loss in train_curve(run)]
        png = out / f"loss_{name}.png"
        plots.loss_curves(curves, png, title=f"training loss: {task_text} ({task_budget:,} tokens, seq {seq})")
        plots_written.append(png)
        if name == "niah":
            png = out / "niah.png"
            plots.niah_heatmaps({lab: r["niah"] for lab, r in per["runs"].items() if "niah" in r}, png,
                                title="NIAH: pass-key exact match")
            plots_written.append(png)
        if name == "continual":
            png = out / "forgetting.png"
            plots.forgetting_curves({lab: r["continual"] for lab, r in per["runs"].items() if r.get("continual")},
                                    png)
            plots_written.append(png)
    results["plots"] = [str(p) for p in plots_written]
    table = summary_table(results)
    results["table"] = table
    atomic_write_text(out / "compare.json", dumps_json(results, indent=1) + "\n")
    atomic_write_text(out / "compare.md", render_markdown(results))
    return results


def _streamed_note(results: dict) -> str:
    """", except on lm, where S1, S2 read it as a stream" when some specs trained with --stream."""
    lm = results["tasks"].get("lm", {}).get("runs", {})
    streamed = [lab for lab, r in lm.items() if r.get("stream")]
    if not streamed:
        return ""
    return (", except on lm, where " + ", ".join(f"`{s}`" for s in streamed) + " read the training text "
            "as a stream (consecutive pieces, state carried: --stream), as their test-time learning reads text")


def _median_rate(run: Path) -> float:
    rates = [r["tok_s"] for r in read_metrics(run) if "tok_s" in r]
    return statistics.median(rates[len(rates) // 5:] or rates) if rates else 0.0


HEADLINES = {  # task -> (column title, how to get it from a run record)
    "lm": ("LM test bits/byte ↓", lambda r: r["test"]["bpb"]),
    "mqar": ("MQAR acc ↑", lambda r: r["mqar"]["acc"]),
    "niah": ("NIAH acc ↑", lambda r: r["niah"]["acc"]),
    "continual": ("continual forgetting ↓", lambda r: r["continual"].get("avg_forgetting", float("nan"))),
    "parity": ("parity acc ↑", lambda r: r["accuracy"]["acc"]),
    "brackets": ("brackets acc ↑", lambda r: r["accuracy"]["acc"]),
}


def _finite(record: dict) -> bool:
    """False when an evaluation met NaN/inf logits (the model's state blew up on a long input)."""
    for key in ("niah", "accuracy"):
        if key in record and not record[key].get("finite", True):
            return False
    if "mqar" in record and not all(v.get("finite", True) for v in record["mqar"]["by_kv"].values()):
        return False
    return True


def summary_table(results: dict) -> str:
    headers = ["spec", "parameters"]
    tasks = list(results["tasks"])
    for t in tasks:
        headers.append(HEADLINES[t][0])
        if t == "lm":
            headers.append("LM bits/byte, frozen")
        if t == "niah":
            headers.append("NIAH digits ↑ (chance 0.1)")
        if t == "continual":
            headers.append("continual final loss ↓")
    headers.append("train tokens/s")
    rows = []
    for lab, info in results["specs"].items():
        row = [lab, f"{info['parameters']:,}"]
        rates = []
        for t in tasks:
            r = results["tasks"][t]["runs"][lab]
            extra = 1 if t in ("lm", "niah", "continual") else 0
            rates.append(r["tok_s"])
            if "diverged" in r:
                row += ["diverged"] * (1 + extra)
                continue
            value = HEADLINES[t][1](r)
            row.append(value if _finite(r) else f"{value:.3f} (non-finite outputs)")
            if t == "lm":
                row.append(r["test_frozen"]["bpb"])
            if t == "niah":
                row.append(r["niah"]["digit_acc"])
            if t == "continual":
                row.append(r["continual"].get("final_avg_loss", float("nan")))
        row.append(f"{statistics.mean(rates):,.0f}" if rates else "")
        rows.append(row)
    return markdown_table(headers, rows)


def render_markdown(results: dict) -> str:
    lines = ["# nlc compare", "",
             f"Budget {results['budget']:,} tokens a run (batch {results['batch']}; "
             + ", ".join(f"{t}: {p['steps']} steps of {p['seq']} tokens"
                         + (f" ({p['budget']:,} tokens)" if p.get("budget", results["budget"]) != results["budget"]
                            else "")
                         for t, p in results["tasks"].items())
             + f"), lr {results['lr']}, seed {results['seed']}; the same batches for every spec"
             + _streamed_note(results) + ".",
             "", results["table"], ""]
    for lab, info in results["specs"].items():
        p = ", ".join(f"{k}={v}" for k, v in info["params"].items()) or "defaults"
        lines.append(f"- `{lab}`: {info['path']} ({p}), {info['parameters']:,} parameters")
    lines.append("")
    for t, per in results["tasks"].items():
        lines.append(f"## {per['task']}")
        lines.append("")
        ok = {lab: r for lab, r in per["runs"].items() if "diverged" not in r}
        for lab, r in per["runs"].items():
            if "diverged" in r:
                lines += [f"{lab}: diverged: {r['diverged']}", ""]
        if t == "mqar" and ok:
            kvs = list(next(iter(ok.values()))["mqar"]["by_kv"])
            lines.append(markdown_table(["spec"] + [f"{kv} pairs" for kv in kvs],
                                        [[lab] + [r["mqar"]["by_kv"][kv]["acc"] for kv in kvs]
                                         for lab, r in ok.items()]))
        elif t == "niah":
            for lab, r in ok.items():
                n = r["niah"]
                lines.append(f"{lab} ({n['variant']}, exact match, {n['samples']} samples a cell; answer digits "
                             f"right overall {n.get('digit_acc', float('nan')):.3f}, chance 0.1)"
                             + ("; NaN/inf logits: the model's state blew up" if not n.get("finite", True) else "")
                             + ":")
                lines.append("")
                lines.append(markdown_table(["length \\ depth"] + [f"{d:g}" for d in n["depths"]],
                                            [[L] + row for L, row in zip(n["lengths"], n["grid"])]))
                lines.append("")
        elif t == "continual":
            for lab, r in ok.items():
                c = r["continual"]
                if not c:
                    continue
                lines.append(f"{lab}: loss on each domain (columns) after training on each domain (rows)")
                lines.append("")
                lines.append(markdown_table(["after"] + c["names"],
                                            [[n] + row for n, row in zip(c["names"], c["matrix"])]))
                lines.append("")
        elif t == "lm":
            lines.append(markdown_table(["spec", "trained on", "test loss", "bits/byte", "perplexity",
                                         "bits/byte frozen", "val loss (train)"],
                                        [[lab, "stream" if r.get("stream") else "random windows", r["test"]["loss"],
                                          r["test"]["bpb"], r["test"]["ppl"], r["test_frozen"]["bpb"],
                                          (r.get("val") or {}).get("loss", "")]
                                         for lab, r in ok.items()]))
            lines.append("")
            seg = next((r["test"]["segment"] for r in ok.values()), per["seq"])
            lines.append(f"Test text read as streams in segments of {seg} tokens (the training length); online: "
                         "the state is carried from segment to segment and online CMS levels keep learning; "
                         "frozen: every segment from the initial state.")
        lines.append("")
        lines.append(f"![loss curves](loss_{t}.png)")
        lines.append("")
    for p in results["plots"]:
        if Path(p).name in ("niah.png", "forgetting.png"):
            lines.append(f"![{Path(p).stem}]({Path(p).name})")
    return "\n".join(lines) + "\n"


__all__ = ["compare", "parse_budget", "match_dim", "spec_params", "TrainConfig"]
