"""`nlc train`: train a model spec on a task, with checkpoints, resume and clean stops.

    nlc train examples/hope.nl --task mqar --steps 500 --out runs/hope-mqar

What a run does, step by step (step s = 0, 1, ...):
  1. the batch of step s comes from (seed, s) alone (nlc.train.tasks), so a resumed run sees
     exactly the data an uninterrupted one would;
  2. forward, masked cross-entropy; a NaN or infinite loss (or gradient norm) stops the run
     with E630 naming the step and the last good checkpoint, and changes nothing on disk;
  3. backward; the main optimizer (AdamW, warm-up then cosine decay, gradient clipping) steps
     every slow parameter except those of CMS step levels, which add their gradients to a sum
     and step every `period` steps with their own rule (nlc.train.steplevels);
  4. with --stream, rows read the corpus consecutively and the streaming state (the online
     levels' memories, convolution and attention caches) is carried, detached, to the next step.
Checkpoints (nlc.train.checkpoint) hold everything step s+1 needs: parameters, optimizer
moments, step-level sums, streaming state. `--resume` loads the newest one and continues
bit-for-bit. Ctrl-C (or SIGTERM) finishes the current step, saves, and exits with code 130.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from nlc.errors import SpecError
from nlc.files import atomic_write_text
from nlc.runtime.state import detach_state
from nlc.train import checkpoint as ck
from nlc.train.errors import train_error
from nlc.train.steplevels import StepLevels
from nlc.train.tasks import Batch, Continual, LanguageModel, Task, make_task

EVAL_SEED = 1234  # evaluation batches are the same for every run and every seed


@dataclass
class TrainConfig:
    """What decides a run's trajectory (resuming must not change these) ..."""

    task: str = "lm"
    data: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    steps: int = 200
    batch: int = 8
    seq: int = 128
    lr: float = 3e-3
    warmup: int = -1  # -1: min(100, steps // 10)
    schedule: str = "cosine"
    weight_decay: float = 0.0
    clip: float = 1.0
    seed: int = 0
    stream: bool = False
    # ... and what does not
    device: str = "cpu"
    compile: bool = False
    eval_every: int = 0
    eval_batches: int = 4
    ckpt_every: int = 100
    keep: int = 3
    quiet: bool = False
    limits: dict = field(default_factory=dict)  # size limits (`max_params` ...: nlc.passes.size.SizeLimits)


TRAJECTORY = ("task", "data", "params", "steps", "batch", "seq", "lr", "warmup", "schedule", "weight_decay",
              "clip", "seed", "stream")
# these may change on --resume (after a divergence, or to train longer); the change is logged and the
# run is then no longer the same as an uninterrupted one
ADJUSTABLE = ("steps", "lr", "clip")


# ---- building ---------------------------------------------------------------------------------

def spec_identity(spec_text: str, spec_path: str, params: dict, limits: dict | None = None):
    """(program, canonical spec hash) of a spec text with parameter overrides (and size limits)."""
    import nlc
    from nlc.codegen import spec_hash

    prog = nlc.loads(spec_text, spec_path, **{**params, **(limits or {})})
    return prog, spec_hash(prog)


def read_spec(spec: str | Path) -> str:
    path = Path(spec)
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise train_error("E601", f"no such spec file: {path}", "check the path") from None
    except IsADirectoryError:
        raise train_error("E601", f"{path} is a folder, not a spec file") from None
    except OSError as e:
        raise train_error("E601", f"cannot read {path}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise train_error("E602", f"{path} is not UTF-8 text (byte {e.start})") from None


def build_model(spec_text: str, spec_path: str, params: dict, seed: int, device: str = "cpu",
                limits: dict | None = None):
    """The model of a spec, initialised from `seed`, on `device`; `limits`: the size limits to check it with."""
    import nlc

    prog, _ = spec_identity(spec_text, spec_path, params, limits)
    torch.manual_seed(seed)
    model = nlc.build(prog, **{**params, **(limits or {})})
    return model.to(resolve_device(device))


def resolve_device(device: str) -> torch.device:
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError):
        raise train_error("E631", f"unknown device `{device}`", "use cpu or cuda (cuda:N)") from None
    if d.type == "cuda" and not torch.cuda.is_available():
        raise train_error("E631", f"device `{device}` is not available: this torch sees no CUDA GPU",
                          "use --device cpu, or install a CUDA build of torch on a machine with a GPU")
    if d.type == "cuda" and d.index is not None and d.index >= torch.cuda.device_count():
        raise train_error("E631", f"device `{device}` does not exist ({torch.cuda.device_count()} GPUs)")
    return d


def count_parameters(model: torch.nn.Module) -> dict:
    steps = StepLevels(model)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    step = sum(model.get_parameter(n).numel() for n in steps.owned)
    return {"total": total, "trainable": trainable, "step_levels": step}


def masked_loss(logits: torch.Tensor, batch: Batch) -> torch.Tensor:
    m = batch.loss_mask
    return F.cross_entropy(logits[m].float(), batch.targets[m])


def state_to(state, device):
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, dict):
        return {k: state_to(v, device) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(state_to(v, device) for v in state)
    return state


def check_streaming_length(model, seq: int, what: str = "--seq") -> None:
    align = int(getattr(model, "alignment", 1))
    if seq % align:
        lo = max(align, seq // align * align)
        raise train_error("E603", f"{what} {seq} is not a multiple of the model's alignment ({align} tokens): "
                          "streaming pieces must start at a chunk boundary",
                          f"use {what} {lo} or {lo + align}")


def lr_at(cfg: TrainConfig, step: int) -> float:
    warm = cfg.warmup if cfg.warmup >= 0 else min(100, cfg.steps // 10)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "constant":
        return cfg.lr
    progress = (step - warm) / max(1, cfg.steps - warm)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ---- evaluation inside training ----------------------------------------------------------------

@torch.no_grad()
def quick_eval(model, task: Task, cfg: TrainConfig, device, split: str = "val") -> dict:
    """Loss and accuracy on fixed batches of a split (fresh state per batch)."""
    from nlc.train.tasks import accuracy_counts, bits_per_byte

    tot_loss, tot_tok, right, total, whole, seqs = 0.0, 0, 0, 0, 0, 0
    for i in range(cfg.eval_batches):
        b = task.batch(i, cfg.batch, cfg.seq, EVAL_SEED, split).to(device)
        logits = model(b.tokens)
        m = b.loss_mask
        tot_loss += float(F.cross_entropy(logits[m].float(), b.targets[m], reduction="sum"))
        tot_tok += int(m.sum())
        r, t, w, s = accuracy_counts(logits, b)
        right, total, whole, seqs = right + r, total + t, whole + w, seqs + s
    loss = tot_loss / max(1, tot_tok)
    out = {"loss": loss, "bpb": bits_per_byte(loss), "acc": right / max(1, total)}
    if task.metric == "accuracy":
        out["exact"] = whole / max(1, seqs)
    return out


def continual_row(model, task: Continual, cfg: TrainConfig, device) -> dict:
    """Validation loss on every domain (the row of the continual-learning matrix)."""
    return {name: quick_eval(model, t, cfg, device)["loss"] for name, t in task.domains}


def continual_summary(rows: list[dict], names: list[str]) -> dict:
    """Average final loss and forgetting from rows R[i][j] (loss on domain j after domain i).

    forgetting_j = R[last][j] - min_{i<last} R[i][j] for every domain but the last (>= 0 is worse).
    """
    if not rows:
        return {}
    last = rows[-1]
    avg = sum(last[n] for n in names) / len(names)
    forget = {}
    for j, n in enumerate(names[:-1]):
        earlier = [rows[i][n] for i in range(j, len(rows) - 1)]
        if earlier:
            forget[n] = last[n] - min(earlier)
    return {"names": names, "matrix": [[r[n] for n in names] for r in rows], "final_avg_loss": avg,
            "forgetting": forget,
            "avg_forgetting": sum(forget.values()) / len(forget) if forget else 0.0}


# ---- the run ---------------------------------------------------------------------------------

class _Stop:
    """Ctrl-C / SIGTERM: the first one asks the loop to save and stop; the second stops at once."""

    def __init__(self):
        self.requested = False
        self.previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        from tqdm import tqdm

        tqdm.write("stopping: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)")

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


def _read_config(out: Path) -> dict:
    try:
        return json.loads((out / "config.json").read_text("utf-8"))
    except FileNotFoundError:
        raise train_error("E620", f"{out} holds no run to resume (no config.json)",
                          "start it without --resume") from None
    except (OSError, ValueError) as e:
        raise train_error("E621", f"{out}/config.json cannot be read: {e}") from None


def read_metrics(run: Path) -> list[dict]:
    """The records of metrics.jsonl (a half-written last line is skipped)."""
    out = []
    try:
        lines = (Path(run) / "metrics.jsonl").read_text("utf-8").splitlines()
    except FileNotFoundError:
        return out
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def train_curve(run: Path) -> list[tuple[int, float]]:
    """(step, loss) of a run, the last record of each step winning (a resumed run rewrites some)."""
    by_step = {}
    for r in read_metrics(run):
        if "loss" in r and "eval" not in r and "event" not in r:
            by_step[r["step"]] = r["loss"]
    return sorted(by_step.items())


def train(spec: str | Path, out: str | Path, resume: bool | str = False, **options) -> dict:
    """Train `spec` into run folder `out`; options are TrainConfig fields (None = default / stored).

    Returns a summary: {"run", "step", "loss", "val", "interrupted", "checkpoint", ...}.
    """
    out = Path(out)
    given = {k: v for k, v in options.items() if v is not None}
    unknown = set(given) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown training options: {sorted(unknown)}")
    spec_text = read_spec(spec)
    spec_path = str(spec)
    if resume:
        stored = _read_config(out)
        cfg = TrainConfig(**{k: v for k, v in stored["train"].items() if k in TrainConfig.__dataclass_fields__})
        changed = {}
        for k, v in given.items():
            if k == "data":
                v = [str(Path(p).resolve()) for p in v]
            if k in TRAJECTORY and _norm(v) != _norm(getattr(cfg, k)):
                if k not in ADJUSTABLE:
                    raise train_error("E622", f"run {out} was started with {k}={getattr(cfg, k)!r}, not {v!r}",
                                      "resume with the options the run started with (or leave them out)")
                changed[k] = [getattr(cfg, k), v]
            setattr(cfg, k, v)
    else:
        cfg = TrainConfig(**given)
        if (out / "config.json").exists() or ck.list_checkpoints(out):
            raise train_error("E623", f"{out} already holds a run",
                              "continue it with --resume, or pass another --out folder (nothing was changed)")
    cfg.data = [str(Path(p).resolve()) for p in cfg.data]
    _check_config(cfg)
    prog, shash = spec_identity(spec_text, spec_path, cfg.params, cfg.limits)
    if resume and stored["spec"]["hash"] != shash:
        raise train_error("E622", f"{spec} is not the spec run {out} was started with "
                          f"(spec hash {shash[:12]}, the run's {stored['spec']['hash'][:12]})",
                          f"resume with the original spec (its text is in {out}/config.json), "
                          "or start a new --out folder")
    task = make_task(cfg.task, cfg.data or None)
    if isinstance(task, Continual):
        task.schedule(cfg.steps)
    if cfg.stream and not isinstance(task, LanguageModel):
        raise train_error("E633", f"--stream reads a corpus consecutively; task `{task.name}` is not `lm`",
                          "leave --stream out, or use --task lm")
    task.check(cfg.seq)
    device = resolve_device(cfg.device)
    model = build_model(spec_text, spec_path, cfg.params, cfg.seed, cfg.device, cfg.limits)
    if cfg.stream:
        check_streaming_length(model, cfg.seq)
    levels = StepLevels(model)
    main_params = [p for n, p in model.named_parameters() if p.requires_grad and not levels.owns(n)]
    opt = torch.optim.AdamW(main_params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    data_fp = _data_fingerprint(task)
    if resume:
        if stored.get("data_fingerprint") != data_fp:
            raise train_error("E622", f"the data of run {out} changed since it started "
                              f"({stored.get('data_fingerprint')} then, {data_fp} now)",
                              "resume with the same data, or start a new --out folder")
        where = out if resume is True else Path(resume)
        if resume is not True and ck.run_of(where).resolve() != out.resolve():
            raise train_error("E622", f"checkpoint {where} is not a checkpoint of run {out}")
        if changed or cfg.limits != stored["train"].get("limits", {}):  # new limits: `nlc eval` must see them
            stored["train"] = asdict(cfg)
            atomic_write_text(out / "config.json", json.dumps(stored, indent=1) + "\n")
        if resume is True and not ck.list_checkpoints(out):
            # stopped before its first checkpoint: start again from step 0 (same seed, same data)
            ckpt, start = None, 0
            state = model.init_state(cfg.batch) if cfg.stream else None
        else:
            ckpt = ck.load_checkpoint(where, shash)
            ck.load_model_tensors(model, ckpt.model, ckpt.path)
            _load_trainer(opt, levels, ckpt)
            start = ckpt.step
            state = state_to(ckpt.stream_state, device) if cfg.stream else None
            if cfg.stream and state is None:
                state = model.init_state(cfg.batch)
    else:
        start = 0
        state = model.init_state(cfg.batch) if cfg.stream else None
        config = {"nlc": _version(), "torch": torch.__version__,
                  "spec": {"path": spec_path, "name": prog.name, "hash": shash, "text": spec_text},
                  "task": task.describe(), "train": asdict(cfg), "data_fingerprint": data_fp,
                  "parameters": count_parameters(model), "alignment": int(getattr(model, "alignment", 1)),
                  "step_levels": {k: asdict(v) for k, v in (getattr(model, "step_levels", {}) or {}).items()},
                  "online_levels": list(getattr(model, "online_levels", []) or [])}
        atomic_write_text(out / "config.json", json.dumps(config, indent=1) + "\n")
    if cfg.compile:  # each block's chunk step under torch.compile: compile time independent of the length
        from nlc.runtime.compile import compile_chunks

        compile_chunks(model)
    return _run(cfg, out, model, task, opt, levels, main_params, start, state, device, shash, prog.name,
                ckpt.path if resume and ckpt is not None else None, changed if resume else {})


def _norm(v):
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else v


def _version() -> str:
    from nlc import __version__

    return __version__


def _check_config(cfg: TrainConfig) -> None:
    for k in ("steps", "batch", "seq"):
        if int(getattr(cfg, k)) < 1:
            raise train_error("E633", f"--{k} must be at least 1, not {getattr(cfg, k)}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise train_error("E633", f"--lr must be a positive number, not {cfg.lr}")
    if cfg.schedule not in ("cosine", "constant"):
        raise train_error("E633", f"unknown schedule `{cfg.schedule}`", "use cosine or constant")


def _data_fingerprint(task: Task) -> str | None:
    if isinstance(task, LanguageModel):
        return task.corpus.fingerprint()
    if isinstance(task, Continual):
        return "+".join(t.corpus.fingerprint() for _, t in task.domains)
    return None


def _trainer_state(opt, levels: StepLevels) -> tuple[dict, dict]:
    sd = opt.state_dict()
    tensors, values = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                values[f"{pid}.{k}"] = v
    tensors.update(levels.state_tensors())
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"param_groups": sd["param_groups"], "optim_values": values, "step_level_count": levels.count}
    return tensors, meta


def _load_trainer(opt, levels: StepLevels, ckpt: ck.Checkpoint) -> None:
    state: dict = {}
    for key, v in ckpt.trainer.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    for key, v in ckpt.trainer_meta.get("optim_values", {}).items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = v
    try:
        opt.load_state_dict({"state": state, "param_groups": ckpt.trainer_meta["param_groups"]})
        levels.load_state_tensors(ckpt.trainer, int(ckpt.trainer_meta.get("step_level_count", 0)))
    except (KeyError, ValueError, RuntimeError) as e:
        raise train_error("E622", f"the optimizer state of {ckpt.path} does not fit this model: {e}",
                          "it was written by a run of another spec or configuration") from None
    if "rng.torch" in ckpt.trainer:
        torch.set_rng_state(ckpt.trainer["rng.torch"])


def _run(cfg, out, model, task, opt, levels, main_params, start, state, device, shash, name,
         last_ckpt, changed) -> dict:
    from tqdm import tqdm

    metrics_path = out / "metrics.jsonl"
    _terminate_last_line(metrics_path)
    metrics = open(metrics_path, "a", encoding="utf-8")

    def log(record: dict) -> None:
        metrics.write(json.dumps(record) + "\n")
        metrics.flush()

    saved_step = start if last_ckpt is not None else None

    def save(step: int) -> Path:
        nonlocal last_ckpt, saved_step
        tensors, meta = _trainer_state(opt, levels)
        last_ckpt = ck.save_checkpoint(out, step, shash, model.state_dict(), tensors, meta,
                                       state if cfg.stream else None, cfg.keep)
        saved_step = step
        log({"step": step, "event": "checkpoint", "path": str(last_ckpt)})
        return last_ckpt

    log({"step": start, "event": "resume" if last_ckpt is not None else "start", "time": time.time(),
         **({"changed": changed} if changed else {})})
    tokens_per_step = cfg.batch * cfg.seq
    phase_ends = set(task.phase_ends()) if isinstance(task, Continual) else set()
    bar = tqdm(total=cfg.steps, initial=start, disable=cfg.quiet, unit="step", dynamic_ncols=True,
               desc=f"{name} {task.name}")
    interrupted, loss_value, rate, done = False, float("nan"), 0.0, start
    t_start = time.perf_counter()
    try:
        with _Stop() as stop:
            for step in range(start, cfg.steps):
                t0 = time.perf_counter()
                for group in opt.param_groups:
                    group["lr"] = lr_at(cfg, step)
                if cfg.stream:
                    batch = task.stream_batch(step, cfg.batch, cfg.seq, cfg.seed).to(device)
                    logits, new_state = model(batch.tokens, state=state)
                else:
                    batch = task.batch(step, cfg.batch, cfg.seq, cfg.seed).to(device)
                    logits = model(batch.tokens)
                loss = masked_loss(logits, batch)
                loss_value = float(loss.detach())
                if not math.isfinite(loss_value):
                    _diverged(log, out, step + 1, "loss", loss_value, last_ckpt)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = float(torch.nn.utils.clip_grad_norm_(main_params, cfg.clip)) if main_params else 0.0
                if not math.isfinite(gnorm):
                    _diverged(log, out, step + 1, "gradient norm", gnorm, last_ckpt)
                opt.step()
                levels.accumulate()
                moved = levels.step()
                if cfg.stream:
                    state = detach_state(new_state)
                dt = time.perf_counter() - t0
                rate = tokens_per_step / dt if dt > 0 else 0.0
                record = {"step": step + 1, "loss": loss_value, "lr": opt.param_groups[0]["lr"] if opt.param_groups
                          else 0.0, "grad_norm": gnorm, "tokens": (step + 1) * tokens_per_step, "tok_s": rate,
                          "time": time.perf_counter() - t_start}
                if moved:
                    record["step_levels"] = moved
                log(record)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=f"{rate:,.0f}")
                done = step + 1
                if cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
                    log({"step": done, "eval": "val", **quick_eval(model, task, cfg, device)})
                if step in phase_ends:
                    i = task.domain_of(step)
                    log({"step": done, "continual": {"after": i, "domain": task.domains[i][0],
                                                     "losses": continual_row(model, task, cfg, device)}})
                if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done != cfg.steps:
                    save(done)
                if stop.requested:
                    interrupted = True
                    break
    except KeyboardInterrupt:  # a second Ctrl-C: stop without saving (the last checkpoint stays whole)
        bar.close()
        metrics.close()
        raise
    bar.close()
    if saved_step != done:
        save(done)
    summary = {"run": str(out), "spec": name, "task": task.name, "step": done, "loss": loss_value,
               "tok_s": rate, "checkpoint": str(last_ckpt), "interrupted": interrupted}
    if interrupted:
        log({"step": done, "event": "interrupted"})
    else:
        summary["val"] = quick_eval(model, task, cfg, device)
        log({"step": done, "eval": "val", **summary["val"]})
        if isinstance(task, Continual):
            rows = continual_rows(out)
            summary["continual"] = continual_summary(rows, [n for n, _ in task.domains])
            atomic_write_text(out / "continual.json", json.dumps(summary["continual"], indent=1) + "\n")
        summary["time_s"] = time.perf_counter() - t_start
        log({"step": done, "event": "done"})
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    metrics.close()
    return summary


def continual_rows(run: Path) -> list[dict]:
    rows = {}
    for r in read_metrics(run):
        if "continual" in r:
            rows[r["continual"]["after"]] = r["continual"]["losses"]
    return [rows[i] for i in sorted(rows)]


def _terminate_last_line(path: Path) -> None:
    """After a crash mid-line, start the next record on a line of its own."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() == 0:
                return
            f.seek(-1, 2)
            last = f.read(1)
    except FileNotFoundError:
        return
    if last != b"\n":
        with open(path, "ab") as f:
            f.write(b"\n")


def _diverged(log, out: Path, step: int, what: str, value: float, last_ckpt: Path | None):
    log({"step": step, "event": "nonfinite", "what": what, "value": str(value)})
    where = (f"the last good checkpoint is {last_ckpt}" if last_ckpt is not None
             else "no checkpoint was written before it")
    raise train_error("E630", f"the {what} is {value} at step {step} of run {out}; the run stopped there "
                      f"and {where}",
                      "lower --lr (or --clip), then resume from that checkpoint with --resume, "
                      "or start again in a new --out folder")


__all__ = ["TrainConfig", "train", "build_model", "count_parameters", "read_metrics", "train_curve",
           "quick_eval", "continual_summary", "SpecError"]
