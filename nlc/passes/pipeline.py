"""The front end in order: parse -> lower -> resolve -> params -> graph -> frequency -> shapes -> optimizer.

Each stage reports every problem it finds; the pipeline stops after the first
stage with errors (later stages assume the earlier ones held).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from nlc import ir
from nlc.errors import Diagnostic, Reporter, SpecError
from nlc.passes import frequency, graph_checks, optimizer, resolve, shapes
from nlc.passes.params import evaluate


@dataclass
class Checked:
    """A checked program, its parameter values and any warnings."""

    program: ir.Program
    params: dict[str, object]
    warnings: list[Diagnostic] = field(default_factory=list)


def check_ir(program: ir.Program, overrides: Mapping[str, object] | None = None) -> Checked:
    """Run every pass on a lowered program; raise SpecError on the first stage with errors."""
    rep = Reporter()
    program = resolve.run(program, rep)
    rep.raise_if_errors()
    env = evaluate(program, dict(overrides or {}), rep)
    rep.raise_if_errors()
    graph_checks.run(program, rep)
    rep.raise_if_errors()
    frequency.run(program, env, rep)
    shapes.run(program, env, rep)
    rep.raise_if_errors()
    optimizer.run(program, env, rep)
    rep.raise_if_errors()
    return Checked(program, env, rep.diagnostics)


