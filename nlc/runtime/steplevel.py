"""The typed contract between a model and the training loop for its `period N steps` levels.

A model (generated or the reference interpreter) lists its CMS step levels in the class
attribute `step_levels`: parameter-name prefix -> StepLevelSpec. Every field a spec states
for such a level reaches the trainer here (nlc.train.steplevels); `nlc check` refuses the
fields the trainer cannot honour (E308, E504), so nothing is dropped on the way.
"""

from __future__ import annotations

from dataclasses import dataclass

from nlc.builtins import STEP_LEVEL_RULES as STEP_RULES  # the rules the training loop runs


@dataclass(frozen=True)
class StepLevelSpec:
    """One level trained across optimiser steps (NL eqs. 70-71, docs/design.md §1.3).

    Every `period` steps (0: frozen, `period never`) with the gradient sum g of those steps:
        gd        theta <- retain * theta - lr * g
        momentum  S <- beta * S - lr * g ;  theta <- retain * theta + S
    `beta` is None for `gd`. `online`: the level keeps learning after training.
    `reset_from` (`init reset(L)`, NL eq. 72): every `reset_every` steps (L's period), after the levels
    moving then have moved, the level restarts from L's parameters (this prefix's), its rule's buffers
    and gradient sum cleared.
    """

    level: str
    period: int
    lr: float
    rule: str
    retain: float
    beta: float | None
    online: bool
    reset_from: str | None = None
    reset_every: int = 0


def restart_order(items: list, name, source) -> list:
    """The items that restart (`init reset(L)`: `source(item)` is L's name, else None), each after the item
    it restarts from: along a chain (`fast` from `mid`, `mid` from `slow`) a level restarts from its
    source's state after the source's own restart at the same boundary. (Chains have no cycles: E311.)"""
    by = {name(i): i for i in items}

    def depth(i) -> int:
        n = 0
        while source(i) is not None and source(i) in by:
            i, n = by[source(i)], n + 1
        return n

    return sorted((i for i in items if source(i) is not None), key=depth)  # stable: plan order among equals
