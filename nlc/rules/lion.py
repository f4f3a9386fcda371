"""lion, signed momentum (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms",
arXiv:2302.06675, Algorithm 2):

    c = beta1 m + (1 - beta1) g;  W = a W - eta sign(c);  m = beta2 m + (1 - beta2) g

The step's direction interpolates the momentum and the gradient with beta1, the stored momentum
with beta2; every entry moves by exactly eta. Lion's decoupled weight decay lambda is the
retention a = 1 - eta lambda. As an in-context rule it moves the memory by eta sign(c): the
outer level gets no gradient through that step (sign's derivative is 0), only through the reads.
"""

from __future__ import annotations

from nlc.rules.base import Rule
from nlc.signature import Arg, ArgType


def step(W, g, aux, lr, retain, args, ops, count=1, key=None):
    """One update: the sign of the interpolation, then the momentum."""
    b1, b2, m = args["beta1"], args["beta2"], aux["exp_avg"]
    direction = ops.torch.sign(b1 * m + (1 - b1) * g)
    m_new = ops.keep("exp_avg", b2 * m + (1 - b2) * g)
    return retain * W - lr * direction, {"exp_avg": m_new}


RULE = Rule(
    name="lion",
    doc="c = beta1 m + (1 - beta1) g; theta = a theta - lr sign(c); m = beta2 m + (1 - beta2) g "
        "(Lion, arXiv:2302.06675)",
    args=(Arg("beta1", ArgType.GATE, 0.9), Arg("beta2", ArgType.GATE, 0.99)),
    step=step,
    aux=("exp_avg",),
    # d sign(c) / dc = 0: in a model the slow parameters that make an in-context level's keys and values
    # get no gradient through its lion updates (random specs, whose properties ask for one, leave it out)
    outer_gradient=False,
    samples=("", "(beta1 = 0.8, beta2 = 0.9)"),
)
