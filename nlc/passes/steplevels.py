"""Step-level checks: a model level counted in `steps` (CMS) states only what the trainer runs.

Such a level is not updated by the forward pass: the training loop (nlc.train.steplevels)
steps it every N optimiser steps with the summed task-loss gradients, by the contract
nlc.runtime.steplevel.StepLevelSpec (rule gd or momentum(beta), lr, retain). Every field
the loop cannot honour is refused here, at the field, so that `nlc check` accepting a spec
means the trainer does what it says:

E308 a context other than `loss`, an objective other than `dot` (the loop steps along the task
     loss's gradient: the linearised loss, NL eq. 9; `dot` is the default for `context loss`), an update other
     than `gd` or `momentum(beta)`, or `debias`;
E504 an `lr`, `retain` or momentum `beta` that is not a number known at build time.
Frozen levels (`period never`) never update, so none of this applies to them.

A `context loss` level counted in `tokens` takes the same kind of step inside the forward pass,
once per chunk, from the gradient of the model's next-token loss on the chunk (docs/design.md
§1.4): the same fields apply (E308, E504), and
E316 such a level may not start as a copy of another level (`init copy`) nor be another level's
     update or gradient source (`update L`, `context grad(L)`): its state moves between the
     blocks' runs, outside any block's chunk loop.
"""

from __future__ import annotations

from typing import Mapping

from nlc import builtins as B
from nlc import ir
from nlc.errors import Reporter
from nlc.passes.params import fold
from nlc.objectives import step_level_objectives
from nlc.rules import RULES

STEP_OBJECTIVES = step_level_objectives()  # nlc.objectives


def run(program: ir.Program, env: Mapping[str, object], rep: Reporter) -> None:
    """Report every `period N steps` model level field the training loop cannot honour."""
    if not program.is_model:
        return
    for lv in ir.all_levels(program):
        if lv.period.unit is ir.PeriodUnit.STEPS:
            _check_level(lv, env, rep, f"level `{lv.name}` updates every N steps with the training loop",
                         "updates across steps")
        elif ir.learns_loss_in_tokens(lv):
            _check_level(lv, env, rep, f"level `{lv.name}` learns from the model's loss once per chunk",
                         "takes one step per chunk")
    for body, _ in ir.scopes(program):
        _check_loss_levels_stand_alone([s for s in body if isinstance(s, ir.Level)], rep)


def step_rule_args(update: ir.Call) -> dict[str, ir.Expr]:
    """A rule's arguments as written (positional or keyword), the others at their defaults."""
    rule = RULES[update.fn]
    given = {a.name: e for a, e in zip(rule.args, update.args)}
    given.update((k.name, k.value) for k in update.kwargs)
    return {a.name: given.get(a.name, ir.Num(a.default, span=update.span)) for a in rule.args}


def _check_level(lv: ir.Level, env, rep: Reporter, where: str, steps: str) -> None:
    if not ir.learns_loss(lv):
        rep.error("E308", f"{where}, which learns from the task loss only: its context is ignored there",
                  lv.field_span("context"), "write `context loss`, or count the level in `tokens` to learn "
                  "from its own context inside the sequence")
    if lv.objective.fn not in STEP_OBJECTIVES:
        rep.error("E308", f"{where}, which steps along the task loss's gradient (the `dot` objective): "
                  f"objective `{lv.objective.fn}` would not take effect", lv.field_span("objective"),
                  "write `objective dot`, or leave `objective` out (`dot` is the default for `context loss`)")
    rule = lv.update.fn if isinstance(lv.update, ir.Call) and lv.update.kind is ir.CallKind.FORM else None
    if rule not in B.STEP_LEVEL_RULES:
        shown = f"`{rule}`" if rule else "an update that is not a rule"
        rep.error("E308", f"{where}, which runs `gd` and `momentum` only, not {shown}", lv.field_span("update"),
                  "use `update gd` or `update momentum(beta = ...)` for a `period N steps` level")
    if lv.debias:
        rep.error("E308", f"{where}, which does not debias", lv.field_span("debias"), "remove `debias`")
    gates = [("lr", lv.lr), ("retain", lv.retain)]
    if rule in B.STEP_LEVEL_RULES:
        gates += list(step_rule_args(lv.update).items())
    for name, e in gates:
        if e is not None and fold(e, env, Reporter()) is None:
            span = lv.field_span(name) if name in ("lr", "retain") else e.span
            rep.error("E504", f"level `{lv.name}` {steps}, so its `{name}` must be a number "
                      "(parameters and arithmetic)", span,
                      "per-token and learned gates belong to levels with a `context (key, value)`")


def _check_loss_levels_stand_alone(levels: list[ir.Level], rep: Reporter) -> None:
    """E316: a `context loss` level in tokens is no copy, no update and no gradient source of another level."""
    loss = {lv.name for lv in levels if ir.learns_loss_in_tokens(lv)}
    for lv in levels:
        uses = []
        if isinstance(lv.init, ir.Call) and lv.init.fn in B.COPY_INITS and lv.init.args \
                and isinstance(lv.init.args[0], ir.Ref) and (lv.name in loss or lv.init.args[0].name in loss):
            uses.append((lv.init.span, "starts as a copy" if lv.init.fn == "copy" else "restarts from another level"))
        if isinstance(lv.update, ir.Ref) and lv.update.kind is ir.RefKind.LEVEL and lv.update.name in loss:
            uses.append((lv.update.span, f"is updated by `{lv.update.name}`"))
        if ir.gradients_of(lv) in loss:
            uses.append((lv.context.span, f"learns the gradients of `{ir.gradients_of(lv)}`"))
        for span, what in uses:
            rep.error("E316", f"level `{lv.name}` {what}, which involves a `context loss` level counted in "
                      "tokens: such a level learns between the blocks' runs, on its own", span,
                      "give it `init learned` (or zeros, identity) and let other levels learn from their own "
                      "context, or count it in `steps`")
