"""Levels coupled at different periods: a faster level that drives a slower one (`update L`).

A level updated by a level L that does not learn its gradients moves by L's state, token by token
(docs/design.md §1.3, "a level as the update of another"): W <- a W - eta L, and its reads see W at
the end of its own period. It learns nothing itself, so it states no `context` or `objective`
(E314 if it does), and L may be faster than it (E306 forbids slower). Generated code runs such a
group every chunk, the slower level's running state carried between chunks; it must equal the
reference interpreter, the sequential kernels and itself streamed, for drawn rules and periods.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.testing import properties as P
from tests.model_cases import rejection


def _spec(rule: str, fast: int, ratio: int, kind: str, state_gate: bool) -> str:
    state = "linear(dim, dim)" if kind == "linear" else "mlp(dim, 16, depth = 2, residual = true)"
    update = {"gd": "gd", "momentum": "momentum(beta = sigmoid(linear(h, 1)))", "dgd": "dgd"}[rule]
    lr = "sigmoid(linear(h, 1)) * 0.5" if state_gate else "0.5"
    return f"""
model driven(dim = 8) {{
  block b {{
    let h = rmsnorm(x)
    let k = l2norm(linear(h, dim))
    level driver {{
      state like(slow)
      init zeros
      context (k, linear(h, dim))
      update {update}
      lr 0.3
      period {fast} tokens
    }}
    level slow {{
      state {state}
      update driver
      lr {lr}
      retain 0.9
      period {fast * ratio} tokens
    }}
    out = linear(slow(h) + driver(h), dim)
  }}
}}
"""


@settings(max_examples=10, deadline=None)
@given(rule=st.sampled_from(["gd", "momentum", "dgd"]), fast=st.sampled_from([1, 2]), ratio=st.sampled_from([1, 2, 4]),
       kind=st.sampled_from(["linear", "mlp"]), state_gate=st.booleans())
def test_a_faster_level_driving_a_slower_one_compiles_to_the_reference(rule, fast, ratio, kind, state_gate):
    spec = _spec(rule, fast, ratio, kind, state_gate)
    tokens = torch.randint(0, 256, (2, 3 * fast * ratio + 1))
    P.check_matches_reference(spec, tokens)
    P.check_chunked_equals_sequential(spec, tokens)
    P.check_streaming(spec)
    P.check_round_trip(spec)


def test_the_driven_level_moves_every_token_and_is_read_at_its_period_end():
    """Reads of the slow level see its state only at its period's end; before it, the driver alone
    changes the output, after it the slow level's accumulated steps show."""
    torch.manual_seed(0)
    spec = _spec("gd", 1, 4, "linear", False)
    model = nlc.build(nlc.loads(spec), backend="reference").double()
    frozen = nlc.build(nlc.loads(spec.replace("lr 0.5", "lr 0")), backend="reference").double()
    frozen.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 256, (1, 8))
    a, b = model(tokens), frozen(tokens)
    torch.testing.assert_close(a[:, :4], b[:, :4])  # the slow level's steps are not read before token 4
    assert float((a[:, 4:] - b[:, 4:]).detach().abs().max()) > 1e-6


def test_a_driven_level_states_no_context():
    spec = _spec("gd", 1, 4, "linear", False).replace("      update driver", "      context (k, h)\n      update driver")
    text = rejection(spec)
    assert "E314" in text and "`context` has no effect on level `slow`" in text, text


def test_a_level_whose_gradients_are_learned_needs_a_context():
    spec = _spec("gd", 1, 1, "linear", False).replace("context (k, linear(h, dim))", "context grad(slow)")
    text = rejection(spec)
    assert "E115" in text and "`driver` learns from its gradients" in text, text
