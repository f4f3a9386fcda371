"""Checkpoints: safetensors files written atomically, verified when read.

A run folder holds

    config.json                 the spec's text and hash, its parameters, the task and options
    metrics.jsonl               one JSON line per step and per evaluation (append-only)
    checkpoints/step_00000100/  one folder per checkpoint:
        model.safetensors       the slow parameters (the model's state_dict)
        state.safetensors       the online levels' streaming state (runs with --stream only)
        trainer.safetensors     optimizer moments, CMS step-level sums and momenta, RNG state
        meta.json               step, spec hash, trainer settings, size and sha256 of each file

Every file is written to a temporary name and renamed (nlc.files.atomic_write_bytes), and
meta.json is written last: a folder without it is an interrupted save and is never used.
Reading checks sizes and hashes, so a truncated or damaged file is an E621 error naming
the file and the newest earlier checkpoint that is whole; a checkpoint of another spec is
E622. Nothing is ever deleted except checkpoints older than the newest `keep` whole ones.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from nlc.files import atomic_write_bytes, atomic_write_text
from nlc.train.errors import train_error

FORMAT = "nlc-checkpoint-1"
STEP_DIR = re.compile(r"step_(\d{8})")
CKPT_DIR = "checkpoints"


# ---- nested streaming state <-> flat tensors ----------------------------------------------

def flatten(obj, prefix: str = "") -> tuple[dict[str, torch.Tensor], object]:
    """A nested dict/list of tensors and numbers -> (flat tensors, a JSON skeleton)."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(x, path):
        if isinstance(x, torch.Tensor):
            tensors[path] = x
            return {"__tensor__": path}
        if isinstance(x, dict):
            return {"__dict__": [[k, walk(v, f"{path}.{k}" if path else str(k))] for k, v in x.items()]}
        if isinstance(x, (list, tuple)):
            return {"__list__": [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(x)],
                    "tuple": isinstance(x, tuple)}
        if x is None or isinstance(x, (bool, int, float, str)):
            return {"__value__": x}
        raise TypeError(f"cannot store a {type(x).__name__} in a checkpoint")

    return tensors, walk(obj, prefix)


def unflatten(tensors: dict[str, torch.Tensor], skeleton) -> object:
    def build(node):
        if "__tensor__" in node:
            return tensors[node["__tensor__"]]
        if "__dict__" in node:
            return {k: build(v) for k, v in node["__dict__"]}
        if "__list__" in node:
            items = [build(v) for v in node["__list__"]]
            return tuple(items) if node.get("tuple") else items
        return node["__value__"]

    return build(skeleton)


def _save_bytes(tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> bytes:
    from safetensors.torch import save

    flat = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    return save(flat, metadata={k: json.dumps(v) for k, v in (metadata or {}).items()})


def _load_bytes(data: bytes, what: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load

    try:
        tensors = load(data)
        meta = _safetensors_metadata(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is a damaged file
        raise train_error("E621", f"checkpoint file {what} cannot be read: {e}",
                          "it is damaged; resume from an earlier checkpoint") from None
    return tensors, {k: json.loads(v) for k, v in meta.items()}


def _safetensors_metadata(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    return header.get("__metadata__", {}) or {}


# ---- saving ---------------------------------------------------------------------------------

def step_dir(run: Path, step: int) -> Path:
    return Path(run) / CKPT_DIR / f"step_{step:08d}"


def save_checkpoint(run: Path, step: int, spec_hash: str, model_tensors: dict[str, torch.Tensor],
                    trainer_tensors: dict[str, torch.Tensor], trainer_meta: dict,
                    stream_state=None, keep: int = 3) -> Path:
    """Write checkpoint `step` of a run; return its folder. Older checkpoints beyond `keep` are removed."""
    folder = step_dir(run, step)
    files = {"model.safetensors": _save_bytes(model_tensors, {"spec_hash": spec_hash, "step": step}),
             "trainer.safetensors": _save_bytes(trainer_tensors)}
    if stream_state is not None:
        tensors, skeleton = flatten(stream_state)
        files["state.safetensors"] = _save_bytes(tensors, {"skeleton": skeleton, "step": step})
    meta = {"format": FORMAT, "step": step, "spec_hash": spec_hash, "trainer": trainer_meta, "files": {}}
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
        meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_text(folder / "meta.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
    if keep > 0:
        whole = [p for p in list_checkpoints(run) if (p / "meta.json").exists()]
        for old in whole[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return folder


# ---- finding and loading --------------------------------------------------------------------

def list_checkpoints(run: Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (whole or not)."""
    root = Path(run) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)), key=lambda p: p.name)


def complete_checkpoints(run: Path) -> list[Path]:
    return [p for p in list_checkpoints(run) if (p / "meta.json").is_file()]


def run_of(ckpt: Path) -> Path:
    return Path(ckpt).parent.parent


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the newest whole checkpoint of a run folder (E620 when there is none)."""
    path = Path(path)
    if STEP_DIR.fullmatch(path.name) and path.parent.name == CKPT_DIR:
        if not path.is_dir():
            raise train_error("E620", f"no checkpoint at {path}", "check the path")
        return path
    if not path.exists():
        raise train_error("E620", f"no run or checkpoint at {path}", "pass a run folder (--out of `nlc train`) "
                          "or one of its checkpoints/step_NNNNNNNN folders")
    found = complete_checkpoints(path)
    if not found:
        raise train_error("E620", f"{path} holds no checkpoint", "train first: nlc train SPEC --out " + str(path))
    return found[-1]


@dataclass
class Checkpoint:
    path: Path
    step: int
    spec_hash: str
    model: dict[str, torch.Tensor]
    trainer: dict[str, torch.Tensor]
    trainer_meta: dict
    stream_state: object | None


def _earlier_hint(ckpt: Path) -> str:
    run = run_of(ckpt)
    earlier = [p for p in complete_checkpoints(run) if p.name < ckpt.name]
    for p in reversed(earlier):
        try:
            verify(p)
        except Exception:  # noqa: BLE001
            continue
        return f"the newest whole earlier checkpoint is {p}: resume from it with --resume {p}"
    return "no earlier checkpoint is whole: start the run again in a new --out folder"


def verify(ckpt: Path) -> dict:
    """Check a checkpoint's files against meta.json; return meta (E621 when anything is wrong)."""
    ckpt = Path(ckpt)
    meta_path = ckpt / "meta.json"
    if not meta_path.is_file():
        raise train_error("E621", f"checkpoint {ckpt} is incomplete (no meta.json: its save was interrupted)")
    try:
        meta = json.loads(meta_path.read_text("utf-8"))
        files = meta["files"]
        assert meta.get("format") == FORMAT
    except Exception:  # noqa: BLE001
        raise train_error("E621", f"checkpoint {ckpt} is corrupt: {meta_path} is not a checkpoint record") from None
    for name, info in files.items():
        p = ckpt / name
        if not p.is_file():
            raise train_error("E621", f"checkpoint {ckpt} is corrupt: {name} is missing")
        data = p.read_bytes()
        if len(data) != info["bytes"]:
            raise train_error("E621", f"checkpoint {ckpt} is corrupt: {name} is truncated "
                              f"({len(data)} bytes, {info['bytes']} written)" if len(data) < info["bytes"] else
                              f"checkpoint {ckpt} is corrupt: {name} has {len(data)} bytes, {info['bytes']} written")
        if hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise train_error("E621", f"checkpoint {ckpt} is corrupt: {name} does not match its recorded sha256")
    return meta


def load_checkpoint(path: str | Path, spec_hash: str | None = None) -> Checkpoint:
    """Read and verify a checkpoint (a folder, or a run's newest); E622 if it belongs to another spec."""
    ckpt = find_checkpoint(path)
    try:
        meta = verify(ckpt)
    except Exception as e:
        from nlc.errors import Diagnostic, SpecError

        if isinstance(e, SpecError):
            d = e.diagnostics[0]
            raise SpecError([Diagnostic(d.code, d.message, hint=_earlier_hint(ckpt))]) from None
        raise
    if spec_hash is not None and meta["spec_hash"] != spec_hash:
        raise train_error("E622", f"checkpoint {ckpt} belongs to a different spec (spec hash "
                          f"{meta['spec_hash'][:12]}, this spec {spec_hash[:12]})",
                          "resume a run with the spec it was started with, or start a new --out folder")
    model, _ = _load_bytes((ckpt / "model.safetensors").read_bytes(), ckpt / "model.safetensors")
    trainer, _ = _load_bytes((ckpt / "trainer.safetensors").read_bytes(), ckpt / "trainer.safetensors")
    stream = None
    if "state.safetensors" in meta["files"]:
        tensors, smeta = _load_bytes((ckpt / "state.safetensors").read_bytes(), ckpt / "state.safetensors")
        stream = unflatten(tensors, smeta["skeleton"])
    return Checkpoint(ckpt, int(meta["step"]), meta["spec_hash"], model, trainer, meta["trainer"], stream)


def load_model_tensors(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: Path) -> None:
    """load_state_dict with an E622 error (not a traceback) when the shapes or names do not fit."""
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    extra = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if tuple(own[k].shape) != tuple(tensors[k].shape))
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} of another shape (e.g. {k}: {tuple(tensors[k].shape)} in the "
                         f"checkpoint, {tuple(own[k].shape)} in the model)")
        raise train_error("E622", f"checkpoint {where} does not fit this model: parameters " + "; ".join(parts),
                          "it was trained from a different spec or with different parameters (-p)")
    model.load_state_dict(tensors)
