"""Shared levels: one memory that several blocks, or the copies of a `repeat`ed block, read and write.

docs/design.md §1.8. A level marked `shared` names a state of the model, not of its block: every
block instance that declares a `shared` level of that name reads the same state and writes to it.
Each declaration states its own `context`, `lr`, `retain` and rule arguments (its block's values);
everything that makes the state what it is (state, init, objective, rule, period, `online`) must be
the same in every declaration. Reads see the period-start state; at the period's end the level
has learned from every block's pairs, token by token and, within a token, in model order.

The model then runs chunk-major at the shared period P: every block reads P tokens before the next
P, as with `context loss` levels in tokens (docs/design.md §1.4).

E318 a shared level's period the chunk-major run cannot keep: declarations of one name, or two
shared names, with different periods; another in-context period of the model that does not divide
it; `context loss` levels in tokens in the same model (a second chunk-major schedule).
E425 a level that cannot be shared: not an in-context level learning from (key, value) pairs by an
update rule; split into heads or reading `current`; tied to another level (`init copy`/`reset`,
`like`, `update L`, `context grad(L)`, either way); declared in one block instance only (`shared`
would change nothing); declarations that differ in what the state is.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping

from nlc import builtins as B
from nlc import ir
from nlc.errors import Reporter
from nlc.passes.facts import ProgramFacts
from nlc.passes.params import fold
from nlc.printer import print_expr

HINT = ("a shared level is an in-context memory with `context (k, v)`, an update rule and `period N tokens`, "
        "declared alike in two or more block instances (docs/language.md, \"Shared levels\")")


def run(program: ir.Program, env: Mapping[str, object], rep: Reporter, facts: ProgramFacts) -> None:
    """Report E318 and E425 for the program's `shared` levels."""
    declared: dict[str, list[tuple[ir.Block | None, ir.Level]]] = defaultdict(list)
    for body, block in ir.scopes(program):
        for lv in (s for s in body if isinstance(s, ir.Level)):
            if lv.shared:
                declared[lv.name].append((block, lv))
    if not declared:
        return
    if not program.is_model:
        for (_, lv), *_ in declared.values():
            rep.error("E425", f"level `{lv.name}` cannot be `shared`: an optimizer has one scope",
                      lv.field_span("shared"), "remove `shared`")
        return
    copies = block_copies(program, env)
    for name, decls in declared.items():
        ok = all(_sharable(block, lv, facts, rep) for block, lv in decls)
        first_block, first = decls[0]
        if ok and sum(copies.get(id(b), 0) for b, _ in decls) < 2:
            rep.error("E425", f"`shared` changes nothing on `{name}`: only one block instance declares it",
                      first.field_span("shared"),
                      "declare it `shared` in another block too, or in a block that a `repeat` copies; "
                      "or remove `shared`")
            ok = False
        if ok:
            for block, lv in decls[1:]:
                _same(first_block, first, block, lv, facts, rep)
    _check_periods(program, declared, facts, rep)


def block_copies(program: ir.Program, env: Mapping[str, object]) -> dict[int, int]:
    """How many instances of each block (by id) the model has once its `repeat`s are unrolled."""
    out: dict[int, int] = defaultdict(int)

    def visit(stmts, copies: int) -> None:
        for s in stmts:
            if isinstance(s, ir.Repeat):
                count = fold(s.count, env, Reporter())
                visit(s.body, copies * int(count) if isinstance(count, (int, float)) else 0)
            elif isinstance(s, ir.Block):
                out[id(s)] += copies

    visit(program.body, 1)
    return out


def _sharable(block: ir.Block | None, lv: ir.Level, facts: ProgramFacts, rep: Reporter) -> bool:
    scope = {s.name: s for s in block.body if isinstance(s, ir.Level)} if block else {}
    period = facts.scope(block).periods.get(lv.name)
    why = None
    if lv.period.unit is not ir.PeriodUnit.TOKENS or ir.learns_loss(lv):
        why = ("it does not learn in context" if lv.period.unit is not ir.PeriodUnit.TOKENS
               else "it learns from the model's loss")
    elif not isinstance(lv.context, ir.Tuple):
        why = "it does not learn from (key, value) pairs"
    elif ir.updating_level(lv) is not None:
        why = f"it is updated by another level (`update {ir.updating_level(lv)}`)"
    elif lv.heads is not None:
        why = "it is split into heads"
    elif ir.reads_current(lv):
        why = "it reads `current` (a read would need the other blocks' updates up to its token)"
    elif isinstance(lv.init, ir.Call) and lv.init.fn in B.COPY_INITS:
        why = f"it starts from another level (`init {print_expr(lv.init)}`)"
    elif ir.shaped_like(lv) is not None:
        why = "its state is shaped like another level's"
    else:
        tied = next((o for o in scope.values() if o is not lv and lv.name in (
            ir.updating_level(o), ir.gradients_of(o), ir.restarts_from(o), ir.copied_from(o), ir.shaped_like(o))), None)
        if tied is not None:
            why = f"`{tied.name}` is tied to it (by `update`, `context grad`, `init copy`/`reset` or `like`)"
    if why is None:
        return period is not None
    rep.error("E425", f"level `{lv.name}` cannot be `shared`: {why}", lv.field_span("shared"), HINT)
    return False


def _same(block_a: ir.Block | None, a: ir.Level, block_b: ir.Block | None, b: ir.Level, facts: ProgramFacts,
          rep: Reporter) -> None:
    """E425 where two declarations of one shared level differ in what its state is."""
    def rule(lv: ir.Level) -> str:
        return lv.update.fn if isinstance(lv.update, ir.Call) else print_expr(lv.update)

    sa, sb = facts.scope(block_a).shapes.get(a.name), facts.scope(block_b).shapes.get(b.name)
    checks = (
        ("state", sa, sb, print_expr(a.state), print_expr(b.state)),
        ("init", print_expr(a.init), print_expr(b.init), None, None),
        ("objective", print_expr(a.objective), print_expr(b.objective), None, None),
        ("update rule", rule(a), rule(b), None, None),
        ("period", facts.scope(block_a).periods.get(a.name), facts.scope(block_b).periods.get(b.name), None, None),
        ("online", a.online, b.online, "online" if a.online else "not online", "online" if b.online else "not online"),
    )
    for what, x, y, shown_x, shown_y in checks:
        if x != y:
            shown_x, shown_y = shown_x or x, shown_y or y
            span = b.field_span({"update rule": "update"}.get(what, what))
            where_a = f"block `{block_a.name}`" if block_a else "the model"
            rep.error("E425", f"the shared level `{b.name}` has {what} `{shown_y}` here but `{shown_x}` in "
                      f"{where_a}", span,
                      "every declaration of a shared level states the same state, init, objective, update "
                      "rule, period and `online` (its context, lr, retain and rule arguments may differ)",
                      notes=((a.field_span({"update rule": "update"}.get(what, what)),
                              f"`{a.name}` declared in {where_a}"),))
            return


def _check_periods(program: ir.Program, declared: dict, facts: ProgramFacts, rep: Reporter) -> None:
    """The model runs chunk-major at the shared period: one period for all shared levels, which every other
    in-context period divides, and no second chunk-major schedule (`context loss` levels in tokens)."""
    shared_periods = [(lv, facts.scope(b).periods.get(lv.name)) for decls in declared.values() for b, lv in decls]
    shared_periods = [(lv, f.count) for lv, f in shared_periods if f is not None and f.unit is ir.PeriodUnit.TOKENS]
    if not shared_periods:
        return
    lv0, p0 = shared_periods[0]
    for lv, p in shared_periods[1:]:
        if p != p0:
            rep.error("E318", f"the shared level `{lv.name}` learns every {p} tokens, but `{lv0.name}` every {p0}: "
                      "a model runs chunk by chunk at one shared period", lv.period.span,
                      f"give every shared level the period {p0}",
                      notes=((lv0.period.span, f"`{lv0.name}` learns every {p0} tokens"),))
            return
    for body, block in ir.scopes(program):
        for lv in (s for s in body if isinstance(s, ir.Level)):
            f = facts.scope(block).periods.get(lv.name)
            if lv.shared or f is None or f.unit is not ir.PeriodUnit.TOKENS:
                continue
            if ir.learns_loss(lv):
                rep.error("E318", f"level `{lv.name}` learns from the model's loss in tokens, in a model with shared "
                          "levels: the two run the model chunk by chunk on different schedules", lv.period.span,
                          f"count `{lv.name}`'s period in `steps`, or remove `shared` from `{lv0.name}`",
                          notes=((lv0.field_span("shared"), f"`{lv0.name}` is shared"),))
            elif p0 % f.count:
                rep.error("E318", f"level `{lv.name}` learns every {f.count} tokens, which does not divide {p0}, the "
                          f"period of the shared level `{lv0.name}`: a model with shared levels runs chunk by "
                          "chunk at that period", lv.period.span,
                          f"give `{lv.name}` a period that divides {p0}, or `{lv0.name}` a multiple of {f.count}",
                          notes=((lv0.period.span, f"`{lv0.name}` learns every {p0} tokens"),))
