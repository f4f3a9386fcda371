"""Levels that learn across optimiser steps: the CMS levels (`context loss`, `period N steps`).

`model.step_levels` maps a parameter-name prefix (e.g. "blocks.0.cms_1_state") to the level's
nlc.runtime.steplevel.StepLevelSpec: period (in steps; 0 = frozen), lr, rule, retain, momentum
beta and `online` flag, exactly as the spec states them (`nlc check` refuses what this loop
cannot run: E308, E504). These parameters are not given to the main optimizer. After every
backward pass their gradients are added to a running sum; every `period` steps the level
takes one step of its own rule with that sum and the sum is cleared (NL eqs. 70-71:
theta <- theta - eta * sum of the gradients of the chunk):

    gd         theta <- a theta - lr * sum g
    momentum   S <- beta S - lr * sum g ;  theta <- a theta + S      (docs/design.md §1.3)

with retention a = `retain`: the rule's eager step from its registry entry (nlc.rules), on the
parameters. Counting starts at the first step: with period 4 the level moves
after steps 4, 8, 12, ... A level with `init reset(L)` (nested CMS, NL eq. 72) then restarts
from L's parameters at the end of each of L's periods, after every level moving then has moved
(L included), with its rule's buffers and gradient sum cleared: it learns afresh from what
the slower level holds now. Frozen levels (`period never`) are not step levels: the model
decides whether their weights train (with the outer optimizer) or not at all.
"""

from __future__ import annotations

import torch

from nlc.optim.runtime import PARAMETERS
from nlc.rules import RULES
from nlc.runtime.steplevel import STEP_RULES, StepLevelSpec, restart_order
from nlc.train.errors import train_error


class StepLevels:
    """The step levels of a model: which parameters they own, their sums, when they move."""

    def __init__(self, model: torch.nn.Module, only_online: bool = False):
        info: dict[str, StepLevelSpec] = dict(getattr(model, "step_levels", {}) or {})
        named = dict(model.named_parameters())
        self.levels: list[tuple[str, StepLevelSpec, list[str]]] = []
        self.owned: set[str] = set()
        for prefix, lv in sorted(info.items()):
            names = [n for n in named if n == prefix or n.startswith(prefix + ".")]
            if lv.period <= 0:  # frozen: whatever the model lets train belongs to the outer level
                continue
            self.owned.update(names)
            if only_online and not lv.online:
                continue
            if lv.rule not in STEP_RULES:  # `nlc check` refuses these (E308); a hand-made model may not
                raise train_error("E632", f"level `{lv.level}` ({prefix}) updates every {lv.period} steps "
                                  f"with `{lv.rule}`; the training loop implements "
                                  + " and ".join(f"`{r}`" for r in STEP_RULES) + " for such levels",
                                  "use `update gd` or `update momentum(...)` for `period N steps` levels")
            self.levels.append((prefix, lv, names))
        self.params = named
        self.sums = {n: torch.zeros_like(named[n]) for _, _, ns in self.levels for n in ns}
        # each rule's buffers (momentum's), by (buffer, parameter name)
        self.buffers = {(k, n): torch.zeros_like(named[n]) for _, lv, ns in self.levels
                        for k in RULES[lv.rule].aux for n in ns}
        self.count = 0  # backward passes since the start

    def owns(self, name: str) -> bool:
        return name in self.owned

    def __bool__(self) -> bool:
        return bool(self.levels)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.params[n] for _, _, ns in self.levels for n in ns]

    def accumulate(self) -> None:
        """Add the current gradients to the sums and clear them (call after backward)."""
        for n, s in self.sums.items():
            p = self.params[n]
            if p.grad is not None:
                s.add_(p.grad)
                p.grad = None

    @torch.no_grad()
    def step(self, reduce=None) -> list[str]:
        """Count one optimiser step; move the levels whose period ends here. Returns their names.

        `reduce` (data-parallel training, nlc.train.dist): sums a list of tensors over the ranks in
        place; it is called once, with the sums of the levels that move now, before they move."""
        self.count += 1
        moving = [(prefix, lv, names) for prefix, lv, names in self.levels if self.count % lv.period == 0]
        if reduce is not None and moving:
            reduce([self.sums[n] for _, _, names in moving for n in names])
        moved = []
        for prefix, lv, names in moving:
            rule = RULES[lv.rule]
            args = {a.name: getattr(lv, a.name) for a in rule.args}  # a step-level rule's arguments are fields
            for n in names:
                p, g = self.params[n], self.sums[n]
                new, aux = rule.step(p, g, {k: self.buffers[k, n] for k in rule.aux}, lv.lr, lv.retain, args,
                                     PARAMETERS)
                p.copy_(new)
                for k, v in aux.items():
                    self.buffers[k, n].copy_(v)
                g.zero_()
            moved.append(prefix)
        self.restart()
        return moved

    def restart(self) -> None:
        """Levels with `init reset(L)` whose L's period ends at this step start again from L's parameters."""
        for prefix, lv, names in restart_order(self.levels, lambda i: i[0], lambda i: i[1].reset_from):
            if self.count % lv.reset_every:
                continue
            for n in names:
                self.params[n].copy_(self.params[lv.reset_from + n[len(prefix):]])
                self.sums[n].zero_()
                for k in RULES[lv.rule].aux:
                    self.buffers[k, n].zero_()

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"steplevel.sum.{n}": t for n, t in self.sums.items()}
        out.update({f"steplevel.{k}.{n}": t for (k, n), t in self.buffers.items()})
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], count: int) -> None:
        for n, t in self.sums.items():
            t.copy_(tensors[f"steplevel.sum.{n}"])
        for (k, n), t in self.buffers.items():
            t.copy_(tensors[f"steplevel.{k}.{n}"])
        self.count = count
