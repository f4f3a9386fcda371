"""`nlc bench`: every suite runs at a tiny size and returns well-formed tables; the CLI writes
bench.json and bench.md and refuses bad requests cleanly. Shapes only: never a timed assertion."""

import functools
import json
import math
import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import nlc
from nlc.bench import SUITES
from nlc.bench.build import examples_dir
from nlc.bench.config import profile
from nlc.bench.report import format_table, markdown_table, tables
from nlc.cli import main

TINY = profile(True, threads=1, repeats=1, frontend_repeats=1, compile=False, peer_dims=(16,), peer_seqs=(32,),
               roofline_models=("titans_lmm",), roofline_dims=(16,), roofline_seq=32, scaling_dim=16,
               lengths=(32, 64), piece=32, train_cap=64, models_dim=16, models_seq=32, ref_seq=16,
               hope_peer_configs=((16, 64),))

NON_NEGATIVE = {"stream_mb", "max_diff", "compile_s"}  # memory growth while streaming, a difference, a compile
# time less eager time: may be 0 at a tiny size (or with an exact backend)


@pytest.fixture(autouse=True)
def one_thread():
    """Pin torch to TINY.threads as `nlc bench` does (the scaling suite's fresh processes pin it too)."""
    before = torch.get_num_threads()
    torch.set_num_threads(TINY.threads)
    yield
    torch.set_num_threads(before)


@functools.cache
def ran(name: str) -> dict:
    """A suite's result at the tiny size (each suite runs once in this file)."""
    return SUITES[name](TINY)


def check_table(table: dict) -> None:
    assert table["title"] and isinstance(table["notes"], list) and table["rows"]
    for row in table["rows"]:
        for key, _, _ in table["columns"]:
            value = row[key]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                assert math.isfinite(value) and (value >= 0 if key in NON_NEGATIVE else value > 0), (key, row)
    assert format_table(table).startswith(table["title"])
    assert markdown_table(table).count("\n|") == len(table["rows"]) + 2  # header, rule, rows


@pytest.mark.parametrize("name", [n for n in SUITES if n != "compile"])  # compile: below, a cheap backend
def test_suite_runs_at_a_tiny_size(name):
    if name == "peer":  # the peer is a benchmark-only extra (pip install -e '.[bench]'); CI runs without it
        pytest.importorskip("titans_pytorch")
    if name == "hope_peer":  # likewise (pip install --no-deps nested-learning==0.2.0)
        pytest.importorskip("nested_learning")
    result = ran(name)
    for table in tables(result):
        check_table(table)
    json.dumps(result)


def test_suite_rows_cover_the_configurations():
    scaling = ran("scaling")
    assert [(r["model"], r["tokens"]) for r in scaling["rows"]] == [
        (m, n) for m in TINY.scaling_models for n in TINY.lengths]
    assert scaling["rows"][0]["stream_time_ratio"] == 1.0
    models = ran("models")
    matched = models["extra_tables"][0]["rows"]
    assert [r["model"] for r in matched] == list(TINY.matched) and matched[0]["dim"] == TINY.models_dim
    cms = models["extra_tables"][1]["rows"]
    assert [r["variant"].split(":")[0].split(",")[0] for r in cms] == ["hope", "hope_tokens", "hope_tokens"]
    assert cms[0]["fwd_ratio"] == 1.0 and all(r["fwd_bwd_tok_s"] > 0 for r in cms)


def test_compile_suite_reports_graphs_compile_time_and_equality(monkeypatch):
    """The compile suite at a tiny size, its chunk steps traced by dynamo's aot_eager backend (no
    inductor: seconds, not a minute): one row per model, saying what was compiled, how many graphs,
    and that the compiled logits equal eager's."""
    from dataclasses import replace

    from nlc.runtime.compile import StepPerDevice

    monkeypatch.setattr(StepPerDevice, "_options", lambda self, kind: {**self.options, "backend": "aot_eager"})
    result = SUITES["compile"](replace(TINY, compile=True, compile_models=("titans_lmm",), compile_seq=32))
    check_table(result)
    (row,) = result["rows"]
    assert row["model"] == "titans_lmm" and row["compiled"] == "2 chunk steps"
    assert 1 <= row["graphs"] <= 6 and row["max_diff"] < 1e-5
    off = SUITES["compile"](replace(TINY, compile=False))
    assert off["rows"] == [] and "nothing to measure" in off["notes"][0]


def test_flop_count_matches_torch_counter_for_titans_lmm():
    row = ran("roofline")["rows"][0]
    assert row["model"] == "titans_lmm" and 0.9 <= row["counter_ratio"] <= 1.1


def test_peer_without_titans_pytorch_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "titans_pytorch", None)  # makes `import titans_pytorch` fail
    result = SUITES["peer"](TINY)
    assert result["rows"] == [] and "pip install -e '.[bench]'" in result["notes"][0]


def test_hope_peer_without_nested_learning_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nested_learning", None)
    result = SUITES["hope_peer"](TINY)
    assert result["rows"] == [] and "pip install --no-deps nested-learning==0.2.0" in result["notes"][0]


def test_cli_writes_json_and_markdown(tmp_path, capsys):
    assert main(["bench", "frontend", "--quick", "--no-compile", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "front end" in out and "bench.json" in out
    run = json.loads((tmp_path / "bench.json").read_text())
    assert set(run) >= {"environment", "suites"} and list(run["suites"]) == ["frontend"]
    assert run["environment"]["torch"] == torch.__version__ and run["environment"]["threads"] >= 1
    rows = run["suites"]["frontend"]["rows"]
    assert len(rows) == len(list(examples_dir().glob("*.nl"))) and all(r["ok"] for r in rows)
    md = (tmp_path / "bench.md").read_text()
    assert md.startswith("# nlc bench") and "### front end" in md and "| titans_lmm.nl |" in md


def test_cli_unknown_suite_is_a_clean_error(tmp_path, capsys):
    assert main(["bench", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "unknown suite 'nope'" in err and "frontend" in err and "Traceback" not in err
    assert not (tmp_path / "bench.json").exists()


@pytest.mark.parametrize("flag, value", [("--repeats", "0"), ("--threads", "-1"), ("--repeats", "two"),
                                         ("--chunks-per-graph", "0")])
def test_cli_counts_below_one_are_a_clean_error(tmp_path, capsys, flag, value):
    """0 repeats would time nothing (every rate inf); a negative thread count would fail inside torch."""
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "frontend", flag, value, "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"{flag}: expected a whole number of at least 1, got '{value}'" in err and "Traceback" not in err
    assert not (tmp_path / "bench.json").exists()


def test_cli_missing_examples_is_a_clean_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(nlc, "__file__", str(tmp_path / "site" / "nlc" / "__init__.py"))
    assert main(["bench", "frontend", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no examples folder" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_cuda_without_a_gpu_is_a_clean_error(tmp_path, capsys):
    assert main(["bench", "frontend", "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_bench_json_is_strict_json_when_a_measurement_is_nan(tmp_path):
    # a timing can be NaN (a run that diverged, a peer that failed): bench.json must still be JSON that
    # strict readers accept, with the non-finite values named (nlc.files.dumps_json), not a bare NaN
    from nlc.bench.report import write

    table = {"title": "t", "columns": [("spec", "spec", ""), ("ms", "ms", ".1f")],
             "rows": [{"spec": "a", "ms": math.nan}, {"spec": "b", "ms": math.inf}], "notes": []}
    json_path, md_path = write(tmp_path, {"environment": {"torch": "x"}, "config": {}, "suites": {"t": table}})

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    run = json.loads(json_path.read_text(), parse_constant=refuse)
    assert [row["ms"] for row in run["suites"]["t"]["rows"]] == [None, None]
    assert run["nonfinite"] == {"suites.t.rows.0.ms": "nan", "suites.t.rows.1.ms": "inf"}
    assert "nan" in md_path.read_text()


def test_compared_calls_are_timed_in_interleaved_rounds():
    """interleaved_best warms every call once, then runs every call once a round, in order: the calls a
    ratio compares see the same moments of a noisy machine; each gets its fastest round."""
    from nlc.bench.timing import interleaved_best, throughputs

    order = []
    best = interleaved_best({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=3)
    assert order == ["a", "b"] * 4
    assert set(best) == {"a", "b"} and all(0 <= t < 1 for t in best.values())
    x = torch.randn(2, 8, 4)
    got = throughputs({"f": lambda t: (t.detach().requires_grad_() * 2), "peer": lambda t: t * 2}, x, repeats=1,
                      forward_only=("peer",))
    assert got["f"][0] > 0 and got["f"][1] > 0 and got["peer"][0] > 0 and got["peer"][1] is None


def test_peer_that_would_not_fit_in_memory_is_left_out_with_a_note(monkeypatch):
    """titans-pytorch's per-token gradients grow with dim^2 x tokens (17 GB at dim 256 x 4k): where they would
    not fit, the peer is not run (a process killed for memory would lose the whole run) and nlc still is."""
    pytest.importorskip("titans_pytorch")
    from nlc.bench import peer

    assert peer.peer_gradient_bytes(256, 4096, TINY) == 2 * 4096 * 8 * 256 * 256 * 4
    monkeypatch.setattr(peer, "available_bytes", lambda device: 1)
    result = SUITES["peer"](TINY)
    (row,) = result["rows"]
    assert row.get("peer_fwd") is None and row["fwd_ratio"] is None and row["nlc_fwd_bwd"] > 0
    assert any("not run" in note and "dim 16 x 32 tokens" in note for note in result["notes"])
    check_table(result)


def _process_result(rows: list[dict]) -> dict:
    columns = [["model", "model", ""], ["dim", "dim", "d"], ["tok_s", "tok/s", ".0f"],
               ["fwd_ratio", "nlc/peer", ".2f"], ["ok", "ok", ""]]
    return {"title": "t", "columns": columns, "rows": rows, "notes": ["n"]}


def test_processes_report_the_median_and_the_range_of_each_ratio():
    from nlc.bench.config import BenchError
    from nlc.bench.processes import combine

    runs = [[{"model": "a", "dim": 8, "tok_s": t, "fwd_ratio": r, "ok": ok}]
            for t, r, ok in [(100.0, 3.0, True), (300.0, 1.5, True), (200.0, None, False), (50.0, 2.5, True)]]
    out = combine([_process_result(rows) for rows in runs])
    (row,) = out["rows"]
    # labels as they are; 4 values -> the lower middle one; None left out (1.5, 2.5, 3.0 -> 2.5); yes only if all
    assert row == {"model": "a", "dim": 8, "tok_s": 100.0, "fwd_ratio": 2.5, "ok": False}
    assert out["per_process"] == runs and out["notes"][0] == "n" and "median of 4 processes" in out["notes"][-1]
    (spread,) = out["extra_tables"]
    assert spread["rows"] == [{"model": "a", "dim": 8, "fwd_ratio_min": 1.5, "fwd_ratio_max": 3.0}]
    check_table(spread)
    mismatched = [_process_result([{"model": "a", "dim": 8}]), _process_result([{"model": "a", "dim": 16}])]
    with pytest.raises(BenchError, match="differ in 'dim'"):
        combine(mismatched)


@given(st.lists(st.floats(0.01, 1e6), min_size=1, max_size=7))
def test_a_processes_median_is_a_measured_value_inside_the_range(values):
    from nlc.bench.processes import combine

    out = combine([_process_result([{"model": "a", "dim": 8, "tok_s": v, "fwd_ratio": v, "ok": True}])
                   for v in values])
    (row,), (spread,) = out["rows"], out["extra_tables"][0]["rows"]
    assert row["fwd_ratio"] in values and spread["fwd_ratio_min"] <= row["fwd_ratio"] <= spread["fwd_ratio_max"]
    assert sum(v < row["fwd_ratio"] for v in values) <= len(values) // 2  # never above the middle


def test_config_travels_to_a_worker_process_unchanged():
    from nlc.bench.config import config_from_json, config_json

    assert config_from_json(config_json(TINY)) == TINY


def test_cli_processes_runs_each_suite_in_fresh_processes(tmp_path, capsys):
    assert main(["bench", "frontend", "--quick", "--processes", "2", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "bench.json").read_text())["suites"]["frontend"]
    assert len(result["per_process"]) == 2 and "median of 2 processes" in result["notes"][-1]
    assert [r["file"] for r in result["rows"]] == [r["file"] for r in result["per_process"][0]]
    assert "median of 2 processes" in capsys.readouterr().out


def test_a_failing_worker_process_is_a_clean_error():
    from dataclasses import replace

    from nlc.bench.config import BenchError
    from nlc.bench.processes import run_in_processes

    with pytest.raises(BenchError, match=r"suite nope: worker process 1 of 2 failed \(exit 1\):\n(.|\n)*KeyError"):
        run_in_processes("nope", replace(TINY, processes=2))


def test_chunks_per_graph_reaches_the_compiled_variants_and_is_noted(tmp_path, monkeypatch, capsys):
    """--chunks-per-graph K: the suites' compiled builds get K (nlc.build's chunks_per_graph), the
    config records it, and the tables of the suites with compiled variants say so."""
    from nlc.bench import build as bench_build
    from nlc.bench.build import modes

    seen = []
    monkeypatch.setattr(bench_build.nlc, "build", lambda *a, **kw: seen.append(kw) or torch.nn.Linear(1, 1))
    bench_build.build(examples_dir() / "titans_lmm.nl", "cpu", 3, dim=8)
    bench_build.build(examples_dir() / "titans_lmm.nl", "cpu", 0, dim=8)
    assert seen == [{"backend": "compiled", "compile": True, "chunks_per_graph": 3, "dim": 8},
                    {"backend": "compiled", "dim": 8}]
    assert modes(profile(True, chunks_per_graph=3)) == [("eager", 0), ("compiled", 3)]
    monkeypatch.setitem(SUITES, "peer", lambda cfg: {"title": "peer", "columns": [], "rows": []})
    assert main(["bench", "peer", "frontend", "--quick", "--chunks-per-graph", "3", "--out", str(tmp_path)]) == 0
    run = json.loads((tmp_path / "bench.json").read_text())
    assert run["config"]["chunks_per_graph"] == 3
    assert run["suites"]["peer"]["notes"] == ["compiled: 3 consecutive chunks a compiled graph (--chunks-per-graph)"]
    assert "chunks" not in " ".join(run["suites"]["frontend"].get("notes", []))
