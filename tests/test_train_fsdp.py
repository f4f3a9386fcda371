"""Sharded data-parallel `nlc train --fsdp` on CPU: 2 gloo processes under FSDP2 against one (nlc.train.fsdp).

The same tiny hope as tests/test_train_dist.py (a `period 4 steps` CMS level, [1, 8] gate weights that
shard unevenly: rank 1 holds 0 rows of them), the muon optimizer spec (Newton-Schulz on gathered
matrices) and --stream, 8 steps, in float64: every parameter, step-level sum and optimizer state
equals one process with the same global batch (atol 1e-12); FSDP's default mean over the ranks
instead of a sum breaks that (negative control). Checkpoints are torch.distributed.checkpoint folders
(nlc.train.dcp), each rank's shards in a file of its own: a resume on 2 sharded processes is bit for
bit, on one plain process within float64 rounding; `nlc eval` reads them in one process; a rank
killed while saving leaves no checkpoint that looks whole; a missing or truncated shard, a missing
or hostile .metadata are E621. Other optimizers' matrix and MLP rules are checked on a
shorter run; `--nproc 2 --fsdp` goes through torchrun itself in float32.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

import nlc
from nlc.train import checkpoint as ck
from nlc.train import evaluate as ev
from nlc.train import loop
from nlc.train.cli import main

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
    meta = json.loads((two.path / "meta.json").read_text())  # every rank wrote its own shards
    assert meta["format"] == "dcp" and set(meta["files"]) == {"__0_0.distcp", "__1_0.distcp", ".metadata",
                                                               "state.safetensors"}
    assert not list((runs / "sharded" / "checkpoints").glob(".tmp_*"))
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
    """From the step-4 DCP checkpoint of the sharded run: 2 sharded processes again (each reading its
    shards) give the same bits (parameters, muon's momenta, step-level sums); one plain process and 2
    unsharded data-parallel ones (DCP reads whole tensors) the same numbers within float64 rounding."""
    for n, extra in ((2, ["--fsdp"]), (1, []), (2, [])):
        run = tmp_path / f"again{n}{''.join(extra)}"
        shutil.copytree(runs / "sharded", run)
        ckpt = run / "checkpoints" / "step_00000004"
        _ok(_ranks(n, _args(text, run, "--resume", str(ckpt), *extra)))
        done, straight = ck.load_checkpoint(run), ck.load_checkpoint(runs / "sharded")
        assert done.step == 8 and done.path.name == "step_00000008"
        if extra:
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


def test_a_rank_killed_while_saving_leaves_no_checkpoint_that_looks_whole(runs, text, tmp_path):
    """Rank 1 exits after writing its shards of the step-4 checkpoint, before rank 0 could record them:
    rank 0 stops with E642, no step_00000004 exists (only the temporary folder, which readers ignore),
    and --resume starts again and ends with the uninterrupted run's bits."""
    run = tmp_path / "killed"
    results = _ranks(2, _args(text, run, "--fsdp", "--die-in-save"))
    assert results[0].returncode == 1 and "E642" in results[0].stderr and "Traceback" not in results[0].stderr
    assert ck.list_checkpoints(run) == [] and (run / "checkpoints" / ".tmp_step_00000004").is_dir()
    _ok(_ranks(2, _args(text, run, "--fsdp", "--resume")))
    done, straight = ck.load_checkpoint(run), ck.load_checkpoint(runs / "sharded")
    assert done.step == 8 and not list((run / "checkpoints").glob(".tmp_*"))
    assert all(torch.equal(done.model[k], straight.model[k]) for k in done.model)
    assert all(torch.equal(done.trainer[k], straight.trainer[k]) for k in done.trainer)


def test_eval_reads_a_dcp_checkpoint_in_one_process(runs, tmp_path):
    run = tmp_path / "sharded"
    shutil.copytree(runs / "sharded", run)
    loaded, one = ev.load_run(run), ck.load_checkpoint(runs / "one")
    own = loaded.model.state_dict()
    assert own.keys() == one.model.keys()
    assert all(torch.allclose(own[k].double(), one.model[k], atol=1e-6) for k in own)  # a float32 model here
    assert main(["eval", str(run), "--tokens", "64"]) == 0


NEWEST = "checkpoints/step_00000008"


def _rewrite(ckpt, name: str, data: bytes) -> None:
    """Replace a checkpoint file and record its new size and sha256, as a careful editor would."""
    (ckpt / name).write_bytes(data)
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (ckpt / "meta.json").write_text(json.dumps(meta))


class _Hostile:
    def __reduce__(self):
        return (print, ("a pickle ran code",))


def _index_pointing_out(ckpt) -> bytes:
    index = pickle.loads((ckpt / ".metadata").read_bytes())  # the test's own checkpoint: trusted here
    for info in index.storage_data.values():
        info.relative_path = "../../../config.json"
    return pickle.dumps(index)


def _index_of_wrong_types(ckpt) -> bytes:
    index = pickle.loads((ckpt / ".metadata").read_bytes())
    next(iter(index.state_dict_metadata.values())).chunks = 5  # the records hold what the pickle says
    return pickle.dumps(index)


def _unlisted_metadata(ckpt):
    meta = json.loads((ckpt / "meta.json").read_text())
    del meta["files"][".metadata"]
    (ckpt / ".metadata").unlink()
    (ckpt / "meta.json").write_text(json.dumps(meta))


CORRUPT = {
    "a shard missing": (lambda c: (c / "__1_0.distcp").unlink(), "__1_0.distcp is missing"),
    "a shard truncated": (lambda c: (c / "__0_0.distcp").write_bytes((c / "__0_0.distcp").read_bytes()[:1000]),
                          "__0_0.distcp is truncated"),
    "no .metadata": (lambda c: (c / ".metadata").unlink(), ".metadata is missing"),
    "meta.json claims dcp, lists no .metadata": (_unlisted_metadata, "it lists no .metadata"),
    "a .metadata pickle that runs code": (lambda c: _rewrite(c, ".metadata", pickle.dumps(_Hostile())),
                                          ".metadata is not a DCP index"),
    "an index that points out of the folder": (lambda c: _rewrite(c, ".metadata", _index_pointing_out(c)),
                                               "points into `../../../config.json`"),
    "an index whose records hold the wrong types": (lambda c: _rewrite(c, ".metadata", _index_of_wrong_types(c)),
                                                    ".metadata is not a DCP index (TypeError"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_a_damaged_dcp_checkpoint_is_e621(runs, tmp_path, case, capsys):
    """Evaluating (and resuming in one process) a damaged DCP checkpoint stops with E621 naming its
    folder, never a traceback, never code run from a pickle."""
    run = tmp_path / "sharded"
    shutil.copytree(runs / "sharded", run)
    damage, words = CORRUPT[case]
    damage(run / NEWEST)
    for call in (lambda: ev.load_run(run), lambda: loop.train(HOPE, run, resume=True, quiet=True)):
        with pytest.raises(nlc.SpecError) as e:
            call()
        assert e.value.codes == ["E621"] and str(run / NEWEST) in str(e.value) and words in str(e.value), str(e.value)
    assert main(["eval", str(run)]) == 1
    err = capsys.readouterr()
    assert "E621" in err.err and "Traceback" not in err.err and "a pickle ran code" not in err.out + err.err


def test_nested_optimizer_state_round_trips_through_dcp(text, tmp_path):
    """M3's slow momentum keeps its period's running sum under a dotted name (`optim.N.m2.running`):
    saved as shards and read back as shards mid-period (step 2 of f=3), a resumed run ends with the
    uninterrupted run's bits; the sharded run is one process's within 1e-12."""
    def args(out, *extra):
        base = _args(text, tmp_path / out, "--steps", "4", "--ckpt-every", "2", *extra)
        i = base.index("--optimizer")
        return [*base[:i], *base[i + 2:], "--optimizer", str(ROOT / "examples" / "m3.nl"), "-o", "f=3",
                "-o", "eps=1e-3"]

    _ok(_ranks(1, args("one")))
    _ok(_ranks(2, args("two", "--fsdp")))
    shutil.copytree(tmp_path / "two", tmp_path / "again")
    _ok(_ranks(2, args("again", "--fsdp", "--resume", str(tmp_path / "again" / "checkpoints" / "step_00000002"))))
    one, two, again = (ck.load_checkpoint(tmp_path / r) for r in ("one", "two", "again"))
    running = [k for k in two.trainer if k.startswith("optim.") and k.endswith(".m2.running")]
    assert running and any(float(two.trainer[k].abs().max()) > 0 for k in running)
    assert all(d <= 1e-12 for d in _max_difference(one, two).values()), _max_difference(one, two)
    assert again.step == 4 and all(torch.equal(again.model[k], two.model[k]) for k in two.model)
    assert all(torch.equal(again.trainer[k], two.trainer[k]) for k in two.trainer)
