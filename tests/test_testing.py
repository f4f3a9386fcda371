"""nlc.testing: every property on random programs, the defect property, the fuzz CLI.

The tests draw spec *text* (`spec_texts`) rather than IR (`programs`, used by the first
test): a failing example then shows as the spec itself.

Example counts per property come from nlc/testing/settings.py (EXAMPLES), selected by
NLC_HYPOTHESIS_PROFILE (`ci` by default). Each property is also shown to fail on a
model with a planted bug, so that none of them holds vacuously.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
import nlc.testing as nt
from nlc.cli import main
from nlc.testing.defects import ALL_DEFECTS, check_reports_defect, defective_specs
from nlc.testing.settings import for_property

# ---- every property on random programs --------------------------------------------------------

SMALL = nt.spec_texts(max_blocks=1)  # one block (of up to 3 levels), dim 8: the model properties


@for_property("compiles")
@given(nt.programs())
def test_random_programs_compile(program):
    nt.check_compiles(program)


@for_property("matches_reference")
@given(nt.spec_texts(max_blocks=1, max_levels=2), nt.inputs(max_length=12))
def test_random_programs_match_the_reference(text, tokens):
    nt.check_matches_reference(text, tokens)


@for_property("causal")
@given(nt.spec_texts(), nt.inputs(max_length=10))
def test_random_programs_are_causal(text, tokens):
    nt.check_causal(text, tokens)


@for_property("streaming")
@given(SMALL, nt.inputs(max_length=16))
def test_random_programs_stream(text, tokens):
    nt.check_streaming(text, tokens)


@for_property("chunked_equals_sequential")
@given(SMALL, nt.inputs(max_length=16))
def test_random_programs_chunked_equals_sequential(text, tokens):
    nt.check_chunked_equals_sequential(text, tokens)


@for_property("round_trip")
@given(nt.spec_texts())
def test_random_programs_round_trip(text):
    nt.check_round_trip(text)


@for_property("deterministic")
@given(nt.spec_texts())
def test_random_programs_generate_deterministically(text):
    nt.check_deterministic(text, other_process=False)


@for_property("finite")
@given(SMALL, nt.inputs(max_length=16))
def test_random_programs_are_finite(text, tokens):
    nt.check_finite(text, tokens)


@for_property("no_dead_parameters")
@given(SMALL)
def test_random_programs_have_no_dead_parameters(text):
    nt.check_no_dead_parameters(text)


@for_property("all")
@given(nt.spec_texts(max_levels=2), st.integers(0, 1000))
def test_check_all_on_random_programs(text, seed):
    nt.check_all(text, seed=seed, other_process=False)


def test_generation_is_deterministic_across_processes():
    """Another Python with another hash seed generates the same bytes (one subprocess: about a second)."""
    nt.check_deterministic(CHAIN)


# ---- the defect property --------------------------------------------------------------------


@for_property("defects")
@given(defective_specs())
def test_injected_defects_are_reported_at_their_span(defect):
    check_reports_defect(defect)


@pytest.mark.parametrize("kind", sorted(ALL_DEFECTS))
def test_every_defect_kind_is_reported(kind):
    """Each kind at least once, whatever the random draw above did."""
    from hypothesis import HealthCheck, settings

    @settings(max_examples=2, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(defective_specs(kinds=[kind]))
    def run(defect):
        assert defect.kind == kind and defect.code == ALL_DEFECTS[kind]
        check_reports_defect(defect)

    run()


def test_a_defect_the_checker_misses_fails_the_property():
    from nlc.testing.defects import Defect

    text = "model m {\n  block b {\n    out = x\n  }\n}\n"
    with pytest.raises(AssertionError, match="loads without an error"):
        check_reports_defect(Defect("made_up", text, "E999", 0, 5, "nothing is wrong"))


# ---- the strategies --------------------------------------------------------------------------


@for_property("compiles")
@given(nt.spec_texts(state_kinds=("vector",), updates=("gd",), roles=("memory",), gates=("constant",),
                     max_blocks=1, max_levels=2))
def test_knobs_restrict_what_is_drawn(text):
    prog = nlc.loads(text)
    levels = nlc.ir.all_levels(prog)
    assert all(lv.state.fn in ("vector", "like") for lv in levels)
    assert text.count("update gd") == len(levels)
    assert "learned(" not in text and "sigmoid" not in text


def test_unknown_knobs_are_rejected():
    with pytest.raises(TypeError, match="max_levls"):
        nt.programs(max_levls=2)
    with pytest.raises(ValueError, match="updates"):
        nt.programs(updates=("sgd",))


@for_property("round_trip")
@given(nt.inputs(max_batch=3, max_length=9, periods=(2, 4)))
def test_inputs_are_token_batches(tokens):
    assert tokens.dtype == torch.long and tokens.dim() == 2
    assert 1 <= tokens.shape[0] <= 3 and 1 <= tokens.shape[1] <= 9
    assert int(tokens.min()) >= 0 and int(tokens.max()) < 256


def test_lengths_include_lengths_that_are_multiples_of_no_period():
    from hypothesis import HealthCheck, settings

    seen = set()

    @settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(nt.lengths(1, 16, periods=(2, 4, 3)))
    def run(n):
        seen.add(n)

    run()
    assert any(n % 2 and n % 3 for n in seen if n > 1)


# ---- each property fails on a planted bug (none holds vacuously) ---------------------------------

CHAIN = """\
model chain(dim = 8, chunk = 2) {
  block b {
    let h = rmsnorm(x)
    let k = l2norm(conv(linear(h, dim), 3))

    level mem {
      state linear(dim, dim)
      init zeros
      context (k, linear(h, dim))
      objective dot
      update gd
      lr sigmoid(linear(h, 1)) * 0.1
      period chunk tokens
    }

    level cms {
      state mlp(dim, 2 * dim)
      context loss
      objective dot
      lr 0.01
      period 2 steps
    }

    out = cms(mem(l2norm(linear(h, dim))))
  }
}
"""


@pytest.mark.parametrize("name", ["titans_lmm.nl", "titans_dgd_momentum.nl"])
def test_check_all_on_examples_at_a_tiny_size(name):
    from pathlib import Path

    from nlc.testing.fuzz import _tiny

    path = Path(__file__).resolve().parent.parent / "examples" / name
    nt.check_all(path, params=_tiny(nlc.load(path)), other_process=False)


def test_every_property_holds_on_the_chain_spec():
    nt.check_all(CHAIN, other_process=False)


def test_matches_reference_catches_a_wrong_inner_gradient(monkeypatch):
    from nlc.runtime import memory

    right = memory.objective_grad
    monkeypatch.setattr(memory, "objective_grad", lambda obj, y, v: 1.5 * right(obj, y, v))
    with pytest.raises(AssertionError, match="compiled logits != reference logits"):
        nt.check_matches_reference(CHAIN)


def test_causal_catches_a_look_ahead(monkeypatch):
    from nlc.runtime import layers

    monkeypatch.setattr(layers, "l2norm", lambda x, eps=1e-6: x / (x.norm(dim=1, keepdim=True) + eps))
    with pytest.raises(AssertionError, match="not causal"):
        nt.check_causal(CHAIN)


def test_streaming_catches_a_lost_cache(monkeypatch):
    from nlc.runtime.layers import CausalConv

    forward = CausalConv.forward
    monkeypatch.setattr(CausalConv, "forward", lambda self, x, cache: forward(self, x, torch.zeros_like(cache)))
    with pytest.raises(AssertionError, match="streaming in pieces"):
        nt.check_streaming(CHAIN)


def test_chunked_equals_sequential_catches_a_wrong_token_rule(monkeypatch):
    from nlc.runtime import scan

    rule = scan._rule
    monkeypatch.setattr(scan, "_rule", lambda s, w, W, g, *a: rule(s, w, W, 2 * g, *a))
    with pytest.raises(AssertionError, match="chunked kernels != sequential kernels"):
        nt.check_chunked_equals_sequential(CHAIN)


def test_round_trip_catches_a_lossy_printer(monkeypatch):
    printed = nlc.print_program
    monkeypatch.setattr(nlc, "print_program", lambda p: printed(p).replace("0.1", "0.2"))
    with pytest.raises(AssertionError, match="changed the program"):
        nt.check_round_trip(CHAIN)


def test_deterministic_catches_varying_output(monkeypatch):
    calls = iter(range(100))
    generate = nlc.generate
    monkeypatch.setattr(nlc, "generate", lambda p, **kw: generate(p, **kw) + f"# {next(calls)}\n")
    with pytest.raises(AssertionError, match="twice gave different source"):
        nt.check_deterministic(CHAIN, other_process=False)


def test_finite_catches_an_overflow():
    spec = "model big(dim = 8) {\n  block b {\n    out = exp(exp(linear(x, dim) * 100))\n  }\n}\n"
    with pytest.raises(AssertionError, match="not finite"):
        nt.check_finite(spec)


BROKEN = """\
# A deliberately broken spec: the second projection is multiplied by 0 and never learns.
model broken(dim = 8) {
  block b {
    out = linear(x, dim) + 0 * linear(x, dim)
  }
}
"""


def test_no_dead_parameters_catches_a_dead_projection():
    with pytest.raises(AssertionError, match=r"out_linear_2\.weight"):
        nt.check_no_dead_parameters(BROKEN)


def test_frozen_levels_are_not_dead_parameters():
    spec = ("model f(dim = 8) {\n  block b {\n    level frozen {\n      state linear(dim, dim)\n"
            "      period never\n    }\n    out = frozen(x)\n  }\n}\n")
    nt.check_no_dead_parameters(spec)


def test_check_all_lists_every_failure():
    with pytest.raises(AssertionError, match=r"(?s)1 of 10 properties fail.*\[no_dead_parameters\]"):
        nt.check_all(BROKEN, other_process=False)


def test_properties_take_paths_and_parameter_overrides(tmp_path):
    path = tmp_path / "chain.nl"
    path.write_text(CHAIN, encoding="utf-8")
    nt.check_matches_reference(str(path), params={"chunk": 3})
    nt.check_causal(path, params={"chunk": 1}, t=2)
    with pytest.raises(AssertionError, match="does not check"):
        nt.check_finite(path, params={"dim": 0})


def test_check_all_on_an_optimizer_checks_the_front_end():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    nt.check_round_trip(root / "examples" / "adam.nl")
    with pytest.raises(AssertionError, match="optimizer"):
        nt.check_causal(root / "examples" / "adam.nl")


def test_default_tokens_are_a_multiple_of_no_period():
    model = nlc.build(nlc.loads(CHAIN))
    t = nt.default_tokens(model)
    assert t.shape[0] == 2 and t.shape[1] % model.alignment == 1 % model.alignment
    assert math.gcd(t.shape[1], 2) == 1


# ---- the fuzz CLI --------------------------------------------------------------------------------


def test_fuzz_a_passing_spec(tmp_path, capsys):
    spec = tmp_path / "chain.nl"
    spec.write_text(CHAIN, encoding="utf-8")
    assert main(["fuzz", str(spec), "--examples", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 10 properties hold on 2 examples"), out


def test_fuzz_a_broken_spec_prints_it(tmp_path, capsys):
    spec = tmp_path / "broken.nl"
    spec.write_text(BROKEN, encoding="utf-8")
    failing = tmp_path / "failing.nl"
    assert main(["fuzz", str(spec), "--examples", "3", "--property", "causal", "--property", "no_dead_parameters",
                 "-o", str(failing)]) == 1
    out = capsys.readouterr().out
    assert "property `no_dead_parameters` fails" in out and "out_linear_2.weight" in out
    assert "out = linear(x, dim) + 0 * linear(x, dim)" in out
    assert nlc.loads(failing.read_text(encoding="utf-8")) == nlc.loads(BROKEN)


def test_fuzz_a_spec_that_does_not_check(tmp_path, capsys):
    spec = tmp_path / "bad.nl"
    spec.write_text("model m {\n  block b {\n    out = lienar(x, dim)\n  }\n}\n", encoding="utf-8")
    assert main(["fuzz", str(spec)]) == 1
    assert "error[E202]" in capsys.readouterr().err


def test_fuzz_random_finds_a_planted_bug_and_prints_a_small_spec(monkeypatch, capsys):
    from nlc.runtime import memory

    right = memory.objective_grad
    monkeypatch.setattr(memory, "objective_grad",
                        lambda obj, y, v: right(obj, y, v) * (1.5 if obj[0] == "dot" else 1.0))
    # 100 examples, not 30: which specs a seed draws also depends on the literals hypothesis collects
    # from the modules imported so far (its `constants` pool), so a full suite draws other specs
    # than this test alone; 30 found the bug alone and missed it in the suite.
    assert main(["fuzz", "--random", "--examples", "100", "--seed", "1", "--max-blocks", "1", "--max-levels", "2",
                 "--property", "matches_reference"]) == 1
    out = capsys.readouterr().out
    assert "property `matches_reference` fails" in out
    spec = out.split("paste it into a .nl file):\n\n", 1)[1].split("\n\ninputs:", 1)[0] + "\n"
    prog = nlc.loads(spec)  # what it prints is nlc source that loads
    assert "objective dot" in spec
    assert sum(1 for _ in nlc.ir.all_levels(prog)) <= 3


def test_fuzz_usage_errors(capsys):
    assert main(["fuzz"]) == 2
    assert main(["fuzz", "--random", "--examples", "0"]) == 2


# ---- bugs these properties found (minimal reproducers) -----------------------------------------


def _memory_spec(state: str, init: str, update: str) -> str:
    return (f"model m(dim = 8) {{\n  block b {{\n    level mem {{\n      state {state}\n      init {init}\n"
            f"      context (l2norm(linear(x, dim)), linear(x, dim))\n      update {update}\n      lr 0.1\n"
            "    }\n    out = mem(x)\n  }\n}\n")


def test_identity_mlp_memory_is_the_same_in_every_call():
    """`init identity` MLP states drew new random hidden weights at every init_state (nlc/runtime/memory.py)."""
    torch.manual_seed(0)
    model = nlc.build(nlc.loads(_memory_spec("mlp(dim)", "identity", "gd")))
    tokens = torch.randint(0, 256, (1, 4))
    torch.testing.assert_close(model(tokens), model(tokens), rtol=0, atol=0)
    nt.check_matches_reference(_memory_spec("mlp(dim)", "identity", "gd"))


def test_momentum_survives_streaming_with_sequential_kernels():
    """A momentum level run token by token returned its momentum from the start of the call
    (nlc/codegen/emit.py): streaming in pieces lost it."""
    nt.check_streaming(_memory_spec("linear(dim, dim)", "learned", "momentum"), backends=("sequential",))


def test_adam_gradients_are_finite_when_a_weight_gradient_is_zero():
    """Adam's sqrt(v) at v = 0 made every gradient through the update NaN (the hidden layer of an
    identity MLP has a zero gradient at first): nlc/runtime/memory.py safe_sqrt."""
    nt.check_finite(_memory_spec("mlp(dim)", "identity", "adam"))
    nt.check_matches_reference(_memory_spec("mlp(dim)", "identity", "adam"))


@settings(max_examples=60, deadline=None)
@given(nt.spec_texts(max_levels=3, updates=("delta_momentum",), state_kinds=("vector",)))
def test_bounded_gradient_rules_never_get_a_constant_key(text):
    """A constant key (`context (1, v)`) reads 1 from an identity vector, so the small Huber delta a
    bounded-gradient rule gets saturates on every token and the value's projection gets no gradient:
    a legal spec that check_no_dead_parameters rightly fails. The strategy must not draw it."""
    assert "context (1," not in text
