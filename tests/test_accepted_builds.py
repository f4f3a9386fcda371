"""Accepted means correct (issue #12): whatever `nlc check` accepts builds in both back ends and agrees.

Each test here pins one form that once passed `nlc check` and then built wrongly or not at all:
`init copy` chains, a vector memory with a constant key, copies between levels of different
frequencies. The closing property (`test_checked_specs_build_and_agree`) states the class: a
random spec that checks builds in both back ends and runs (whole and streamed) raising nothing
but SpecError, and where both build, they agree.
"""

from __future__ import annotations

import pytest
import torch

import nlc
from nlc.testing import check_causal, check_matches_reference, check_streaming

LEVEL = """
    level {name} {{
      state {state}
      init {init}
      context {context}
      objective l2
      update {update}
      lr 0.1
      period {period}
    }}"""


def _model(levels: str, out: str, chunk: int = 2, dim: int = 8) -> str:
    return (f"model m(dim = {dim}, chunk = {chunk}) {{\n  block b0 {{\n    let h = rmsnorm(x)\n{levels}\n"
            f"    out = {out}\n  }}\n}}\n")


def _level(name: str, init: str = "learned", state: str = "linear(dim, dim)", update: str = "gd",
           context: str = "(l2norm(linear(h, dim)), linear(h, dim))", period: str = "chunk tokens") -> str:
    return LEVEL.format(name=name, state=state, init=init, context=context, update=update, period=period)


TOKENS = torch.randint(0, 256, (3, 7), generator=torch.Generator().manual_seed(3))


# ---- a vector memory with a constant key ----------------------------------------------------


@pytest.mark.parametrize("update", ["gd", "momentum", "dgd", "adam"])
@pytest.mark.parametrize("chunk", [1, 2])
def test_vector_memory_with_a_constant_key_matches_the_reference(update, chunk):
    """M(k) = m * k with k = 1: the compiled gradients were [B, n] reads against [B, C, n] values."""
    spec = _model(_level("v", init="identity", state="vector(dim)", update=update,
                         context="(1, linear(h, dim))"), "v(h)", chunk=chunk)
    check_matches_reference(spec, tokens=TOKENS)
    check_streaming(spec, tokens=TOKENS)
    check_causal(spec, tokens=TOKENS)


# ---- init copy: chains, and copies between levels of different frequencies ------------------


def test_a_copy_of_a_copy_starts_from_the_root_in_both_back_ends():
    """`c` copies `b`, which copies `a`: c starts from a's (learned) initial state, the same every call."""
    spec = _model(_level("a") + _level("b", init="copy(a)") + _level("c", init="copy(b)"), "a(h) + b(h) + c(h)")
    for backend in ("compiled", "reference"):
        model = nlc.build(nlc.loads(spec), backend=backend)
        first, second = model.init_state(2), model.init_state(2)
        levels = first["blocks"][0]["levels"]
        key = "W" if backend == "compiled" else "frozen"
        a, c = levels["a"][key]["W"], levels["c"][key]["W"]
        torch.testing.assert_close(c, a, rtol=0, atol=0)
        torch.testing.assert_close(second["blocks"][0]["levels"]["c"][key]["W"], c, rtol=0, atol=0)
    check_matches_reference(spec, tokens=TOKENS)
    check_streaming(spec, tokens=TOKENS)
    check_causal(spec, tokens=TOKENS)


def _steps_level(name: str, init: str = "learned", state: str = "mlp(dim, dim, depth = 2, residual = true)",
                 period: str = "2 steps") -> str:
    return LEVEL.format(name=name, state=state, init=init, context="loss", update="gd",
                        period=period).replace("objective l2", "objective dot")


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_cms_nested_copies_start_from_the_source_weights(backend):
    """examples/cms_nested.nl: `mid` copies `slow` and `fast` copies `mid` (`steps` levels): all three
    start from the same weights (they were three independent random draws)."""
    model = nlc.build("examples/cms_nested.nl", backend=backend, dim=8, layers=1)
    block = model.blocks[1]
    for name in ("W0", "W1"):
        source = getattr(block.slow_state, name)
        torch.testing.assert_close(getattr(block.mid_state, name), source, rtol=0, atol=0)
        torch.testing.assert_close(getattr(block.fast_state, name), source, rtol=0, atol=0)
        assert getattr(block.fast_state, name) is not source  # copied, not tied: each level trains its own


@pytest.mark.parametrize("root_init", ["learned", "identity"])
@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_a_steps_level_copying_an_in_context_level_starts_from_its_initial_state(backend, root_init):
    levels = _level("a", init=root_init, state="mlp(dim, dim, depth = 2, residual = true)") + \
        _steps_level("slow", init="copy(a)")
    model = nlc.build(nlc.loads(_model(levels, "a(h) + slow(h)")), backend=backend)
    block = model.blocks[0]
    initial = model.init_state(1)["blocks"][0]["levels"]["a"]["W" if backend == "compiled" else "frozen"]
    for name in ("W0", "W1"):
        torch.testing.assert_close(getattr(block.slow_state, name), initial[name][0], rtol=0, atol=0)


def test_an_in_context_level_copying_a_steps_level_starts_from_its_weights():
    """`init copy(slow)` on an in-context level: each sequence starts from the `steps` level's current
    weights (both back ends; the level's weights were not found: KeyError)."""
    levels = _steps_level("slow") + _level("a", init="copy(slow)", state="mlp(dim, dim, depth = 2, residual = true)")
    spec = _model(levels, "slow(h) + a(h)")
    for backend in ("compiled", "reference"):
        model = nlc.build(nlc.loads(spec), backend=backend)
        initial = model.init_state(1)["blocks"][0]["levels"]["a"]["W" if backend == "compiled" else "frozen"]
        torch.testing.assert_close(initial["W0"][0], model.blocks[0].slow_state.W0, rtol=0, atol=0)
    check_matches_reference(spec, tokens=TOKENS)
    check_streaming(spec, tokens=TOKENS)


@pytest.mark.parametrize("value", ["1", "0.99", "max_forget"])
def test_a_constant_let_as_a_gate_builds(value):
    """`let keep = 1` (or a parameter) used as a level's retain: the planner folded the let into a
    number but left the level reading a node that did not exist (an internal error, KeyError)."""
    spec = _model("    let keep = " + value + "\n" + _level("a", state="linear(dim, dim)").replace(
        "lr 0.1", "lr 0.1\n      retain keep"), "a(h)").replace("dim = 8", "dim = 8, max_forget = 0.98")
    for backend in ("compiled", "reference"):
        nlc.build(nlc.loads(spec), backend=backend)
    check_matches_reference(spec, tokens=TOKENS)


# ---- the class: a spec that checks builds in both back ends and agrees ----------------------

import re  # noqa: E402 - the property's helpers

from hypothesis import given  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nlc.testing import inputs, spec_texts  # noqa: E402
from nlc.testing.settings import for_property  # noqa: E402

_UPDATE_GD = re.compile(r"^(\s*)update gd$", re.MULTILINE)


@st.composite
def checked_or_not(draw) -> str:
    """Random model text: a valid spec, or one whose first `update gd` became an update expression
    over another level (`update a * 0.5`), valid in an optimizer and E418 in a model."""
    text = draw(spec_texts(max_blocks=2, max_levels=3, max_period=4))
    levels = re.findall(r"^\s*level (\w+) \{", text, re.MULTILINE)
    if levels and _UPDATE_GD.search(text) and draw(st.integers(0, 3)) == 3:
        other = draw(st.sampled_from(levels))
        text = _UPDATE_GD.sub(lambda m: f"{m.group(1)}update {other} * 0.5", text, count=1)
    return text


@for_property("accepted_builds")
@given(checked_or_not(), inputs(max_batch=3, max_length=9))
def test_checked_specs_build_and_agree(text, tokens):
    """Whatever `nlc check` accepts builds in both back ends, runs whole and streamed raising nothing but
    SpecError, and (where both build) the generated code equals the reference interpreter."""
    try:
        program = nlc.loads(text, "<random>")
    except nlc.SpecError:
        return  # rejected with a coded diagnostic (E418 for the update expressions)
    try:
        check_matches_reference(program, tokens=tokens)
        check_streaming(program, tokens=tokens)
    except nlc.SpecError:
        pass  # a coded diagnostic from a back end (E5xx) is an answer, not a failure


def test_update_expressions_in_models_are_rejected_with_e418():
    spec = _model(_level("a") + _level("b", update="a * 0.5"), "a(h) + b(h)")
    with pytest.raises(nlc.SpecError) as e:
        nlc.loads(spec)
    assert [d.code for d in e.value.diagnostics] == ["E418"]
