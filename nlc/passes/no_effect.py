"""Fields that would have no effect: a spec that states one is rejected (E314).

docs/design.md "Every stated field takes effect": a field is honoured by every back end and
by the trainer, or check rejects it. Two kinds of level ignore fields by what they are:

- a frozen level (`period never`) never learns: its state stays what `init` made it (its
  weights do not even require a gradient), so its `context`, `objective`, `update`, `lr`,
  `retain` and `debias` would mean nothing (`online` is E304);
- an optimizer's `state params` level whose `update` is another level or an expression
  (`update m`, `update m / (sqrt(v) + eps)`) moves the parameters along that direction: the
  direction does not come from an objective, so its `objective` would mean nothing;
- `first_order` means something only on a `context loss` level counted in `tokens` (the outer
  level does not differentiate through its in-sequence steps);
- a model level updated by another level L (`update L`) that does not learn its gradients
  (`context grad(...)` of this level) moves by L's state: its own `context` and `objective`
  would mean nothing (it needs none).

Which fields those are is `nlc.ir.ignored_fields` (the printer leaves them out, so `nlc fmt`
never writes one).

One field is dead by what a level computes, not by what it is (`stated_period_effect`, after the
shapes pass): the period of an in-context level whose gradients do not depend on its state (a
`linear` or `vector` memory with `dot`, whose gradient is -k v whatever the state) and whose state
no read sees (only the level it drives through `update` uses it, and that takes its state after
every token's update). Nothing then sees a chunk-start state, so every period computes the same.
"""

from __future__ import annotations

from nlc import ir
from nlc.errors import Reporter
from nlc.objectives import OBJECTIVES
from nlc.passes.facts import ProgramFacts
from nlc.printer import print_expr


def run(program: ir.Program, rep: Reporter) -> ir.Program:
    """Report every stated field its level ignores; return the program unchanged."""
    for body, _block in ir.scopes(program):
        scope = {s.name: s for s in body if isinstance(s, ir.Level)}
        for lv in scope.values():
            _check_level(program, lv, scope, rep)
    return program


def _check_level(program: ir.Program, lv: ir.Level, scope: dict[str, ir.Level], rep: Reporter) -> None:
    stated = dict(lv.field_spans)
    for key in ir.ignored_fields(lv, program.kind, scope):
        if key not in stated:
            continue
        if key == "first_order" and lv.period.unit is not ir.PeriodUnit.NEVER:
            rep.error("E314", f"`first_order` has no effect on level `{lv.name}`: only a `context loss` level "
                              "counted in `tokens` steps inside the forward pass from the model's own loss",
                      stated[key], "remove `first_order` (it tells the outer level not to differentiate "
                                   "through those steps)")
        elif lv.period.unit is ir.PeriodUnit.NEVER:
            rep.error("E314", f"`{key}` has no effect on level `{lv.name}`: a `period never` level never "
                              "learns", stated[key],
                      f"remove `{key}`, or give `{lv.name}` a period (`period 16 tokens` learns in context, "
                      "`period 1 steps` between optimizer steps)")
        elif program.is_model:  # moved by a level that does not learn its gradients
            other = ir.updating_level(lv)
            rep.error("E314", f"`{key}` has no effect on level `{lv.name}`: it moves by the state of `{other}`, "
                              f"which does not learn from its gradients", stated[key],
                      f"remove `{key}`, or let `{other}` learn them: `context grad({lv.name})` in `{other}` "
                      "(a deep optimizer of this level)")
        else:
            rep.error("E314", f"`objective` has no effect on level `{lv.name}`: its update "
                              f"`{_short(lv.update)}` gives the direction the parameters move in", stated[key],
                      "remove `objective` (an objective shapes the step of an update rule such as `gd`)")


def stated_period_effect(program: ir.Program, rep: Reporter, facts: ProgramFacts) -> None:
    """E314 for a stated period that cannot change what an in-context level computes (module docstring)."""
    if not program.is_model:
        return
    read_in: dict[str, set[int]] = {}  # level name -> the blocks (by id) that read a level of that name
    declaring: dict[str, set[int]] = {}  # a shared level's name -> the blocks (by id) that declare it
    for body, block in ir.scopes(program):
        for stmt in body:
            if isinstance(stmt, ir.Level) and stmt.shared:
                declaring.setdefault(stmt.name, set()).add(id(block))
            exprs = ir.level_exprs(stmt) if isinstance(stmt, ir.Level) else [stmt.value]  # a let or `out`
            for n in (n for e in exprs for n in ir.walk(e)):
                if isinstance(n, ir.Call) and n.kind is ir.CallKind.READ:
                    read_in.setdefault(n.fn, set()).add(id(block))
    for body, block in ir.scopes(program):
        scope = {s.name: s for s in body if isinstance(s, ir.Level)}
        shapes = facts.scope(block).shapes
        for lv in scope.values():
            objective = lv.objective.fn if isinstance(lv.objective, ir.Call) else None
            shape = shapes.get(lv.name)
            while shape is not None and shape.kind == "like" and shape.like_of:
                shape = shapes.get(shape.like_of)
            readers = read_in.get(lv.name, set())
            # a shared level is read wherever a block declaring it reads it
            read = id(block) in readers or lv.shared and bool(readers & declaring[lv.name])
            tied = any(lv.name in (ir.restarts_from(o), ir.gradients_of(o)) for o in scope.values())
            if ("period" in dict(lv.field_spans) and lv.period.unit is ir.PeriodUnit.TOKENS
                    and isinstance(lv.context, ir.Tuple) and shape is not None and shape.kind in ("linear", "vector")
                    and objective in OBJECTIVES and OBJECTIVES[objective].minus_value_gradient
                    and not read and not tied and ir.updating_level(lv) is None):
                rep.error("E314", f"`period` has no effect on level `{lv.name}`: its gradients do not depend on its "
                          f"state (`{objective}` on a `{shape.kind}` memory) and no read sees its state, so it "
                          "learns alike at every period", lv.field_span("period"),
                          f"remove `period`, read `{lv.name}` somewhere, or give it an objective whose gradient "
                          "depends on the state (`l2`)")


def _short(e: ir.Expr) -> str:
    text = print_expr(e)
    return text if len(text) <= 40 else text[:37] + "..."
