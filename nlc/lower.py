"""Syntax tree -> IR: structure checks, numbers, level fields and their defaults.

Names stay unresolved here (`Ref(kind=UNRESOLVED)`); `nlc.passes.resolve` binds
them. What lowering checks: which statements may appear where (E110-E113), level
fields given twice or missing (E114, E115), and numbers (E109).
"""

from __future__ import annotations

import math

from nlc import ir
from nlc import syntax as S
from nlc.builtins import UPDATE_RULES
from nlc.errors import Reporter
from nlc.objectives import DEFAULT as DEFAULT_OBJECTIVE
from nlc.objectives import LOSS as LOSS_OBJECTIVE
from nlc.rules import DEFAULT as DEFAULT_RULE
from nlc.source import Span

DEFAULTS = {
    ir.ProgramKind.MODEL: {"init": "learned", "objective": DEFAULT_OBJECTIVE, "update": DEFAULT_RULE, "unit": ir.PeriodUnit.TOKENS},
    ir.ProgramKind.OPTIMIZER: {"init": "zeros", "objective": DEFAULT_OBJECTIVE, "update": DEFAULT_RULE, "unit": ir.PeriodUnit.STEPS},
}
REQUIRED_FIELDS = ("state", "context")
MAX_INT = 2**62


def _trivia(node: S.Node) -> ir.Trivia:
    return ir.Trivia(tuple(node.comments), node.trailing, tuple(getattr(node, "end_comments", ())))


def lower(program: S.Program, rep: Reporter) -> ir.Program:
    """Return the IR of a syntax tree; problems go to `rep`."""
    return _Lowerer(rep, ir.ProgramKind(program.kind)).program(program)


class _Lowerer:
    def __init__(self, rep: Reporter, kind: ir.ProgramKind):
        self.rep = rep
        self.kind = kind

    def program(self, p: S.Program) -> ir.Program:
        params = tuple(ir.Param(q.name, self.expr(q.value), span=q.name_span, trivia=_trivia(q))
                       for q in p.params)
        body = tuple(self.top_stmt(s) for s in p.body)
        return ir.Program(self.kind, p.name, params, tuple(s for s in body if s is not None),
                          span=p.span, name_span=p.name_span, trivia=_trivia(p), path=p.span.path)

    # ---- statements: where each may appear ----
    def top_stmt(self, s: S.Stmt):
        if self.kind is ir.ProgramKind.MODEL:
            if isinstance(s, (S.Block, S.Repeat)):
                return self.block_or_repeat(s)
            self.rep.error("E110", f"`{_keyword(s)}` must be inside a `block`", _head(s),
                           "a model's body is made of `block NAME { ... }` and `repeat N { ... }`")
            return None
        if isinstance(s, (S.Let, S.Level)):
            return self.scope_stmt(s)
        self.rep.error("E111", f"`{_keyword(s)}` is not allowed in an optimizer", _head(s),
                       "an optimizer's body holds `let` bindings and levels only")
        return None

    def block_or_repeat(self, s: S.Block | S.Repeat):
        if isinstance(s, S.Repeat):
            body = []
            for c in s.body:
                if isinstance(c, (S.Block, S.Repeat)):
                    body.append(self.block_or_repeat(c))
                else:
                    self.rep.error("E110", f"`{_keyword(c)}` must be inside a `block`", _head(c),
                                   "`repeat N { ... }` holds blocks: wrap it in `block NAME { ... }`")
            return ir.Repeat(self.expr(s.count), tuple(body), span=s.span, trivia=_trivia(s))
        body = []
        outs = []
        for c in s.body:
            if isinstance(c, (S.Block, S.Repeat)):
                self.rep.error("E110", f"`{_keyword(c)}` cannot be nested inside a block", _head(c),
                               "blocks are residual layers; put them one after another")
                continue
            if isinstance(c, S.Out):
                outs.append(c)
            body.append(self.scope_stmt(c))
        if not outs:
            self.rep.error("E112", f"block `{s.name}` has no `out`", s.name_span,
                           "end the block with `out = EXPR`: the block adds it to the residual stream")
        for extra in outs[1:]:
            self.rep.error("E113", f"block `{s.name}` has more than one `out`", _head(extra),
                           "a block has exactly one output", notes=((_head(outs[0]), "first `out` here"),))
        return ir.Block(s.name, tuple(body), span=s.span, name_span=s.name_span, trivia=_trivia(s))

    def scope_stmt(self, s: S.Let | S.Level | S.Out):
        if isinstance(s, S.Let):
            return ir.Let(s.name, self.expr(s.value), span=s.span, name_span=s.name_span, trivia=_trivia(s))
        if isinstance(s, S.Out):
            return ir.Out(self.expr(s.value), span=s.span, trivia=_trivia(s))
        return self.level(s)

    # ---- levels ----
    def level(self, lv: S.Level) -> ir.Level:
        seen: dict[str, S.Field] = {}
        for f in lv.fields:
            if f.key in seen:
                self.rep.error("E114", f"field `{f.key}` is given twice in level `{lv.name}`", f.key_span,
                               "keep one of them", notes=((seen[f.key].key_span, "first given here"),))
            else:
                seen[f.key] = f
        # a frozen level never learns: it needs no context (stating one is E314); nor does a model level
        # updated by another level (`update L`) that does not learn its gradients (nlc.passes.shapes: E115)
        frozen = "period" in seen and seen["period"].unit == "never"
        by_level = self.kind is ir.ProgramKind.MODEL and "update" in seen and isinstance(seen["update"].value, S.Name) \
            and seen["update"].value.id not in UPDATE_RULES
        missing = [k for k in REQUIRED_FIELDS if k not in seen and not ((frozen or by_level) and k == "context")]
        if missing:
            what = " and ".join(f"`{k}`" for k in missing)
            example = {"state": "`state mlp(dim)`", "context": "`context (k, v)`"}
            if self.kind is ir.ProgramKind.OPTIMIZER:  # an optimizer's levels learn from gradients
                example = {"state": "`state like(param)`", "context": "`context grad(loss)`"}
            self.rep.error("E115", f"level `{lv.name}` has no {what}", lv.name_span,
                           "add " + " and ".join(example[k] for k in missing))
        d = DEFAULTS[self.kind]

        def get(key: str, default: str | None = None) -> ir.Expr | None:
            if key in seen:
                return self.expr(seen[key].value)
            return ir.Ref(default, span=lv.name_span) if default else None

        period = self.period(seen.get("period"), d["unit"], lv.name_span)
        context = get("context")
        # a level learning from the task loss steps along its gradient: the linearised loss, `dot` (NL eq. 9)
        learns_loss = isinstance(context, ir.Ref) and context.name == "loss"
        return ir.Level(
            lv.name,
            state=get("state") or ir.Ref("missing", span=lv.name_span),
            init=get("init", d["init"]),
            context=context if context is not None or frozen or by_level else ir.Ref("missing", span=lv.name_span),
            objective=get("objective", LOSS_OBJECTIVE if learns_loss else d["objective"]),
            update=get("update", d["update"]),
            lr=get("lr"),
            retain=get("retain"),
            heads=get("heads"),
            read=get("read"),
            period=period,
            online="online" in seen,
            debias="debias" in seen,
            first_order="first_order" in seen,
            shared="shared" in seen,
            span=lv.span,
            name_span=lv.name_span,
            trivia=_trivia(lv),
            field_trivia=tuple((k, _trivia(f)) for k, f in seen.items()),
            field_spans=tuple((k, f.span) for k, f in seen.items()),
        )

    def period(self, f: S.Field | None, unit: ir.PeriodUnit, at: Span) -> ir.Period:
        if f is None:
            return ir.Period(unit, ir.Num(1, span=at), span=at)
        if f.unit == "never":
            return ir.Period(ir.PeriodUnit.NEVER, None, span=f.span)
        return ir.Period(ir.PeriodUnit(f.unit), self.expr(f.value), span=f.span)

    # ---- expressions ----
    def expr(self, e: S.Expr) -> ir.Expr:
        if isinstance(e, S.Number):
            return ir.Num(self.number(e), span=e.span)
        if isinstance(e, S.Bool):
            return ir.Bool(e.value, span=e.span)
        if isinstance(e, S.Name):
            return ir.Ref(e.id, span=e.span)
        if isinstance(e, S.Neg):
            return ir.Neg(self.expr(e.operand), span=e.span)
        if isinstance(e, S.BinOp):
            return ir.BinOp(e.op, self.expr(e.lhs), self.expr(e.rhs), span=e.span)
        if isinstance(e, S.Tuple):
            return ir.Tuple(tuple(self.expr(i) for i in e.items), span=e.span)
        assert isinstance(e, S.Call)
        seen: dict[str, S.Kwarg] = {}
        for k in e.kwargs:
            if k.name in seen:
                self.rep.error("E412", f"argument `{k.name}` is given twice", k.name_span, "keep one of them",
                               notes=((seen[k.name].name_span, "first given here"),))
            seen[k.name] = k
        return ir.Call(e.fn, tuple(self.expr(a) for a in e.args),
                       tuple(ir.Kwarg(k.name, self.expr(k.value), span=k.span, name_span=k.name_span)
                             for k in seen.values()),
                       span=e.span, fn_span=e.fn_span)

    def number(self, e: S.Number) -> int | float:
        text = e.text
        if text.isdigit():
            digits = text.lstrip("0") or "0"  # int() refuses more than 4300 digits: check the length first
            value: int | float = int(digits) if len(digits) <= 19 else MAX_INT + 1
            if value > MAX_INT:
                self.rep.error("E109", f"number `{_short(text)}` is too large", e.span,
                               f"whole numbers in a spec stay below 2**62")
                return 0
            return value
        value = float(text)
        if math.isinf(value):
            self.rep.error("E109", f"number `{_short(text)}` is too large", e.span,
                           "floating-point numbers must be finite")
            return 0.0
        return value


def _short(text: str) -> str:
    return text if len(text) <= 24 else text[:20] + "..."


def _keyword(s: S.Stmt) -> str:
    return {S.Let: "let", S.Out: "out", S.Level: "level", S.Block: "block", S.Repeat: "repeat"}[type(s)]


def _head(s: S.Stmt) -> Span:
    """Return the span of a statement's keyword."""
    start = s.span.start
    return s.span.source.span(start, start + len(_keyword(s)))
