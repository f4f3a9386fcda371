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
"""

from __future__ import annotations

from nlc import ir
from nlc.errors import Reporter
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


def _short(e: ir.Expr) -> str:
    text = print_expr(e)
    return text if len(text) <= 40 else text[:37] + "..."
