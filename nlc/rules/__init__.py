"""The registry of update rules: each rule lives in one module of this package, with everything
nlc knows about it (docs/design.md "The rule registry"):

    its signature (arguments with defaults; nlc.builtins.UPDATE_RULES is derived from it),
    its aux (state) keys, one eager step (nlc.rules.base), its closed-form chunk kernel where
    one exists with the naive reference beside it, and its flops factor.

The interpreter, the generated chunk fallback, the optimizer reference, the optimizer code
generator, the model emitter, the trainer's step levels and the passes all ask `RULES`;
nothing outside this package names a rule. To add a rule: write its module (a `RULE = Rule(...)`
and a `step`), list it below, add its tests and its line in docs/language.md.
"""

from __future__ import annotations

from nlc.rules import adam, delta_momentum, dgd, gd, lion, momentum, muon
from nlc.rules.base import ChunkForm, Ops, Rule, number_arg

__all__ = ["RULES", "DEFAULT", "ChunkForm", "Ops", "Rule", "buffers", "number_arg", "step_level_rules"]

RULES: dict[str, Rule] = {m.RULE.name: m.RULE for m in (gd, momentum, dgd, muon, delta_momentum, adam, lion)}

DEFAULT = gd.RULE.name  # a level that states no `update`


def buffers(name: str | None) -> int:
    """State copies a rule keeps besides the state (0 for a level-made or expression update)."""
    return RULES[name].buffers if name in RULES else 0


def step_level_rules() -> tuple[str, ...]:
    """The rules the training loop runs for a model's `period N steps` levels (E308 for the others)."""
    return tuple(name for name, r in RULES.items() if r.step_level)
