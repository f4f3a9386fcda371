"""`nlc train`: train a model spec on a task, with checkpoints, resume and clean stops.

    nlc train examples/hope.nl --task mqar --steps 500 --out runs/hope-mqar

What a run does, step by step (step s = 0, 1, ...):
  1. the batch of step s comes from (seed, s) alone (nlc.train.tasks), so a resumed run sees
     exactly the data an uninterrupted one would;
  2. forward, masked cross-entropy; a NaN or infinite loss (or gradient norm) stops the run
     with E630 naming the step and the newest checkpoint that is safe to go back to (see
     BLOWUP), and changes nothing on disk;
  3. backward; the main optimizer (AdamW or an optimizer spec, --optimizer: nlc.train.outer;
     warm-up then cosine decay, gradient clipping) steps
     every slow parameter except those of CMS step levels, which add their gradients to a sum
     and step every `period` steps with their own rule (nlc.train.steplevels);
  4. with --stream, rows read the corpus consecutively and the streaming state (the online
     levels' memories, convolution and attention caches) is carried, detached, to the next step.
Checkpoints (nlc.train.checkpoint) hold everything step s+1 needs: parameters, optimizer
moments, step-level sums, streaming state. `--resume` loads the newest one and continues
bit-for-bit; a run stopped (or killed) before its first checkpoint was whole starts again from
step 0 with the options in its config.json, which gives the same run. Ctrl-C (or SIGTERM)
finishes the current step, saves, and exits with code 130.

config.json and the checkpoints are read as untrusted: config.json must be a run record
(E626), whose spec text and parameters still give the spec hash it records (E622 naming
config.json otherwise), and a checkpoint's trainer state must fit the model (E622).
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
from tqdm import tqdm

import nlc
from nlc.api import read_spec
from nlc.codegen import spec_hash
from nlc.errors import SpecError
from nlc.files import NotARegularFile, atomic_write_text, dumps_json, read_regular_bytes
from nlc.runtime.compile import SECOND_ORDER, SECOND_ORDER_HINT, compile_chunks
from nlc.runtime.state import layout_difference, map_tensors, state_layout
from nlc.train import checkpoint as ck
from nlc.train import dist
from nlc.train import fsdp
from nlc.train import outer
from nlc.train.identity import spec_identity
from nlc.train.data import resolve_data_path
from nlc.train.errors import train_error
from nlc.train.steplevels import StepLevels
from nlc.train.tasks import Batch, Continual, LanguageModel, Task, accuracy_counts, bits_per_byte, make_task
from nlc.version import __version__

EVAL_SEED = 1234  # evaluation batches are the same for every run and every seed
BLOWUP = ck.BLOWUP  # when a checkpoint is a safe point to go back to (nlc.train.checkpoint.is_safe_point)


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
    init_from: str = ""  # a run or checkpoint whose model weights this run starts from (a warm start)
    # ... and what does not
    device: str = "cpu"
    compile: bool = False
    chunks_per_graph: int = 1  # with compile: consecutive chunks a compiled graph (nlc.build)
    eval_every: int = 0
    eval_batches: int = 4
    ckpt_every: int = 100
    keep: int = 3
    quiet: bool = False
    limits: dict = field(default_factory=dict)  # size limits (`max_params` ...: nlc.passes.size.SizeLimits)
    dist_timeout: float = dist.DEFAULT_TIMEOUT_S  # under torchrun: seconds a rank waits for the others (E642)
    fsdp: bool = False  # under torchrun: shard parameters, gradients and optimizer state (nlc.train.fsdp)


TRAJECTORY = ("task", "data", "params", "steps", "batch", "seq", "lr", "warmup", "schedule", "weight_decay",
              "clip", "seed", "stream")
# these may change on --resume (after a divergence, or to train longer); the change is logged and the
# run is then no longer the same as an uninterrupted one
ADJUSTABLE = ("steps", "lr", "clip")


# ---- building ---------------------------------------------------------------------------------

def build_model(spec_text: str, spec_path: str, params: dict, seed: int, device: str = "cpu",
                limits: dict | None = None):
    """The model of a spec, initialised from `seed`, on `device`; `limits`: the size limits to check it with."""
    prog, _ = spec_identity(spec_text, spec_path, params, limits)
    torch.manual_seed(seed)
    model = nlc.build(prog, **{**params, **(limits or {})})
    return model.to(resolve_device(device))


def read_run_checkpoint(source: str | Path, missing: str) -> tuple[dict, ck.Checkpoint]:
    """The config.json and the verified checkpoint of a run folder (its newest checkpoint) or of a
    checkpoint folder. The config must be a run record whose spec text and parameters still give its
    spec hash (E626 / E622), so an edited one is refused; `missing`: the hint when it has none."""
    path = ck.find_checkpoint(source)
    run = ck.run_of(path)
    ck.check_run_folder(run)
    config = read_run_config(run, missing=missing)
    check_config_spec(config, run)
    return config, ck.load_checkpoint(path, config["spec"]["hash"])


def warm_start(model: torch.nn.Module, source: str) -> dict:
    """Load the model weights of run or checkpoint `source` into `model` (`--init-from`): a new run that
    starts where another stopped, with a fresh optimizer and schedule (a curriculum: short sequences
    first). The tensors must fit (E622); the specs may differ in anything that keeps their shapes.
    Returns what config.json records of it."""
    config, ckpt = read_run_checkpoint(source, "--init-from reads a checkpoint with the config.json of its run folder")
    ck.load_model_tensors(model, _placed(ckpt.model, model.state_dict()), ckpt.path)
    return {"checkpoint": str(ckpt.path), "step": ckpt.step, "spec_hash": config["spec"]["hash"]}


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


def masked_loss(logits: torch.Tensor, batch: Batch, reduction: str = "mean") -> torch.Tensor:
    m = batch.loss_mask
    return F.cross_entropy(_for_loss(logits[m]), batch.targets[m], reduction=reduction)


def _for_loss(logits: torch.Tensor) -> torch.Tensor:
    """Logits in the precision the loss is taken in: float32, or float64 for a float64 model."""
    return logits if logits.dtype == torch.float64 else logits.float()


def state_to(state, device):
    return map_tensors(lambda t: t.to(device), state)


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
def quick_eval(model, task: Task, cfg: TrainConfig, device, split: str = "val",
               world: dist.World | None = None) -> dict:
    """Loss and accuracy on fixed batches of a split (fresh state per batch); under torchrun each rank
    evaluates every world.size-th batch and the sums are all-reduced (every rank gets the result)."""
    world = world or dist.World()
    tot_loss, tot_tok, right, total, whole, seqs = 0.0, 0, 0, 0, 0, 0
    for i in range(world.rank, cfg.eval_batches, world.size):
        b = task.batch(i, cfg.batch, cfg.seq, EVAL_SEED, split).to(device)
        logits = model(b.tokens)
        m = b.loss_mask
        tot_loss += float(F.cross_entropy(logits[m].float(), b.targets[m], reduction="sum"))
        tot_tok += int(m.sum())
        r, t, w, s = accuracy_counts(logits, b)
        right, total, whole, seqs = right + r, total + t, whole + w, seqs + s
    tot_loss, tot_tok, right, total, whole, seqs = world.sum_values([tot_loss, tot_tok, right, total, whole, seqs])
    loss = tot_loss / max(1, tot_tok)
    out = {"loss": loss, "bpb": bits_per_byte(loss), "acc": right / max(1, total)}
    if task.metric == "accuracy":
        out["exact"] = whole / max(1, seqs)
    return out


def continual_row(model, task: Continual, cfg: TrainConfig, device, world: dist.World | None = None) -> dict:
    """Validation loss on every domain (the row of the continual-learning matrix)."""
    return {name: quick_eval(model, t, cfg, device, world=world)["loss"] for name, t in task.domains}


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
        tqdm.write("stopping: finishing this step and saving a checkpoint (Ctrl-C again to stop at once)")

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


# what a run's config.json must hold, checked before anything is built from it
_NUMBER = (int, float)
TRAIN_TYPES = {"task": str, "data": list, "params": dict, "steps": int, "batch": int, "seq": int,
               "lr": _NUMBER, "warmup": int, "schedule": str, "weight_decay": _NUMBER, "clip": _NUMBER,
               "seed": int, "stream": bool, "device": str, "compile": bool, "chunks_per_graph": int, "eval_every": int,
               "eval_batches": int, "ckpt_every": int, "keep": int, "quiet": bool, "dist_timeout": _NUMBER,
               "fsdp": bool, "init_from": str}
SPEC_TYPES = {"text": str, "path": str, "name": str, "hash": str}
EDITED = "config.json must stay as `nlc train` wrote it: put it back, or start the run again in a new --out folder"


def _type_problem(value, types) -> str | None:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:
        return "true/false"
    if isinstance(value, types):
        return None
    return "missing" if value is None else f"a {type(value).__name__}"


def _config_problem(config) -> str | None:
    """What makes `config` not a run record (None when it is one)."""
    if not isinstance(config, dict):
        return "it is not a JSON object"
    for key, types in (("spec", dict), ("train", dict), ("task", dict)):
        if not isinstance(config.get(key), types):
            return f"`{key}` is {_type_problem(config.get(key), types)}, not an object"
    for key, types in SPEC_TYPES.items():
        if (wrong := _type_problem(config["spec"].get(key), types)) is not None:
            return f"`spec.{key}` is {wrong}, not a {types.__name__}"
    train = config["train"]
    for key, types in TRAIN_TYPES.items():
        if key not in train and key not in TRAJECTORY:
            continue  # a setting that does not shape the run: its default will do
        if (wrong := _type_problem(train.get(key), types)) is not None:
            return f"`train.{key}` is {wrong}, not {_type_name(types)}"
    if not all(isinstance(x, str) for x in train["data"]):
        return "`train.data` is not a list of paths"
    for name, value in train["params"].items():
        if _type_problem(value, (int, float, bool)) is not None or not name.isidentifier():
            return f"`train.params` has {name}={value!r}, not NAME=number"
    if not isinstance(config["task"].get("name"), str) or not isinstance(config["task"].get("options", {}), dict):
        return "`task` is not {name: a string, options: an object}"
    if not isinstance(config.get("data_fingerprint"), (str, type(None))):
        return "`data_fingerprint` is not a string"
    return None


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {int: "a whole number", float: "a number", str: "a string", bool: "true/false", list: "a list",
             dict: "an object"}
    return "a number" if float in types else names[types[0]]


def read_run_config(run: Path, missing: str = "it is not an nlc run folder") -> dict:
    """A run's config.json, checked to be a run record: E620 when there is none (hint `missing`),
    E625 when it is not a file, E626 when it is not JSON or has keys missing or of the wrong type."""
    path = Path(run) / "config.json"
    try:
        raw = read_regular_bytes(path)
    except FileNotFoundError:
        raise train_error("E620", f"{run} holds no run (no config.json)", missing) from None
    except NotARegularFile as e:
        raise train_error("E625", f"{path} is {e.kind}, not a file", EDITED) from None
    except OSError as e:
        raise train_error("E626", f"{path} cannot be read: {e.strerror or e}") from None
    try:
        config = json.loads(raw, parse_constant=_not_json)
    except (ValueError, RecursionError) as e:
        raise train_error("E626", f"{path} is not a run record: it is not JSON ({e})", EDITED) from None
    problem = _config_problem(config)
    if problem:
        raise train_error("E626", f"{path} is not a run record: {problem}", EDITED)
    return config


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


def check_config_spec(config: dict, run: Path):
    """The program of a run's config.json; E622 naming config.json when its spec text, parameters
    or name no longer give the spec hash it records (it was edited)."""
    spec, path = config["spec"], Path(run) / "config.json"
    try:
        prog, shash = spec_identity(spec["text"], spec["path"], config["train"]["params"])
    except SpecError as e:
        d = e.diagnostics[0]
        raise train_error("E622", f"{path} was edited: its spec text and parameters no longer compile "
                          f"({d.code}: {d.message})", EDITED) from None
    if shash != spec["hash"]:
        if spec_hash(prog) == spec["hash"]:  # the hash of an nlc from before it covered the parameters
            raise train_error("E622", f"{path} records a spec hash without its parameters (written by an "
                              "older nlc): the parameters it holds cannot be checked",
                              "start the run again in a new --out folder")
        raise train_error("E622", f"{path} was edited: its spec text and parameters give spec hash "
                          f"{shash[:12]}, not the {spec['hash'][:12]} it records", EDITED)
    if prog.name != spec["name"]:
        raise train_error("E622", f"{path} was edited: its spec is `{prog.name}`, not `{spec['name']}` "
                          "as it records", EDITED)
    return prog


def stored_config(config: dict) -> TrainConfig:
    """The TrainConfig of a (checked) run record."""
    return TrainConfig(**{k: v for k, v in config["train"].items() if k in TrainConfig.__dataclass_fields__})


def read_metrics(run: Path) -> list[dict]:
    """The records of metrics.jsonl (a half-written last line, or any line that is not a record, is skipped)."""
    out = []
    try:
        lines = read_regular_bytes(Path(run) / "metrics.jsonl").decode("utf-8", errors="replace").splitlines()
    except OSError:  # none yet (or not a file: check_run_folder reports that)
        return out
    for line in lines:
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            out.append(record)
    return out


def train_curve(run: Path) -> list[tuple[int, float]]:
    """(step, loss) of a run, the last record of each step winning (a resumed run rewrites some)."""
    by_step = {}
    for r in read_metrics(run):
        if "loss" in r and "eval" not in r and "event" not in r:
            by_step[r["step"]] = r["loss"] if r["loss"] is not None else float("nan")
    return sorted(by_step.items())


def train(spec: str | Path, out: str | Path, resume: bool | str = False, optimizer: str | Path | None = None,
          optimizer_params: dict | None = None, **options) -> dict:
    """Train `spec` into run folder `out`; options are TrainConfig fields (None = default / stored).

    `optimizer`: an optimizer spec's path (None: AdamW, or on --resume the run's own), with
    hyper-parameter overrides `optimizer_params` (nlc.train.outer).
    Returns a summary: {"run", "step", "loss", "val", "interrupted", "checkpoint", ...}.
    """
    out = Path(out)
    given = {k: v for k, v in options.items() if v is not None}
    if given.get("init_from"):  # stored resolved: a resume from another directory names the same run
        given["init_from"] = str(Path(given["init_from"]).resolve())
    unknown = set(given) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise TypeError(f"unknown training options: {sorted(unknown)}")
    spec_text = read_spec(spec)
    spec_path = str(spec)
    ck.check_run_folder(out)
    if resume:
        stored = read_run_config(out, missing="start it without --resume")
        check_config_spec(stored, out)
        ospec = _resumed_optimizer(stored, out, optimizer, optimizer_params or {}, given)
        cfg = stored_config(stored)
        changed = {}
        for k, v in given.items():
            if k == "data":
                v = [resolve_data_path(p) for p in v]
            if (k in TRAJECTORY or k == "init_from") and _norm(v) != _norm(getattr(cfg, k)):
                if k not in ADJUSTABLE:
                    raise train_error("E622", f"run {out} was started with {k}={getattr(cfg, k)!r}, not {v!r}",
                                      "resume with the options the run started with (or leave them out)")
                changed[k] = [getattr(cfg, k), v]
            setattr(cfg, k, v)
        cfg.fsdp = bool(given.get("fsdp"))  # how this start of the run shards, not how an earlier one did
    else:
        ospec = _new_optimizer(optimizer, optimizer_params or {}, given)
        cfg = TrainConfig(**given)
        if (out / "config.json").exists() or ck.list_checkpoints(out):
            raise train_error("E623", f"{out} already holds a run",
                              "continue it with --resume, or pass another --out folder (nothing was changed)")
    cfg.data = [resolve_data_path(p) for p in cfg.data]
    _check_config(cfg)
    world, device_name = dist.join(cfg.device, cfg.dist_timeout)
    try:
        plan = _prepare(world, device_name, cfg, spec, spec_text, spec_path, out, resume, ospec,
                        stored if resume else None, changed if resume else {})
        return _run(plan)
    finally:
        world.close()


def _prepare(world: dist.World, device_name: str, cfg: TrainConfig, spec, spec_text: str, spec_path: str,
             out: Path, resume, ospec, stored: dict | None, changed: dict) -> RunPlan:
    """Build what the run needs (on every rank); rank 0 writes config.json once every rank got this far."""
    try:
        return _prepare_rank(world, device_name, cfg, spec, spec_text, spec_path, out, resume, ospec, stored,
                             changed)
    except SpecError:
        world.agree(False)  # the others stop at their own agreement (E642) rather than wait for this rank
        raise


def _prepare_rank(world, device_name, cfg, spec, spec_text, spec_path, out, resume, ospec, stored, changed):
    if cfg.batch % world.size:
        lo = max(world.size, cfg.batch // world.size * world.size)
        raise train_error("E641", f"--batch {cfg.batch} does not split over {world.size} processes: each takes "
                          "the same number of rows of every step's batch",
                          f"use --batch {lo} or {lo + world.size} (the global batch), or another process count")
    rows = cfg.batch // world.size
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
    device = resolve_device(device_name)
    model = build_model(spec_text, spec_path, cfg.params, cfg.seed, device_name, cfg.limits)
    if cfg.compile and getattr(model, "second_order", False):  # (compile_chunks would refuse it, after config.json)
        raise train_error("E633", f"--compile: {prog.name}'s {SECOND_ORDER}",
                          f"{SECOND_ORDER_HINT}, or leave --compile out")
    # a run that starts at step 0 (new, or resumed before its first checkpoint) starts from --init-from
    from_zero = not resume or (resume is True and not ck.complete_checkpoints(out))
    warm = warm_start(model, cfg.init_from) if cfg.init_from and from_zero else None
    if cfg.stream:
        check_streaming_length(model, cfg.seq)
    if cfg.fsdp:  # before the step levels and the optimizer: their state is then sharded too
        fsdp.shard(model, world)
    levels = StepLevels(model)
    main_params = [p for n, p in model.named_parameters() if p.requires_grad and not levels.owns(n)]
    opt = outer.build(ospec, main_params, cfg.lr, cfg.weight_decay)
    data_fp = _data_fingerprint(task)
    if resume:
        if stored.get("data_fingerprint") != data_fp:
            raise train_error("E622", f"the data of run {out} changed since it started "
                              f"({stored.get('data_fingerprint')} then, {data_fp} now)",
                              "resume with the same data, or start a new --out folder")
        where = out if resume is True else ck.find_checkpoint(resume)
        if resume is not True and ck.run_of(where).resolve() != out.resolve():
            raise train_error("E622", f"checkpoint {where} is not a checkpoint of run {out}")
        if resume is True and not ck.complete_checkpoints(out):
            # no save finished (stopped, or killed, before its first checkpoint was whole): start again
            # from step 0 with the stored options; the same seed and data give the same run
            ckpt, start = None, 0
            state = model.init_state(rows) if cfg.stream else None
        else:
            ckpt = ck.load_checkpoint(where, shash, like={"model": model.state_dict(),
                                                          "trainer": _trainer_like(opt, levels)})
            ck.load_model_tensors(model, _placed(ckpt.model, model.state_dict()), ckpt.path)
            _load_trainer(opt, levels, ckpt)
            start = ckpt.step
            state = state_to(ckpt.stream_state, device) if cfg.stream else None
            if state is not None:  # the whole batch's rows (gathered from every rank when saved)
                _check_state_fits(state, model.init_state(cfg.batch), cfg.batch, ckpt.path / "state.safetensors")
                state = world.split_rows(state, cfg.batch)
            if cfg.stream and state is None:
                state = model.init_state(rows)
        config = None
        # only once the checkpoint has been read: a refused resume changes nothing;
        # new size limits are stored too (`nlc eval` rebuilds with them)
        if changed or cfg.limits != stored["train"].get("limits", {}):
            stored["train"] = asdict(cfg)
            config = stored
    else:
        start = 0
        state = model.init_state(rows) if cfg.stream else None
        config = {"nlc": __version__, "torch": torch.__version__,
                  "spec": {"path": spec_path, "name": prog.name, "hash": shash, "text": spec_text},
                  "optimizer": ospec.record() if ospec is not None else None,
                  "task": task.describe(), "train": asdict(cfg), "data_fingerprint": data_fp,
                  **({"init_from": warm} if warm else {}),
                  "parameters": count_parameters(model), "alignment": int(getattr(model, "alignment", 1)),
                  "step_levels": {k: asdict(v) for k, v in (getattr(model, "step_levels", {}) or {}).items()},
                  "online_levels": list(getattr(model, "online_levels", []) or [])}
    if not world.agree(True):
        raise train_error("E642", f"rank {world.rank} of {world.size}: another rank of this run stopped while "
                          "setting up (its error is above); nothing was written", "fix what it says and start again")
    if config is not None and world.main:
        atomic_write_text(out / "config.json", dumps_json(config, indent=1) + "\n")
    if cfg.compile:  # each block's chunk step under torch.compile: compile time independent of the length
        compile_chunks(model, chunks_per_graph=cfg.chunks_per_graph)
    resumed = ckpt if resume and ckpt is not None else None
    return RunPlan(cfg=cfg, out=out, model=model, task=task, opt=opt, levels=levels,
                   main_params=tuple(main_params), start=start, state=state, device=device, spec_hash=shash,
                   name=prog.name, resumed=resumed, changed=changed if resume else {}, world=world)


def _new_optimizer(path, params: dict, given: dict) -> outer.OptimizerSpec | None:
    """The optimizer spec of a new run (None: AdamW); sets given["lr"] to its peak lr (`-o lr`, --lr or
    the spec's own `lr`)."""
    if path is None:
        if params:
            raise train_error("E633", "-o sets hyper-parameters of an optimizer spec, and this run uses AdamW",
                              "pass the spec with --optimizer SPEC (AdamW's settings are --lr and --weight-decay)")
        return None
    params, lr = outer.split_lr(params, given.get("lr"))
    spec = outer.read_optimizer_spec(str(path), params)
    given["lr"] = lr if lr is not None else outer.spec_lr(spec)
    return spec


def _resumed_optimizer(stored: dict, out: Path, path, params: dict, given: dict) -> outer.OptimizerSpec | None:
    """The optimizer spec a resumed run keeps (None: AdamW). A --optimizer or -o given again must give
    the one it started with (E622); overrides not given are the run's own, and `-o lr` is --lr."""
    own = outer.stored_optimizer(stored, out / "config.json")
    if path is None and not params:
        return own
    params, lr = outer.split_lr(params, given.get("lr"))
    if lr is not None:
        given["lr"] = lr
    if own is None and (path is not None or params):
        raise train_error("E622", f"run {out} was started with AdamW, not an optimizer spec",
                          "resume without --optimizer and -o, or start a new --out folder")
    if path is None and not params:
        return own
    spec = (outer.read_optimizer_spec(str(path), {**own.params, **params}) if path is not None
            else outer.optimizer_spec(own.text, own.path, {**own.params, **params}))
    if spec.hash != own.hash:
        raise train_error("E622", f"the optimizer `{spec.name}` ({spec.path}) with these overrides is not the one "
                          f"run {out} was started with (`{own.name}`, {own.path}, overrides {own.params})",
                          f"resume without --optimizer and -o (the run's optimizer is in {out}/config.json), "
                          "or start a new --out folder")
    return own


def _norm(v):
    return [str(x) for x in v] if isinstance(v, (list, tuple)) else v


def check_chunks_per_graph(chunks_per_graph: int, compile: bool, what: str = "run") -> None:
    """E633 for chunks a compiled graph (`--chunks-per-graph`) asked of a `what` that does not compile."""
    if chunks_per_graph != 1 and not compile:
        raise train_error("E633", f"--chunks-per-graph {chunks_per_graph} groups compiled chunk steps, and this "
                          f"{what} does not compile", "add --compile, or leave --chunks-per-graph out")


def _check_config(cfg: TrainConfig) -> None:
    for k in ("steps", "batch", "seq", "chunks_per_graph"):
        if int(getattr(cfg, k)) < 1:
            raise train_error("E633", f"--{k.replace('_', '-')} must be at least 1, not {getattr(cfg, k)}")
    check_chunks_per_graph(cfg.chunks_per_graph, cfg.compile)
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise train_error("E633", f"--lr must be a positive number, not {cfg.lr}")
    if not (cfg.clip > 0 and math.isfinite(cfg.clip)):  # config.json stores it, and JSON has no inf
        raise train_error("E633", f"--clip must be a positive number, not {cfg.clip}",
                          "for (almost) no clipping, pass a large number such as 1e30")
    if not (cfg.weight_decay >= 0 and math.isfinite(cfg.weight_decay)):
        raise train_error("E633", f"--weight-decay must be a number >= 0, not {cfg.weight_decay}")
    if cfg.schedule not in ("cosine", "constant"):
        raise train_error("E633", f"unknown schedule `{cfg.schedule}`", "use cosine or constant")


def _data_fingerprint(task: Task) -> str | None:
    if isinstance(task, LanguageModel):
        return task.corpus.fingerprint()
    if isinstance(task, Continual):
        return "+".join(t.corpus.fingerprint() for _, t in task.domains)
    return None


def _placed(tensors: dict[str, torch.Tensor], own: dict) -> dict:
    """A checkpoint's whole tensors as this model keeps them: under --fsdp, this rank's shards of those
    that fit (the others are left for the checks that refuse them)."""
    return {k: fsdp.place_like(v, own[k]) if _same_shape(v, own.get(k)) else v for k, v in tensors.items()}


def _same_shape(a, b) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and tuple(a.shape) == tuple(b.shape)


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


def _trainer_like(opt, levels: StepLevels) -> dict[str, torch.Tensor]:
    """The trainer entries this run keeps, named as in a checkpoint (a DCP checkpoint reads each into
    one laid out the same way: a shard under --fsdp)."""
    like = {f"optim.{pid}.{name}": v for pid, (_, st) in outer.expected_state(opt).items()
            for name, v in st.items() if isinstance(v, torch.Tensor)}
    like.update(levels.state_tensors())
    like["rng.torch"] = torch.get_rng_state()
    return like


def _load_trainer(opt, levels: StepLevels, ckpt: ck.Checkpoint) -> None:
    """Put a checkpoint's optimizer moments, step-level sums and RNG state in place, each checked to fit
    this model first (E622 when it is another model's, E621 when it is not a trainer state at all)."""
    where = ckpt.path / "trainer.safetensors"
    meta = ckpt.trainer_meta
    own_groups = opt.state_dict()["param_groups"]
    groups = meta.get("param_groups")
    if not (isinstance(groups, list) and all(isinstance(g, dict) and isinstance(g.get("params"), list)
                                             for g in groups)):
        raise _trainer_corrupt(ckpt.path / "meta.json", "trainer.param_groups is not a list of groups")
    sizes, own_sizes = [len(g["params"]) for g in groups], [len(g["params"]) for g in own_groups]
    if sizes != own_sizes:
        raise _trainer_misfit(where, f"parameter groups of {sizes} parameters, this model's {own_sizes}")
    expected = outer.expected_state(opt)
    state = _optimizer_state(ckpt, expected, where)
    own_levels = levels.state_tensors()
    count = meta.get("step_level_count", 0)
    if not (isinstance(count, int) and not isinstance(count, bool) and count >= 0):
        raise _trainer_corrupt(ckpt.path / "meta.json", f"trainer.step_level_count {count!r} is not a whole number")
    for key, v in ckpt.trainer.items():
        if key.startswith("optim.") or key == "rng.torch":
            continue
        if key not in own_levels:
            raise _trainer_misfit(where, f"an entry `{key}` this model has no use for")
        if tuple(v.shape) != tuple(own_levels[key].shape):
            raise _trainer_misfit(where, f"`{key}` has shape {tuple(v.shape)}, this model's "
                                  f"{tuple(own_levels[key].shape)}")
    if set(own_levels) - set(ckpt.trainer):
        raise _trainer_misfit(where, f"no `{sorted(set(own_levels) - set(ckpt.trainer))[0]}`")
    rng = ckpt.trainer.get("rng.torch")
    own_rng = torch.get_rng_state()
    if rng is None or rng.dtype != own_rng.dtype or tuple(rng.shape) != tuple(own_rng.shape):
        raise _trainer_corrupt(where, "its RNG state `rng.torch` is missing or not a torch RNG state"
                               + ("" if rng is None else f" ({rng.dtype}, {tuple(rng.shape)})"))
    try:  # torch checks the generator state itself (an mt19937 state of random bytes is refused)
        torch.set_rng_state(rng)
    except (RuntimeError, TypeError) as e:
        torch.set_rng_state(own_rng)
        raise _trainer_corrupt(where, f"its RNG state `rng.torch` is not valid ({e})") from None
    state = {pid: _placed(st, expected[pid][1]) for pid, st in state.items()}
    try:
        opt.load_state_dict({"state": state, "param_groups": own_groups})
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        torch.set_rng_state(own_rng)
        raise _trainer_misfit(where, str(e)) from None
    levels.load_state_tensors(_placed(ckpt.trainer, own_levels), count)


def _optimizer_state(ckpt: ck.Checkpoint, expected: dict, where: Path) -> dict:
    """The optimizer state of a checkpoint as {parameter id: {name: value}}, each entry what this
    optimizer keeps for that parameter (`expected`: nlc.train.outer.expected_state)."""
    state: dict = {}
    values = ckpt.trainer_meta.get("optim_values", {})
    if not isinstance(values, dict):
        raise _trainer_corrupt(ckpt.path / "meta.json", "trainer.optim_values is not an object")
    for key, v in values.items():
        if not (isinstance(v, (int, float)) and not isinstance(v, bool)):
            raise _trainer_corrupt(ckpt.path / "meta.json", f"trainer.optim_values.{key} is not a number")
    entries = [(key, key[len("optim."):], v) for key, v in ckpt.trainer.items() if key.startswith("optim.")]
    entries += [(f"optim_values.{key}", key, v) for key, v in values.items()]
    for shown, key, v in entries:
        pid, _, name = key.partition(".")  # names may hold dots (`m2.running`): the id is what comes first
        if not (pid.isdigit() and int(pid) in expected and name in expected[int(pid)][1]):
            raise _trainer_misfit(where, f"an optimizer entry `{shown}` for no parameter of this model "
                                  "(or one this optimizer does not keep)")
        param, like = expected[int(pid)]
        problem = outer.state_misfit(shown, v, like[name], param)
        if problem:
            raise _trainer_misfit(where, problem)
        state.setdefault(int(pid), {})[name] = v
    for pid, st in state.items():
        if set(st) != set(expected[pid][1]):
            raise _trainer_misfit(where, f"parameter {pid} has optimizer state {sorted(st)}, not "
                                  f"{sorted(expected[pid][1])}")
    return state


def _trainer_misfit(where: Path, what: str) -> SpecError:
    return train_error("E622", f"the optimizer state in {where} does not fit this model: {what}",
                       "it was written by a run of another spec or configuration")


def _trainer_corrupt(where: Path, what: str) -> SpecError:
    return train_error("E621", f"checkpoint file {where} is not a trainer state: {what}",
                       "it was edited or damaged; resume from an earlier checkpoint")


def _check_state_fits(loaded, fresh, batch: int, where: Path) -> None:
    """E622 unless a checkpoint's streaming state (moved to the model's device) has the layout of this
    model's fresh state `fresh` (nlc.runtime.state.layout_difference: structure, dtypes, shapes, a
    dimension that is 0 in a fresh state being a cache that grows) and the run's `batch` size."""
    sizes: list[tuple[str, int]] = []
    problem = layout_difference(loaded, state_layout(fresh), sizes)
    message = problem[0] if problem else _batch_problem(sizes, batch)
    if message:
        raise train_error("E622", f"the streaming state in {where} does not fit this model: {message}",
                          "it was written by a run of another spec or configuration")


def _batch_problem(sizes: list[tuple[str, int]], batch: int) -> str | None:
    wrong = next(((path, rows) for path, rows in sizes if rows != batch), None)
    return None if wrong is None else f"{wrong[0]} has {wrong[1]} rows, this run's batch is {batch}"


@dataclass(frozen=True)
class RunPlan:
    """Everything the step loop needs, built once by `train` from the TrainConfig and what it resolved
    (the model, the task, the optimizers, the step to start at, the checkpoint resumed from)."""

    cfg: TrainConfig
    out: Path  # the run folder
    model: torch.nn.Module
    task: Task
    opt: torch.optim.Optimizer  # the outer optimizer (AdamW or an optimizer spec) of `main_params`
    levels: StepLevels  # the CMS step levels, which step their own parameters
    main_params: tuple  # the parameters `opt` steps (gradient clipping covers these)
    start: int  # the step to start at (0, or the resumed checkpoint's)
    state: object  # the streaming state to start from (None unless cfg.stream)
    device: torch.device
    spec_hash: str
    name: str  # the spec's name (progress bar, summary)
    resumed: ck.Checkpoint | None = None  # the checkpoint resumed from
    changed: dict = field(default_factory=dict)  # {option: [before, after]} changed on --resume
    world: dist.World = field(default_factory=dist.World)  # the ranks under torchrun (nlc.train.dist)


def _run(plan: RunPlan) -> dict:
    cfg, out, model, task, opt, levels = plan.cfg, plan.out, plan.model, plan.task, plan.opt, plan.levels
    main_params, start, state, device = list(plan.main_params), plan.start, plan.state, plan.device
    shash, name, resumed, changed, world = plan.spec_hash, plan.name, plan.resumed, plan.changed, plan.world
    metrics_path = out / "metrics.jsonl"
    metrics = None
    if world.main:  # rank 0 writes the run folder; the others compute the same numbers
        _terminate_last_line(metrics_path)
        metrics = open(metrics_path, "a", encoding="utf-8")

    def log(record: dict) -> None:
        if metrics is not None:
            metrics.write(dumps_json(record) + "\n")
            metrics.flush()

    last_ckpt = resumed.path if resumed is not None else None
    saved_step = start if resumed is not None else None
    first_loss = resumed.first_loss if resumed is not None else None  # the loss of step 1 (see BLOWUP)

    def save(step: int) -> Path:
        nonlocal last_ckpt, saved_step
        whole_state = world.gather_rows(state) if cfg.stream else None  # every rank's rows
        ckpt_loss = loss_value if math.isfinite(loss_value) else None
        if cfg.fsdp:  # every rank writes its own shards (torch.distributed.checkpoint, nlc.train.dcp)
            last_ckpt = ck.save_sharded(out, step, shash, model.state_dict(), *_trainer_state(opt, levels),
                                        world, whole_state, cfg.keep, loss=ckpt_loss, first_loss=first_loss)
        elif world.main:
            last_ckpt = ck.save_checkpoint(out, step, shash, model.state_dict(), *_trainer_state(opt, levels),
                                           whole_state, cfg.keep, loss=ckpt_loss, first_loss=first_loss)
        else:
            last_ckpt = ck.step_dir(out, step)
        world.barrier()  # the checkpoint is whole before any rank goes on (or reports it)
        saved_step = step
        log({"step": step, "event": "checkpoint", "path": str(last_ckpt)})
        return last_ckpt

    log({"step": start, "event": "resume" if resumed is not None else "start", "time": time.time(),
         **({"changed": changed} if changed else {}), **({"processes": world.size} if world.size > 1 else {}),
         **({"fsdp": True} if cfg.fsdp else {})})
    tokens_per_step = cfg.batch * cfg.seq
    phase_ends = set(task.phase_ends()) if isinstance(task, Continual) else set()
    bar = tqdm(total=cfg.steps, initial=start, disable=cfg.quiet or not world.main, unit="step", dynamic_ncols=True,
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
                    batch = _rows(task.stream_batch(step, cfg.batch, cfg.seq, cfg.seed), world).to(device)
                    logits, new_state = model(batch.tokens, state=state)
                else:
                    batch = _rows(task.batch(step, cfg.batch, cfg.seq, cfg.seed), world).to(device)
                    logits = model(batch.tokens)
                if world.size == 1:
                    loss = masked_loss(logits, batch)
                    loss_value = float(loss.detach())
                else:  # one all-reduce: the global loss, token count and stop flag
                    loss, loss_value, stopping = _global_loss(logits, batch, world, stop.requested)
                if step == 0:
                    first_loss = loss_value
                if not math.isfinite(loss_value):
                    _diverged(log, out, step + 1, "loss", loss_value, first_loss)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.fsdp:  # FSDP summed (reduce-scattered) every gradient in backward, step levels' too
                    gnorm = fsdp.clip_grad_norm(main_params, cfg.clip)
                else:
                    world.sum_grads(main_params)  # every rank: the whole batch's gradient (step levels: at their period)
                    gnorm = float(torch.nn.utils.clip_grad_norm_(main_params, cfg.clip)) if main_params else 0.0
                if not math.isfinite(gnorm):
                    _diverged(log, out, step + 1, "gradient norm", gnorm, first_loss)
                opt.step()
                levels.accumulate()
                moved = levels.step(reduce=world.sum_tensors if dist.REDUCE_STEP_LEVEL_SUMS and not cfg.fsdp else None)
                if cfg.stream:  # the model returned it detached (detach_state=True): no graph to carry
                    state = new_state
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
                    log({"step": done, "eval": "val", **quick_eval(model, task, cfg, device, world=world)})
                if step in phase_ends:
                    i = task.domain_of(step)
                    log({"step": done, "continual": {"after": i, "domain": task.domains[i][0],
                                                     "losses": continual_row(model, task, cfg, device, world)}})
                if cfg.ckpt_every and done % cfg.ckpt_every == 0 and done != cfg.steps:
                    save(done)
                if (stopping if world.size > 1 else stop.requested):  # agreed: every rank stops after this step
                    interrupted = True
                    break
    except BaseException:  # a second Ctrl-C (stop without saving: the last checkpoint stays whole), E630, E642
        bar.close()
        if metrics is not None:
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
        summary["val"] = quick_eval(model, task, cfg, device, world=world)
        log({"step": done, "eval": "val", **summary["val"]})
        if isinstance(task, Continual) and world.main:
            rows = continual_rows(out)
            summary["continual"] = continual_summary(rows, [n for n, _ in task.domains])
            atomic_write_text(out / "continual.json", dumps_json(summary["continual"], indent=1) + "\n")
        summary["time_s"] = time.perf_counter() - t_start
        log({"step": done, "event": "done"})
        if world.main:
            atomic_write_text(out / "summary.json", dumps_json(summary, indent=1) + "\n")
    if metrics is not None:
        metrics.close()
    return summary


def _rows(batch: Batch, world: dist.World) -> Batch:
    """This rank's rows of the deterministic global batch of a step (all of it in one process)."""
    if world.size == 1:
        return batch
    rows = world.rows(batch.tokens.shape[0])
    return batch.map(lambda t: t[rows])


def _global_loss(logits: torch.Tensor, batch: Batch, world: dist.World, stop: bool):
    """(this rank's share of the loss to backpropagate, the global loss, whether any rank asked to stop).

    The share is this rank's summed token losses over the *global* scored-token count, so that the
    gradients summed over the ranks are those of one process's mean loss over the whole batch."""
    local = masked_loss(logits, batch, reduction="sum")
    total, count, stops = world.sum_values([float(local.detach()), float(batch.loss_mask.sum()), float(stop)])
    return local / max(1.0, count), total / max(1.0, count), stops > 0


def continual_rows(run: Path) -> list[dict]:
    rows = {}
    for r in read_metrics(run):
        if "continual" in r:  # a non-finite loss was written as null
            rows[r["continual"]["after"]] = {k: float("nan") if v is None else v
                                             for k, v in r["continual"]["losses"].items()}
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


def _diverged(log, out: Path, step: int, what: str, value: float, first_loss: float | None):
    """Stop the run with E630 at (1-based) step `step`, naming the newest safe checkpoint if there is one."""
    log({"step": step, "event": "nonfinite", "what": what, "value": str(value)})
    whole = ck.complete_checkpoints(out)
    good = safe_checkpoint(out, step - 1, first_loss)
    if good is not None:
        path, meta = good
        where = f"the last good checkpoint is {path} (step {meta['step']}, training loss {meta['loss']:.4g})"
        hint = (f"lower --lr (or --clip), then resume from that checkpoint with --resume {path}, "
                "or start again in a new --out folder")
    else:
        where = ("no checkpoint was written before it" if not whole else
                 f"none of its {len(whole)} checkpoints is safe to go back to (a safe one is older than step "
                 f"{step - 1}, whose weights gave this {what}, and its training loss was finite and at most "
                 f"{BLOWUP:g}x that of step 1)")
        hint = ("there is no checkpoint to resume from: start again in a new --out folder with a lower --lr "
                "(or --clip)")
    raise train_error("E630", f"the {what} is {value} at step {step} of run {out}; the run stopped there "
                      f"and {where}", hint)


def safe_checkpoint(run: Path, before: int, first_loss: float | None) -> tuple[Path, dict] | None:
    """The newest whole checkpoint of `run` older than step `before` whose training loss was finite and at
    most BLOWUP times the first step's loss: (folder, meta), or None.

    The checkpoint of step `before` itself is never one: its weights are those that just gave the
    non-finite value, and would give it again whatever --lr or --clip says."""
    return ck.newest_safe_point(run, before, first_loss)


__all__ = ["TrainConfig", "train", "build_model", "count_parameters", "read_metrics", "train_curve",
           "quick_eval", "continual_summary", "read_run_config", "check_config_spec", "SpecError"]
