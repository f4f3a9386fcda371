"""gd: gradient descent with retention, W_t = a_t W_{t-1} - eta_t g_t (docs/design.md §1.3).

Its closed form over a chunk (all g_t at the chunk-start state, docs/design.md §1.2) is a
linear scan: W_C = (prod_t a_t) W_0 - sum_t eta_t (prod_{s>t} a_s) g_t. `naive.reference` beside
it is the same recurrence token by token, which tests/test_runtime.py compares it against.
"""

from __future__ import annotations

from nlc.rules.base import ChunkForm, Rule


def step(W, g, aux, lr, retain, args, ops, count=1, key=None):
    """One update: W = a W - eta g."""
    return retain * W - lr * g, {}


RULE = Rule(
    name="gd",
    doc="theta = a theta - lr g (retention a)",
    args=(),
    step=step,
    linear_in_grad=True,
    chunk=ChunkForm("nlc.rules.gd", per_token=True),
    flops=1,
    step_level=True,
)
