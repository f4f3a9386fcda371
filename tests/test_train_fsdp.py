"""Sharded data-parallel `nlc train --fsdp` on CPU: 2 gloo processes under FSDP2 against one (nlc.train.fsdp).

The same tiny hope as tests/test_train_dist.py (a `period 4 steps` CMS level, [1, 8] gate weights that
shard unevenly: rank 1 holds 0 rows of them), the muon optimizer spec (Newton-Schulz on gathered
matrices) and --stream, 8 steps, in float64: every parameter, step-level sum and optimizer state
equals one process with the same global batch (atol 1e-12); FSDP's default mean over the ranks
instead of a sum breaks that (negative control); a resume on 2 sharded processes is bit for bit, on
one plain process within float64 rounding. Other optimizers' matrix and MLP rules are checked on a
shorter run; `--nproc 2 --fsdp` goes through torchrun itself in float32.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import torch

from nlc.train import checkpoint as ck

from test_train_dist import HOPE, MUON, ROOT, TINY, _args, _env, _hashes, _max_difference, _ok, _ranks
from test_train_loop import text  # noqa: F401  (the corpus fixture)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory, text):
    root = tmp_path_factory.mktemp("fsdp")
    _ok(_ranks(1, _args(text, root / "one")))
    _ok(_ranks(2, _args(text, root / "sharded", "--fsdp")))
    return root


def test_sharded_processes_train_as_one(runs):
    one, two = ck.load_checkpoint(runs / "one"), ck.load_checkpoint(runs / "sharded")
    assert one.step == two.step == 8
    assert tuple(two.model["blocks.0.eta_linear.weight"].shape) == (1, 8)  # an uneven shard (1 row, 2 ranks)
    assert any(k.startswith("steplevel.sum.") for k in two.trainer)
    assert any(k.startswith("optim.") and k.endswith(".m") for k in two.trainer)  # muon's momentum
    assert all(d <= 1e-12 for d in _max_difference(one, two).values()), _max_difference(one, two)
    assert one.trainer_meta["optim_values"] == two.trainer_meta["optim_values"]
    assert len(_hashes(runs / "sharded", 2)) == 1  # the gathered parameters are the same on every rank
    records = [json.loads(line) for line in (runs / "sharded" / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[0]["processes"] == 2 and records[0]["fsdp"] is True
    moved = [r["step"] for r in records if "blocks.0.cms_1_state" in r.get("step_levels", [])]
    assert moved == [4, 8]


def test_averaged_gradients_are_caught(runs, text, tmp_path):
    """The negative control: FSDP's default reduction (the mean over ranks) does not train as one process."""
    _ok(_ranks(2, _args(text, tmp_path / "mean", "--fsdp", "--average-gradients")))
    one, mean = ck.load_checkpoint(runs / "one"), ck.load_checkpoint(tmp_path / "mean")
    assert _max_difference(one, mean)["model"] > 1e-6


def test_resume_sharded_and_on_one_process(runs, text, tmp_path):
    """From the step-4 checkpoint of the sharded run: 2 sharded processes again give the same bits, one
    plain process the same numbers within float64 rounding."""
    for n, extra in ((2, ["--fsdp"]), (1, [])):
        run = tmp_path / f"again{n}"
        shutil.copytree(runs / "sharded", run)
        ckpt = run / "checkpoints" / "step_00000004"
        _ok(_ranks(n, _args(text, run, "--resume", str(ckpt), *extra)))
        done, straight = ck.load_checkpoint(run), ck.load_checkpoint(runs / "sharded")
        assert done.step == 8 and done.path.name == "step_00000008"
        if n == 2:
            assert all(torch.equal(done.model[k], straight.model[k]) for k in done.model)
            assert all(torch.equal(done.trainer[k], straight.trainer[k]) for k in done.trainer)
        else:
            assert all(d <= 1e-12 for d in _max_difference(done, straight).values())


@pytest.mark.parametrize("optimizer", ["adamw", "delta_momentum", "dmgd"])
def test_other_optimizers_train_as_one_when_sharded(text, tmp_path, optimizer):
    """AdamW (elementwise), delta momentum (m (beta I - g^T g) on gathered matrices) and DMGD (an MLP
    memory over every entry: its gradient summed over the ranks' entries), 4 steps."""
    opt = [] if optimizer == "adamw" else ["--optimizer", str(ROOT / "examples" / f"{optimizer}.nl")]

    def args(out, *extra):
        base = _args(text, tmp_path / out, "--steps", "4", *extra)
        i = base.index("--optimizer")
        return [*base[:i], *base[i + 2:], *opt]

    _ok(_ranks(1, args("one")))
    _ok(_ranks(2, args("two", "--fsdp")))
    one, two = ck.load_checkpoint(tmp_path / "one"), ck.load_checkpoint(tmp_path / "two")
    assert one.step == two.step == 4
    assert all(d <= 1e-12 for d in _max_difference(one, two).values()), _max_difference(one, two)


def test_fsdp_in_one_process_is_e643(text, tmp_path):
    [result] = _ranks(1, _args(text, tmp_path / "alone", "--fsdp"))
    assert result.returncode == 1 and "E643" in result.stderr and "--nproc" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "alone" / "config.json").exists()


def test_nproc_fsdp_trains_under_torchrun(text, tmp_path):
    """`nlc train --nproc 2 --fsdp` starts torchrun; in float32 its losses are one process's within rtol 1e-5."""
    base = ["-m", "nlc", "train", HOPE, *TINY, "--data", text, "--batch", "4", "--seq", "8", "--steps", "4",
            "--eval-batches", "2", "--quiet", "--optimizer", MUON]
    for out, extra in (("one", []), ("two", ["--nproc", "2", "--fsdp"])):
        r = subprocess.run([sys.executable, *base, "--out", str(tmp_path / out), *extra], env=_env(),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "returned a view tensor" not in r.stderr
    curves = [{r["step"]: r["loss"] for r in map(json.loads, (tmp_path / o / "metrics.jsonl").read_text().splitlines())
               if "loss" in r and "eval" not in r} for o in ("one", "two")]
    assert curves[0].keys() == curves[1].keys() == {1, 2, 3, 4}
    assert all(abs(curves[0][s] - curves[1][s]) <= 1e-5 * abs(curves[0][s]) for s in curves[0])
