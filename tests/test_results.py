"""`make results` (nlc.train.results): the whole pipeline at a seconds-long size, and its ablation specs."""

from __future__ import annotations

import pytest

import nlc
from nlc.train import results as R


def test_each_ablation_spec_is_hope_without_one_part():
    hope = (R.ROOT / "examples" / "hope.nl").read_text(encoding="utf-8")
    texts = {name: R.ablation_text(hope, edits) for name, _, edits in R.ABLATIONS}
    assert "update dgd" not in texts["hope_no_dgd"] and texts["hope_no_dgd"].count("update gd") >= 5
    assert "cms_1" not in texts["hope_no_cms"] and "swiglu(o, cms_hidden)" in texts["hope_no_cms"]
    assert "(k, m_k(v))" not in texts["hope_no_self_values"] and texts["hope_no_self_values"].count("context (k, v)") == 5
    texts.update({name: R.ablation_text(hope, edits) for name, _, edits in R.VARIANTS})
    assert texts["hope_full_target"].count("context (k, 2 * memory(v) - k)") == 1
    for name, text in texts.items():
        nlc.loads(text.replace("model hope(", f"model {name}(", 1))  # each checks


def test_an_edit_that_no_longer_applies_is_an_error():
    with pytest.raises(ValueError, match="update nlc/train/results.py ABLATIONS"):
        R.ablation_text("model hope { }", [("update dgd", "update gd", 5)])


@pytest.mark.slow
def test_the_smoke_size_writes_the_page_with_its_tables_and_plots(tmp_path):
    doc = tmp_path / "docs" / "results.md"
    made = R.run("smoke", tmp_path / "out", doc, quiet=True)
    page = doc.read_text(encoding="utf-8")
    for model in R.MODELS:
        assert f"| {model} |" in page
    for name, _, _ in (*R.ABLATIONS, *R.VARIANTS):
        assert f"| {name} |" in page and (tmp_path / "out" / "specs" / f"{name}.nl").exists()
    assert "Table 2" in page and "Ordering by language-modelling bits/byte here" in page
    for png in ("mqar_pairs.png", "niah.png", "forgetting.png", "loss_lm.png", "ablations_loss_lm.png"):
        assert (doc.parent / "results" / png).stat().st_size > 0, png
        assert f"results/{png}" in page
    assert (tmp_path / "out" / "results.json").exists() and made["seconds"] > 0
    # Hope's runs were trained once: the ablation comparison reused the model comparison's (same budgets
    # at this size), evaluated them to the same numbers, and their time counts once
    for task in ("lm", "mqar"):
        main_run, copy = (tmp_path / "out" / part / "runs" / task / "hope" for part in ("models", "ablations"))
        assert R.training_seconds(main_run) > 0 and R.training_seconds(copy) == 0
        evaluated = [{k: v for k, v in made[part]["tasks"][task]["runs"]["hope"].items() if k != "run"}
                     for part in ("models", "ablations")]
        assert evaluated[0] == evaluated[1] and len(evaluated[0]) > 1
    runs = [r for part in ("models", "ablations") for r in (tmp_path / "out" / part / "runs").glob("*/*")]
    assert made["train_seconds"] == pytest.approx(sum(map(R.training_seconds, runs))) and made["train_seconds"] > 0
    assert "hours of training summed over the runs" in page
    doc.unlink()  # the page again from results.json alone, training nothing
    assert R.main(["--page-only", "--out", str(tmp_path / "out"), "--doc", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == page


def test_training_time_sums_every_process_that_worked_on_a_run(tmp_path):
    import json

    run = tmp_path / "runs" / "lm" / "hope"
    run.mkdir(parents=True)
    lines = [{"step": 0, "event": "start", "time": 1e9}, {"step": 1, "loss": 5.0, "time": 2.0},
             {"step": 2, "loss": 4.0, "time": 4.5}, {"step": 2, "eval": "val", "loss": 4.1, "time": 99.0},
             {"step": 2, "event": "resume", "time": 2e9}, {"step": 3, "loss": 3.0, "time": 1.5}]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, lines)) + '\n{"step": 4, "lo', encoding="utf-8")
    (run / "summary.json").write_text(json.dumps({"run": str(run)}), encoding="utf-8")
    assert R.training_seconds(run) == pytest.approx(6.0)  # 4.5 before the interruption, 1.5 after; evals aside
    (run / "summary.json").write_text(json.dumps({"run": str(tmp_path / "elsewhere")}), encoding="utf-8")
    assert R.training_seconds(run) == 0.0  # a copy of another run: its time is the original's


def test_the_needles_paragraph_orders_by_digits_and_names_a_model_whose_outputs_overflowed():
    main = {"tasks": {"niah": {"runs": {
        "a": {"niah": {"digit_acc": 0.05, "finite": True}},
        "b": {"niah": {"digit_acc": 0.8, "finite": True}},
        "c": {"niah": {"digit_acc": 0.07, "finite": False}}}}}}
    text = R._needles(main, {"niah": "niah", "seq": 128, "niah_lengths": "128,256"})
    assert "b (0.80), c (0.07), a (0.05)" in text and "At least twice chance: b." in text
    assert "Not finite: c " in text
    assert "Not finite" not in R._needles({"tasks": {"niah": {"runs": {"a": {"niah": {"digit_acc": 0.3, "finite": True}}}}}},
                                        {"niah": "niah", "seq": 128, "niah_lengths": "128"})
