"""The front end end to end: parse, lower, resolve, check, IR and YAML equivalence."""

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

import nlc
from nlc import ir
from nlc.graph import dataflow, layout, level_graph, to_dot
from nlc.passes.pipeline import check_ir

from specs import CMS, SGD, TITANS, TITANS_YAML

ROOT = Path(__file__).resolve().parent.parent


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
    g = level_graph(checked.program, checked.facts)
    bands = {n: d["band"] for n, d in g.nodes(data=True) if "band" in d}
    assert bands["continuum.fast"] < bands["continuum.mid"] < bands["continuum.slow"]
    assert bands["outer"] == bands["continuum.fast"]  # both update every step
    dot = to_dot(g)
    assert dot.index("every 16 steps") < dot.index("every 4 steps") < dot.index('"continuum.fast"')


TWO_BLOCKS = """model two(dim = 8) {
  block a {
    level p {
      state linear(dim, dim)
      context (x, x)
      period 1 tokens
    }
    level q {
      state linear(dim, dim)
      context (x, x)
      period 1 tokens
    }
    out = p(x) + q(x)
  }
  block b {
    level r {
      state linear(dim, dim)
      context (x, x)
      period 2 tokens
    }
    out = r(x)
  }
}
"""


@pytest.mark.parametrize("text", [TWO_BLOCKS, (ROOT / "examples" / "hope_tokens.nl").read_text()])
def test_graph_layout_keeps_boxes_apart_and_blocks_in_their_own_columns(text):
    """The picture's layout: one row a frequency (fastest on top), boxes of a row at least a box
    width apart, each block's levels inside its own column span, spans disjoint."""
    checked = check_ir(nlc.loads(text), {})
    g = level_graph(checked.program, checked.facts)
    pos, spans = layout(g)
    levels = [n for n, d in g.nodes(data=True) if d["kind"] == "level"]
    for i, u in enumerate(levels):
        for v in levels[i + 1:]:
            (xu, yu), (xv, yv) = pos[u], pos[v]
            assert yu != yv or abs(xu - xv) >= 2.0, (u, v)
        assert (pos[u][1] > pos[levels[0]][1]) == (g.nodes[u]["band"] < g.nodes[levels[0]]["band"]) or u == levels[0]
        x0, x1 = spans[u.rpartition(".")[0]]
        assert x0 < pos[u][0] < x1
    ordered = sorted(spans.values())
    assert all(a[1] <= b[0] for a, b in zip(ordered, ordered[1:]))


def test_optimizer_level_graph_has_update_edge():
    checked = check_ir(nlc.loads(SGD), {})
    g = level_graph(checked.program, checked.facts)
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


@pytest.mark.parametrize("text, name", [(TITANS, "titans.nl"), (TITANS_YAML, "titans.yaml")])
def test_a_byte_order_mark_at_the_start_is_accepted(tmp_path, text, name):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert nlc.load(path) == nlc.loads(text, name) == nlc.loads("\ufeff" + text, name)
    with pytest.raises(nlc.SpecError) as e:  # spans still point at the right column after the mark
        nlc.loads("\ufeff" + text.replace("rmsnorm(x)", "rmsnorm(y)"), name)
    assert e.value.diagnostics[0].span.text == "y"


def test_a_byte_order_mark_elsewhere_is_shown_by_its_code_point():
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(TINY + "\ufeff")
    (d,) = e.value.diagnostics
    assert d.code == "E101" and d.message == "unexpected character U+FEFF" and "byte order mark" in d.hint


NON_ASCII_DIGITS = ["\u0663", "\u06f3", "\u0969", "\u09e9", "\uff13", "\U0001d7d1", "\u1043", "\u0e53"]
# Arabic-Indic, extended Arabic-Indic, Devanagari, Bengali, fullwidth, mathematical bold, Myanmar, Thai
# three: each is a decimal digit to Python (int() reads it as 3), none is one to nlc
NUMBER_PLACES_NL = {
    "param": lambda d: TINY.replace("a = 1", f"a = {d}"),
    "after_ascii": lambda d: TINY.replace("a = 1", f"a = 1{d}"),
    "decimal": lambda d: TINY.replace("a = 1", f"a = 0.{d}"),
    "expression": lambda d: TINY.replace("x * a", f"x * {d}"),
    "period": lambda d: TITANS.replace("period chunk tokens", f"period {d} tokens"),
    "repeat": lambda d: TITANS.replace("repeat depth", f"repeat {d}"),
}
NUMBER_PLACES_YAML = {
    "param": lambda d: TINY_YAML.replace("{a: 1}", f"{{a: {d}}}"),
    "quoted_param": lambda d: TINY_YAML.replace("{a: 1}", f"{{a: '{d}'}}"),
    "expression": lambda d: TINY_YAML.replace("x * a", f"x * {d}"),
    "period": lambda d: TITANS_YAML.replace("period: chunk tokens", f"period: {d} tokens"),
    "repeat": lambda d: TITANS_YAML.replace("repeat depth:", f"repeat {d}:"),
}


@pytest.mark.parametrize("digit", NON_ASCII_DIGITS, ids=lambda d: f"U+{ord(d):04X}")
@pytest.mark.parametrize("place, path", [(p, "m.nl") for p in NUMBER_PLACES_NL] +
                         [(p, "m.yaml") for p in NUMBER_PLACES_YAML])
def test_non_ascii_digits_are_not_numbers(digit, place, path):
    assert int(digit) == 3  # what a front end calling int() on the text would read
    make = (NUMBER_PLACES_NL if path.endswith(".nl") else NUMBER_PLACES_YAML)[place]
    nlc.loads(make("3"), path)  # the same spec with an ASCII 3 is fine
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(make(digit), path)
    (d,) = e.value.diagnostics
    assert (d.code, d.span.text) == ("E101", digit)
    assert d.hint == f"`{digit}` is not an ASCII digit: write numbers with the digits 0-9"


@pytest.mark.parametrize("digit", NON_ASCII_DIGITS[:3])
def test_non_ascii_digits_in_parameter_overrides(tmp_path, capsys, digit):
    from nlc.cli import main

    path = tmp_path / "m.nl"
    path.write_text(TINY)
    with pytest.raises(SystemExit) as e:  # a usage error, like any override that is not a number
        main(["check", "-p", f"a={digit}", str(path)])
    assert e.value.code == 2 and "is not a number (write digits 0-9)" in capsys.readouterr().err
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(TINY, a=digit)
    assert e.value.codes == ["E401"]


def _level_yaml(*fields: str) -> str:
    lines = "".join(f"          {f}\n" for f in fields)
    return ("model: m\nbody:\n  - block b:\n      - level mem:\n          state: mlp(dim)\n"
            f"          context: (x, x)\n{lines}      - out: mem(x)\n")


DUPLICATE_KEYS = {  # YAML: where the second key is (line, column)
    "body": ("model: m\nbody: []\nbody:\n  - block b:\n      - out: x\n", (3, 1)),
    "model": ("model: m\nmodel: n\nbody: []\n", (2, 1)),
    "params": ("model: m\nparams: {a: 1}\nparams: {b: 2}\nbody: []\n", (3, 1)),
    "param": ("model: m\nparams: {a: 1, a: 2}\nbody: []\n", (2, 16)),
    "online": (_level_yaml("online: true", "online: false"), (8, 11)),
    "state": (_level_yaml("state: linear(dim, dim)"), (7, 11)),
    "statement": ("model: m\nbody:\n  - block b:\n      - let a: x\n        let a: x\n        out: a\n", (5, 9)),
}


@pytest.mark.parametrize("case", sorted(DUPLICATE_KEYS))
def test_yaml_duplicate_keys_are_an_error(case):
    text, (line, col) = DUPLICATE_KEYS[case]
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(text, "m.yaml")
    (d,) = e.value.diagnostics
    assert d.code == "E119" and (d.span.line, d.span.col) == (line, col)
    key = d.span.text
    assert d.message == f"key `{key}` is given twice" and d.notes[0][0].text == key
    assert d.notes[0][0].start < d.span.start


def test_yaml_duplicate_key_reported_is_the_first_in_the_file():
    text = _level_yaml("online: true", "online: true").replace("body:", "params: {a: 1, a: 1}\nbody:")
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(text, "m.yaml")
    assert e.value.diagnostics[0].span.line == 2


FLAG_VALUES = {  # YAML text -> the flag's value (None: E120)
    "true": True, "false": False, "True": True, "FALSE": False, "yes": True, "no": False, "on": True, "off": False,
    "treu": None, "1": None, "0": None, "'true'": None, '"false"': None, "": None, "~": None, "null": None,
    "[true]": None, "{a: 1}": None, "1.0": None, "y": None, "enabled": None,
    "!!bool treu": None, "!!str true": None, "!!bool yes": True,
}


@pytest.mark.parametrize("flag", ["online", "debias"])
@pytest.mark.parametrize("value", sorted(FLAG_VALUES))
def test_yaml_flags_are_booleans(flag, value):
    text = _level_yaml("retain: 0.9", f"{flag}: {value}")
    want = FLAG_VALUES[value]
    if want is None:
        with pytest.raises(nlc.SpecError) as e:
            nlc.loads(text, "m.yaml")
        (d,) = e.value.diagnostics
        assert d.code == "E120" and d.message.startswith(f"`{flag}` must be `true` or `false`, not ")
        assert (d.span.line, d.span.col) == (8, 11 + len(flag) + 2 - (value == ""))  # the caret under the value
        return
    if flag == "debias" and want:  # read as true: then refused, since model memories do not debias (E309)
        with pytest.raises(nlc.SpecError) as e:
            nlc.loads(text, "m.yaml")
        assert e.value.codes == ["E309"]
        return
    level = ir.all_levels(nlc.loads(text, "m.yaml"))[0]
    assert getattr(level, flag) is want


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


def test_an_empty_yaml_expression_points_at_the_value():
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads("model: m\nparams: {a: ''}\nbody: []\n", "m.yaml")
    (d,) = e.value.diagnostics
    assert d.code == "E103" and (d.span.line, d.span.col) == (2, 14)  # was 1:1, the start of the file
    assert d.hint == "the value is empty: write an expression"
