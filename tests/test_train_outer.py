"""`nlc train --optimizer SPEC -o NAME=VALUE`: an optimizer spec as the outer optimizer (nlc.train.outer)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import nlc
from nlc.cli import main as nlc_main
from nlc.train import checkpoint as ck
from nlc.train import evaluate as ev
from nlc.train import loop

from test_train_loop import HOPE, HOPE_P, ROOT, TITANS, TITANS_P, _opts, _snapshot, _StopAfter, text  # noqa: F401

M3 = str(ROOT / "examples" / "m3.nl")
MUON = str(ROOT / "examples" / "muon.nl")
NO_LR = """optimizer plain(step_size = 0.1) {
  level weights {
    state params
    init zeros
    context grad(loss)
    update gd
    lr step_size
    period 1 steps
  }
}
"""


def _trainer(run: Path) -> ck.Checkpoint:
    return ck.load_checkpoint(run)


def test_resume_with_an_optimizer_spec_is_bit_for_bit(tmp_path, text, monkeypatch):
    """6 steps straight == 3, Ctrl-C, resume 3 (m3 with a slow momentum of period 2, and CMS step levels)."""
    opts = dict(params=HOPE_P, optimizer=M3, optimizer_params={"f": 2}, **_opts(text, steps=6))
    whole = loop.train(HOPE, tmp_path / "whole", **opts)
    monkeypatch.setattr(loop, "_Stop", _StopAfter)
    part = loop.train(HOPE, tmp_path / "part", **opts)
    assert part["interrupted"] and part["step"] == 3
    monkeypatch.undo()
    done = loop.train(HOPE, tmp_path / "part", resume=True, quiet=True)
    assert done["step"] == 6 and loop.train_curve(tmp_path / "whole") == loop.train_curve(tmp_path / "part")
    a, b = _trainer(tmp_path / "whole"), _trainer(tmp_path / "part")
    assert all(torch.equal(a.model[k], b.model[k]) for k in a.model)
    assert a.trainer.keys() == b.trainer.keys() and all(torch.equal(a.trainer[k], b.trainer[k]) for k in a.trainer)
    assert any(k.endswith(".m2.running") for k in a.trainer)  # m3's own state, not Adam's moments
    assert a.trainer_meta["optim_values"] == b.trainer_meta["optim_values"]
    assert whole["val"] == done["val"]


def test_the_schedule_drives_the_spec_lr(tmp_path, text):
    run = tmp_path / "muon"
    loop.train(TITANS, run, params=TITANS_P, optimizer=MUON, optimizer_params={"momentum": 0.9},
               **{**_opts(text, steps=4, warmup=2), "lr": None})
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["lr"] == 0.02  # muon's own lr is the peak
    assert config["optimizer"]["name"] == "muon" and config["optimizer"]["params"] == {"momentum": 0.9}
    lrs = [r["lr"] for r in loop.read_metrics(run) if "lr" in r]
    assert lrs[:2] == [0.01, 0.02] and lrs[-1] < 0.02  # warm-up, then cosine decay
    meta = _trainer(run).trainer_meta
    assert meta["param_groups"][0]["momentum"] == 0.9 and meta["param_groups"][0]["lr"] == lrs[-1]
    assert ev.load_run(run).model is not None  # nlc eval reads such runs


def test_o_lr_is_the_peak(tmp_path, text):
    run = tmp_path / "m"
    loop.train(TITANS, run, params=TITANS_P, optimizer=MUON, optimizer_params={"lr": 0.005},
               **{**_opts(text, steps=2), "lr": None})
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["lr"] == 0.005 and config["optimizer"]["params"] == {}


@pytest.mark.parametrize("case, code, words", [
    ("-o without --optimizer", "E633", ["-o", "AdamW", "--optimizer"]),
    ("an unknown hyper-parameter", "E208", ["lrr", "did you mean `lr`"]),
    ("a model spec", "E510", []),
    ("-o lr and --lr disagree", "E633", ["-o lr=0.1", "--lr 0.2"]),
    ("--weight-decay", "E633", ["--weight-decay", "-o weight_decay"]),
    ("no lr hyper-parameter", "E633", ["no `lr` hyper-parameter"]),
    ("a value the spec refuses", "E413", ["ns_steps"]),
    ("a missing optimizer spec", "E601", []),
])
def test_bad_optimizer_options_are_coded(tmp_path, text, case, code, words):
    (tmp_path / "plain.nl").write_text(NO_LR)
    kw = {"-o without --optimizer": dict(optimizer_params={"beta3": 0.5}),
          "an unknown hyper-parameter": dict(optimizer=MUON, optimizer_params={"lrr": 0.5}),
          "a model spec": dict(optimizer=HOPE),
          "-o lr and --lr disagree": dict(optimizer=MUON, optimizer_params={"lr": 0.1}, lr=0.2),
          "--weight-decay": dict(optimizer=MUON, weight_decay=0.1),
          "no lr hyper-parameter": dict(optimizer=str(tmp_path / "plain.nl")),
          "a value the spec refuses": dict(optimizer=MUON, optimizer_params={"ns_steps": 1.5}),
          "a missing optimizer spec": dict(optimizer=str(tmp_path / "none.nl"))}[case]
    opts = {**_opts(text, steps=2), "lr": None, **kw}
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, tmp_path / "run", params=TITANS_P, **opts)
    assert e.value.codes == [code], str(e.value)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def muon_run(tmp_path_factory, text):
    run = tmp_path_factory.mktemp("runs") / "muon"
    loop.train(TITANS, run, params=TITANS_P, optimizer=MUON, **{**_opts(text, steps=2, ckpt_every=1), "lr": None})
    return run


@pytest.mark.parametrize("case", ["another optimizer", "other overrides", "an AdamW run given --optimizer",
                                  "an edited optimizer text"])
def test_resume_with_another_optimizer_is_e622(tmp_path, text, muon_run, case):
    import shutil

    run = tmp_path / "run"
    if case == "an AdamW run given --optimizer":
        loop.train(TITANS, run, params=TITANS_P, **_opts(text, steps=2, ckpt_every=1))
    else:
        shutil.copytree(muon_run, run)
    if case == "an edited optimizer text":
        config = json.loads((run / "config.json").read_text())
        config["optimizer"]["text"] = config["optimizer"]["text"].replace("momentum = 0.95", "momentum = 0.5")
        (run / "config.json").write_text(json.dumps(config))
    before = _snapshot(run)
    kw = {"another optimizer": dict(optimizer=M3), "other overrides": dict(optimizer_params={"momentum": 0.5}),
          "an AdamW run given --optimizer": dict(optimizer=MUON), "an edited optimizer text": {}}[case]
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, run, resume=True, quiet=True, steps=3, **kw)
    assert e.value.codes == ["E622"], str(e.value)
    assert _snapshot(run) == before


def test_resume_given_the_same_optimizer_continues(tmp_path, muon_run):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(muon_run, run)
    done = loop.train(TITANS, run, resume=True, quiet=True, steps=3, optimizer=MUON)
    assert done["step"] == 3


def test_a_checkpoint_of_another_optimizer_does_not_fit(tmp_path, text, muon_run):
    """AdamW's moments where muon keeps `m` (the files and their record copied whole): E622 naming the entry."""
    import shutil

    adam = tmp_path / "adam"
    loop.train(TITANS, adam, params=TITANS_P, **_opts(text, steps=2, ckpt_every=1))
    shutil.copytree(muon_run, tmp_path / "muon")
    source, target = ck.complete_checkpoints(adam)[-1], ck.complete_checkpoints(tmp_path / "muon")[-1]
    shutil.copy(source / "trainer.safetensors", target / "trainer.safetensors")
    meta, adam_meta = (json.loads((f / "meta.json").read_text()) for f in (target, source))
    meta["trainer"], meta["files"]["trainer.safetensors"] = adam_meta["trainer"], adam_meta["files"]["trainer.safetensors"]
    (target / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, tmp_path / "muon", resume=True, quiet=True)
    assert e.value.codes == ["E622"] and "exp_avg" in str(e.value), str(e.value)


def test_cli_optimizer_options(tmp_path, text, capsys):
    out = tmp_path / "cli"
    code = nlc_main(["train", TITANS, "--out", str(out), "-p", "dim=8", "-p", "layers=1", "-p", "chunk=4",
                     "--data", text, "--batch", "2", "--seq", "8", "--steps", "2", "--quiet", "--eval-batches", "1",
                     "--optimizer", MUON, "-o", "momentum=0.8"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["optimizer"]["params"] == {"momentum": 0.8}
    with pytest.raises(SystemExit) as e:  # a value that is not a number: argparse's usage error, as for -p
        nlc_main(["train", TITANS, "--out", str(tmp_path / "x"), "--optimizer", MUON, "-o", "momentum=lots"])
    assert e.value.code == 2 and "not a number" in capsys.readouterr().err
