"""momentum (Titans eqs. 9-14): S_t = beta_t S_{t-1} - eta_t g_t;  W_t = a_t W_{t-1} + S_t.

Its closed form over a chunk is a linear scan in two gates: with G[t, u] = prod_{u<r<=t} beta_r,
S_C = (prod beta) S_0 - sum_u eta_u G[C, u] g_u and W_C = (prod a) W_0 + carry S_0 - sum_u
eta_u (sum_t (prod_{s>t} a_s) G[t, u]) g_u. `naive.reference` is the token-by-token loop.
"""

from __future__ import annotations

from nlc.rules.base import ChunkForm, Rule
from nlc.signature import Arg, ArgType


def step(W, g, aux, lr, retain, args, ops, count=1, key=None):
    """One update: S = beta S - eta g; W = a W + S."""
    S = ops.keep("momentum", args["beta"] * aux["momentum"] - lr * g)
    return retain * W + S, {"momentum": S}


RULE = Rule(
    name="momentum",
    doc="S = beta S - lr g; theta = a theta + S (Titans eqs. 9-14)",
    args=(Arg("beta", ArgType.GATE, 0.9),),
    step=step,
    aux=("momentum",),
    linear_in_grad=True,
    chunk=ChunkForm("nlc.rules.momentum", gates=("lr", "retain", "beta"), carries="momentum", per_token=True),
    flops=2,
    step_level=True,
    samples=("", "(beta = 0.5)", "(beta = GATE)", "(1 - 0.1)"),
)
