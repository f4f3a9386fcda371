"""dgd, delta gradient descent (NL eqs. 56-57, 88): W_t = (a_t I - eta_t k_t^T k_t) W_{t-1} - eta_t g_t.

k_t is each weight's layer input; nlc's memories read M(k) = k W (row vectors), so the
projection multiplies on the left. Its closed form over a chunk is the WY / UT form of
DeltaNet: one unit-lower-triangular solve. `naive.reference` is the token-by-token loop.
As an optimizer it would need the layer input x_t, which an optimizer never sees: refused (E511).
"""

from __future__ import annotations

from nlc.rules.base import ChunkForm, Rule


def step(W, g, aux, lr, retain, args, ops, count=1, key=None):
    """One update: W = W (a I - eta k k^T) on the input side, minus eta g."""
    return ops.key_decay(W, retain, lr, key) - lr * g, {}


RULE = Rule(
    name="dgd",
    doc="delta gradient descent: W = (a I - lr k^T k) W - lr grad with k the layer input, the Hope form "
        "(NL eq. 88, row-vector convention); NL eqs. 56-57 derive it from the L2 objective with "
        "lr' = lr / (1 + lr) for normalised keys, which the optimizer back end applies",
    args=(),
    step=step,
    needs_key=True,
    chunk=ChunkForm("nlc.rules.dgd", key_products=True),
    flops=2,  # the delta-rule form does k W0 and k^T R
    unit_keys=True,
    optimizer_refusal=(
        "`dgd` needs each layer's input x_t (NL eq. 57: W (I - lr' x x^T) - lr' grad_y L x^T), and "
        "an optimizer sees only `grad`, `param` and `step`: without x it would be decayed gradient "
        "descent under dgd's name",
        "for decayed gradient descent write `update gd` with `lr lr / (1 + lr)` and "
        "`retain 1 - lr / (1 + lr)` (examples/decayed_gd.nl); `dgd` runs in models, on memories"),
)
