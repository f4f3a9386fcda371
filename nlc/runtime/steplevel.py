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
    """

    level: str
    period: int
    lr: float
    rule: str
    retain: float
    beta: float | None
    online: bool
