"""Data-parallel `nlc train` on CPU: 2 gloo processes against one (nlc.train.dist, docs/distributed.md).

A tiny hope with a `period 4 steps` CMS level, the muon optimizer spec and --stream, 8 steps, in
float64: every parameter, step-level sum, optimizer state and streaming-state row of 2 processes
equals one process with the same global batch (atol 1e-12); every rank ends with the same
parameters; skipping the period-end all-reduce of the step levels breaks that (negative control).
The ranks are started as torchrun starts them (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), one
`--nproc 2` run goes through torchrun itself.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nlc.train import checkpoint as ck

from test_train_loop import text  # noqa: F401  (the corpus fixture)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
RUNNER = str(ROOT / "tests" / "dist_runner.py")
HOPE = str(ROOT / "examples" / "hope.nl")
MUON = str(ROOT / "examples" / "muon.nl")
TINY = ["-p", "dim=8", "-p", "layers=1", "-p", "chunk=4", "-p", "max_lr=0.01", "-p", "cms_slow=4"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(text: str, out: Path, *extra: str) -> list[str]:
    return ["train", HOPE, *TINY, "--data", text, "--batch", "4", "--seq", "8", "--steps", "8", "--ckpt-every", "4",
            "--eval-batches", "2", "--quiet", "--stream", "--optimizer", MUON, "--out", str(out), *extra]


def _env(**kw) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **kw}


def _ranks(n: int, args: list[str]) -> list[subprocess.CompletedProcess]:
    """Run `args` as n ranks (1: one plain process); their exit codes and output."""
    if n == 1:
        return [subprocess.run([sys.executable, RUNNER, *args], env=_env(), capture_output=True, text=True,
                               timeout=300)]
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, RUNNER, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=_env(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(n),
                                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=port))
             for r in range(n)]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


def _ok(results) -> None:
    for r in results:
        assert r.returncode == 0, r.stderr[-3000:]


def _hashes(run: Path, n: int) -> set[str]:
    return {(run / f"rank{r}.hash").read_text() for r in range(n)}


def _max_difference(a: ck.Checkpoint, b: ck.Checkpoint) -> dict[str, float]:
    """The largest absolute difference of the parameters, trainer tensors (optimizer state, step-level
    sums) and streaming state of two checkpoints, by group."""
    sa, sb = ck.flatten(a.stream_state)[0], ck.flatten(b.stream_state)[0]
    out = {}
    for what, x, y in (("model", a.model, b.model), ("trainer", a.trainer, b.trainer), ("state", sa, sb)):
        assert x.keys() == y.keys()
        out[what] = max(float((x[k].double() - y[k].double()).abs().max()) for k in x
                        if x[k].is_floating_point() and k != "rng.torch")
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text):
    root = tmp_path_factory.mktemp("dist")
    _ok(_ranks(1, _args(text, root / "one")))
    _ok(_ranks(2, _args(text, root / "two")))
    return root


def test_two_processes_train_as_one(runs):
    one, two = ck.load_checkpoint(runs / "one"), ck.load_checkpoint(runs / "two")
    assert one.step == two.step == 8
    assert any(k.startswith("steplevel.sum.") for k in one.trainer)
    assert any(k.startswith("optim.") and k.endswith(".m") for k in one.trainer)  # muon's momentum
    assert all(d <= 1e-12 for d in _max_difference(one, two).values()), _max_difference(one, two)
    assert one.trainer_meta["optim_values"] == two.trainer_meta["optim_values"]  # step counts
    assert len(_hashes(runs / "two", 2)) == 1  # every rank holds the same parameters
    records = [json.loads(line) for line in (runs / "two" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[0]["processes"] == 2
    losses = {r["step"]: r["loss"] for r in records if "loss" in r and "eval" not in r}
    single = {r["step"]: r["loss"] for r in map(json.loads, (runs / "one" / "metrics.jsonl").read_text().splitlines())
              if "loss" in r and "eval" not in r}
    assert losses.keys() == single.keys() and all(abs(losses[s] - single[s]) < 1e-12 for s in losses)
    moved = [r["step"] for r in records if "blocks.0.cms_1_state" in r.get("step_levels", [])]
    assert moved == [4, 8]  # the period-4 level stepped twice, with all-reduced sums


def test_skipping_the_period_end_all_reduce_is_caught(runs, text, tmp_path):
    """The negative control: step levels that step with their own rank's sums do not train as one process."""
    _ok(_ranks(2, _args(text, tmp_path / "skip", "--skip-period-reduce")))
    one, skip = ck.load_checkpoint(runs / "one"), ck.load_checkpoint(tmp_path / "skip")
    assert _max_difference(one, skip)["model"] > 1e-6
    assert len(_hashes(tmp_path / "skip", 2)) == 2  # and the ranks no longer agree


def test_resume_with_the_same_and_another_process_count(runs, text, tmp_path):
    """From the step-4 checkpoint of the 2-process run: 2 processes again give the same bits, 1 process
    the same numbers within float64 rounding (its streaming state is the 2 ranks' rows, re-split)."""
    for n in (2, 1):
        run = tmp_path / f"again{n}"
        shutil.copytree(runs / "two", run)
        ckpt = run / "checkpoints" / "step_00000004"
        _ok(_ranks(n, _args(text, run, "--resume", str(ckpt))))
        done, straight = ck.load_checkpoint(run), ck.load_checkpoint(runs / "two")
        assert done.step == 8
        if n == 2:
            assert all(torch.equal(done.model[k], straight.model[k]) for k in done.model)
            assert all(torch.equal(done.trainer[k], straight.trainer[k]) for k in done.trainer)
        else:
            assert all(d <= 1e-12 for d in _max_difference(done, straight).values())


def test_a_rank_that_dies_stops_the_others_with_e642(text, tmp_path):
    run = tmp_path / "dead"
    rank0, rank1 = _ranks(2, _args(text, run, "--dist-timeout", "60", "--die-at-step", "6"))
    assert rank1.returncode == 9
    assert rank0.returncode == 1 and "E642" in rank0.stderr and "Traceback" not in rank0.stderr, rank0.stderr
    assert [p.name for p in ck.complete_checkpoints(run)] == ["step_00000004"]
    ck.verify(run / "checkpoints" / "step_00000004")  # whole


def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(text, tmp_path):
    """Rank 1 alone gets Ctrl-C during step 5: the stop flag is all-reduced with step 6's loss, so both
    ranks finish step 6, one checkpoint of step 6 is written, and both exit 130."""
    run = tmp_path / "stop"
    results = _ranks(2, _args(text, run, "--signal-at-step", "5"))
    assert [r.returncode for r in results] == [130, 130], [r.stderr[-2000:] for r in results]
    assert [p.name for p in ck.complete_checkpoints(run)] == ["step_00000004", "step_00000006"]
    ck.verify(run / "checkpoints" / "step_00000006")
    assert len(_hashes(run, 2)) == 1


def test_a_batch_that_does_not_split_is_e641(text, tmp_path):
    results = _ranks(2, _args(text, tmp_path / "odd", "--batch", "3"))
    for r in results:
        assert r.returncode == 1 and "E641" in r.stderr and "--batch 2 or 4" in r.stderr, r.stderr
    assert not (tmp_path / "odd").exists()


def test_nproc_trains_under_torchrun(text, tmp_path):
    """`nlc train --nproc 2` starts torchrun; in float32 its losses are one process's within rtol 1e-5."""
    base = ["-m", "nlc", "train", HOPE, *TINY, "--data", text, "--batch", "4", "--seq", "8", "--steps", "4",
            "--eval-batches", "2", "--quiet", "--optimizer", MUON]
    for out, extra in (("one", []), ("two", ["--nproc", "2"])):
        r = subprocess.run([sys.executable, *base, "--out", str(tmp_path / out), *extra], env=_env(),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    curves = [{r["step"]: r["loss"] for r in map(json.loads, (tmp_path / o / "metrics.jsonl").read_text().splitlines())
               if "loss" in r and "eval" not in r} for o in ("one", "two")]
    assert curves[0].keys() == curves[1].keys() == {1, 2, 3, 4}
    assert all(abs(curves[0][s] - curves[1][s]) <= 1e-5 * abs(curves[0][s]) for s in curves[0])
    start = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["processes"] == 2
