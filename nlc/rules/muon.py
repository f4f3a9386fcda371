"""muon (NL eqs. 42, 52): momentum, then each matrix update orthogonalised by Newton-Schulz.

S = beta S - eta g;  W = a W + NS5(S), with the quintic iteration of nlc.runtime.newton_schulz
(5 steps, coefficients 3.4445, -4.7750, 2.0315). Vectors have no orthogonal form: there it is
momentum (a model's vector memory refuses it, E419; an optimizer's biases pass through).
"""

from __future__ import annotations

from nlc.rules.base import Rule
from nlc.signature import Arg, ArgType


def step(W, g, aux, lr, retain, args, ops, count=1, key=None):
    """One update: S = beta S - eta g; W = a W + NS(S)."""
    S = ops.keep("momentum", args["beta"] * aux["momentum"] - lr * g)
    return retain * W + ops.orthogonalize(S, args["steps"]), {"momentum": S}


RULE = Rule(
    name="muon",
    doc="momentum, then each matrix update orthogonalised by Newton-Schulz",
    args=(Arg("beta", ArgType.GATE, 0.95), Arg("steps", ArgType.POSINT, 5)),
    step=step,
    aux=("momentum",),
    linear_in_grad=True,
    matrix_only=("orthogonalises a matrix", "use `update momentum(...)` (muon on a vector is momentum)"),
    samples=("", "(beta = 0.9, steps = 3)"),
)
