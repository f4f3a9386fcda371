"""Self-generated values (`context (k, m(v))`, Hope's v^ = M(v)) read in the gradients' pass.

When a level's values are its own read at the chunk-start state and nothing else uses that read,
the generated code takes the read and the gradients' forward in one pass through the memory
(rt_memory.grads_toward_read, on [v; k] side by side) instead of a read and then the gradients:
for a level alone, a bundle of levels, and a level learning at a slower period (`period_step`).
It must compute what the reference interpreter does, and the read must stay on its own wherever
something else uses it.
"""

from __future__ import annotations

import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.testing import properties as P


def _spec(members: int, kind: str, rule: str, period: int, read_elsewhere: bool) -> str:
    state = "linear(dim, dim)" if kind == "linear" else "mlp(dim, 12, depth = 2, residual = true)"
    levels = "".join(f"""
    level m{i} {{
      state {state}
      init learned
      context (k, {"m0_v" if read_elsewhere and i == 0 else f"m{i}(v)"})
      objective l2
      update {rule}
      lr eta
      retain 0.9
      period {period} * chunk tokens
    }}""" for i in range(members))
    if period > 1:  # a faster level sets the chunk: the others wait for their period's end
        levels += """
    level fast {
      state linear(dim, dim)
      init zeros
      context (k, v)
      update gd
      lr 0.2
      period chunk tokens
    }"""
    reads = " + ".join(f"m{i}(q)" for i in range(members)) + (" + fast(q)" if period > 1 else "")
    extra = " + m0_v" if read_elsewhere else ""  # the values' read used by the output too
    shared_read = "\n    let m0_v = m0(v)" if read_elsewhere else ""
    return f"""
model own(dim = 8, chunk = 2) {{
  block b {{
    let h = rmsnorm(x)
    let q = l2norm(linear(h, dim))
    let k = l2norm(linear(h, dim))
    let v = linear(h, dim)
    let eta = sigmoid(linear(h, 1)) * 0.3{shared_read}
    {levels}
    out = linear({reads}{extra}, dim)
  }}
}}
"""


# a read of a memory at v (or at v tiled over a bundle), in the chunk step (v_c) or the period step (v)
READ_AT_V = re.compile(r"rt_memory\.read\('mlp', \w+, (rt_bundle\.tile\()?v(_c)?\b")


def _source(spec: str) -> str:
    return nlc.generate(nlc.loads(spec))


@pytest.mark.parametrize("members, period", [(1, 1), (2, 1), (1, 2)])
def test_own_values_are_read_in_the_gradients_pass(members, period):
    """A level alone, a bundle of two, a slower level (its period step): one pass, no separate read."""
    source = _source(_spec(members, "mlp", "dgd", period, read_elsewhere=False))
    assert "rt_memory.grads_toward_read('mlp'" in source
    assert "rt_memory.grads('mlp'" not in source  # (the fast level is linear)
    assert not READ_AT_V.search(source)
    if members == 2:
        assert "_bundle" in source  # (the two levels learn as one bundle)
    if period > 1:
        assert "def period_step" in source


def test_a_values_read_used_elsewhere_stays_on_its_own():
    source = _source(_spec(1, "mlp", "dgd", 1, read_elsewhere=True))
    assert "rt_memory.grads_toward_read" not in source
    assert READ_AT_V.search(source)


@settings(max_examples=20, deadline=None)
@given(members=st.sampled_from([1, 2]), kind=st.sampled_from(["linear", "mlp"]),
       rule=st.sampled_from(["gd", "dgd", "momentum(beta = 0.5)"]), period=st.sampled_from([1, 2]),
       read_elsewhere=st.booleans())
def test_own_values_compute_what_the_reference_does(members, kind, rule, period, read_elsewhere):
    spec = _spec(members, kind, rule, period, read_elsewhere)
    tokens = torch.randint(0, 256, (2, 2 * 2 * period + 3))  # two periods and part of a third
    P.check_matches_reference(spec, tokens)
    P.check_chunked_equals_sequential(spec, tokens)
