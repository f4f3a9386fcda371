"""A slower level's work once a period (nlc.codegen.emit.PeriodWork).

A level of period P > chunk keeps its period-start state for P tokens, so its reads that only it
and the rest of the forward use, and its gradients, run at the period's end on its P tokens at
once (`period_step`) instead of chunk by chunk. That must not change what the model computes:
for drawn specs (the slow level's key, value, gates and reads taken from before the loop, from
the chunk loop, or from itself; its rule, memory and period) the generated code equals the
reference interpreter, the sequential kernels (which never defer) and itself streamed, with a
partial last period; and the generated code defers exactly where it may.
"""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import nlc
from nlc.testing import properties as P

KEYS = {"before": "k", "loop": "l2norm(fast(h))"}
VALUES = {"before": "v", "loop": "fast(v)", "itself": "slow(v)", "itself, recentred": "2 * slow(v) - k"}
GATES = {"number": "0.3", "before": "sigmoid(linear(h, 1)) * 0.5", "loop": "sigmoid(linear(fast(h), 1)) * 0.5"}
RULES = {"gd": "gd", "dgd": "dgd", "momentum": "momentum(beta = 0.5)"}


def _spec(key: str, value: str, gate: str, rule: str, kind: str, ratio: int, fast_reads_slow: bool) -> str:
    state = "linear(dim, dim)" if kind == "linear" else "mlp(dim, 16, depth = 2, residual = true)"
    fast_value = "slow(h)" if fast_reads_slow else "v"  # a read of the slow level that the fast one learns from
    # (the output adds the slow level's key: a loop value both the period's work and the rest of the forward need)
    return f"""
model deferred(dim = 8, chunk = 2) {{
  block b {{
    let h = rmsnorm(x)
    let k = l2norm(linear(h, dim))
    let v = linear(h, dim)
    let slow_key = {KEYS[key]}
    level fast {{
      state linear(dim, dim)
      init zeros
      context (k, {fast_value})
      update gd
      lr 0.2
      retain 0.9
      period chunk tokens
    }}
    level slow {{
      state {state}
      context (slow_key, {VALUES[value]})
      update {RULES[rule]}
      lr {GATES[gate]}
      retain 0.95
      period {ratio} * chunk tokens
    }}
    out = linear(slow(l2norm(linear(h, dim))) + fast(h) + slow_key, dim)
  }}
}}
"""


@settings(max_examples=25, deadline=None)
@given(key=st.sampled_from(sorted(KEYS)), value=st.sampled_from(sorted(VALUES)), gate=st.sampled_from(sorted(GATES)),
       rule=st.sampled_from(sorted(RULES)), kind=st.sampled_from(["linear", "mlp"]), ratio=st.sampled_from([2, 4]),
       fast_reads_slow=st.booleans())
def test_a_slower_level_working_once_a_period_computes_what_the_reference_does(key, value, gate, rule, kind, ratio,
                                                                                fast_reads_slow):
    spec = _spec(key, value, gate, rule, kind, ratio, fast_reads_slow)
    assert "def period_step" in nlc.generate(nlc.loads(spec)), "the slow level's work did not move to its period"
    tokens = torch.randint(0, 256, (2, 3 * 2 * ratio + 3))  # three periods and part of a fourth
    P.check_matches_reference(spec, tokens)
    P.check_chunked_equals_sequential(spec, tokens)
    P.check_streaming(spec, backends=("compiled",))


def test_a_read_the_chunk_needs_stays_in_the_chunk_step():
    """The fast level learns from a read of the slow one: that read runs every chunk (at the slow level's
    period-start state, a step input it does not return); the slow level's own work still waits."""
    source = nlc.generate(nlc.loads(_spec("before", "itself", "before", "gd", "linear", 4, fast_reads_slow=True)))
    step = source[source.index("def chunk_step"):source.index("def period_step")]
    period = source[source.index("def period_step"):]
    assert "rt_memory.read('linear', slow, h_c" in step and "return fast_value_slow, fast" not in step
    assert step.splitlines()[0].count("slow") == 1  # a parameter, not a result
    # (its values are its own read: taken in its gradients' pass, rt_memory.grads_toward_read)
    assert "rt_memory.grads_toward_read('linear', slow" in period and "rt_scan.chunk('gd', slow" in period
    assert "rt_memory.grads" not in step.replace("rt_memory.grads('linear', fast", "")


def test_levels_of_two_slower_periods_keep_collecting_chunks():
    """Only one slower period is deferred: with two, each keeps its per-chunk buffers (rt_scan.pend)."""
    spec = _spec("before", "before", "number", "gd", "linear", 2, False).replace(
        "    out = ", """    level slower {
      state linear(dim, dim)
      context (k, v)
      update gd
      lr 0.1
      period 4 * chunk tokens
    }
    out = slower(h) + """)
    source = nlc.generate(nlc.loads(spec))
    assert "def period_step" not in source and "rt_scan.pend(" in source
    P.check_matches_reference(spec, torch.randint(0, 256, (2, 19)))
