"""delta_momentum (NL section 4.4, eqs. 48-49, L2 objective):

    m_{i+1} = m_i (alpha_{i+1} I - grad^T grad) - eta_t P_i grad ;  W_{i+1} = W_i + m_{i+1}

For a weight W of d_out x d_in (the paper's column-vector convention, and torch's nn.Linear
weight) grad^T grad is d_in x d_in: the decay acts on the INPUT side, by a right product.
Every back end takes this product through `decay.delta_momentum_decay` (the in-context memories
through nlc.rules.ops.MEMORY, optimizers through nlc.optim.runtime.delta_product), so all of
them take the same product on the same side.
"""

from __future__ import annotations

from nlc.rules.base import Rule
from nlc.signature import Arg, ArgType


def step(W, g, aux, lr, retain, args, ops, count=1, key=None):
    """One update: S = S (beta I - g^T g) - eta g; W = a W + S."""
    S = ops.keep("momentum", ops.delta_decay(aux["momentum"], g, args["beta"]) - lr * g, "S (beta I - g^T g) - lr g")
    return retain * W + S, {"momentum": S}


RULE = Rule(
    name="delta_momentum",
    doc="m = m (beta I - g^T g) - lr g; theta = a theta + m (NL section 2.3, L2 objective)",
    args=(Arg("beta", ArgType.GATE, 0.9),),
    step=step,
    aux=("momentum",),
    unit_keys=True,
    bounded_grads=True,  # S <- S (beta I - g^T g) - eta g is stable only while |g|^2 < 1 + beta
    samples=("", "(beta = GATE)"),
)
