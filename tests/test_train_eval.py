"""Evaluation (online vs frozen, NIAH grid, continual table) and `nlc compare` on tiny models."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import nlc
from nlc.train import compare as cmp
from nlc.train import evaluate as ev
from nlc.train import loop
from nlc.train.tasks import Batch, make_task

ROOT = Path(__file__).resolve().parent.parent
HOPE = str(ROOT / "examples" / "hope.nl")
TITANS = str(ROOT / "examples" / "titans_lmm.nl")
TRANSFORMER = str(ROOT / "examples" / "transformer.nl")
HOPE_P = {"dim": 8, "layers": 1, "chunk": 8, "max_lr": 0.01, "cms_slow": 2}


@pytest.fixture(scope="module")
def domains(tmp_path_factory) -> list[str]:
    root = tmp_path_factory.mktemp("domains")
    out = []
    for name, unit in (("code", "def f(x):\n    return x + 1\n"), ("prose", "The sky is blue and the sea is calm. "),
                       ("digits", "3141592653 2718281828 1414213562\n")):
        d = root / name
        d.mkdir()
        (d / "a.txt").write_text(unit * 600)
        out.append(str(d))
    return out


@pytest.fixture(scope="module")
def hope_run(tmp_path_factory, domains) -> Path:
    run = tmp_path_factory.mktemp("runs") / "hope"
    loop.train(HOPE, run, params=HOPE_P, task="lm", data=[domains[0]], steps=4, batch=2, seq=8, quiet=True,
               eval_batches=1)
    return run


def _hashes(folder: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*.safetensors"))}


def test_online_levels_learn_during_eval_unless_frozen(hope_run):
    before = _hashes(hope_run)
    online = ev.evaluate(hope_run, tokens=256, segment=8, plot=False)
    frozen = ev.evaluate(hope_run, tokens=256, segment=8, frozen=True, plot=False)
    again = ev.evaluate(hope_run, tokens=256, segment=8, frozen=True, plot=False)
    assert online["carried_state"] and online["step_level_updates"] > 0
    assert not frozen["carried_state"] and frozen["step_level_updates"] == 0
    assert frozen["loss"] == again["loss"] and online["loss"] != frozen["loss"]
    assert online["tokens"] == frozen["tokens"] > 0
    assert _hashes(hope_run) == before  # evaluation never writes checkpoints
    files = [Path(f).name for f in online["files"] + frozen["files"]]
    assert files == ["eval_lm.json", "eval_lm_frozen.json"]
    assert "bits/byte" in ev.report(online)


def test_text_is_read_in_segments_of_the_training_length(hope_run, domains, tmp_path):
    """A frozen segment is as long as what the model was trained to read from a fresh state; online,
    a CMS level's `period N steps` lasts N segments of that length."""
    seq = json.loads((hope_run / "config.json").read_text())["train"]["seq"]
    lm = ev.evaluate(hope_run, tokens=256, frozen=True, plot=False)
    continual = ev.evaluate(hope_run, task="continual", data=domains, frozen=True, tokens=4096, out=tmp_path,
                            plot=False)
    assert lm["segment"] == continual["segment"] == seq
    assert ev.evaluate(hope_run, tokens=256, segment=2 * seq, frozen=True, plot=False)["segment"] == 2 * seq


def test_lm_eval_reads_every_test_token_at_most_once(domains):
    """A test split too short for `rows` streams is read by fewer rows, never wrapped around (a wrapped
    row would re-read text another row read, and a carried state would have seen it)."""
    task = make_task("lm", [domains[2]])
    model = loop.build_model(Path(TITANS).read_text(), TITANS, {"dim": 8, "layers": 1, "chunk": 4}, 0)
    size = len(task.corpus.tokens("test"))
    seg = 16
    rows = size // seg + 3  # more rows than the split has segments
    r = ev.eval_lm(model, task, True, "cpu", tokens=10 * size, rows=rows, segment=seg)
    assert r["tokens"] <= size - 1 and r["rows"] == (size - 1) // seg
    learner = ev.Learner(model, False, rows, "cpu")  # a carried state's rows cannot shrink: refused
    with pytest.raises(nlc.SpecError) as e:
        ev.eval_lm(model, task, False, "cpu", tokens=10 * size, segment=seg, learner=learner)
    assert e.value.codes == ["E612"] and "too few" in str(e.value)


def test_compare_streams_lm_for_specs_whose_state_carries():
    """On lm, a spec whose test-time learning carries its (bounded) state trains with --stream, so it
    learns to read from a carried state; full attention (a cache that grows every step) or a seq that
    is not a whole number of chunks read random windows."""
    examples = ROOT / "examples"
    assert cmp.streams_lm(str(examples / "titans_mag.nl"), {"dim": 8, "layers": 1}, 32)
    assert cmp.streams_lm(HOPE, HOPE_P, 32)
    assert not cmp.streams_lm(HOPE, HOPE_P, 36)  # chunk 8
    assert not cmp.streams_lm(TRANSFORMER, {"dim": 8, "layers": 1}, 32)  # nothing carried
    assert not cmp.streams_lm(str(examples / "cms_titans.nl"), {"dim": 16}, 64)  # online memory, full attention


def test_niah_grid_and_heat_map(hope_run, tmp_path):
    r = ev.evaluate(hope_run, task="niah", lengths=["128", "192"], depths=[0.0, 1.0], samples=2, out=tmp_path,
                    frozen=True)
    assert r["lengths"] == [128, 192] and r["depths"] == [0.0, 1.0]
    assert len(r["grid"]) == 2 and all(len(row) == 2 and all(0 <= v <= 1 for v in row) for row in r["grid"])
    png = tmp_path / "eval_niah_frozen.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "length \\ depth" in ev.report(r)


def test_mqar_accuracy_by_key_value_count(hope_run):
    r = ev.evaluate(hope_run, task="mqar:kv=4", batches=1, seq=32, plot=False)
    assert sorted(r["by_kv"]) == [1, 2, 4] and 0 <= r["acc"] <= 1


def test_continual_table_online_and_frozen(hope_run, domains, tmp_path):
    frozen = ev.evaluate(hope_run, task="continual", data=domains, frozen=True, tokens=4096, segment=32,
                         out=tmp_path)
    assert frozen["names"] == ["code", "prose", "digits"] and len(frozen["matrix"]) == 3
    assert all(row == frozen["before"] for row in frozen["matrix"])  # nothing learns: nothing is forgotten
    assert frozen["avg_forgetting"] == 0
    online = ev.evaluate(hope_run, task="continual", data=domains, tokens=4096, segment=32, out=tmp_path)
    assert online["step_level_updates"] > 0 and online["matrix"][0] != online["before"]
    assert set(online["forgetting"]) == {"code", "prose"}
    assert (tmp_path / "eval_continual.png").exists() and "forgetting" in ev.report(online)


def test_continual_training_records_the_matrix(tmp_path, domains):
    run = tmp_path / "run"
    out = loop.train(TITANS, run, params={"dim": 8, "layers": 1, "chunk": 4}, task="continual", data=domains,
                     steps=6, batch=2, seq=8, quiet=True, eval_batches=1)
    c = out["continual"]
    assert c["names"] == ["code", "prose", "digits"] and len(c["matrix"]) == 3
    # forgetting is recomputed here from the matrix: final loss minus the best earlier loss
    for j, name in enumerate(c["names"][:-1]):
        best = min(c["matrix"][i][j] for i in range(j, 2))
        assert c["forgetting"][name] == pytest.approx(c["matrix"][2][j] - best)
    assert json.loads((run / "continual.json").read_text())["names"] == c["names"]


def test_compare_same_budget_table_and_plots(tmp_path, domains):
    out = tmp_path / "cmp"
    r = cmp.compare([TRANSFORMER, TITANS], ["lm", "mqar:kv=2,budget=512"], "256", out, batch=2, seq=16,
                    params={"dim": 8, "layers": 1, "titans_lmm.chunk": 4}, data=[domains[1]], eval_tokens=256,
                    eval_batches=1, quiet=True)
    assert r["steps"] == 8 and set(r["specs"]) == {"transformer", "titans_lmm"}
    assert r["tasks"]["mqar"]["steps"] == 16  # the task's own budget=512 tokens: 512 / (2 x 16)
    assert r["specs"]["titans_lmm"]["params"] == {"dim": 8, "layers": 1, "chunk": 4}
    md = (out / "compare.md").read_text()
    assert r["table"] in md and "| transformer |" in md and "MQAR acc" in md and "LM test bits/byte" in md
    assert "mqar: 16 steps of 16 tokens (512 tokens)" in md
    for png in ("loss_lm.png", "loss_mqar.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    lm = r["tasks"]["lm"]["runs"]
    assert lm["titans_lmm"]["stream"] and not lm["transformer"]["stream"]
    stored = json.loads((Path(lm["titans_lmm"]["run"]) / "config.json").read_text())["train"]
    assert stored["stream"] and "`titans_lmm` read the training text as a stream" in md
    assert lm["titans_lmm"]["test"]["segment"] == lm["titans_lmm"]["test_frozen"]["segment"] == 16
    assert not r["tasks"]["mqar"]["runs"]["titans_lmm"]["stream"]  # --stream reads a corpus: lm only
    curves = {lab: loop.train_curve(Path(run["run"])) for lab, run in r["tasks"]["lm"]["runs"].items()}
    assert all(len(c) == 8 for c in curves.values())  # the same number of steps and tokens each
    # a second call reuses the finished runs
    again = cmp.compare([TRANSFORMER, TITANS], ["lm", "mqar:kv=2,budget=512"], "256", out, batch=2, seq=16,
                        params={"dim": 8, "layers": 1, "titans_lmm.chunk": 4}, data=[domains[1]],
                        eval_tokens=256, eval_batches=1, quiet=True)
    assert again["table"] == r["table"]


def test_compare_jobs_train_in_processes_with_the_same_results(tmp_path, domains):
    """--jobs 2 trains the runs in worker processes; the serial pass then reuses them, so the results
    are those of a serial comparison (up to float reductions at another thread count)."""
    kw = dict(batch=2, seq=16, params={"dim": 8, "layers": 1, "titans_lmm.chunk": 4}, data=[domains[1]],
              eval_tokens=256, eval_batches=1, quiet=True)
    serial = cmp.compare([TRANSFORMER, TITANS], ["lm", "mqar:kv=2"], "256", tmp_path / "a", **kw)
    parallel = cmp.compare([TRANSFORMER, TITANS], ["lm", "mqar:kv=2"], "256", tmp_path / "b", jobs=2, **kw)
    for lab in ("transformer", "titans_lmm"):
        assert parallel["tasks"]["lm"]["runs"][lab]["test"]["bpb"] == pytest.approx(
            serial["tasks"]["lm"]["runs"][lab]["test"]["bpb"], rel=1e-3)
        assert parallel["tasks"]["mqar"]["runs"][lab]["train_loss"] == pytest.approx(
            serial["tasks"]["mqar"]["runs"][lab]["train_loss"], rel=1e-3)
        assert (tmp_path / "b" / "runs" / "mqar" / lab / "summary.json").exists()
    # a run that diverges in a worker is reported as diverged, as in a serial comparison
    blown = cmp.compare([TRANSFORMER, TITANS], ["lm"], "256", tmp_path / "d", jobs=2, **{**kw, "lr": 1e12})
    assert all("diverged" in run for run in blown["tasks"]["lm"]["runs"].values())
    with pytest.raises(nlc.SpecError) as e:
        cmp.compare([TRANSFORMER], ["lm"], "256", tmp_path / "c", jobs=0, **kw)
    assert e.value.codes == ["E633"]


def test_compare_hands_chunks_per_graph_to_its_compiled_runs(tmp_path, monkeypatch):
    """--chunks-per-graph K reaches every run's train settings with --compile; without --compile it is
    refused (E633) before anything is trained."""
    with pytest.raises(nlc.SpecError) as e:
        cmp.compare([TRANSFORMER], ["lm"], "256", tmp_path / "a", batch=2, seq=16, chunks_per_graph=4)
    assert e.value.codes == ["E633"] and "does not compile" in str(e.value)
    assert not (tmp_path / "a" / "runs").exists()
    seen = []

    def stop(spec, run, cfg, quiet):
        seen.append(cfg)
        raise KeyboardInterrupt  # (the settings are all this test needs)

    monkeypatch.setattr(cmp, "_run_one", stop)
    for compile, k in ((True, 4), (True, 1), (False, 1)):
        with pytest.raises(KeyboardInterrupt):
            cmp.compare([TITANS], ["lm"], "256", tmp_path / f"b{compile}{k}", batch=2, seq=16,
                        params={"dim": 8, "layers": 1, "chunk": 4}, compile=compile, chunks_per_graph=k)
    assert [(c.get("compile"), c.get("chunks_per_graph")) for c in seen] == [(True, 4), (True, None), (None, None)]


def test_match_params_and_parameter_errors():
    target = cmp.parameter_count(TRANSFORMER, {"dim": 32, "layers": 1})
    dim, count = cmp.match_dim(TITANS, {"layers": 1}, target)
    assert dim % 8 == 0
    below = cmp.parameter_count(TITANS, {"layers": 1, "dim": dim - 8})
    above = cmp.parameter_count(TITANS, {"layers": 1, "dim": dim + 8})
    assert abs(count - target) <= min(abs(below - target), abs(above - target))
    with pytest.raises(nlc.SpecError) as e:
        cmp.spec_params([TRANSFORMER, TITANS], {"dimm": 3})
    assert e.value.codes == ["E633"]
    with pytest.raises(nlc.SpecError) as e:
        cmp.compare([TRANSFORMER], ["lm"], "10", "/nonexistent/never", batch=4, seq=16)
    assert e.value.codes == ["E633"] and "less than one step" in str(e.value)
    assert cmp.parse_budget("1.5M") == 1_500_000 and cmp.parse_budget("300k") == 300_000
    assert cmp.split_run_options("mqar:kv=8,seq=64", 128, 1000) == ("mqar:kv=8", 64, 1000)
    assert cmp.split_run_options("lm", 128, 1000) == ("lm", 128, 1000)
    assert cmp.split_run_options("mqar:budget=2M,kv=4", 128, 1000) == ("mqar:kv=4", 128, 2_000_000)
    from nlc.train.cli import _tasks

    assert _tasks("lm,mqar:kv=8,seq=64,niah") == ["lm", "mqar:kv=8,seq=64", "niah"]


def test_learner_carries_its_state_without_graph(domains):
    """Test-time learning carries the state from segment to segment with no autograd history (the
    model returns it detached), while the online levels learn from each segment."""
    model = loop.build_model(Path(HOPE).read_text(), HOPE, HOPE_P, 0)
    learner = ev.Learner(model, False, 2, "cpu")
    assert learner.carry and learner.levels is not None
    tokens = torch.randint(0, 256, (2, 9))
    for _ in range(2):
        learner.segment(tokens[:, :8], tokens[:, 1:])
        tensors = _tensors(learner.state)
        assert tensors and all(not t.requires_grad and t.grad_fn is None for t in tensors)
    assert learner.state["t"] == 16


def _tensors(state) -> list:
    if isinstance(state, torch.Tensor):
        return [state]
    values = state.values() if isinstance(state, dict) else state if isinstance(state, (list, tuple)) else []
    return [t for v in values for t in _tensors(v)]


def test_test_time_learning_on_an_accuracy_task_learns_from_the_training_loss():
    """Online levels that learn while an accuracy task is scored take the loss training took (the
    task's loss mask: the answers on MQAR), not every token: targets outside the mask change nothing."""
    task = make_task("mqar:kv=2")
    batch = task.batch(0, 2, 16, ev.EVAL_SEED, "test")
    assert not batch.loss_mask.all()  # MQAR scores its answers only
    noise = batch.targets.clone()
    noise[~batch.loss_mask] = (noise[~batch.loss_mask] + 1) % 256
    changed = Batch(batch.tokens, noise, batch.mask, batch.loss_mask)
    steps = []
    for b in (batch, changed):
        model = loop.build_model(Path(HOPE).read_text(), HOPE, {**HOPE_P, "cms_slow": 1}, 0)
        learner = ev.Learner(model, False, 2, "cpu")
        ev._score(model, b, learner, 16)
        assert learner.updates == 1
        steps.append({n: p.detach().clone() for n, p in model.named_parameters() if "cms" in n})
    assert steps[0] and all(torch.equal(steps[0][n], steps[1][n]) for n in steps[0])


def test_eval_with_a_parameter_changed_is_an_ablation_of_the_trained_weights(hope_run, tmp_path):
    # online: the state written in one 8-token chunk is read by the next (a chunk reads its start state)
    base = ev.evaluate(hope_run, tokens=256, segment=8, plot=False, out=tmp_path)
    off = ev.evaluate(hope_run, tokens=256, segment=8, plot=False, out=tmp_path, params={"max_lr": 0})
    assert off["params"] == {"max_lr": 0} and Path(off["files"][0]).name == "eval_lm_max_lr=0.json"
    assert off["loss"] != base["loss"]  # the in-context writes are off: another model, the same weights
    assert "max_lr=0" in ev.report(off)
    with pytest.raises(nlc.SpecError) as e:  # parameters that change a tensor's shape cannot load the weights
        ev.evaluate(hope_run, tokens=256, segment=8, plot=False, out=tmp_path, params={"dim": 16})
    assert e.value.codes == ["E622"]
