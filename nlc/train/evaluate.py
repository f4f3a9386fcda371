"""`nlc eval`: evaluate a trained run on a task.

    nlc eval runs/hope-lm                      # the run's own task, its newest checkpoint
    nlc eval runs/hope-niah --task niah --lengths 1k,4k,16k
    nlc eval runs/hope-lm --task continual     # test-time continual learning over stdlib packages
    nlc eval runs/hope-lm --frozen             # the same with test-time learning switched off

What is measured:
  lm         loss (nats/byte), bits per byte and perplexity on the test split, read as 8
             consecutive streams cut into segments (of the run's training --seq by default)
  mqar       answer accuracy, by number of key-value pairs
  niah       exact-match accuracy of the pass key, for every (length, needle depth): a heat-map
  parity, brackets   answer accuracy
  continual  the model reads each domain's validation text in turn; after each domain, its loss
             on every domain's test text: a table, the average final loss and the forgetting

Test-time learning. Unless --frozen, a model whose spec marks levels `online` keeps learning:
  * in-context levels carry their streaming state from segment to segment of a text stream
    (and, in `continual`, from domain to domain; tests of a domain start from that state);
  * CMS step levels marked `online` keep taking their update every `period` segments from the
    next-byte loss of what was just read (predict first, then learn: every score is taken
    before the update that uses its text);
  * `context loss` levels counted in tokens learn from the text inside every segment, chunk by
    chunk (each chunk's step uses only predictions whose answers were read: prequential).
With --frozen, every segment starts from the model's initial state, nothing is updated, and
`context loss` levels in tokens do not step.
Online helps only a model trained to read from a carried state (`nlc train --stream`); one trained
on fresh windows of --seq tokens reads a state it never saw (docs/training.md, "Online and frozen").
A single example of a synthetic task (one MQAR sequence, one haystack) is always read whole,
in aligned segments with its state carried, since that is how the model reads a long input;
its state is never carried into the next example.
The checkpoint on disk is never changed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nlc.files import atomic_write_text, dumps_json
from nlc.runtime.layers import Attention
from nlc.train import checkpoint as ck
from nlc.train import plots
from nlc.train.errors import train_error
from nlc.train.loop import (EVAL_SEED, TrainConfig, build_model, check_streaming_length, continual_summary,
                            masked_loss, read_run_checkpoint, resolve_device, stored_config)
from nlc.train.steplevels import StepLevels
from nlc.train.tasks import (NIAH, Continual, LanguageModel, MQAR, Task, _batch_from, accuracy_counts, bits_per_byte,
                             make_task, niah_example, parse_length, seed_for)

DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclass
class Loaded:
    model: torch.nn.Module
    config: dict
    train: TrainConfig
    checkpoint: ck.Checkpoint
    device: torch.device


def load_run(path: str | Path, device: str = "cpu", params: dict | None = None) -> Loaded:
    """The model of a run's checkpoint (a run folder: its newest), built from the spec text stored in the run.

    config.json is checked to be a run record whose spec text and parameters still give the spec
    hash it records (E626 / E622 naming it), so an edited one is refused, never built. `params`
    changes spec parameters for this build only (an ablation: `max_lr=0` turns the in-context
    writes off); the checkpoint's tensors must still fit (E622)."""
    config, ckpt = read_run_checkpoint(path, "a checkpoint is read with the config.json of its run folder")
    spec = config["spec"]
    cfg = stored_config(config)
    model = build_model(spec["text"], spec["path"], {**cfg.params, **(params or {})}, cfg.seed, device, cfg.limits)
    ck.load_model_tensors(model, ckpt.model, ckpt.path)
    return Loaded(model, config, cfg, ckpt, resolve_device(device))


class Learner:
    """Runs a model over a stream, carrying state and updating online step levels unless frozen."""

    def __init__(self, model, frozen: bool, batch: int, device):
        self.model, self.frozen, self.batch, self.device = model, frozen, batch, device
        if hasattr(model, "learn_from_loss"):  # `context loss` levels in tokens learn inside the forward
            model.learn_from_loss = not frozen
        self.carry = carries_state(model) and not frozen
        self.levels = StepLevels(model, only_online=True) if not frozen else None
        if self.levels is not None and not self.levels:
            self.levels = None
        self.state = model.init_state(batch) if self.carry else None
        self.updates = 0
        if self.levels is not None:
            keep = {id(p) for p in self.levels.parameters()}
            for p in model.parameters():
                p.requires_grad_(id(p) in keep)

    def fresh_state(self):
        return self.model.init_state(self.batch)

    def segment(self, tokens: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Score one segment (per-token losses [B, T], logits), then learn from it."""
        learn = self.levels is not None
        state = self.state if self.carry else self.fresh_state()
        with torch.set_grad_enabled(learn):
            logits, new_state = self.model(tokens, state=state)
            losses = F.cross_entropy(logits.float().transpose(1, 2), targets, reduction="none")
        if learn:
            losses.mean().backward()
            self.levels.accumulate()
            if self.levels.step():
                self.updates += 1
        if self.carry:  # the model returned it detached (detach_state=True): no graph to carry
            self.state = new_state
        return losses.detach(), logits.detach()


def carries_state(model) -> bool:
    """Whether test-time learning carries this model's streaming state from segment to segment
    (it has in-context levels marked `online`)."""
    return bool(getattr(model, "online_levels", None))


def bounded_state(model) -> bool:
    """Whether the streaming state stays the same size however long the stream: every attention
    is windowed or segmented (full attention keeps every past token in its cache)."""
    return all(m.window or m.segment for m in model.modules() if isinstance(m, Attention))


def segment_length(model, requested: int | None, default: int = 512) -> int:
    """`requested` (checked against the model's alignment, E603), else `default` rounded down to it.

    `nlc eval` and `nlc compare` pass the run's training sequence length as the default: a frozen
    segment is then as long as what the model was trained to read from a fresh state, and a CMS
    level's `period N steps` lasts N segments of the length one training step read."""
    align = int(getattr(model, "alignment", 1))
    if requested is not None:
        check_streaming_length(model, requested, "--segment")
        return requested
    return max(align, default // align * align)


# ---- language modelling ----------------------------------------------------------------------

def eval_lm(model, corpus_task: LanguageModel, frozen: bool, device, tokens: int = 65536, rows: int = 8,
            segment: int | None = None, split: str = "test", learner: Learner | None = None,
            default_segment: int = 512) -> dict:
    """Loss on a split read as `rows` consecutive streams, in segments (of `default_segment` tokens,
    rounded to the model's alignment, unless `segment` is given)."""
    seg = segment_length(model, segment, default_segment)
    buf = corpus_task._buffer(split, seg)
    rows, per_row = stream_rows(min(len(buf) - 1, max(tokens, seg)), learner.batch if learner else rows, seg,
                                fixed=learner is not None, what=f"the {split} split of `{corpus_task.corpus.name}`")
    idx = torch.arange(rows)[:, None] * per_row + torch.arange(per_row + 1)[None, :]
    data = buf[idx].long().to(device)
    learner = learner or Learner(model, frozen, rows, device)
    loss_sum, count = 0.0, 0
    for s in range(0, per_row, seg):
        x, y = data[:, s:min(s + seg, per_row)], data[:, s + 1:min(s + seg, per_row) + 1]
        losses, _ = learner.segment(x, y)
        loss_sum += float(losses.sum())
        count += losses.numel()
    loss = loss_sum / max(1, count)
    return {"loss": loss, "bpb": bits_per_byte(loss), "ppl": math.exp(min(loss, 50.0)), "tokens": count,
            "segment": seg, "rows": rows, "step_level_updates": learner.updates, "carried_state": learner.carry}


def stream_rows(total: int, rows: int, seg: int, fixed: bool = False, what: str = "the text") -> tuple[int, int]:
    """(rows, tokens a row) to read `total` tokens as parallel streams of whole segments (a carried
    state stays aligned), every token read at most once: fewer rows when the text is short, since a
    row that wrapped around would read text another row has read (and a carried state would have seen).
    `fixed`: the rows are a carried state's batch and cannot shrink (E612 when the text is too short)."""
    fit = total // seg
    if fixed and fit < rows:
        raise train_error("E612", f"{what}: {total} tokens to read, too few for {rows} streams of one "
                          f"{seg}-token segment each", "pass more text (or --tokens), or a shorter --segment")
    rows = max(1, min(rows, fit))
    return rows, total // rows // seg * seg


# ---- synthetic tasks -------------------------------------------------------------------------

def _read_whole(model, tokens: torch.Tensor, seg: int) -> torch.Tensor:
    """Logits of whole sequences read in aligned segments with the state carried (and its graph: a backward
    pass from the last segment reaches the first, as it would reading the sequence whole)."""
    state = model.init_state(tokens.shape[0])
    outs = []
    for s in range(0, tokens.shape[1], seg):
        logits, state = model(tokens[:, s:s + seg], state=state, detach_state=False)
        outs.append(logits)
    return torch.cat(outs, 1)


def _score(model, batch, learner: Learner | None, seg: int) -> tuple[int, int, int, int, bool]:
    if learner is not None and learner.levels is not None:
        # the scores are taken from this forward pass, before the update its gradients feed; the update
        # learns from the loss training took (the task's loss mask: answers only on MQAR), not from every token
        with torch.enable_grad():
            lg = _read_whole(model, batch.tokens, seg)
            masked_loss(lg, batch).backward()
        logits = lg.detach()
        learner.levels.accumulate()
        if learner.levels.step():
            learner.updates += 1
    else:
        with torch.no_grad():
            logits = _read_whole(model, batch.tokens, seg)
    finite = bool(torch.isfinite(logits).all())
    r, t, w, s = accuracy_counts(logits, batch)
    return r, t, w, s, finite


def eval_accuracy(model, task: Task, frozen: bool, device, batches: int, batch: int, seq: int,
                  segment: int | None = None, **example_kw) -> dict:
    seg = segment_length(model, segment, default=max(seq, 512))
    learner = Learner(model, frozen, batch, device)
    right = total = whole = seqs = 0
    finite = True
    for i in range(batches):
        if example_kw:
            rng = np.random.default_rng(seed_for(EVAL_SEED, task.name, "test", i, tuple(sorted(example_kw.items()))))

            ex = [task.example(rng, seq + 1, **example_kw) for _ in range(batch)]
            b = _batch_from([e[0] for e in ex], [e[1] for e in ex], task.loss_on).to(device)
        else:
            b = task.batch(i, batch, seq, EVAL_SEED, "test").to(device)
        r, t, w, s, f = _score(model, b, learner, seg)
        right, total, whole, seqs, finite = right + r, total + t, whole + w, seqs + s, finite and f
    return {"acc": right / max(1, total), "exact": whole / max(1, seqs), "answers": total,
            "finite": finite, "step_level_updates": learner.updates}


def eval_mqar(model, task: MQAR, frozen, device, batches, batch, seq, segment=None) -> dict:
    out = {"by_kv": {}}
    for kv in task.eval_counts(seq + 1):
        out["by_kv"][kv] = eval_accuracy(model, task, frozen, device, batches, batch, seq, segment, num_kv=kv)
    accs = [v["acc"] for v in out["by_kv"].values()]
    out["acc"] = sum(accs) / len(accs)
    return out


def eval_niah(model, task: NIAH, frozen, device, lengths, depths, samples: int, segment=None,
              variant: str | None = None) -> dict:
    """Exact-match accuracy of the answer for each (length, depth)."""
    variant = variant or task.eval_variant()
    seg = segment_length(model, segment)
    grid, digits, finite = [], [], True
    learner = Learner(model, frozen, samples, device)
    for L in lengths:
        row, drow = [], []
        for d in depths:
            rng = np.random.default_rng(seed_for(EVAL_SEED, "niah", variant, L, d))

            ex = [niah_example(rng, L + 1, d, variant, task.options["keys"], task.options["values"],
                               task.options["digits"]) for _ in range(samples)]
            b = _batch_from([e[0] for e in ex], [e[1] for e in ex], "answers").to(device)
            r, t, w, s, f = _score(model, b, learner, seg)
            finite = finite and f
            row.append(w / max(1, s))
            drow.append(r / max(1, t))
        grid.append(row)
        digits.append(drow)
    acc = float(np.mean(grid)) if grid else 0.0
    return {"variant": variant, "lengths": list(lengths), "depths": list(depths), "grid": grid, "acc": acc,
            "digit_grid": digits, "digit_acc": float(np.mean(digits)) if digits else 0.0,
            "samples": samples, "finite": finite, "segment": seg}


# ---- continual learning at test time --------------------------------------------------------

def eval_continual(model, task: Continual, frozen, device, tokens_per_domain: int = 16384, rows: int = 4,
                   test_batches: int = 2, seq: int = 256, segment: int | None = None,
                   default_segment: int = 512) -> dict:
    """Read each domain's validation text in turn (learning online unless frozen); after each domain
    (and once before the first) measure the loss on every domain's test text."""
    seg = segment_length(model, segment, default_segment)
    seq = seg  # test windows are one segment, read from the state the stream left
    learner = Learner(model, frozen, rows, device)
    names = [n for n, _ in task.domains]

    def measure() -> dict:
        out = {}
        for name, t in task.domains:
            loss_sum, count = 0.0, 0
            for i in range(test_batches):
                b = t.batch(i, rows, seq, EVAL_SEED, "test").to(device)
                state = learner.state if learner.carry else model.init_state(rows)
                with torch.no_grad():
                    logits, _ = model(b.tokens, state=state)
                loss_sum += float(F.cross_entropy(logits.float().transpose(1, 2), b.targets, reduction="sum"))
                count += b.targets.numel()
            out[name] = loss_sum / count
        return out

    before = measure()
    rows_after = []
    for name, t in task.domains:
        eval_lm(model, t, frozen, device, tokens_per_domain, rows, seg, split="val", learner=learner)
        rows_after.append(measure())
    summary = continual_summary(rows_after, names)
    summary["before"] = [before[n] for n in names]
    summary["step_level_updates"] = learner.updates
    summary["carried_state"] = learner.carry
    summary["segment"] = seg
    return summary


# ---- the command -----------------------------------------------------------------------------

def evaluate(path: str | Path, task: str | None = None, frozen: bool = False, device: str = "cpu",
             lengths=None, depths=None, samples: int = 4, batches: int = 8, tokens: int = 65536,
             segment: int | None = None, data=None, out: str | Path | None = None, plot: bool = True,
             seq: int | None = None, quiet: bool = False, params: dict | None = None) -> dict:
    """Evaluate a run's checkpoint on a task; write eval_TASK[_frozen][_NAME=VALUE...].json (and a plot)
    to `out`. `params` evaluates the trained weights with spec parameters changed (an ablation)."""
    params = dict(params or {})
    loaded = load_run(path, device, params)
    model, cfg = loaded.model, loaded.train
    task_text = task or loaded.config["task"]["name"]
    if task is None and loaded.config["task"].get("options"):
        opts = {k: v for k, v in loaded.config["task"]["options"].items() if k not in ("corpus",)}
        if opts:
            task_text += ":" + ",".join(f"{k}={v}" for k, v in opts.items())
    the_task = make_task(task_text, data if data is not None else (cfg.data or None))
    seq = seq or cfg.seq
    if not isinstance(the_task, NIAH):
        the_task.check(seq)
    dev = loaded.device
    out_dir = Path(out) if out is not None else ck.run_of(loaded.checkpoint.path) / "eval"
    stem = (f"eval_{the_task.name}" + ("_frozen" if frozen else "")
            + "".join(f"_{k}={v}" for k, v in sorted(params.items())))
    for suffix in (".json", ".png"):  # before the evaluation, which may take long
        ck.check_output(out_dir / f"{stem}{suffix}")
    result = {"run": str(ck.run_of(loaded.checkpoint.path)), "checkpoint": str(loaded.checkpoint.path),
              "step": loaded.checkpoint.step, "task": the_task.name, "frozen": frozen,
              "spec": loaded.config["spec"]["name"], "params": params}
    # text is read in segments of the run's training length unless --segment says otherwise
    if isinstance(the_task, LanguageModel):
        result.update(eval_lm(model, the_task, frozen, dev, tokens, segment=segment, default_segment=cfg.seq))
    elif isinstance(the_task, Continual):
        result.update(eval_continual(model, the_task, frozen, dev, tokens_per_domain=max(1024, tokens // 4),
                                     seq=seq, segment=segment, default_segment=cfg.seq))
    elif isinstance(the_task, NIAH):
        lengths = [parse_length(x) if isinstance(x, str) else int(x) for x in (lengths or ["1k", "4k", "16k"])]
        depths = list(depths if depths is not None else DEFAULT_DEPTHS)
        result.update(eval_niah(model, the_task, frozen, dev, lengths, depths, samples, segment))
    elif isinstance(the_task, MQAR):
        result.update(eval_mqar(model, the_task, frozen, dev, batches, cfg.batch, seq, segment))
    else:
        result.update(eval_accuracy(model, the_task, frozen, dev, batches, cfg.batch, seq, segment))
    atomic_write_text(out_dir / f"{stem}.json", dumps_json(result, indent=1) + "\n")
    result["files"] = [str(out_dir / f"{stem}.json")]
    if plot and isinstance(the_task, NIAH):
        png = out_dir / f"{stem}.png"
        plots.niah_heatmaps({result["spec"]: result}, png)
        result["files"].append(str(png))
    if plot and isinstance(the_task, Continual):
        png = out_dir / f"{stem}.png"
        plots.continual_matrices({result["spec"]: result}, png)
        result["files"].append(str(png))
    return result


def markdown_table(headers: list[str], rows: list[list]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def report(result: dict) -> str:
    """A short human-readable report of an evaluation."""
    mode = "frozen" if result["frozen"] else "online"
    changed = "".join(f", {k}={v}" for k, v in sorted(result.get("params", {}).items()))
    head = f"{result['spec']} on {result['task']} ({mode}{changed}, checkpoint step {result['step']})"
    t = result["task"]
    if t == "lm":
        body = markdown_table(["loss (nats/byte)", "bits/byte", "perplexity", "tokens", "step-level updates"],
                              [[result["loss"], result["bpb"], result["ppl"], result["tokens"],
                                result["step_level_updates"]]])
    elif t == "niah":
        body = markdown_table(["length \\ depth"] + [f"{d:g}" for d in result["depths"]],
                              [[L] + row for L, row in zip(result["lengths"], result["grid"])])
        body += (f"\n\nmean exact-match accuracy {result['acc']:.3f} ({result['variant']}, {result['samples']} a cell); "
                 f"answer digits right {result['digit_acc']:.3f} (chance 0.1)")
    elif t == "mqar":
        body = markdown_table(["key-value pairs", "accuracy", "exact"],
                              [[kv, v["acc"], v["exact"]] for kv, v in result["by_kv"].items()])
    elif t == "continual":
        names = result["names"]
        rows = [["before"] + result["before"]]
        rows += [[f"after {n}"] + r for n, r in zip(names, result["matrix"])]
        body = markdown_table(["loss on →"] + names, rows)
        body += (f"\n\nfinal average loss {result['final_avg_loss']:.3f}, average forgetting "
                 f"{result['avg_forgetting']:.3f} (step-level updates: {result['step_level_updates']}, "
                 f"state carried: {result['carried_state']})")
    else:
        body = markdown_table(["accuracy", "exact"], [[result["acc"], result["exact"]]])
    return head + "\n\n" + body
