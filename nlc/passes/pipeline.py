"""The front end in order: parse -> lower -> resolve -> params -> graph -> frequency -> shapes -> step levels -> shared levels -> optimizer -> size.

Each stage reports every problem it finds; the pipeline stops after the first
stage with errors (later stages assume the earlier ones held). The size pass
refuses programs past the size limits (`max_params=` ... among the overrides,
`nlc.passes.size.SizeLimits`) before any back end unrolls or allocates them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from nlc import ir
from nlc.errors import Diagnostic, Reporter, SpecError
from nlc.passes import frequency, graph_checks, no_effect, optimizer, resolve, shapes, shared, size, steplevels
from nlc.passes.facts import ProgramFacts
from nlc.passes.params import evaluate
from nlc.passes.size import SizeEstimate


@dataclass
class Checked:
    """A checked program, its parameter values, any warnings, its size (parameters, state per sequence),
    and what the passes found out about it (each level's state shape and period, the constants' values)."""

    program: ir.Program
    params: dict[str, object]
    warnings: list[Diagnostic] = field(default_factory=list)
    size: SizeEstimate = field(default_factory=SizeEstimate)
    facts: ProgramFacts = field(default_factory=lambda: ProgramFacts({}))


def check_ir(program: ir.Program, overrides: Mapping[str, object] | None = None) -> Checked:
    """Run every pass on a lowered program; raise SpecError on the first stage with errors.

    `overrides` are parameter values, and may hold the size limits (`max_params=` ...: SizeLimits' fields).
    """
    limits, overrides = size.split_limits(overrides or {})
    rep = Reporter()
    program = resolve.run(program, rep)
    rep.raise_if_errors()
    env = evaluate(program, overrides, rep)
    rep.raise_if_errors()
    graph_checks.run(program, rep)
    rep.raise_if_errors()
    facts = ProgramFacts(env)
    frequency.run(program, env, rep, facts)
    no_effect.run(program, rep)
    shapes.run(program, env, rep, facts)
    no_effect.stated_period_effect(program, rep, facts)
    steplevels.run(program, env, rep)
    shared.run(program, env, rep, facts)
    rep.raise_if_errors()
    optimizer.run(program, env, rep)
    rep.raise_if_errors()
    estimate = size.run(program, env, rep, limits, overridden=set(overrides))
    rep.raise_if_errors()
    return Checked(program, env, rep.diagnostics, estimate, facts)


