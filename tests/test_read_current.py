"""`read current`: reads inside a chunk that see the chunk's updates up to the token (docs/design.md §1.2).

Every gradient is still taken at the chunk-start state; a read at token t sees W_t, the state after the
updates of tokens up to and including t (Titans, TTT's mini-batch form). Held here: the dual form of
nlc.runtime.inside (one masked C x C product per layer) equals the token-by-token states it stands for;
compiled == reference == sequential kernels == streamed, for drawn memories, rules, gates, periods and
heads; the first read of a chunk already sees its own token's update; and the checker's E424 and E310.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.runtime import inside, memory
from nlc.testing import properties as P
from tests.model_cases import rejection


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(["linear", "mlp"]), rule=st.sampled_from(["gd", "momentum"]), C=st.integers(1, 9),
       residual=st.booleans(), seed=st.integers(0, 100))
def test_the_dual_form_reads_the_per_token_states(kind, rule, C, residual, seed):
    g = torch.Generator().manual_seed(seed)
    B, d, h = 2, 4, 6
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64)  # noqa: E731
    W = {"W": r(B, d, d)} if kind == "linear" else {"W0": r(B, d, h) / 2, "W1": r(B, h, d) / 2}
    S = {k: r(*v.shape) * 0.1 for k, v in W.items()} if rule == "momentum" else None
    k, v, q = r(B, C, d), r(B, C, d), r(B, C, d)
    grads = memory.grads(kind, W, k, v, ("l2",), residual=residual)
    u = lambda: torch.rand(B, C, 1, generator=g, dtype=torch.float64)  # noqa: E731
    gates = {"lr": u() * 0.3, "retain": 1 - u() * 0.1, **({"beta": u()} if rule == "momentum" else {})}
    dual = inside.read(kind, W, S, grads, inside.token_coefficients(rule, q, **gates), q, residual)
    one_by_one = inside.read_sequential(kind, rule, W, S, grads, q, residual, **gates)
    torch.testing.assert_close(dual, one_by_one, rtol=1e-10, atol=1e-10)


def _spec(kind: str, rule: str, chunk: int, heads: int, read: str = "current") -> str:
    state = "linear(dim, dim)" if kind == "linear" else "mlp(dim, 16, depth = 2, residual = true)"
    update = {"gd": "gd", "momentum": "momentum(beta = sigmoid(linear(h, 1)))"}[rule]
    return f"""
model current(dim = 8) {{
  block b {{
    let h = rmsnorm(x)
    let k = l2norm(linear(h, dim))
    level memory {{
      state {state}
      context (k, linear(h, dim))
      update {update}
      lr sigmoid(linear(h, {heads})) * 0.5
      retain 0.95{f'''
      heads {heads}''' if heads > 1 else ''}
      read {read}
      period {chunk} tokens
    }}
    level slow {{
      state linear(dim, dim)
      context (k, h)
      lr 0.1
      period {2 * chunk} tokens
    }}
    out = linear(memory(l2norm(linear(h, dim))) + slow(h), dim)
  }}
}}
"""


@settings(max_examples=10, deadline=None)
@given(kind=st.sampled_from(["linear", "mlp"]), rule=st.sampled_from(["gd", "momentum"]),
       chunk=st.sampled_from([1, 2, 4]), heads=st.sampled_from([1, 2]))
def test_compiled_current_reads_are_the_reference_ones(kind, rule, chunk, heads):
    spec = _spec(kind, rule, chunk, heads)
    tokens = torch.randint(0, 256, (2, 4 * chunk + 1))
    P.check_matches_reference(spec, tokens)
    P.check_chunked_equals_sequential(spec, tokens)
    P.check_streaming(spec)
    P.check_causal(spec, tokens[:, :2 * chunk + 1])


def test_a_current_read_sees_its_own_tokens_update():
    """Token 0's read differs between `current` and `chunk_start` (which sees the initial state), and a
    level that does not move (lr 0, retain 1) reads the same either way."""
    torch.manual_seed(0)
    now = nlc.build(nlc.loads(_spec("linear", "gd", 4, 1)), backend="reference").double()
    start = nlc.build(nlc.loads(_spec("linear", "gd", 4, 1, read="chunk_start")), backend="reference").double()
    start.load_state_dict(now.state_dict())
    tokens = torch.randint(0, 256, (1, 4))
    assert float((now(tokens)[:, 0] - start(tokens)[:, 0]).detach().abs().max()) > 1e-6
    still = _spec("linear", "gd", 4, 1).replace("* 0.5", "* 0").replace("retain 0.95", "retain 1")
    a = nlc.build(nlc.loads(still), backend="reference").double()
    b = nlc.build(nlc.loads(still.replace("read current", "read chunk_start")), backend="reference").double()
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(tokens), b(tokens))


@pytest.mark.parametrize("change, message", [
    (("update gd", "update dgd"), "its update is `dgd`"),
    (("period 8 tokens", "period 2 tokens"), "slower than its block's fastest level (2)"),
    (("state linear(dim, dim)\n      context (k, linear", "state vector(dim)\n      context (k, linear"),
     "a vector memory"),
    (("update gd\n      lr sigmoid", "objective dot\n      update gd\n      lr sigmoid"), "its period would change nothing"),
])
def test_read_current_needs_a_level_it_can_read_that_way(change, message):
    spec = _spec("linear", "gd", 4, 1).replace(*change)
    text = rejection(spec)
    assert "E424" in text and message in text, text


def test_a_current_read_cannot_feed_its_own_learning():
    """Its value would be read in the same step it is computed (E310)."""
    spec = _spec("linear", "gd", 4, 1).replace("context (k, linear(h, dim))", "context (k, y)").replace(
        "    let k = l2norm(linear(h, dim))", "    let k = l2norm(linear(h, dim))\n    let y = memory(k)")
    text = rejection(spec)
    assert "E310" in text, text
