"""Optimizer checks: what the optimizer back end needs of an optimizer spec (run last, after shapes).

An optimizer's levels are kept per parameter tensor, so their states are
`like(param)`, an elementwise `mlp(1, ...)` or `params`; there is no outer level,
so nothing is `learned`; model-only builtins (`linear`, `conv`, `attention`, ...)
have no meaning over parameter-shaped tensors. The checks are the optimizer plan's
(`nlc.optim.plan`): running them here makes `nlc check` report every spec that
`nlc compile` / `nlc.build_optimizer` would reject.

E511 something the optimizer back end cannot compile; E512 a parameter name that
cannot be a keyword argument of the generated constructor.
"""

from __future__ import annotations

from typing import Mapping

from nlc import ir
from nlc.errors import Reporter, SpecError


def run(program: ir.Program, env: Mapping[str, object], rep: Reporter) -> ir.Program:
    """Check an optimizer program with parameter values `env`; return it unchanged."""
    if program.is_model:
        return program
    from nlc.optim.plan import plan_optimizer

    try:
        plan_optimizer(program, env)
    except SpecError as e:
        rep.diagnostics.extend(e.diagnostics)
    return program
