"""The training loop: bit-for-bit resume, CMS step levels, checkpoints, clean errors, Ctrl-C."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import nlc
from nlc.train import checkpoint as ck
from nlc.train import loop
from nlc.train import evaluate as ev
from nlc.train.tasks import make_task

ROOT = Path(__file__).resolve().parent.parent
HOPE = str(ROOT / "examples" / "hope.nl")
TITANS = str(ROOT / "examples" / "titans_lmm.nl")
TRANSFORMER = str(ROOT / "examples" / "transformer.nl")
# tiny and numerically tame (hope's in-context memories need a small max_lr on real text)
HOPE_P = {"dim": 8, "layers": 1, "chunk": 4, "max_lr": 0.01, "cms_slow": 3}
TITANS_P = {"dim": 8, "layers": 1, "chunk": 4}


@pytest.fixture(scope="module")
def text(tmp_path_factory) -> str:
    f = tmp_path_factory.mktemp("data") / "corpus.txt"
    lines = [f"def f{i}(x):\n    return x * {i} + {i % 7}  # value {i}\n" for i in range(3000)]
    f.write_text("".join(lines))
    return str(f)


def _opts(text, **kw):
    base = dict(task="lm", data=[text], batch=2, seq=8, steps=6, lr=3e-3, quiet=True, ckpt_every=3, eval_batches=1)
    base.update(kw)
    return base


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _losses_after_last_resume(run: Path) -> dict:
    records = loop.read_metrics(run)
    start = max(i for i, r in enumerate(records) if r.get("event") in ("start", "resume"))
    return {r["step"]: r["loss"] for r in records[start:] if "loss" in r and "eval" not in r}


class _StopAfter(loop._Stop):
    """Acts as if Ctrl-C came during step `n` of this session."""

    n = 3

    def __enter__(self):
        self.checks = 0
        return self

    def __exit__(self, *exc):
        return False

    @property
    def requested(self):
        self.checks += 1
        return self.checks >= self.n

    @requested.setter
    def requested(self, value):
        pass


@pytest.mark.parametrize("spec, params, stream", [(HOPE, HOPE_P, True), (TITANS, TITANS_P, False)],
                         ids=["hope-stream", "titans"])
def test_resume_equals_uninterrupted(tmp_path, text, monkeypatch, spec, params, stream):
    whole = loop.train(spec, tmp_path / "whole", params=params, stream=stream, **_opts(text, steps=7))
    monkeypatch.setattr(loop, "_Stop", _StopAfter)
    part = loop.train(spec, tmp_path / "part", params=params, stream=stream, **_opts(text, steps=7))
    assert part["interrupted"] and part["step"] == 3
    monkeypatch.undo()
    done = loop.train(spec, tmp_path / "part", resume=True, quiet=True)
    assert not done["interrupted"] and done["step"] == 7
    a, b = loop.train_curve(tmp_path / "whole"), loop.train_curve(tmp_path / "part")
    assert [s for s, _ in a] == list(range(1, 8))
    assert a == b  # the same losses, bit for bit
    assert _losses_after_last_resume(tmp_path / "part") == dict(a[3:])
    assert whole["val"] == done["val"]
    m1 = ck.load_checkpoint(tmp_path / "whole").model
    m2 = ck.load_checkpoint(tmp_path / "part").model
    assert all(torch.equal(m1[k], m2[k]) for k in m1)
    if stream:
        assert (Path(done["checkpoint"]) / "state.safetensors").exists()


def test_cms_step_levels_move_every_period_with_the_summed_gradients(tmp_path, text):
    run = tmp_path / "cms"
    opts = _opts(text, steps=6, ckpt_every=1, keep=0)
    loop.train(HOPE, run, params=HOPE_P, **opts)
    model = loop.build_model(Path(HOPE).read_text(), HOPE, HOPE_P, 0)
    assert model.step_levels["blocks.0.cms_1_state"].period == 3
    assert model.step_levels["blocks.0.cms_2_state"].period == 1
    params = [{k: v.clone() for k, v in model.state_dict().items()}]
    params += [ck.load_checkpoint(ck.step_dir(run, s)).model for s in range(1, 7)]
    slow = [k for k in params[0] if k.startswith("blocks.0.cms_1_state.")]
    fast = [k for k in params[0] if k.startswith("blocks.0.cms_2_state.")]
    assert slow and fast
    for s in range(1, 7):
        moved = not all(torch.equal(params[s][k], params[s - 1][k]) for k in slow)
        assert moved == (s % 3 == 0), s  # the slow level moves after steps 3 and 6 only
        assert not all(torch.equal(params[s][k], params[s - 1][k]) for k in fast)  # the fast one every step
    # independently: the step-3 update is -lr times the gradients of steps 1..3, each taken at its own weights
    task = make_task("lm", [text])
    lr = model.step_levels["blocks.0.cms_1_state"].lr
    total = {k: torch.zeros_like(params[0][k]) for k in slow}
    for s in range(3):
        model.load_state_dict(params[s])
        model.zero_grad()
        b = task.batch(s, 2, 8, 0)
        F.cross_entropy(model(b.tokens).reshape(-1, 256), b.targets.reshape(-1)).backward()
        named = dict(model.named_parameters())
        for k in slow:
            total[k] += named[k].grad
    for k in slow:
        torch.testing.assert_close(params[3][k], params[0][k] - lr * total[k], rtol=1e-5, atol=1e-7)


def test_checkpoint_files_and_config(tmp_path, text):
    run = tmp_path / "run"
    out = loop.train(HOPE, run, params=HOPE_P, stream=True, **_opts(text))
    config = json.loads((run / "config.json").read_text())
    assert config["spec"]["text"] == Path(HOPE).read_text() and len(config["spec"]["hash"]) == 64
    assert config["train"]["params"] == HOPE_P and config["parameters"]["step_levels"] > 0
    ckpt = Path(out["checkpoint"])
    assert sorted(p.name for p in ckpt.iterdir()) == ["meta.json", "model.safetensors", "state.safetensors",
                                                      "trainer.safetensors"]
    assert [p.name for p in ck.list_checkpoints(run)] == ["step_00000003", "step_00000006"]
    loaded = ck.load_checkpoint(run, config["spec"]["hash"])
    assert loaded.step == 6 and loaded.stream_state["t"] == 6 * 8
    online = set(loaded.stream_state["blocks"][0]["levels"])
    assert {"m_k", "m_v", "m_eta", "m_alpha", "memory"} <= online
    records = loop.read_metrics(run)
    steps = [r for r in records if "loss" in r and "eval" not in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert all(r["tok_s"] > 0 and r["tokens"] == r["step"] * 16 for r in steps)
    assert (run / "summary.json").exists()


def _two_checkpoints(tmp_path, text) -> Path:
    run = tmp_path / "run"
    loop.train(TITANS, run, params=TITANS_P, **_opts(text, steps=4, ckpt_every=2))
    return run


def test_corrupt_or_truncated_checkpoint(tmp_path, text):
    run = _two_checkpoints(tmp_path, text)
    newest = ck.step_dir(run, 4) / "model.safetensors"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    before = _snapshot(run)
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, run, resume=True, quiet=True)
    msg = str(e.value)
    assert e.value.codes == ["E621"] and "model.safetensors does not match its recorded sha256" in msg
    assert "step_00000002" in msg and "--resume" in msg  # the way out
    with pytest.raises(nlc.SpecError) as e:
        ev.load_run(run)
    assert e.value.codes == ["E621"]
    newest.write_bytes(bytes(data[:100]))
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, run, resume=True, quiet=True)
    assert e.value.codes == ["E621"] and "truncated (100 bytes" in str(e.value)
    after = _snapshot(run)
    assert {k: v for k, v in after.items() if "step_00000004/model" not in k} == \
        {k: v for k, v in before.items() if "step_00000004/model" not in k}  # nothing else touched
    # resuming from the whole earlier checkpoint works
    done = loop.train(TITANS, run, resume=ck.step_dir(run, 2), quiet=True)
    assert done["step"] == 4


def test_interrupted_save_is_ignored(tmp_path, text):
    run = _two_checkpoints(tmp_path, text)
    (ck.step_dir(run, 4) / "meta.json").unlink()  # as if killed while writing step 4
    assert ck.find_checkpoint(run) == ck.step_dir(run, 2)
    with pytest.raises(nlc.SpecError) as e:
        ck.load_checkpoint(ck.step_dir(run, 4))
    assert e.value.codes == ["E621"] and "incomplete" in str(e.value)
    (ck.step_dir(run, 2) / "meta.json").write_text("{not json")
    with pytest.raises(nlc.SpecError) as e:
        ck.load_checkpoint(run)
    assert e.value.codes == ["E621"]


def test_checkpoint_of_another_spec(tmp_path, text):
    run = _two_checkpoints(tmp_path, text)
    before = _snapshot(run)
    with pytest.raises(nlc.SpecError) as e:
        loop.train(HOPE, run, resume=True, params=TITANS_P, quiet=True)
    assert e.value.codes == ["E622"] and "not the spec run" in str(e.value)
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, run, resume=True, params={**TITANS_P, "dim": 16}, quiet=True)
    assert e.value.codes == ["E622"] and "params" in str(e.value)
    with pytest.raises(nlc.SpecError) as e:
        ck.load_checkpoint(run, spec_hash="0" * 64)
    assert e.value.codes == ["E622"] and "different spec" in str(e.value)
    other = loop.build_model(Path(HOPE).read_text(), HOPE, HOPE_P, 0)
    with pytest.raises(nlc.SpecError) as e:
        ck.load_model_tensors(other, ck.load_checkpoint(run).model, run)
    assert e.value.codes == ["E622"] and "does not fit this model" in str(e.value)
    assert _snapshot(run) == before


def test_an_existing_run_is_never_overwritten(tmp_path, text):
    run = _two_checkpoints(tmp_path, text)
    before = _snapshot(run)
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, run, params=TITANS_P, **_opts(text))
    assert e.value.codes == ["E623"] and "--resume" in str(e.value)
    assert _snapshot(run) == before


@pytest.mark.parametrize("content, code", [(b"", "E612"), (b"\x00\x01\x02binary", "E613")])
def test_bad_data_file_stops_before_writing(tmp_path, content, code):
    f = tmp_path / "data.txt"
    f.write_bytes(content)
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, tmp_path / "run", params=TITANS_P, task="lm", data=[str(f)], steps=2, quiet=True)
    assert e.value.codes == [code]
    assert not (tmp_path / "run").exists()


def test_unaligned_streaming_length(tmp_path, text):
    with pytest.raises(nlc.SpecError) as e:
        loop.train(HOPE, tmp_path / "run", params=HOPE_P, stream=True, **_opts(text, seq=6))
    assert e.value.codes == ["E603"] and "--seq 6 is not a multiple of the model's alignment (4 tokens)" in \
        str(e.value) and "use --seq 4 or 8" in str(e.value)
    assert not (tmp_path / "run").exists()
    run = _two_checkpoints(tmp_path, text)
    with pytest.raises(nlc.SpecError) as e:
        ev.evaluate(run, task="lm", segment=6)
    assert e.value.codes == ["E603"] and "--segment 6" in str(e.value)


def test_nan_loss_stops_with_step_and_last_good_checkpoint(tmp_path, text):
    run = tmp_path / "run"
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TRANSFORMER, run, params={"dim": 8, "layers": 1, "heads": 2},
                   **_opts(text, steps=50, lr=1e12, ckpt_every=1, warmup=0, clip=1e30))
    msg = str(e.value)
    m = re.search(r"the (loss|gradient norm) is (nan|inf|-inf) at step (\d+) of run", msg)
    assert e.value.codes == ["E630"] and m, msg
    step = int(m.group(3))
    ck.verify(ck.step_dir(run, step - 1))  # whole, but its weights gave the NaN: not a way back
    # the checkpoint named is the newest older one whose recorded loss had not blown up, if any
    losses = dict(loop.train_curve(run))
    safe = [s for s in range(1, step - 1) if losses[s] <= loop.BLOWUP * losses[1]]
    if safe:
        assert f"the last good checkpoint is {ck.step_dir(run, safe[-1])} (step {safe[-1]}" in msg
    else:
        assert "last good" not in msg and "there is no checkpoint to resume from" in msg
    assert loop.read_metrics(run)[-1]["event"] == "nonfinite"


def test_unsupported_step_level_rule_and_bad_options(tmp_path, text):
    spec = tmp_path / "m.nl"
    spec.write_text(
        "model m(dim = 8) {\n  block b {\n    level c {\n      state mlp(dim, 16, depth = 2, residual = true)\n"
        "      init learned\n      context loss\n      objective dot\n      update muon\n      lr 0.01\n"
        "      period 2 steps\n    }\n\n    out = c(x)\n  }\n}\n")
    with pytest.raises(nlc.SpecError) as e:  # refused by the checker, before any training (E308)
        loop.train(spec, tmp_path / "run", **_opts(text))
    assert e.value.codes == ["E308"] and "`muon`" in str(e.value)
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, tmp_path / "run2", params=TITANS_P, **_opts(text, steps=0))
    assert e.value.codes == ["E633"]
    for bad, says in (({"chunks_per_graph": 2}, "add --compile"), ({"chunks_per_graph": 0, "compile": True},
                                                                   "--chunks-per-graph must be at least 1")):
        with pytest.raises(nlc.SpecError) as e:  # a setting that would not take effect, or no chunks at all
            loop.train(TITANS, tmp_path / "run2", params=TITANS_P, **_opts(text, **bad))
        assert e.value.codes == ["E633"] and says in str(e.value)
    with pytest.raises(nlc.SpecError) as e:
        loop.train(TITANS, tmp_path / "run3", params=TITANS_P, **_opts(text, device="cuda:7"))
    assert e.value.codes == ["E631"]


def test_ctrl_c_saves_and_resume_finishes(tmp_path, text):
    run = tmp_path / "run"
    argv = [sys.executable, "-m", "nlc.train.cli", "train", TITANS, "--out", str(run), "--task", "lm",
            "--data", text, "-p", "dim=8", "-p", "layers=1", "-p", "chunk=4", "--steps", "100000",
            "--batch", "2", "--seq", "8", "--ckpt-every", "0", "--quiet"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 60
    while time.time() < deadline:
        if len([r for r in loop.read_metrics(run) if "loss" in r]) >= 3:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    ckpt = ck.find_checkpoint(run)
    ck.verify(ckpt)
    step = ck.load_checkpoint(run).step
    assert step >= 3 and loop.read_metrics(run)[-1]["event"] == "interrupted"
    done = loop.train(TITANS, run, resume=True, steps=step + 2, quiet=True)
    assert done["step"] == step + 2 and not done["interrupted"]


def test_cli_train_and_eval(tmp_path, text, capsys):
    from nlc.cli import main

    run = tmp_path / "run"
    assert main(["train", TITANS, "--out", str(run), "--task", "lm", "--data", text, "-p", "dim=8",
                 "-p", "layers=1", "-p", "chunk=4", "--steps", "3", "--batch", "2", "--seq", "8", "--quiet"]) == 0
    assert "done: 3 steps" in capsys.readouterr().out
    assert main(["eval", str(run), "--tokens", "256", "--segment", "8"]) == 0
    assert "bits/byte" in capsys.readouterr().out
    assert main(["train", TITANS, "--out", str(run), "--task", "lm", "--data", text, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "error[E623]" in err and "Traceback" not in err


def test_keep_never_prunes_the_newest_safe_checkpoint(tmp_path):
    # the loss climbs past BLOWUP x the first step's for more than `keep` checkpoints: pruning by count alone
    # deleted the last checkpoint a divergence (E630) could send the user back to
    first = 1.0
    losses = {1: 1.0, 2: 1.5, 3: 5.0, 4: 6.0, 5: 7.0}
    assert losses[2] <= loop.BLOWUP * first < losses[3]
    for step, loss in losses.items():
        ck.save_checkpoint(tmp_path, step, "0" * 64, {"w": torch.full((2,), float(step))}, {}, {}, keep=2,
                           loss=loss, first_loss=first)
    kept = [int(p.name.removeprefix("step_")) for p in ck.list_checkpoints(tmp_path)]
    assert kept == [2, 4, 5]
    path, meta = loop.safe_checkpoint(tmp_path, 6, first)
    assert meta["step"] == 2 and path == ck.step_dir(tmp_path, 2)
    # once a newer safe point is saved, the old one goes like any other
    ck.save_checkpoint(tmp_path, 6, "0" * 64, {"w": torch.zeros(2)}, {}, {}, keep=2, loss=1.2, first_loss=first)
    assert [int(p.name.removeprefix("step_")) for p in ck.list_checkpoints(tmp_path)] == [5, 6]


def test_keep_passes_over_a_damaged_checkpoint_when_it_looks_for_the_safe_one(tmp_path):
    first = 1.0
    for step, loss in {1: 1.0, 2: 1.1}.items():
        ck.save_checkpoint(tmp_path, step, "0" * 64, {"w": torch.ones(2)}, {}, {}, keep=0, loss=loss, first_loss=first)
    (ck.step_dir(tmp_path, 2) / "model.safetensors").write_bytes(b"damaged")
    for step in (3, 4):
        ck.save_checkpoint(tmp_path, step, "0" * 64, {"w": torch.ones(2)}, {}, {}, keep=1, loss=9.0, first_loss=first)
    assert [int(p.name.removeprefix("step_")) for p in ck.list_checkpoints(tmp_path)] == [1, 4]


def _with_history(state, path="state") -> list[str]:
    """The paths of the tensors of a state that carry autograd history (requires_grad or a grad_fn)."""
    if isinstance(state, torch.Tensor):
        return [path] if state.requires_grad or state.grad_fn is not None else []
    if isinstance(state, dict):
        return [p for k, v in state.items() for p in _with_history(v, f"{path}[{k!r}]")]
    if isinstance(state, (list, tuple)):
        return [p for i, v in enumerate(state) for p in _with_history(v, f"{path}[{i}]")]
    return []


def test_streaming_state_is_carried_without_graph(tmp_path, text, monkeypatch):
    """With --stream, the state each step starts from is the previous step's, with no autograd history
    (the model returns it detached: a graph kept through it would reach back to the first step)."""
    seen = []
    build = loop.build_model

    def spying_build(*args, **kw):
        model = build(*args, **kw)
        forward = model.forward

        def spy(tokens, state=None, **options):
            seen.append(state)
            return forward(tokens, state=state, **options)
        model.forward = spy
        return model
    monkeypatch.setattr(loop, "build_model", spying_build)
    loop.train(HOPE, tmp_path / "run", params=HOPE_P, stream=True, **_opts(text, steps=3, eval_batches=0))
    carried = [s for s in seen if s is not None][1:]  # the first is init_state's
    assert len(carried) == 2 and [s["t"] for s in carried] == [8, 16]
    assert all(_with_history(s) == [] for s in carried)


def test_checkpoint_streaming_state_must_fit(tmp_path):
    """The trainer's check of a checkpoint's streaming state (E622) is the streaming API's layout walk:
    a growing cache may have any length, another batch, dtype, shape, structure or count is refused."""
    model = loop.build_model(Path(TRANSFORMER).read_text(), TRANSFORMER, {"dim": 8, "layers": 1}, 0)
    fresh = model.init_state(2)
    _, grown = model(torch.zeros(2, 5, dtype=torch.long), state=model.init_state(2))
    loop._check_state_fits(grown, fresh, 2, tmp_path)  # the attention cache grew: it fits
    hope = loop.build_model(Path(HOPE).read_text(), HOPE, HOPE_P, 0)
    fresh = hope.init_state(2)
    memory = fresh["blocks"][0]["levels"]["memory"]["W"]
    refused = {
        "another batch": (hope.init_state(3), "has 3 rows, this run's batch is 2"),
        "another dtype": ({**fresh, "blocks": [{**fresh["blocks"][0], "levels": {
            **fresh["blocks"][0]["levels"], "memory": {"W": {k: v.double() for k, v in memory.items()},
                                                       "aux": {}}}}]}, "torch.float64"),
        "another width": (loop.build_model(Path(HOPE).read_text(), HOPE, {**HOPE_P, "dim": 16}, 0).init_state(2),
                          "has shape"),
        "a key missing": ({"blocks": fresh["blocks"]}, "has no `t`"),
        "t not a whole number": ({**fresh, "t": 8.0}, "this model's is a whole number"),
        "another layer count": ({**fresh, "blocks": fresh["blocks"] * 2}, "a list of 1"),
    }
    for case, (state, words) in refused.items():
        with pytest.raises(nlc.SpecError) as e:
            loop._check_state_fits(state, fresh, 2, tmp_path / "state.safetensors")
        assert e.value.codes == ["E622"], case
        assert "does not fit this model" in str(e.value) and words in str(e.value), (case, str(e.value))


def test_init_from_starts_a_new_run_from_another_runs_weights(tmp_path, text):
    """--init-from: a new run whose model starts from another run's newest checkpoint (a curriculum), with
    its own optimizer and schedule; recorded in config.json, fixed for --resume, E622 when shapes differ."""
    params = {"dim": 8, "layers": 1, "chunk": 4}
    first = tmp_path / "short"
    loop.train(TITANS, first, **_opts(text, params=params, seq=8, steps=4))
    source = ck.load_checkpoint(ck.find_checkpoint(first), json.loads((first / "config.json").read_text())["spec"]["hash"])
    model = loop.build_model(Path(TITANS).read_text(), TITANS, params, seed=1)
    record = loop.warm_start(model, str(first))
    assert record["step"] == 4 and all(torch.equal(model.state_dict()[k], v) for k, v in source.model.items())
    second = tmp_path / "long"
    loop.train(TITANS, second, **_opts(text, params=params, seq=16, steps=2, init_from=str(first)))
    config = json.loads((second / "config.json").read_text())
    assert config["init_from"]["step"] == 4 and config["train"]["init_from"] == str(first.resolve())
    fresh = tmp_path / "fresh"
    loop.train(TITANS, fresh, **_opts(text, params=params, seq=16, steps=2))
    # the same batches and seed: only the starting weights differ
    assert loop.train_curve(second)[0][1] != loop.train_curve(fresh)[0][1]
    with pytest.raises(nlc.SpecError) as e:  # the warm start is part of the run: --resume cannot change it
        loop.train(TITANS, second, resume=True, **_opts(text, params=params, seq=16, steps=3,
                                                        init_from=str(fresh)))
    assert e.value.codes == ["E622"]
    with pytest.raises(nlc.SpecError) as e:  # other shapes cannot take the weights
        loop.train(TITANS, tmp_path / "wide", **_opts(text, params={**params, "dim": 16}, init_from=str(first)))
    assert e.value.codes == ["E622"]


def test_compile_options_reach_the_chunk_steps(tmp_path, text, monkeypatch):
    """--compile --chunks-per-graph K: the trainer compiles the model's chunk steps K chunks a graph
    (compile_chunks replaced by a recorder: inductor is the compile-marked tests' business)."""
    seen = []
    monkeypatch.setattr(loop, "compile_chunks", lambda model, **kw: seen.append(kw) or model)
    loop.train(TITANS, tmp_path / "run", params=TITANS_P, **_opts(text, steps=1, compile=True, chunks_per_graph=3))
    assert seen == [{"chunks_per_graph": 3}]


def test_compile_refuses_second_order_context_loss_levels_before_writing(tmp_path, text):
    """hope_tokens' `context loss` levels differentiate through their steps: a training step is a second-order
    gradient through every block, which torch.compile cannot take (it failed mid-run with an internal error).
    --compile is refused at the start (E633), nothing written; with the levels `first_order` it is accepted."""
    spec = ROOT / "examples" / "hope_tokens.nl"
    params = {"dim": 8, "layers": 1}
    with pytest.raises(nlc.SpecError) as e:
        loop.train(str(spec), tmp_path / "run", params=params, **_opts(text, steps=1, compile=True))
    assert e.value.codes == ["E633"] and "first_order" in str(e.value) and "second-order" in str(e.value)
    assert not (tmp_path / "run" / "config.json").exists()
    model = nlc.build(spec, **params)
    assert model.second_order and not hasattr(nlc.build(TITANS, **TITANS_P), "second_order")
    first = re.sub(r"(period cms_\w+ tokens\n        online\n)", r"\1        first_order\n", spec.read_text())
    assert first.count("first_order\n") == 3 and not nlc.build(nlc.loads(first), **params).second_order
