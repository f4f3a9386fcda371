"""The registry of objectives: a level's inner loss l(y, v) on its read-out y = M(k) and value v,
each written once here (docs/design.md "The rule registry" keeps update rules the same way).

An objective is its signature (arguments with defaults; nlc.builtins.OBJECTIVES is derived from
it), its value and its gradient with respect to y. Both are elementwise: the value of one entry
(callers sum it over features), the gradient of one entry, broadcastable to y's shape (callers
broadcast where they need it). They are written with arithmetic operators and `fn`, a namespace
of elementwise torch functions (`fn.where`, `fn.sign`, ...), so that every back end runs the same
formula:

- the model runtime (nlc.runtime.memory: the interpreter takes the value's autograd gradient, the
  generated code and the chunk fallback the closed-form gradient) passes `torch`;
- the reference optimizer (nlc.optim.reference: autograd of the value) and the optimizer runtime
  (nlc.optim.runtime: MLP states) pass `torch`;
- the optimizer code generator (nlc.codegen.optimizer) runs the gradient on symbolic values, which
  writes the generated step's line.

Arguments come positionally, in signature order (the model plan's objective is the tuple
(name, *arguments)). Nothing outside this module names an objective; the front end imports it
without torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from nlc.signature import Arg, ArgType, Builtin


@dataclass(frozen=True)
class Objective:
    """One objective: everything nlc knows about it."""

    name: str
    doc: str  # one line: the loss, as `nlc` shows it (the builtin table's meaning)
    cite: str  # where the objective comes from
    formula: str  # the loss of read-out `{y}` as generated code's comments show it
    args: tuple[Arg, ...]
    value: Callable[..., Any]  # value(y, v, fn, *args): the loss of each entry
    grad: Callable[..., Any]  # grad(y, v, fn, *args): d value / d y, entry by entry
    minus_value_gradient: bool = False  # its gradient is -v whatever y: a rule linear in g steps by
                                        # lr * v * k and need not form g (nlc.plan.optimizer)
    step_level: bool = False  # the training loop runs `period N steps` levels with it (nlc.passes.steplevels)
    samples: tuple[str, ...] = ("",)  # argument lists random specs draw from: "", "(delta = 2.0)", ...

    @property
    def builtin(self) -> Builtin:
        """Its entry in the language's builtin table (nlc.builtins.OBJECTIVES)."""
        return Builtin(self.name, self.args, self.doc)


# ---- l2 -------------------------------------------------------------------------------------

def _l2_value(y, v, fn):
    r = y - v
    return 0.5 * r * r


def _l2_grad(y, v, fn):
    return y - v


L2 = Objective(
    name="l2", doc="1/2 ||M(k) - v||^2",
    cite="NL eq. 56: the L2 regression objective (with gd it is the delta rule, NL eqs. 56-57)",
    formula="1/2 ||{y} - v||^2", args=(), value=_l2_value, grad=_l2_grad)


# ---- dot ------------------------------------------------------------------------------------

def _dot_value(y, v, fn):
    return -y * v


def _dot_grad(y, v, fn):
    return -v


DOT = Objective(
    name="dot", doc="-<M(k), v>",
    cite="NL eq. 9: the dot-product similarity, the loss linearised (with gd: gradient descent)",
    formula="-<{y}, v>", args=(), value=_dot_value, grad=_dot_grad,
    minus_value_gradient=True, step_level=True)


# ---- huber ----------------------------------------------------------------------------------

def _huber_value(y, v, fn, delta):
    r = y - v
    a = fn.abs(r)
    return fn.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _huber_grad(y, v, fn, delta):
    return fn.clamp(y - v, -delta, delta)


HUBER = Objective(
    name="huber", doc="Huber loss of M(k) - v with threshold `delta`",
    cite="Miras (Behrouz et al. 2025, 'It's All Connected'): the Huber attentional bias (Yaad)",
    formula="huber_delta({y} - v)", args=(Arg("delta", ArgType.NUMBER, 1.0),),
    value=_huber_value, grad=_huber_grad, samples=("", "(delta = 2.0)"))


# ---- lp -------------------------------------------------------------------------------------

def _lp_value(y, v, fn, p):
    return fn.abs(y - v) ** p


def _lp_grad(y, v, fn, p):
    r = y - v
    return p * fn.abs(r) ** (p - 1) * fn.sign(r)


LP = Objective(
    name="lp", doc="||M(k) - v||_p^p",
    cite="Miras (Behrouz et al. 2025, 'It's All Connected'): the l_p attentional bias (Moneta)",
    formula="||{y} - v||_p^p", args=(Arg("p", ArgType.NUMBER, 2.0),),
    value=_lp_value, grad=_lp_grad, samples=("", "(p = 3)"))


OBJECTIVES: dict[str, Objective] = {o.name: o for o in (L2, DOT, HUBER, LP)}

DEFAULT = L2.name  # a level that states no `objective`
LOSS = DOT.name  # a level whose context is the task loss: its gradient descends that loss (NL eq. 9)


def step_level_objectives() -> tuple[str, ...]:
    """The objectives the training loop runs a model's `period N steps` levels with (E308 for the others)."""
    return tuple(name for name, o in OBJECTIVES.items() if o.step_level)
