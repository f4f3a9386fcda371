"""Checkpoints: safetensors files written atomically, verified when read.

A run folder holds

    config.json                 the spec's text and hash, its parameters, the task and options
    metrics.jsonl               one JSON line per step and per evaluation (append-only)
    checkpoints/step_00000100/  one folder per checkpoint:
        model.safetensors       the slow parameters (the model's state_dict)
        state.safetensors       the online levels' streaming state (runs with --stream only)
        trainer.safetensors     optimizer moments, CMS step-level sums and momenta, RNG state
        meta.json               step, spec hash, trainer settings, size and sha256 of each file

An --fsdp run writes another layout, with torch.distributed.checkpoint (`save_sharded`; the
files: nlc.train.dcp): every rank its own shards, meta.json saying "format": "dcp"; it is read
and checked here like the ordinary one.

Every file is written to a temporary name and renamed (nlc.files.atomic_write_bytes), and
meta.json is written last: a folder without it is an interrupted save and is never used (a
later save of the same step replaces it). Nothing in a checkpoint is trusted before it is
checked, since the files may have been edited or copied from another run:
  * meta.json must be a checkpoint record with the right types, and may list only nlc's own
    files, inside the folder (E624 for `../x`, an absolute path or a symlink that leads out);
  * every listed file must be a regular file (E625 for a folder or a FIFO) of the recorded
    size and sha256, and parse (E621 naming the file for a truncated, damaged or edited one,
    with the newest earlier checkpoint that is whole);
  * a checkpoint of another spec or model is E622.
Nothing is ever deleted except checkpoints older than the newest `keep` whole ones (never the
newest safe point, see `is_safe_point`: the one a divergence, E630, sends the user back to), and
the leftovers of an interrupted save of the step being saved.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load, save

from nlc.errors import Diagnostic, SpecError
from nlc.files import NotARegularFile, atomic_write_bytes, atomic_write_text, dumps_json, kind_of, open_regular, \
    read_at_most, read_pieces
from nlc.train import dcp
from nlc.train.errors import train_error

FORMAT = "nlc-checkpoint-1"
STEP_DIR = re.compile(r"step_(\d{8})")
CKPT_DIR = "checkpoints"
FILES = ("model.safetensors", "trainer.safetensors", "state.safetensors")  # all a checkpoint may list
REQUIRED = ("model.safetensors", "trainer.safetensors")
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "continual.json")  # what a run folder holds


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
    flat = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
    return save(flat, metadata={k: dumps_json(v) for k, v in (metadata or {}).items()})


def _load_bytes(data: bytes, what: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of a safetensors file (E621 naming it when either does not parse)."""
    try:
        tensors = load(data)
        raw = _safetensors_metadata(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is a damaged file
        raise train_error("E621", f"checkpoint file {what} cannot be read: {e}",
                          "it is damaged; resume from an earlier checkpoint") from None
    try:
        return tensors, {k: json.loads(v) for k, v in raw.items()}
    except (TypeError, ValueError, RecursionError) as e:
        raise train_error("E621", f"checkpoint file {what} cannot be read: its metadata is not JSON ({e})",
                          "it was edited; resume from an earlier checkpoint") from None


def _safetensors_metadata(data: bytes) -> dict:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__", {}) or {}
    if not isinstance(meta, dict):
        raise ValueError("__metadata__ is not an object")
    return meta


# ---- saving ---------------------------------------------------------------------------------

def step_dir(run: Path, step: int) -> Path:
    return Path(run) / CKPT_DIR / f"step_{step:08d}"


def save_checkpoint(run: Path, step: int, spec_hash: str, model_tensors: dict[str, torch.Tensor],
                    trainer_tensors: dict[str, torch.Tensor], trainer_meta: dict,
                    stream_state=None, keep: int = 3, loss: float | None = None,
                    first_loss: float | None = None) -> Path:
    """Write checkpoint `step` of a run; return its folder. Older checkpoints beyond `keep` are removed.

    `loss` (the training loss of step `step`) and `first_loss` (of step 1) go into meta.json: they
    tell a later divergence (E630) whether this checkpoint is a safe point to go back to."""
    folder = step_dir(run, step)
    clear_step(folder)
    files = {"model.safetensors": _save_bytes(model_tensors, {"spec_hash": spec_hash, "step": step}),
             "trainer.safetensors": _save_bytes(trainer_tensors)}
    if stream_state is not None:
        tensors, skeleton = flatten(stream_state)
        files["state.safetensors"] = _save_bytes(tensors, {"skeleton": skeleton, "step": step})
    meta = {"format": FORMAT, "step": step, "spec_hash": spec_hash, "trainer": trainer_meta, "files": {},
            "loss": loss, "first_loss": first_loss}
    for name, data in files.items():
        atomic_write_bytes(folder / name, data)
        meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_text(folder / "meta.json", dumps_json(meta, indent=1) + "\n")
    if keep > 0:
        _prune(run, keep, meta, first_loss)
    return folder


def save_sharded(run: Path, step: int, spec_hash: str, model_tensors: dict[str, torch.Tensor],
                 trainer_tensors: dict[str, torch.Tensor], trainer_meta: dict, world, stream_state=None,
                 keep: int = 3, loss: float | None = None, first_loss: float | None = None) -> Path:
    """Write checkpoint `step` of an --fsdp run with torch.distributed.checkpoint (nlc.train.dcp): every
    rank writes its own shards; return the folder. A collective: every rank of `world` calls it."""
    import torch.distributed.checkpoint as tdcp

    final = step_dir(run, step)
    temp = final.with_name(dcp.TEMP_PREFIX + final.name)
    if world.main:  # the leftovers of a save of this step that was killed
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir(parents=True)
    world.barrier()
    tdcp.save({"model": model_tensors, "trainer": trainer_tensors},
              storage_writer=tdcp.FileSystemWriter(temp), no_dist=world.size == 1)
    own = sorted(p.name for p in temp.iterdir()
                 if (m := dcp.SHARD.fullmatch(p.name)) and int(m.group(1)) == world.rank)
    files = {}
    for part in world.all_objects({name: _record(temp, name) for name in own}):  # hashed in parallel
        files.update(part)
    if world.main:
        if stream_state is not None:
            tensors, skeleton = flatten(stream_state)
            atomic_write_bytes(temp / dcp.STATE, _save_bytes(tensors, {"skeleton": skeleton, "step": step}))
        for name in (dcp.METADATA, dcp.STATE):
            if (temp / name).exists():
                files[name] = _record(temp, name)
        meta = {"format": dcp.FORMAT, "step": step, "spec_hash": spec_hash, "trainer": trainer_meta,
                "files": dict(sorted(files.items())), "loss": loss, "first_loss": first_loss}
        atomic_write_text(temp / "meta.json", dumps_json(meta, indent=1) + "\n")
        clear_step(final)
        temp.rename(final)  # every rank's shards are written: the gather above waited for all of them
        if keep > 0:
            _prune(run, keep, meta, first_loss)
    return final


def _record(folder: Path, name: str) -> dict:
    """{bytes, sha256} of a file just written, as meta.json records it."""
    size, sha = _digest(folder, folder / name, (folder / name).stat().st_size)
    return {"bytes": size, "sha256": sha}


def clear_step(folder: Path) -> None:
    """Remove a checkpoint folder about to be written again: an interrupted save of this step, or one
    from before a --resume of an earlier step."""
    if folder.is_symlink():  # nlc never makes one: replace the link, never what it points to
        folder.unlink()
    elif folder.is_dir():
        (folder / "meta.json").unlink(missing_ok=True)  # first make it read as interrupted, so that a kill
        shutil.rmtree(folder)  # in between never leaves a record of files that are gone


# A checkpoint is a safe point to go back to after a divergence (E630) when the training loss of its
# step was finite and at most BLOWUP times the loss of the run's first step (ln 256, the loss of a
# uniform guess over bytes, when that is not recorded), and it is older than the step that diverged.
BLOWUP = 2.0


def is_safe_point(meta: dict, first_loss: float | None = None) -> bool:
    """Was the training loss of this checkpoint's step finite and at most BLOWUP times the first step's?"""
    loss, first = meta.get("loss"), first_loss or meta.get("first_loss") or math.log(256)
    return isinstance(loss, (int, float)) and math.isfinite(loss) and loss <= BLOWUP * first


def newest_safe_point(run: Path, before: int | None = None,
                      first_loss: float | None = None) -> tuple[Path, dict] | None:
    """The newest whole checkpoint of `run` (older than step `before`, when given) that is a safe point:
    (folder, meta), or None. Checkpoints that do not verify are passed over."""
    for path in reversed(complete_checkpoints(run)):
        try:
            meta = verify(path)
        except SpecError:
            continue
        if (before is None or meta["step"] < before) and is_safe_point(meta, first_loss):
            return path, meta
    return None


def _prune(run: Path, keep: int, meta: dict, first_loss: float | None) -> None:
    """Remove the checkpoints older than the newest `keep`, except the newest safe point: with a loss
    that climbed for `keep` checkpoints, it is the only one a divergence can go back to."""
    whole = complete_checkpoints(run)
    old = whole[:-keep]
    if not old:
        return
    if not is_safe_point(meta, first_loss):  # the one just saved is whole: when it is safe, nothing older is needed
        good = newest_safe_point(run, first_loss=first_loss)
        if good is not None:
            old = [p for p in old if p != good[0]]
    for path in old:
        shutil.rmtree(path, ignore_errors=True)


# ---- finding and loading --------------------------------------------------------------------

def list_checkpoints(run: Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first (whole or not)."""
    root = Path(run) / CKPT_DIR
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)), key=lambda p: p.name)


def complete_checkpoints(run: Path) -> list[Path]:
    """Checkpoint folders whose save finished (meta.json written; whether it is whole, verify says)."""
    return [p for p in list_checkpoints(run) if os.path.lexists(p / "meta.json")]


def run_of(ckpt: Path) -> Path:
    return Path(ckpt).parent.parent


def _kind(path: Path) -> str | None:
    """What is at path ("a folder", "a regular file", ...), None when nothing is (symlinks followed)."""
    try:
        return kind_of(path.stat().st_mode)
    except (OSError, RuntimeError):  # nothing there, or a symlink loop
        return "a broken symlink" if path.is_symlink() else None


def check_run_folder(run: Path) -> None:
    """E625 when something in a run folder is not what nlc writes there: a file where a folder belongs
    (the run folder, checkpoints/, a step folder) or a folder, FIFO, ... where a file belongs.

    Checked before a run starts or resumes, so nothing fails half-way through writing."""
    run = Path(run)
    kind = _kind(run)
    if kind is not None and kind != "a folder":
        raise train_error("E625", f"{run} is {kind}, not a run folder",
                          "pass a folder (new, or one `nlc train` wrote) to --out")
    for name in RUN_FILES:
        _expect(run / name, "a regular file", run)
    root = run / CKPT_DIR
    _expect(root, "a folder", run)
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if STEP_DIR.fullmatch(p.name):
                _expect(p, "a folder", run)
                _expect(p / "meta.json", "a regular file", run)


def _expect(path: Path, kind: str, run: Path) -> None:
    """E625 unless path is absent or is `kind`."""
    found = _kind(path)
    if found is not None and found != kind:
        should = "a file" if kind == "a regular file" else kind
        raise train_error("E625", f"{path} is {found}; nlc writes {should} there",
                          f"move it out of the run folder {run} (nothing was changed)")


def check_output(path: Path, folder: bool = False) -> None:
    """E625 unless a result can be written to `path` (a file, or a folder): path is absent or of that
    kind, and the nearest thing that exists above it is a folder (checked before the work whose
    result it is)."""
    path = Path(path)
    found, want = _kind(path), "a folder" if folder else "a regular file"
    if found is not None and found != want:
        raise train_error("E625", f"{path} is {found}; nlc writes {'a folder' if folder else 'a file'} there",
                          "move it, or pass another folder")
    for parent in path.parents:
        found = _kind(parent)
        if found is not None:
            if found != "a folder":
                raise train_error("E625", f"{parent} is {found}, not a folder; nlc writes {path.name} in it",
                                  "move it, or pass another folder")
            return


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder, or the newest whole checkpoint of a run folder (E620 when there is none)."""
    path = Path(path)
    kind = _kind(path)
    if STEP_DIR.fullmatch(path.name) and path.parent.name == CKPT_DIR:
        if kind is None:
            raise train_error("E620", f"no checkpoint at {path}", "check the path")
        if kind != "a folder":
            raise train_error("E625", f"{path} is {kind}, not a checkpoint folder",
                              "a checkpoint is a folder RUN/checkpoints/step_NNNNNNNN that `nlc train` wrote")
        return path
    if kind is None:
        raise train_error("E620", f"no run or checkpoint at {path}", "pass a run folder (--out of `nlc train`) "
                          "or one of its checkpoints/step_NNNNNNNN folders")
    if kind != "a folder":
        raise train_error("E625", f"{path} is {kind}, not a run or checkpoint folder",
                          "pass a run folder (--out of `nlc train`) or one of its checkpoints/step_NNNNNNNN folders")
    check_run_folder(path)
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
    loss: float | None = None  # the training loss of its step, and of step 1 (None: not recorded)
    first_loss: float | None = None


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


def _record_error(ckpt: Path, what: str) -> SpecError:
    return train_error("E621", f"checkpoint {ckpt} is corrupt: {ckpt / 'meta.json'} is not a checkpoint "
                       f"record ({what})", "it was edited or damaged")


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_name(ckpt: Path, name, sharded: bool = False) -> None:
    """A name meta.json lists must be one of nlc's checkpoint files (of a DCP checkpoint's, when `sharded`),
    in the folder itself (E624)."""
    if dcp.is_file_name(name) if sharded else (isinstance(name, str) and name in FILES):
        return
    text = name if isinstance(name, str) else repr(name)
    where = ("outside the checkpoint folder" if isinstance(name, str) and
             ("/" in name or "\\" in name or name in (".", "..") or Path(name).is_absolute())
             else "that is not a checkpoint file")
    raise train_error("E624", f"checkpoint {ckpt} is refused: {ckpt / 'meta.json'} lists `{text}`, a file {where}",
                      "a checkpoint lists only " + ("the files torch.distributed.checkpoint writes (__R_I.distcp, "
                                                    ".metadata) and state.safetensors" if sharded else
                                                    ", ".join(FILES)) + " in its own folder; it was edited")


def read_meta(ckpt: Path) -> dict:
    """meta.json of a checkpoint folder, checked to be a checkpoint record (E621/E624/E625 otherwise)."""
    ckpt = Path(ckpt)
    meta_path = ckpt / "meta.json"
    if not os.path.lexists(meta_path):
        raise train_error("E621", f"checkpoint {ckpt} is incomplete (no meta.json: its save was interrupted)")
    try:
        meta = json.loads(_read_file(ckpt, meta_path), parse_constant=_no_constant)
    except (ValueError, RecursionError):  # ValueError includes UnicodeDecodeError
        raise _record_error(ckpt, "not JSON") from None
    if not isinstance(meta, dict):
        raise _record_error(ckpt, "not a JSON object")
    if meta.get("format") not in (FORMAT, dcp.FORMAT):
        raise _record_error(ckpt, f"format {meta.get('format')!r}, not {FORMAT!r} or {dcp.FORMAT!r}")
    if not _is_int(meta.get("step")) or meta["step"] < 0:
        raise _record_error(ckpt, f"step {meta.get('step')!r} is not a whole number")
    m = STEP_DIR.fullmatch(ckpt.name)
    if m and int(m.group(1)) != meta["step"]:
        raise _record_error(ckpt, f"step {meta['step']} in the folder of step {int(m.group(1))}")
    if not isinstance(meta.get("spec_hash"), str):
        raise _record_error(ckpt, "spec_hash is not a string")
    if not isinstance(meta.get("trainer"), dict):
        raise _record_error(ckpt, "trainer is not an object")
    for key in ("loss", "first_loss"):
        if meta.get(key) is not None and not _is_number(meta[key]):
            raise _record_error(ckpt, f"{key} {meta[key]!r} is not a number")
    files = meta.get("files")
    if not isinstance(files, dict):
        raise _record_error(ckpt, "files is not an object")
    sharded = meta["format"] == dcp.FORMAT
    for name, info in files.items():
        _check_name(ckpt, name, sharded)
        if not (isinstance(info, dict) and _is_int(info.get("bytes")) and info["bytes"] >= 0
                and isinstance(info.get("sha256"), str) and re.fullmatch(r"[0-9a-f]{64}", info["sha256"])):
            raise _record_error(ckpt, f"files.{name} is not {{bytes: a whole number, sha256: 64 hex digits}}")
    missing = [n for n in ((dcp.METADATA,) if sharded else REQUIRED) if n not in files]
    if missing:
        raise _record_error(ckpt, f"it lists no {missing[0]}")
    return meta


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def _read_file(ckpt: Path, path: Path, at_most: int | None = None) -> bytes:
    """The bytes of a file of a checkpoint (at most `at_most`): a regular file inside the folder
    (E624, E625, E621 otherwise)."""
    with _opened(ckpt, path) as f:
        return read_at_most(f, at_most)


def _digest(ckpt: Path, path: Path, at_most: int) -> tuple[int, str]:
    """(size, sha256) of the first `at_most` bytes of a file of a checkpoint, read in pieces."""
    h, size = hashlib.sha256(), 0
    with _opened(ckpt, path) as f:
        for chunk in read_pieces(f, at_most):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


@contextmanager
def _opened(ckpt: Path, path: Path):
    """A file of a checkpoint, opened: a regular file inside the folder (E624, E625, E621 otherwise)."""
    if path.is_symlink():
        try:
            inside = path.resolve(strict=True).is_relative_to(ckpt.resolve(strict=True))
        except (OSError, RuntimeError):
            inside = False
        if not inside:
            raise train_error("E624", f"checkpoint {ckpt} is refused: {path.name} is a symlink that leads out of "
                              "the checkpoint folder (or nowhere)", "nlc never writes symlinks; it was edited")
    try:
        f = open_regular(path)
    except NotARegularFile as e:
        raise train_error("E625", f"checkpoint {ckpt} is corrupt: {path.name} is {e.kind}, not a file") from None
    except FileNotFoundError:
        raise train_error("E621", f"checkpoint {ckpt} is corrupt: {path.name} is missing") from None
    except OSError as e:
        raise train_error("E621", f"checkpoint {ckpt}: {path.name} cannot be read: {e.strerror or e}") from None
    with f:
        try:
            yield f
        except OSError as e:
            raise train_error("E621", f"checkpoint {ckpt}: {path.name} cannot be read: {e.strerror or e}") from None


def _read_verified(ckpt: Path) -> tuple[dict, dict[str, bytes]]:
    """meta.json and the bytes of every file it lists, each checked against its size and sha256."""
    meta = read_meta(ckpt)
    data = {}
    for name, info in meta["files"].items():
        if dcp.SHARD.fullmatch(name):  # a shard of a DCP checkpoint: checked, not kept (DCP reads it later)
            size, sha = _digest(ckpt, ckpt / name, info["bytes"] + 1)
            raw = None
        else:
            raw = _read_file(ckpt, ckpt / name, info["bytes"] + 1)  # one byte more tells a longer file
            size, sha = len(raw), hashlib.sha256(raw).hexdigest()
        if size != info["bytes"]:
            raise train_error("E621", f"checkpoint {ckpt} is corrupt: {name} is truncated "
                              f"({size} bytes, {info['bytes']} written)" if size < info["bytes"] else
                              f"checkpoint {ckpt} is corrupt: {name} has more than the {info['bytes']} bytes "
                              "written")
        if sha != info["sha256"]:
            raise train_error("E621", f"checkpoint {ckpt} is corrupt: {name} does not match its recorded sha256")
        if raw is not None:
            data[name] = raw
    return meta, data


def verify(ckpt: Path) -> dict:
    """Check a checkpoint's files against meta.json; return meta (E621, E624 or E625 when anything is wrong)."""
    return _read_verified(Path(ckpt))[0]


def load_checkpoint(path: str | Path, spec_hash: str | None = None, like: dict | None = None) -> Checkpoint:
    """Read and verify a checkpoint (a folder, or a run's newest); E622 if it belongs to another spec.

    A DCP checkpoint (of an --fsdp run, nlc.train.dcp) reads each tensor laid out as `like`
    ({"model": {name: tensor}, "trainer": {name: tensor}}) holds it, when it has that name, shape and
    dtype: a DTensor gets this rank's shard; the others, and all of an ordinary checkpoint, are whole."""
    ckpt = find_checkpoint(path)
    try:
        meta, data = _read_verified(ckpt)
        if spec_hash is not None and meta["spec_hash"] != spec_hash:
            raise train_error("E622", f"checkpoint {ckpt} belongs to a different spec (spec hash "
                              f"{meta['spec_hash'][:12]}, this spec {spec_hash[:12]})",
                              "resume a run with the spec it was started with, or start a new --out folder")
        if meta["format"] == dcp.FORMAT:
            model, trainer = dcp.read_tensors(ckpt, data[dcp.METADATA], meta["files"], like)
        else:
            model, _ = _load_bytes(data["model.safetensors"], ckpt / "model.safetensors")
            trainer, _ = _load_bytes(data["trainer.safetensors"], ckpt / "trainer.safetensors")
        stream = None
        if "state.safetensors" in data:
            stream = _stream_state(data["state.safetensors"], ckpt / "state.safetensors")
    except SpecError as e:
        d = e.diagnostics[0]
        if d.code == "E622":
            raise
        raise SpecError([Diagnostic(d.code, d.message, hint=_earlier_hint(ckpt))]) from None
    return Checkpoint(ckpt, meta["step"], meta["spec_hash"], model, trainer, meta["trainer"], stream,
                      meta.get("loss"), meta.get("first_loss"))


def _stream_state(raw: bytes, where: Path):
    tensors, smeta = _load_bytes(raw, where)
    try:
        return unflatten(tensors, smeta["skeleton"])
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as e:
        raise train_error("E621", f"checkpoint file {where} cannot be read: its skeleton does not describe "
                          f"its tensors ({type(e).__name__}: {e})", "it was edited or damaged") from None


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
