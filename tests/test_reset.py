"""`init reset(L)`: nested CMS (NL eq. 72), a level that restarts from a slower level's current state.

The definition (docs/design.md §1.4): the level starts as `copy(L)` does, and at the end of each of
L's periods, after every level has learned, it becomes L's state, with its rule's buffers at zero.
Held here: that definition read off the streaming state (both back ends), the compiled code equal to
the reference interpreter, the closed-form kernels equal to the sequential ones, streaming, for drawn
rules, gates and periods; `steps` levels restart in the trainer at L's periods; the checker's E317.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.testing import properties as P
from tests.model_cases import rejection
from nlc.train.steplevels import StepLevels


def _spec(fast_rule: str, slow_rule: str, fast_period: int, ratio: int, kind: str, init: str, how: str = "reset",
          gated: bool = True) -> str:
    state = "linear(dim, dim)" if kind == "linear" else "mlp(dim, 16, depth = 2, residual = true)"
    gate = "sigmoid(linear(h, 1))" if gated else "0.8"
    rules = {"gd": "gd", "momentum": f"momentum(beta = {gate})", "dgd": "dgd"}
    return f"""
model nested(dim = 8) {{
  block b {{
    let h = rmsnorm(x)
    let k = l2norm(linear(h, dim))
    level slow {{
      state {state}
      init {init}
      context (k, linear(h, dim))
      update {rules[slow_rule]}
      lr 0.3
      period {fast_period * ratio} tokens
    }}
    level fast {{
      state {state}
      init {how}(slow)
      context (k, linear(h, dim))
      update {rules[fast_rule]}
      lr {gate} * 0.5
      retain 0.95
      period {fast_period} tokens
    }}
    out = linear(fast(h) + slow(h), dim)
  }}
}}
"""


RULES = st.sampled_from(["gd", "momentum", "dgd"])


@settings(max_examples=10, deadline=None)
@given(fast_rule=RULES, slow_rule=RULES, fast_period=st.sampled_from([1, 2, 3]), ratio=st.sampled_from([2, 3, 4]),
       kind=st.sampled_from(["linear", "mlp"]), init=st.sampled_from(["learned", "zeros", "identity"]),
       gated=st.booleans())
def test_compiled_reset_is_the_reference_one(fast_rule, slow_rule, fast_period, ratio, kind, init, gated):
    if ratio == 2 and fast_rule == "momentum":  # its momentum would never act between restarts (E317)
        fast_rule = "gd"
    spec = _spec(fast_rule, slow_rule, fast_period, ratio, kind, init, gated=gated)
    tokens = torch.randint(0, 256, (2, 3 * fast_period * ratio + 1))
    P.check_matches_reference(spec, tokens)
    P.check_chunked_equals_sequential(spec, tokens)
    P.check_streaming(spec)


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_at_the_end_of_the_slow_period_the_fast_level_is_the_slow_one(backend):
    spec = _spec("momentum", "gd", 2, 4, "mlp", "learned")
    model = nlc.build(nlc.loads(spec), **({"backend": "reference"} if backend == "reference" else {}))
    levels = lambda s: s["blocks"][0]["levels"]  # noqa: E731
    weights = lambda entry: entry["W"] if "W" in entry else entry["frozen"]  # noqa: E731
    tokens = torch.randint(0, 256, (2, 8))
    _, state = model(tokens[:, :6], state=model.init_state(2))  # within the slow level's first period
    fast, slow = weights(levels(state)["fast"]), weights(levels(state)["slow"])
    assert any(not torch.equal(fast[w], slow[w]) for w in fast), "the fast level learned nothing of its own"
    _, state = model(tokens, state=model.init_state(2))  # token 8: the slow period ends
    fast, slow = weights(levels(state)["fast"]), weights(levels(state)["slow"])
    for w in fast:
        torch.testing.assert_close(fast[w], slow[w], rtol=0, atol=0)
    momentum = levels(state)["fast"]["aux"]["momentum"]
    assert all(float(t.abs().max()) == 0 for t in momentum.values())


def test_reset_differs_from_copy_only_after_the_slow_period():
    torch.manual_seed(0)
    reset = nlc.build(nlc.loads(_spec("gd", "gd", 2, 4, "linear", "learned"))).double()
    copy = nlc.build(nlc.loads(_spec("gd", "gd", 2, 4, "linear", "learned", how="copy"))).double()
    copy.load_state_dict(reset.state_dict())
    tokens = torch.randint(0, 256, (2, 16))
    a, b = reset(tokens), copy(tokens)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert float((a[:, 8:] - b[:, 8:]).detach().abs().max()) > 1e-6


STEPS = """
model cms(dim = 8) {
  block b {
    level slow {
      state mlp(dim, 16)
      context loss
      update momentum(beta = 0.5)
      lr 0.1
      period 4 steps
    }
    level fast {
      state mlp(dim, 16)
      init reset(slow)
      context loss
      update momentum(beta = 0.9)
      lr 0.1
      period 1 steps
    }
    out = fast(slow(rmsnorm(x)))
  }
}
"""


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_a_steps_level_restarts_from_the_slower_one_in_the_trainer(backend):
    model = nlc.build(nlc.loads(STEPS), **({"backend": "reference"} if backend == "reference" else {}))
    spec = model.step_levels["blocks.0.fast_state"]
    assert (spec.reset_from, spec.reset_every) == ("blocks.0.slow_state", 4)
    params = dict(model.named_parameters())
    for w in ("W0", "W1"):  # built as a copy of the slow level
        assert torch.equal(params[f"blocks.0.fast_state.{w}"], params[f"blocks.0.slow_state.{w}"])
    levels = StepLevels(model)
    tokens = torch.randint(0, 256, (2, 8))
    for step in range(1, 9):
        model(tokens).sum().backward()
        levels.accumulate()
        levels.step()
        same = all(torch.equal(params[f"blocks.0.fast_state.{w}"], params[f"blocks.0.slow_state.{w}"])
                   for w in ("W0", "W1"))
        assert same == (step % 4 == 0), step
        if step % 4 == 0:
            assert all(float(levels.buffers[k, n].abs().max()) == 0 for k, n in levels.buffers if ".fast_" in n)


@pytest.mark.parametrize("fast, slow, message", [
    ("2 tokens", "2 tokens", "must be a longer multiple"),
    ("2 tokens", "3 tokens", "periods do not nest"),
    ("4 tokens", "2 tokens", "must be a longer multiple"),
    ("2 tokens", "4 steps", "both must learn in context"),
])
def test_reset_needs_a_slower_level_of_the_same_kind(fast, slow, message):
    spec = _spec("gd", "gd", 2, 2, "linear", "learned").replace("period 4 tokens", f"period {slow}") \
        .replace("period 2 tokens", f"period {fast}")
    if "steps" in slow:
        spec = spec.replace("context (k, linear(h, dim))\n      update gd\n      lr 0.3",
                            "context loss\n      update gd\n      lr 0.3", 1)
    text = rejection(spec)
    assert message in text, text


CHAIN = """
model chain(dim = 8) {
  block b {
    let h = rmsnorm(x)
    let k = l2norm(linear(h, dim))
    level fast {
      state linear(dim, dim)
      init reset(mid)
      context (k, linear(h, dim))
      lr 0.5
      period 1 tokens
    }
    level mid {
      state linear(dim, dim)
      init reset(slow)
      context (k, linear(h, dim))
      lr 0.5
      period 2 tokens
    }
    level slow {
      state linear(dim, dim)
      context (k, linear(h, dim))
      lr 0.5
      period 4 tokens
    }
    out = linear(fast(h) + mid(h) + slow(h), dim)
  }
}
"""


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_a_chain_restarts_from_the_slowest_level_down(backend):
    """`fast` is declared first, yet at the slow period's end it restarts from `mid` after `mid` has
    restarted from `slow`: all three hold slow's state."""
    model = nlc.build(nlc.loads(CHAIN), **({"backend": "reference"} if backend == "reference" else {}))
    _, state = model(torch.randint(0, 256, (2, 4)), state=model.init_state(2))
    levels = state["blocks"][0]["levels"]
    W = {n: (e["W"] if "W" in e else e["frozen"])["W"] for n, e in levels.items()}
    torch.testing.assert_close(W["fast"], W["slow"], rtol=0, atol=0)
    torch.testing.assert_close(W["mid"], W["slow"], rtol=0, atol=0)
    P.check_matches_reference(CHAIN)


def test_a_momentum_restarted_every_two_periods_is_refused():
    """Between two restarts it updates twice, and only the first update is ever read: its momentum's
    beta, which acts from the second update on, would have no effect (E317)."""
    text = rejection(_spec("momentum", "gd", 2, 2, "linear", "learned"))
    assert "E317" in text and "would never act" in text, text
