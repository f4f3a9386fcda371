"""The front end end to end: parse, lower, resolve, check, IR and YAML equivalence."""

from dataclasses import FrozenInstanceError

import pytest

import nlc
from nlc import ir
from nlc.graph import dataflow, level_graph, to_dot
from nlc.passes.pipeline import check_ir

from specs import CMS, SGD, TITANS, TITANS_YAML


def test_titans_loads_with_resolved_names():
    p = nlc.loads(TITANS, "titans.nl")
    assert p.kind is ir.ProgramKind.MODEL and p.name == "titans_lmm"
    (level,) = ir.all_levels(p)
    assert level.name == "memory" and level.online
    assert level.state == ir.Call("mlp", level.state.args, level.state.kwargs, kind=ir.CallKind.FORM)
    assert level.period.unit is ir.PeriodUnit.TOKENS
    refs = {n.name: n.kind for n in ir.walk(level.context) if isinstance(n, ir.Ref)}
    assert refs == {"k": ir.RefKind.LET, "v": ir.RefKind.LET}


def test_ir_is_immutable():
    p = nlc.loads(TITANS)
    with pytest.raises(FrozenInstanceError):
        p.name = "other"  # type: ignore[misc]


def test_spans_point_at_source():
    p = nlc.loads(TITANS, "titans.nl")
    level = ir.all_levels(p)[0]
    assert (level.name_span.line, level.name_span.col) == (11, 13)
    assert level.name_span.text == "memory"
    assert level.field_span("period").text == "period chunk tokens"


def test_equality_ignores_layout_and_comments():
    squashed = " ".join(line.split("#")[0] for line in TITANS.splitlines())
    assert nlc.loads(squashed) == nlc.loads(TITANS)


def test_yaml_lowers_to_identical_ir():
    assert nlc.loads(TITANS_YAML, "titans.yaml") == nlc.loads(TITANS, "titans.nl")


def test_yaml_errors_point_into_the_yaml_file():
    bad = TITANS_YAML.replace("rmsnorm(x)", "rmsnorm(y)")
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(bad, "titans.yaml")
    (d,) = e.value.diagnostics
    assert d.code == "E201" and d.span.line == 6 and d.span.text == "y"


def test_defaults_are_filled_and_printed():
    text = "model m { block b { level mem { state linear(dim, dim)\n context (x, x) }\n out = mem(x) } }"
    level = ir.all_levels(nlc.loads(text))[0]
    assert level.init.fn == "learned" and level.objective.fn == "l2" and level.update.fn == "gd"
    assert level.period == ir.Period(ir.PeriodUnit.TOKENS, ir.Num(1))
    printed = nlc.print_program(nlc.loads(text))
    assert "init learned" in printed and "period 1 tokens" in printed


def test_parameter_overrides_reach_the_checks():
    checked = check_ir(nlc.loads(TITANS), {"dim": 48, "chunk": 8})
    assert checked.params["dim"] == 48 and checked.params["chunk"] == 8
    with pytest.raises(nlc.SpecError) as e:
        nlc.check(nlc.loads(CMS), dim=0)
    assert "E413" in e.value.codes


def test_unknown_override_is_reported_with_hint():
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(TITANS, dmi=3)
    (d,) = e.value.diagnostics
    assert d.code == "E208" and d.hint == "did you mean `dim`?"


def test_optimizer_spec_checks():
    p = nlc.loads(SGD, "sgd.nl")
    assert not p.is_model
    weights = [lv for lv in ir.all_levels(p) if lv.name == "weights"][0]
    assert weights.update == ir.Ref("m", ir.RefKind.LEVEL)


def test_dataflow_cuts_edges_through_state():
    # k reads the memory, the memory learns from k: allowed, the read sees the previous state
    text = TITANS.replace("let k = l2norm(silu(conv(linear(h, dim), 4)))", "let k = memory(q)")
    p = nlc.loads(text)
    (_, block), = [(b, blk) for b, blk in ir.scopes(p)]
    g = dataflow(block.body)
    assert ("let", "k") in g and not g.has_edge(("update", "memory"), ("let", "k"))


def test_same_step_cycle_is_rejected():
    text = TITANS.replace("let v = silu(conv(linear(h, dim), 4))", "let v = k + q\n let q = v")
    text = text.replace("let q = l2norm(silu(conv(linear(h, dim), 4)))", "")
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(text)
    assert e.value.codes == ["E310"]
    assert "q -> v -> q" in str(e.value) or "v -> q -> v" in str(e.value)


def test_level_graph_bands_fastest_innermost():
    checked = check_ir(nlc.loads(CMS), {})
    g = level_graph(checked.program, checked.params)
    bands = {n: d["band"] for n, d in g.nodes(data=True) if "band" in d}
    assert bands["continuum.fast"] < bands["continuum.mid"] < bands["continuum.slow"]
    assert bands["outer"] == bands["continuum.fast"]  # both update every step
    dot = to_dot(g)
    assert dot.index("every 16 steps") < dot.index("every 4 steps") < dot.index('"continuum.fast"')


def test_optimizer_level_graph_has_update_edge():
    checked = check_ir(nlc.loads(SGD), {})
    g = level_graph(checked.program, checked.params)
    kinds = {(u, v, d["kind"]) for u, v, d in g.edges(data=True)}
    assert ("m", "weights", "update") in kinds and ("loss", "m", "grad") in kinds


def test_every_error_carries_code_span_and_render():
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads("model m { block b { out = lienar(x, dim) } }", "m.nl")
    d = e.value.diagnostics[0]
    assert d.code == "E202" and d.hint == "did you mean `linear`?"
    assert d.render().splitlines()[-2].strip().endswith("^^^^^^")


# ---- hostile details: byte order marks, non-ASCII digits, YAML keys and flags, statement limit ----

TINY = "model m(a = 1) {\n  block b {\n    out = x * a\n  }\n}\n"
TINY_YAML = "model: m\nparams: {a: 1}\nbody:\n  - block b:\n      - out: x * a\n"


def test_statement_limit(monkeypatch):
    assert nlc.loads(TINY)  # 3 statements: the parameter `a`, the block, `out`
    for text, path in [(TINY, "m.nl"), (TINY_YAML, "m.yaml")]:
        monkeypatch.setenv("NLC_MAX_STATEMENTS", "3")
        nlc.loads(text, path)
        monkeypatch.setenv("NLC_MAX_STATEMENTS", "2")
        with pytest.raises(nlc.SpecError) as e:
            nlc.loads(text, path)
        (d,) = e.value.diagnostics
        assert d.code == "E118" and d.message == "the spec has more than 2 statements" and d.span.text == "out"
        assert d.hint == "split it into smaller specs, or raise the limit: NLC_MAX_STATEMENTS=4"
    monkeypatch.setenv("NLC_MAX_STATEMENTS", "0")
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(TINY)
    assert e.value.codes == ["E118"] and "NLC_MAX_STATEMENTS='0' is not a positive whole number" in str(e.value)
    monkeypatch.delenv("NLC_MAX_STATEMENTS")
    lets = "".join(f"let a{i + 1} = a{i}\n" for i in range(10_000))  # the block, then 10,001 lets: one too many
    text = f"model m {{\n block b {{\n let a0 = x\n{lets} out = a10000\n }}\n}}\n"
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(text)
    assert e.value.codes == ["E118"] and e.value.diagnostics[0].span.line == 10_002
