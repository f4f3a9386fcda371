"""Frequency checks: periods are positive whole numbers, in the right unit, and nest.

docs/design.md §1.2 "Frequency is exact": a level with period C keeps its state fixed inside
each chunk of C tokens (or steps). Levels are ordered by frequency; periods of the
same unit must divide each other (E303), and a level that produces another level's
update must be at least as fast as it (E306).

E301 period not a positive whole number; E302 wrong unit for the program kind;
E303 periods that do not nest (within one block, or one optimizer); E304 `online`
on a frozen level or in an optimizer; E305 a model level learning an in-context level's
gradients (`context grad(m)`) at another period; E306 an optimizer level slower than the
level it optimizes (`update m` where m is slower; an update *expression* only
reads the levels' current states, so M3's slow momentum is allowed); E307 a
`context loss` level counted in `tokens` whose period the chunk-major run cannot
keep (one token; another in-context period that does not divide the fastest loss
period, or a loss period that is not a multiple of it: docs/design.md §1.4); E317 an
`init reset(L)` that cannot restart at L's periods (L or the level never learns, they learn
in different ways, or L's period is not a longer multiple of the level's: docs/design.md §1.4).
"""

from __future__ import annotations

from typing import Mapping

from nlc import ir
from nlc.errors import Reporter
from nlc.passes.facts import Frequency, ProgramFacts
from nlc.passes.params import fold
from nlc.rules import RULES


def run(program: ir.Program, env: Mapping[str, object], rep: Reporter, facts: ProgramFacts) -> ir.Program:
    """Check every level's period and record it in `facts`; return the program unchanged."""
    freqs: dict[str, Frequency] = {}
    spans = {}
    for body, block in ir.scopes(program):
        scope_freqs, scope_spans = {}, {}
        for lv in (s for s in body if isinstance(s, ir.Level)):
            f = _period(program, lv, env, rep)
            if f is not None:
                key = f"{block.name}.{lv.name}" if block else lv.name
                freqs[key] = scope_freqs[key] = f
                facts.scope(block).periods[lv.name] = f
                spans[key] = scope_spans[key] = lv.period.span
            if lv.online and (not program.is_model or lv.period.unit is ir.PeriodUnit.NEVER):
                why = "an optimizer's levels always learn" if not program.is_model else "it never updates"
                rep.error("E304", f"level `{lv.name}` cannot be `online`: {why}", lv.field_span("online"),
                          "remove `online`")
        _check_nesting(scope_freqs, scope_spans, rep)
    for body, block in ir.scopes(program):
        for lv in (s for s in body if isinstance(s, ir.Level)):
            _check_optimizer_speed(lv, block, freqs, rep)
            if program.is_model:
                _check_coupled_periods(lv, block, freqs, rep)
                _check_reset(lv, block, body, freqs, rep)
    if program.is_model:
        _check_loss_in_tokens(program, facts, rep)
    return program


def _period(program: ir.Program, lv: ir.Level, env, rep: Reporter) -> Frequency | None:
    p = lv.period
    if p.unit is ir.PeriodUnit.NEVER:
        return Frequency(p.unit, 0)
    if not program.is_model and p.unit is ir.PeriodUnit.TOKENS:
        rep.error("E302", f"optimizer level `{lv.name}` counts `tokens`", p.span,
                  "an optimizer's levels update every N `steps`")
        return None
    value = fold(p.count, env, rep)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) and not float(value).is_integer() or value < 1:
        shown = str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else value
        rep.error("E301", f"the period of `{lv.name}` must be a positive whole number, not {shown}", p.count.span,
                  f"for example `period 16 {p.unit.value}`")
        return None
    return Frequency(p.unit, int(value))


def _check_nesting(freqs: dict[str, Frequency], spans: dict, rep: Reporter) -> None:
    for unit in (ir.PeriodUnit.TOKENS, ir.PeriodUnit.STEPS):
        items = sorted(((f.count, name) for name, f in freqs.items() if f.unit is unit))
        for (c1, n1), (c2, n2) in zip(items, items[1:]):
            if c2 % c1:
                rep.error("E303", f"periods do not nest: `{_short(n2)}` every {c2} {unit.value} is not a "
                          f"multiple of `{_short(n1)}` every {c1}", spans[n2],
                          f"use periods that divide each other, e.g. {c1} and {c1 * max(1, round(c2 / c1))}",
                          notes=((spans[n1], f"`{_short(n1)}` has period {c1}"),))


def _short(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def _check_loss_in_tokens(program: ir.Program, facts: ProgramFacts, rep: Reporter) -> None:
    """`context loss` levels counted in tokens learn from the model's next-token loss chunk by chunk: the
    whole model runs chunk-major at the fastest such period N0 (docs/design.md §1.4). A one-token chunk
    holds no prediction whose answer it has read; every other in-context period must divide N0 (each
    block stops at chunk ends) and every loss period be a multiple of it (a slower level steps at an end)."""
    loss, other = [], []
    for body, block in ir.scopes(program):
        for lv in (s for s in body if isinstance(s, ir.Level)):
            f = facts.scope(block).periods.get(lv.name)
            if f is not None and f.unit is ir.PeriodUnit.TOKENS:
                (loss if ir.learns_loss(lv) else other).append((lv, f.count))
    for lv, n in loss:
        if n < 2:
            rep.error("E307", f"level `{lv.name}` learns from the model's loss every {n} token: a one-token chunk "
                      "holds no prediction whose answer it has read", lv.period.span,
                      "give it a period of 2 tokens or more (each chunk's loss scores the predictions whose "
                      "next token is in the chunk)")
    if not loss:
        return
    lv0, n0 = min(loss, key=lambda item: item[1])
    for lv, n in other:
        if n0 % n:
            rep.error("E307", f"level `{lv.name}` learns every {n} tokens, which does not divide {n0}, the period "
                      f"of `{lv0.name}`: a model with `context loss` levels in tokens runs chunk by chunk at that "
                      "period", lv.period.span,
                      f"give `{lv.name}` a period that divides {n0}, or `{lv0.name}` a multiple of {n}",
                      notes=((lv0.period.span, f"`{lv0.name}` learns from the loss every {n0} tokens"),))
    for lv, n in loss:
        if n % n0:
            rep.error("E307", f"level `{lv.name}` learns from the loss every {n} tokens, not a multiple of {n0} "
                      f"(`{lv0.name}`'s period)", lv.period.span, f"use a multiple of {n0}",
                      notes=((lv0.period.span, f"`{lv0.name}` learns from the loss every {n0} tokens"),))


def _check_coupled_periods(lv: ir.Level, block, freqs: dict[str, Frequency], rep: Reporter) -> None:
    """In a model, a level that learns another in-context level's gradients (`context grad(m)`: an
    optimizer inside the model) learns with it chunk by chunk: both back ends run the two at one
    period (a different one would be ignored by the interpreter and refused by the code generator),
    so the spec must say one period. (A slower level producing the update is E306.)"""
    prefix = f"{block.name}." if block else ""
    other = ir.gradients_of(lv)
    if other is None:
        return
    mine, theirs = freqs.get(prefix + lv.name), freqs.get(prefix + other)
    if mine is None or theirs is None or ir.PeriodUnit.TOKENS not in (mine.unit, theirs.unit) or mine == theirs:
        return
    if mine.key > theirs.key and mine.unit is theirs.unit:
        return  # slower than the level it optimizes: E306 says so where it is the update
    rep.error("E305", f"level `{lv.name}` ({mine}) learns the gradients of `{other}` ({theirs}) at another "
              "period", lv.context.args[0].span,
              f"give `{lv.name}` the period of `{other}` (the two learn together, chunk by chunk)")


def _check_reset(lv: ir.Level, block, body, freqs: dict[str, Frequency], rep: Reporter) -> None:
    """`init reset(L)` (nested CMS, NL eq. 72): the level restarts from L's current state at the end of
    each of L's periods, so L must learn, slower, at a multiple of the level's period (at L's period
    end the level's own period ends too, so nothing of it is pending), and in the same way: both in
    context from (key, value) pairs (tokens) or both between optimizer steps."""
    of = ir.restarts_from(lv)
    if of is None:
        return
    prefix = f"{block.name}." if block else ""
    other = next((s for s in body if isinstance(s, ir.Level) and s.name == of), None)
    mine, theirs = freqs.get(prefix + lv.name), freqs.get(prefix + of)
    if other is None or mine is None or theirs is None:
        return
    span = lv.init.args[0].span
    if mine.never or theirs.never:
        frozen = lv.name if mine.never else of
        rep.error("E317", f"`{lv.name}` restarts from `{of}` at each of its periods, but `{frozen}` never learns",
                  span, f"write `init copy({of})` to start from `{of}` once")
    elif mine.unit is not theirs.unit or mine.unit is ir.PeriodUnit.TOKENS and (ir.learns_loss(lv) or
                                                                               ir.learns_loss(other)):
        how = lambda level, f: ("from the loss " if ir.learns_loss(level) else "") + str(f)  # noqa: E731
        rep.error("E317", f"`{lv.name}` ({how(lv, mine)}) cannot restart from `{of}` ({how(other, theirs)}): "
                  "both must learn in context from (key, value) pairs, counted in tokens, or both between "
                  "optimizer steps", span, f"give the two levels the same kind of context and period unit, or "
                  f"write `init copy({of})`")
    elif theirs.count <= mine.count or theirs.count % mine.count:
        rep.error("E317", f"`{lv.name}` ({mine}) restarts from `{of}` at the end of each of `{of}`'s periods "
                  f"({theirs}), which must be a longer multiple of its own", span,
                  f"give `{of}` a period that is a multiple of {mine.count} and above it (e.g. "
                  f"{4 * mine.count} {mine.unit.value}), or write `init copy({of})`")
    elif theirs.count == 2 * mine.count and _keeps_buffers(lv):
        # of its two updates between restarts, only the first is ever read (the second is overwritten by
        # the restart at once), so a buffer its rule carries from one update to the next (momentum's)
        # would never act: its arguments (beta) would have no effect (check_fields_live found it)
        rep.error("E317", f"`{lv.name}` ({mine}) restarts from `{of}` every 2 of its periods, so only the first "
                  f"of its updates in between is ever read, and its rule's buffers "
                  f"({', '.join(RULES[lv.update.fn].aux)}) would never act", span,
                  f"give `{of}` a period of at least {3 * mine.count} {mine.unit.value}, or `{lv.name}` a rule "
                  "without buffers such as `gd`")


def _keeps_buffers(lv: ir.Level) -> bool:
    """Whether the level's update rule keeps buffers from one update to the next (momentum, ...)."""
    u = lv.update
    name = u.fn if isinstance(u, ir.Call) else u.name if isinstance(u, ir.Ref) else None
    return name in RULES and bool(RULES[name].aux)


def _check_optimizer_speed(lv: ir.Level, block, freqs: dict[str, Frequency], rep: Reporter) -> None:
    prefix = f"{block.name}." if block else ""
    mine = freqs.get(prefix + lv.name)
    upd = lv.update
    if mine is None or not (isinstance(upd, ir.Ref) and upd.kind is ir.RefKind.LEVEL):
        return
    theirs = freqs.get(prefix + upd.name)
    if theirs is not None and theirs.key > mine.key:
        rep.error("E306", f"level `{upd.name}` ({theirs}) produces the update of `{lv.name}` ({mine}) "
                  "but is slower", upd.span,
                  f"an optimizer level must update at least as often as what it optimizes: give `{upd.name}` "
                  f"the period of `{lv.name}`")
