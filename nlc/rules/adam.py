"""adam as a level (NL eqs. 101-105): two moment memories and the bias-corrected step.

    m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  W = a W - eta m^ / (sqrt(v^) + eps)

with m^ = m / (1 - b1^n), v^ = v / (1 - b2^n) after the n-th update. It matches
torch.optim.Adam only with the moving averages and bias correction stated in the spec.
"""

from __future__ import annotations

from nlc.rules.base import Rule
from nlc.signature import Arg, ArgType


def step(W, g, aux, lr, retain, args, ops, count=1, key=None):
    """One update (the count-th): the moments, then the bias-corrected step."""
    b1, b2, eps = args["beta1"], args["beta2"], args["eps"]
    m = ops.keep("exp_avg", b1 * aux["exp_avg"] + (1 - b1) * g)
    v = ops.keep("exp_avg_sq", b2 * aux["exp_avg_sq"] + (1 - b2) * (g * g))
    m_hat = m / ops.bias_correction(b1, count)
    v_hat = v / ops.bias_correction(b2, count)
    return retain * W - lr * (m_hat / (ops.sqrt(v_hat) + eps)), {"exp_avg": m, "exp_avg_sq": v}


RULE = Rule(
    name="adam",
    doc="Adam's two moment memories (NL eqs. 101-105)",
    args=(Arg("beta1", ArgType.NUMBER, 0.9), Arg("beta2", ArgType.NUMBER, 0.999), Arg("eps", ArgType.NUMBER, 1e-8)),
    step=step,
    aux=("exp_avg", "exp_avg_sq"),
    counts=True,
    samples=("", "(beta1 = 0.8, beta2 = 0.9)"),
)
