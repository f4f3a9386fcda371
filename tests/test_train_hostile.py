"""Killed runs, edited run folders, hostile data: every outcome is a coded diagnostic or a run that
ends exactly as an uninterrupted one would; nothing hangs, nothing is lost, no traceback."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fs_cases import make_fifo, no_hang

import nlc
from nlc.train import checkpoint as ck
from nlc.train import evaluate as ev
from nlc.train import loop

ROOT = Path(__file__).resolve().parent.parent
TITANS = str(ROOT / "examples" / "titans_lmm.nl")
HOPE = str(ROOT / "examples" / "hope.nl")
TITANS_P = {"dim": 8, "layers": 1, "chunk": 4}
HOPE_P = {"dim": 8, "layers": 1, "chunk": 4, "max_lr": 0.01, "cms_slow": 3}
POSIX = pytest.mark.skipif(sys.platform != "linux", reason="fork, FIFOs and /proc/self/fd are Linux things")


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> str:
    f = tmp_path_factory.mktemp("data") / "corpus.txt"
    f.write_text("".join(f"def f{i}(x):\n    return x * {i} + {i % 7}  # value {i}\n" for i in range(3000)))
    return str(f)


def _opts(text, **kw) -> dict:
    base = dict(task="lm", data=[text], params=TITANS_P, batch=2, seq=8, steps=4, lr=3e-3, quiet=True,
                ckpt_every=2, eval_batches=1)
    base.update(kw)
    return base


def _argv(text) -> list[str]:
    return ["train", TITANS, "--task", "lm", "--data", text, "-p", "dim=8", "-p", "layers=1", "-p", "chunk=4",
            "--batch", "2", "--seq", "8", "--steps", "4", "--lr", "3e-3", "--ckpt-every", "2", "--eval-batches",
            "1", "--quiet"]


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _strict_json(text: str):
    """json.loads that refuses NaN and Infinity, as a strict JSON reader does."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")
    return json.loads(text, parse_constant=refuse)


# ---- (3) a kill during the first checkpoint save ----------------------------------------------

# A driver process imports nlc once, then forks one child per kill point (before any torch work, so
# the fork is safe). Each child counts the fsyncs and renames of files in its run folder and kills
# itself with SIGKILL (no cleanup, no atexit) just before the N-th: N = 1, 2 are config.json's,
# 3..8 those of the first checkpoint (model, trainer, meta.json: fsync then rename each), 9 the
# first of the second checkpoint (the first one is then whole).
DRIVER = r"""
import json, os, signal, sys
from pathlib import Path
import nlc.cli, nlc.train.loop, nlc.train.evaluate, safetensors.torch, torch._dynamo, tqdm  # imported once, here

root, argv, points = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
for n in points:
    run = root / f"kill{n}"
    pid = os.fork()
    if pid == 0:
        real_fsync, real_replace, seen = os.fsync, os.replace, [0]

        def event(op, path):
            path = str(path)
            if not path.startswith(str(run) + os.sep):
                return
            seen[0] += 1
            if seen[0] == n:
                (root / f"kill{n}.txt").write_text(f"{op} {os.path.relpath(path, run)}")
                os.kill(os.getpid(), signal.SIGKILL)

        def fsync(fd):
            event("fsync", os.readlink(f"/proc/self/fd/{fd}"))
            return real_fsync(fd)

        def replace(src, dst, *a, **k):
            event("rename", dst)
            return real_replace(src, dst, *a, **k)

        os.fsync, os.replace = fsync, replace
        os._exit(100 + nlc.cli.main(argv + ["--out", str(run)]))
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (n, status)
"""

KILL_POINTS = list(range(1, 10))


@pytest.fixture(scope="module")
def killed(tmp_path_factory, text):
    """{N: run folder killed at the N-th fsync/rename}, the event each was killed at, and a reference run."""
    root = tmp_path_factory.mktemp("killed")
    subprocess.run([sys.executable, "-c", DRIVER, str(root), json.dumps(_argv(text)), json.dumps(KILL_POINTS)],
                   cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, timeout=600)
    # a temporary file .NAME.RANDOM.tmp is reported as NAME
    events = {n: re.sub(r"(^|/| )\.([^/]+)\.[^./]+\.tmp$", r"\1\2", (root / f"kill{n}.txt").read_text())
              for n in KILL_POINTS}
    reference = root / "whole"
    loop.train(TITANS, reference, **_opts(text))
    return root, events, reference


def _same_run(run: Path, reference: Path) -> None:
    """The run ended exactly as the uninterrupted one: every step's loss, the validation, the weights."""
    assert loop.train_curve(run) == loop.train_curve(reference)
    assert [s for s, _ in loop.train_curve(run)] == [1, 2, 3, 4]
    summary = _strict_json((run / "summary.json").read_text())
    assert summary["val"] == _strict_json((reference / "summary.json").read_text())["val"]
    a, b = ck.load_checkpoint(run).model, ck.load_checkpoint(reference).model
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@POSIX
@pytest.mark.slow
def test_kill_points_cover_every_fsync_and_rename_of_the_first_save(killed):
    _, events, _ = killed
    first = "checkpoints/step_00000002/"
    assert [events[n] for n in KILL_POINTS] == [
        "fsync config.json", "rename config.json",
        f"fsync {first}model.safetensors", f"rename {first}model.safetensors",
        f"fsync {first}trainer.safetensors", f"rename {first}trainer.safetensors",
        f"fsync {first}meta.json", f"rename {first}meta.json",
        "fsync checkpoints/step_00000004/model.safetensors"]


@POSIX
@pytest.mark.slow
@pytest.mark.parametrize("n", KILL_POINTS)
def test_a_run_killed_during_its_first_save_resumes_to_the_same_result(killed, text, n, capsys):
    from nlc.cli import main

    root, events, reference = killed
    run = root / f"kill{n}"
    if n <= 2:  # killed before config.json existed: --resume says to start it, and starting it works
        assert main(_argv(text) + ["--out", str(run), "--resume"]) == 1
        err = capsys.readouterr().err
        assert "error[E620]" in err and "no config.json" in err and "start it without --resume" in err
        assert main(_argv(text) + ["--out", str(run)]) == 0
    else:
        if n <= 8:  # config.json and an unfinished checkpoint: a restart refuses and points to --resume
            assert ck.complete_checkpoints(run) == []
            assert main(_argv(text) + ["--out", str(run)]) == 1
            err = capsys.readouterr().err
            assert "error[E623]" in err and "--resume" in err
        else:
            assert [p.name for p in ck.complete_checkpoints(run)] == ["step_00000002"]
        assert main(_argv(text) + ["--out", str(run), "--resume"]) == 0, capsys.readouterr().err
    assert "Traceback" not in capsys.readouterr().err
    _same_run(run, reference)
    # the unfinished save left nothing behind: each checkpoint folder holds exactly its files
    for folder in ck.list_checkpoints(run):
        assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "model.safetensors", "trainer.safetensors"]


# ---- (6) checkpoints and config.json edited, or from another run ---------------------------------

@pytest.fixture(scope="module")
def base_runs(tmp_path_factory, text) -> dict[str, Path]:
    """Two finished runs to copy and edit: titans (checkpoints at steps 2 and 4) and hope with --stream."""
    root = tmp_path_factory.mktemp("base")
    loop.train(TITANS, root / "titans", **_opts(text))
    loop.train(HOPE, root / "hope", **_opts(text, params=HOPE_P, stream=True))
    return {"titans": root / "titans", "hope": root / "hope"}


def _copy(base_runs, tmp_path, which="titans") -> Path:
    run = tmp_path / which
    shutil.copytree(base_runs[which], run, symlinks=True)
    return run


def _meta(ckpt: Path) -> dict:
    return json.loads((ckpt / "meta.json").read_text())


def _write_meta(ckpt: Path, meta) -> None:
    (ckpt / "meta.json").write_text(json.dumps(meta))


def _rewrite(ckpt: Path, name: str, data: bytes) -> None:
    """Replace a checkpoint file and record its new size and sha256, as a careful editor would."""
    (ckpt / name).write_bytes(data)
    meta = _meta(ckpt)
    meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _write_meta(ckpt, meta)


def _safetensors(tensors: dict, metadata: dict | None = None) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)


def _tensors(path: Path) -> dict:
    from safetensors.torch import load

    return load(path.read_bytes())


def _refused(run: Path, code: str, *words: str, resume=True, evaluate=True, spec=TITANS) -> None:
    """Resuming and evaluating `run` both stop with `code` (words in the message), changing nothing."""
    before = _snapshot(run)
    calls = []
    if resume:
        calls.append(lambda: loop.train(spec, run, resume=True, quiet=True))
    if evaluate:
        calls.append(lambda: ev.load_run(run))
    for call in calls:
        with pytest.raises(nlc.SpecError) as e:
            call()
        msg = str(e.value)
        assert e.value.codes == [code], msg
        assert all(w in msg for w in words), msg
    assert _snapshot(run) == before


NEWEST = "checkpoints/step_00000004"


def _raw_metadata(path: Path) -> dict[str, str]:
    data = path.read_bytes()
    return json.loads(data[8:8 + int.from_bytes(data[:8], "little")]).get("__metadata__", {})


def _state_edit(key):
    """An edit of the streaming state of the hope run's newest checkpoint."""
    def edit(ckpt):
        tensors = _tensors(ckpt / "state.safetensors")
        meta = _raw_metadata(ckpt / "state.safetensors")
        if key == "skeleton not JSON":
            meta["skeleton"] = "{not json"
        elif key == "skeleton names a missing tensor":
            tensors.pop(sorted(tensors)[0])
        else:  # another model's state: a memory of another width
            k = sorted(tensors)[0]
            tensors[k] = torch.zeros(*tensors[k].shape[:-1], tensors[k].shape[-1] + 1)
        _rewrite(ckpt, "state.safetensors", _safetensors(tensors, meta))
    return edit


STATE_CASES = {  # edit -> (code, words, also refused by eval)
    "skeleton not JSON": ("E621", ["state.safetensors", "metadata is not JSON"], True),
    "skeleton names a missing tensor": ("E621", ["state.safetensors", "skeleton does not describe"], True),
    "another model's state": ("E622", ["state.safetensors", "does not fit this model"], False),
}


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_edited_streaming_state(base_runs, tmp_path, case):
    run = _copy(base_runs, tmp_path, "hope")
    _state_edit(case)(run / NEWEST)
    code, words, by_eval = STATE_CASES[case]
    _refused(run, code, *words, evaluate=by_eval, spec=HOPE)


def _trainer_edit(key):
    def edit(ckpt):
        tensors = _tensors(ckpt / "trainer.safetensors")
        if key == "RNG state of floats":
            tensors["rng.torch"] = tensors["rng.torch"].float()
        elif key == "RNG state too short":
            tensors["rng.torch"] = tensors["rng.torch"][:10]
        elif key == "RNG state of random bytes":
            tensors["rng.torch"] = torch.randint(0, 256, tensors["rng.torch"].shape, dtype=torch.uint8,
                                                 generator=torch.Generator().manual_seed(0))
        elif key == "no RNG state":
            del tensors["rng.torch"]
        elif key == "a moment of another shape":
            k = next(k for k in sorted(tensors) if k.endswith(".exp_avg"))
            tensors[k] = torch.zeros(tensors[k].numel() + 1)
        elif key == "a moment missing":
            del tensors[next(k for k in sorted(tensors) if k.endswith(".exp_avg_sq"))]
        elif key == "an entry for no parameter":
            tensors["optim.9999.exp_avg"] = torch.zeros(3)
        elif key == "not safetensors":
            return _rewrite(ckpt, "trainer.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
        _rewrite(ckpt, "trainer.safetensors", _safetensors(tensors))
    return edit


TRAINER_CASES = {  # only resuming reads the trainer state
    "RNG state of floats": ("E621", ["trainer.safetensors", "RNG state"]),
    "RNG state too short": ("E621", ["trainer.safetensors", "RNG state"]),
    "RNG state of random bytes": ("E621", ["trainer.safetensors", "RNG state"]),
    "no RNG state": ("E621", ["trainer.safetensors", "RNG state"]),
    "a moment of another shape": ("E622", ["trainer.safetensors", "does not fit this model", "its parameter's shape"]),
    "a moment missing": ("E622", ["trainer.safetensors", "does not fit this model"]),
    "an entry for no parameter": ("E622", ["trainer.safetensors", "optim.9999.exp_avg"]),
    "not safetensors": ("E621", ["trainer.safetensors", "cannot be read"]),
}


@pytest.mark.parametrize("case", list(TRAINER_CASES))
def test_edited_trainer_state(base_runs, tmp_path, case):
    run = _copy(base_runs, tmp_path)
    _trainer_edit(case)(run / NEWEST)
    code, words = TRAINER_CASES[case]
    _refused(run, code, *words, evaluate=case == "not safetensors")


def test_optimizer_state_of_another_model(base_runs, tmp_path):
    run = _copy(base_runs, tmp_path)
    other = base_runs["hope"] / NEWEST / "trainer.safetensors"
    _rewrite(run / NEWEST, "trainer.safetensors", other.read_bytes())
    _refused(run, "E622", "trainer.safetensors", "does not fit this model", evaluate=False)


def test_model_metadata_that_is_not_json(base_runs, tmp_path):
    run = _copy(base_runs, tmp_path)
    ckpt = run / NEWEST
    _rewrite(ckpt, "model.safetensors", _safetensors(_tensors(ckpt / "model.safetensors"), {"spec_hash": "{x"}))
    _refused(run, "E621", "model.safetensors", "metadata is not JSON")


def _meta_edit(meta: dict, key: str):
    files = meta["files"]
    edits = {
        "step a string": lambda: meta.update(step="4"),
        "step a float": lambda: meta.update(step=4.0),
        "step true": lambda: meta.update(step=True),
        "step negative": lambda: meta.update(step=-4),
        "step of another folder": lambda: meta.update(step=2),
        "files a list": lambda: meta.update(files=list(files)),
        "a file record a string": lambda: files.update({"model.safetensors": "x"}),
        "bytes a string": lambda: files["model.safetensors"].update(bytes=str(files["model.safetensors"]["bytes"])),
        "sha256 a number": lambda: files["model.safetensors"].update(sha256=12),
        "no trainer file listed": lambda: files.pop("trainer.safetensors"),
        "no format": lambda: meta.pop("format"),
        "spec_hash a number": lambda: meta.update(spec_hash=5),
        "trainer a list": lambda: meta.update(trainer=[]),
        "loss a string": lambda: meta.update(loss="low"),
    }
    edits[key]()
    return meta


META_CASES = ["step a string", "step a float", "step true", "step negative", "step of another folder", "files a list",
              "a file record a string", "bytes a string", "sha256 a number", "no trainer file listed", "no format",
              "spec_hash a number", "trainer a list", "loss a string"]


@pytest.mark.parametrize("case", META_CASES)
def test_meta_json_of_the_wrong_shape(base_runs, tmp_path, case):
    run = _copy(base_runs, tmp_path)
    ckpt = run / NEWEST
    _write_meta(ckpt, _meta_edit(_meta(ckpt), case))
    with pytest.raises(nlc.SpecError) as e:
        ck.load_checkpoint(run)
    msg = str(e.value)
    assert e.value.codes == ["E621"] and f"{ckpt / 'meta.json'} is not a checkpoint record" in msg, msg
    assert "step_00000002" in msg  # the hint: the newest whole earlier checkpoint


@pytest.mark.parametrize("case", ["step a string", "files a list", "no format"])
def test_meta_json_of_the_wrong_shape_through_resume_and_eval(base_runs, tmp_path, case):
    run = _copy(base_runs, tmp_path)
    _write_meta(run / NEWEST, _meta_edit(_meta(run / NEWEST), case))
    _refused(run, "E621", "meta.json", "is not a checkpoint record")


@pytest.mark.parametrize("content", [b"[1, 2]", b"{not json", b'{"step": NaN}', b"\xff\xfe{}", b"[" * 100000])
def test_meta_json_that_is_not_a_record(base_runs, tmp_path, content):
    run = _copy(base_runs, tmp_path)
    (run / NEWEST / "meta.json").write_bytes(content)
    _refused(run, "E621", "meta.json", "is not a checkpoint record")


TRAINER_META_CASES = {
    "param_groups a string": (lambda t: t.update(param_groups="x"), "E621", "param_groups"),
    "param_groups of another size": (lambda t: t["param_groups"][0].update(params=[0]), "E622", "parameter groups"),
    "step_level_count a string": (lambda t: t.update(step_level_count="3"), "E621", "step_level_count"),
    "optim_values a list": (lambda t: t.update(optim_values=[]), "E621", "optim_values"),
}


@pytest.mark.parametrize("case", list(TRAINER_META_CASES))
def test_trainer_settings_in_meta_json_of_the_wrong_shape(base_runs, tmp_path, case):
    run = _copy(base_runs, tmp_path)
    meta = _meta(run / NEWEST)
    edit, code, word = TRAINER_META_CASES[case]
    edit(meta["trainer"])
    _write_meta(run / NEWEST, meta)
    _refused(run, code, word, evaluate=False)


@pytest.mark.parametrize("name, where", [("../x", "outside"), ("/etc/passwd", "outside"),
                                         ("sub/model.safetensors", "outside"), ("..", "outside"),
                                         ("notes.txt", "not a checkpoint file")])
def test_meta_json_may_list_only_its_own_files(base_runs, tmp_path, name, where):
    run = _copy(base_runs, tmp_path)
    (run / NEWEST / "sub").mkdir()
    shutil.copy(run / NEWEST / "model.safetensors", run / NEWEST / "sub" / "model.safetensors")
    (run / "checkpoints" / "x").write_bytes(b"outside")
    meta = _meta(run / NEWEST)
    data = (run / "checkpoints" / "x").read_bytes()
    meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    _write_meta(run / NEWEST, meta)
    _refused(run, "E624", "meta.json", f"lists `{name}`", where)


def test_a_symlink_that_leads_out_of_the_checkpoint_is_refused(base_runs, tmp_path):
    run = _copy(base_runs, tmp_path)
    model = run / NEWEST / "model.safetensors"
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(model, outside)  # the very same bytes: size and sha256 match
    model.symlink_to(outside)
    _refused(run, "E624", "model.safetensors is a symlink that leads out of the checkpoint folder")


def _replace_with_folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _replace_with_file(path: Path) -> None:
    shutil.rmtree(path)
    path.write_text("not a folder")


LAYOUT_CASES = {  # edit of the run folder -> what the E625 message says (resume and eval alike)
    "checkpoints/ a file": (lambda r: _replace_with_file(r / "checkpoints"), "checkpoints is a regular file"),
    "a step folder a file": (lambda r: _replace_with_file(r / NEWEST), "step_00000004 is a regular file"),
    "meta.json a folder": (lambda r: _replace_with_folder(r / NEWEST / "meta.json"), "meta.json is a folder"),
    "model.safetensors a folder": (lambda r: _replace_with_folder(r / NEWEST / "model.safetensors"),
                                   "model.safetensors is a folder"),
    "model.safetensors a FIFO": (lambda r: make_fifo(r / NEWEST / "model.safetensors"),
                                 "model.safetensors is a named pipe (FIFO)"),
    "config.json a folder": (lambda r: _replace_with_folder(r / "config.json"), "config.json is a folder"),
    "metrics.jsonl a folder": (lambda r: _replace_with_folder(r / "metrics.jsonl"), "metrics.jsonl is a folder"),
    "summary.json a FIFO": (lambda r: make_fifo(r / "summary.json"), "summary.json is a named pipe"),
}


@POSIX
@pytest.mark.parametrize("case", list(LAYOUT_CASES))
def test_a_file_where_a_folder_belongs_and_the_reverse(base_runs, tmp_path, case):
    run = _copy(base_runs, tmp_path)
    edit, words = LAYOUT_CASES[case]
    edit(run)
    with no_hang():
        _refused(run, "E625", words)


@POSIX
def test_paths_given_on_the_command_line_that_are_files_not_folders(base_runs, tmp_path, text, capsys):
    from nlc.cli import main

    run = _copy(base_runs, tmp_path)
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(nlc.SpecError) as e:  # --out is a file
        loop.train(TITANS, a_file, **_opts(text))
    assert e.value.codes == ["E625"] and f"{a_file} is a regular file, not a run folder" in str(e.value)
    with pytest.raises(nlc.SpecError) as e:  # nlc eval FILE
        ev.load_run(a_file)
    assert e.value.codes == ["E625"] and "not a run or checkpoint folder" in str(e.value)
    fake = run / "checkpoints" / "step_00000006"  # --resume CHECKPOINT that is a file
    fake.write_text("x")
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, run, resume=fake, quiet=True)
    assert e.value.codes == ["E625"] and "step_00000006 is a regular file" in str(e.value)
    fifo = tmp_path / "fifo_out"
    make_fifo(fifo)
    with no_hang():
        assert main(_argv(text) + ["--out", str(fifo)]) == 1
        assert main(["eval", str(fifo)]) == 1
    err = capsys.readouterr().err
    assert err.count("error[E625]") == 2 and "named pipe" in err and "internal error" not in err


def _config_edit(key: str):
    def edit(config: dict) -> dict | list | str:
        spec, train = config["spec"], config["train"]
        edits = {
            "a list": lambda: [config],
            "no spec": lambda: config.pop("spec"),
            "spec.text a number": lambda: spec.update(text=5),
            "train.steps a string": lambda: train.update(steps="4"),
            "train.steps true": lambda: train.update(steps=True),
            "train.lr a string": lambda: train.update(lr="fast"),
            "train.params a list": lambda: train.update(params=[8]),
            "train.params a string value": lambda: train["params"].update(dim="8"),
            "train.data a string": lambda: train.update(data=str(train["data"][0])),
            "no train.seed": lambda: train.pop("seed"),
            "task a string": lambda: config.update(task="lm"),
            # edits that would build another model: the spec hash no longer matches (E622)
            "spec text changed": lambda: spec.update(text=spec["text"].replace("  chunk = 8,", "  chunk = 32,")),
            "a parameter changed, same shapes": lambda: train["params"].update(chunk=8),
            "a parameter changed, other shapes": lambda: train["params"].update(dim=16),
            "a parameter added": lambda: train["params"].update(heads=1),
            "spec name changed": lambda: spec.update(name="other"),
            "spec path made YAML": lambda: spec.update(path="spec.yaml"),
            "spec hash changed": lambda: spec.update(hash="0" * 64),
            "an unknown parameter": lambda: train["params"].update(nosuch=1),
        }
        out = edits[key]()
        return out if isinstance(out, list) else config
    return edit


CONFIG_CASES = {
    "a list": ("E626", "not a JSON object"), "no spec": ("E626", "`spec`"),
    "spec.text a number": ("E626", "`spec.text`"), "train.steps a string": ("E626", "`train.steps`"),
    "train.steps true": ("E626", "`train.steps`"), "train.lr a string": ("E626", "`train.lr`"),
    "train.params a list": ("E626", "`train.params`"), "train.params a string value": ("E626", "`train.params`"),
    "train.data a string": ("E626", "`train.data`"), "no train.seed": ("E626", "`train.seed` is missing"),
    "task a string": ("E626", "`task`"),
    "spec text changed": ("E622", "was edited"), "a parameter changed, same shapes": ("E622", "was edited"),
    "a parameter changed, other shapes": ("E622", "was edited"), "a parameter added": ("E622", "was edited"),
    "spec name changed": ("E622", "was edited"), "spec path made YAML": ("E622", "no longer compile"),
    "spec hash changed": ("E622", "was edited"), "an unknown parameter": ("E622", "no longer compile"),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES))
def test_edited_config_json_is_refused_never_built(base_runs, tmp_path, case, monkeypatch):
    run = _copy(base_runs, tmp_path)
    config = json.loads((run / "config.json").read_text())
    assert "  chunk = 8," in config["spec"]["text"] or case != "spec text changed"
    (run / "config.json").write_text(json.dumps(_config_edit(case)(config)))
    built = []
    real_build = nlc.build
    monkeypatch.setattr(nlc, "build", lambda *a, **k: built.append(a) or real_build(*a, **k))
    code, words = CONFIG_CASES[case]
    _refused(run, code, str(run / "config.json"), words)
    assert built == []  # refused before any model was built from it


def test_a_run_whose_spec_hash_did_not_cover_its_parameters_is_not_built(base_runs, tmp_path):
    from nlc.codegen import spec_hash

    run = _copy(base_runs, tmp_path)
    config = json.loads((run / "config.json").read_text())
    prog, _ = loop.spec_identity(config["spec"]["text"], config["spec"]["path"], {})
    config["spec"]["hash"] = spec_hash(prog)  # what an older nlc recorded: the parameters not covered
    (run / "config.json").write_text(json.dumps(config))
    _refused(run, "E622", "records a spec hash without its parameters", "new --out folder")


@pytest.mark.parametrize("content", [b"{not json", b'{"spec": NaN}', b"\xff", b""])
def test_config_json_that_is_not_json(base_runs, tmp_path, content):
    run = _copy(base_runs, tmp_path)
    (run / "config.json").write_bytes(content)
    _refused(run, "E626", "config.json", "not JSON")


def test_cli_shows_codes_for_edited_runs_never_a_crash(base_runs, tmp_path, text, capsys):
    """The rc 3 ("internal error") of the issue: through the command line, each is an error[E62x] and rc 1."""
    from nlc.cli import main

    cases = [("meta", lambda r: _write_meta(r / NEWEST, _meta_edit(_meta(r / NEWEST), "files a list"))),
             ("rng", _trainer_edit_run("RNG state of floats")),
             ("config", lambda r: (r / "config.json").write_text('{"spec": 1}'))]
    for name, edit in cases:
        run = tmp_path / name
        shutil.copytree(base_runs["titans"], run)
        edit(run)
        for argv in (["train", TITANS, "--out", str(run), "--resume", "--quiet"], ["eval", str(run), "--tokens", "64"]):
            code = main(argv)
            err = capsys.readouterr().err
            if name == "rng" and argv[0] == "eval":  # evaluation does not use the trainer state
                assert code == 0, err
                continue
            assert code == 1 and re.search(r"error\[E62\d\]", err) and "internal error" not in err, (name, argv, err)


def _trainer_edit_run(case):
    return lambda run: _trainer_edit(case)(run / NEWEST)


# ---- E630 names only a checkpoint that is safe to go back to ---------------------------------------

def _scaled_losses(monkeypatch, factors: list[float]) -> None:
    """Training step i (1-based) sees its true loss times factors[i-1]: a blow-up on a schedule."""
    real, calls = loop.masked_loss, [0]

    def scaled(logits, batch):
        calls[0] += 1
        return real(logits, batch) * factors[min(calls[0], len(factors)) - 1]
    monkeypatch.setattr(loop, "masked_loss", scaled)


def _diverge(tmp_path, text, monkeypatch, factors) -> tuple[Path, str, str]:
    run = tmp_path / "run"
    _scaled_losses(monkeypatch, factors)
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, run, **_opts(text, steps=10, ckpt_every=1, keep=0))
    monkeypatch.undo()
    assert e.value.codes == ["E630"]
    d = e.value.diagnostics[0]
    return run, d.message, d.hint


def test_e630_names_the_newest_checkpoint_whose_loss_had_not_blown_up(tmp_path, text, monkeypatch):
    # steps 1-2 train normally, steps 3-4 have 10x the loss (finite: blown up), step 5 is NaN
    run, msg, hint = _diverge(tmp_path, text, monkeypatch, [1, 1, 10, 10, math.nan])
    assert "the loss is nan at step 5" in msg
    losses = {m["step"]: m["loss"] for m in map(ck.verify, ck.complete_checkpoints(run))}
    first = losses[1]
    assert sorted(losses) == [1, 2, 3, 4] and losses[3] > loop.BLOWUP * first >= losses[2]
    good = ck.step_dir(run, 2)  # 4 gave the NaN itself, 3 had blown up
    assert f"the last good checkpoint is {good} (step 2" in msg and f"--resume {good}" in hint
    done = loop.train(TITANS, run, resume=good, quiet=True, lr=1e-3)  # the hint works
    assert done["step"] == 10 and not done["interrupted"]


def test_e630_without_a_safe_checkpoint_says_so(tmp_path, text, monkeypatch):
    run, msg, hint = _diverge(tmp_path, text, monkeypatch, [1, math.nan])
    # the one checkpoint holds the very weights that gave the NaN: resuming from it would give it again
    assert [p.name for p in ck.complete_checkpoints(run)] == ["step_00000001"]
    assert "none of its 1 checkpoints is safe to go back to" in msg and "last good" not in msg
    assert "there is no checkpoint to resume from" in hint and "--resume" not in hint


def test_e630_before_any_checkpoint_says_so(tmp_path, text, monkeypatch):
    run, msg, hint = _diverge(tmp_path, text, monkeypatch, [math.inf])
    assert "the loss is inf at step 1" in msg and "no checkpoint was written before it" in msg
    assert "there is no checkpoint to resume from" in hint and ck.list_checkpoints(run) == []


# ---- (issue #12) every JSON nlc writes is JSON; a non-finite evaluation is flagged (E634) -----------

def test_dumps_json_writes_null_and_lists_what_was_not_finite():
    from nlc.files import dumps_json

    text = dumps_json({"val": {"loss": math.nan, "acc": 0.5}, "grid": [[1.0, math.inf]], "low": -math.inf, "n": 3})
    assert _strict_json(text) == {"val": {"loss": None, "acc": 0.5}, "grid": [[1.0, None]], "low": None, "n": 3,
                                  "nonfinite": {"val.loss": "nan", "grid.0.1": "inf", "low": "-inf"}}
    assert _strict_json(dumps_json({"loss": 1.5})) == {"loss": 1.5}


def test_a_nan_validation_loss_is_valid_json_and_a_warning(tmp_path, text, monkeypatch, capsys):
    from nlc.cli import main

    monkeypatch.setattr(loop, "quick_eval", lambda *a, **k: {"loss": math.nan, "bpb": math.nan, "acc": 0.0})
    run = tmp_path / "run"
    assert main(_argv(text) + ["--out", str(run), "--eval-every", "2"]) == 0
    err = capsys.readouterr().err
    assert "warning[E634]: the validation of run" in err and "val.loss" in err
    summary = _strict_json((run / "summary.json").read_text())
    assert summary["val"]["loss"] is None and summary["nonfinite"] == {"val.loss": "nan", "val.bpb": "nan"}
    records = [_strict_json(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval" in r]
    assert len(evals) == 2 and all(r["loss"] is None and r["nonfinite"]["loss"] == "nan" for r in evals)
    for p in run.rglob("*.json"):
        _strict_json(p.read_text())


def test_eval_of_a_model_with_nan_weights_warns_and_writes_valid_json(base_runs, tmp_path, capsys):
    from nlc.cli import main

    run = _copy(base_runs, tmp_path)
    ckpt = run / NEWEST
    tensors = {k: torch.full_like(v, math.nan) for k, v in _tensors(ckpt / "model.safetensors").items()}
    _rewrite(ckpt, "model.safetensors", _safetensors(tensors, _raw_metadata(ckpt / "model.safetensors")))
    assert main(["eval", str(run), "--tokens", "64"]) == 0
    captured = capsys.readouterr()
    assert "warning[E634]: the evaluation of" in captured.err and "loss" in captured.err
    result = _strict_json((run / "eval" / "eval_lm.json").read_text())
    assert result["loss"] is None and result["nonfinite"]["loss"] == "nan"
    assert main(["eval", str(base_runs["titans"]), "--tokens", "64", "-o", str(tmp_path / "clean")]) == 0
    assert "E634" not in capsys.readouterr().err  # a finite evaluation is not flagged


def test_eval_and_compare_outputs_that_are_not_folders_or_files(base_runs, tmp_path, text):
    from nlc.train.compare import compare

    run = _copy(base_runs, tmp_path)
    (run / "eval").write_text("not a folder")
    with pytest.raises(nlc.SpecError) as e:
        ev.evaluate(run, tokens=64)
    assert e.value.codes == ["E625"] and f"{run / 'eval'} is a regular file, not a folder" in str(e.value)
    (tmp_path / "out" / "eval_lm.json").mkdir(parents=True)
    with pytest.raises(nlc.SpecError) as e:
        ev.evaluate(run, tokens=64, out=tmp_path / "out")
    assert e.value.codes == ["E625"] and "eval_lm.json is a folder; nlc writes a file there" in str(e.value)
    (tmp_path / "cmp").mkdir()
    (tmp_path / "cmp" / "runs").write_text("x")
    with pytest.raises(nlc.SpecError) as e:
        compare([TITANS], ["lm"], "64", tmp_path / "cmp", batch=2, seq=8, data=[text], params=TITANS_P)
    assert e.value.codes == ["E625"] and "runs is a regular file; nlc writes a folder there" in str(e.value)


@pytest.mark.parametrize("size", [10 ** 30, 2 ** 62, 0])
def test_a_recorded_size_that_is_absurd_is_a_truncated_file_not_a_memory_error(base_runs, tmp_path, size):
    run = _copy(base_runs, tmp_path)
    meta = _meta(run / NEWEST)
    meta["files"]["model.safetensors"]["bytes"] = size
    _write_meta(run / NEWEST, meta)
    _refused(run, "E621", "model.safetensors", "truncated" if size else "has more than the 0 bytes written")


def test_atomic_writes_give_files_an_ordinary_mode(tmp_path):
    """A file written atomically gets the mode a plain write would (0666 less the umask, or the mode of the
    file it replaces), not the 0600 of its temporary file: generated code, reports and plots are readable
    by the group and others wherever the umask allows it."""
    from nlc.files import atomic_write_text

    old = os.umask(0o022)
    try:
        new = atomic_write_text(tmp_path / "new.md", "x")
        assert (new.stat().st_mode & 0o777) == 0o644
        kept = tmp_path / "kept.md"
        kept.write_text("old")
        kept.chmod(0o600)
        atomic_write_text(kept, "new")
        assert (kept.stat().st_mode & 0o777) == 0o600 and kept.read_text() == "new"
    finally:
        os.umask(old)
