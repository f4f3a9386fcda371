"""The immutable IR: Program, Level, statements and expressions.

Every node is a frozen dataclass carrying the span it came from. Spans and
comments never take part in equality, so `load(print(p)) == p`. Passes return
new IR (`dataclasses.replace`); nothing here is mutated after construction.

Expressions are a closed set: Num, Bool, Ref (a resolved name), Call (a builtin
op, a spec form such as `mlp(...)`, or a read of a level), BinOp, Neg, Tuple.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterator, Union

from nlc.builtins import UPDATE_RULES
from nlc.source import Span, nospan


def _span() -> Span:
    return field(default_factory=nospan, compare=False, repr=False, kw_only=True)


class RefKind(enum.Enum):
    """What a name refers to, once resolved."""

    UNRESOLVED = "unresolved"
    PARAM = "param"  # a program parameter (`dim`), a build-time constant
    LET = "let"  # a `let` binding in the same block
    LEVEL = "level"  # a level, used by name (`update m`, `like(m)`, `grad(m)`)
    INPUT = "input"  # a builtin stream: `x` in a model block; `grad`, `param` in an optimizer
    FORM = "form"  # a bare spec form: `learned`, `l2`, `gd`, `loss`


class CallKind(enum.Enum):
    UNRESOLVED = "unresolved"
    OP = "op"  # a builtin expression op: linear, silu, attention, ...
    FORM = "form"  # a spec form: mlp(...) as a state, momentum(...) as an update rule, ...
    READ = "read"  # reading a level's memory: `mem(q)`


@dataclass(frozen=True)
class Num:
    value: int | float
    span: Span = _span()


@dataclass(frozen=True)
class Bool:
    value: bool
    span: Span = _span()


@dataclass(frozen=True)
class Ref:
    name: str
    kind: RefKind = RefKind.UNRESOLVED
    span: Span = _span()


@dataclass(frozen=True)
class Kwarg:
    name: str
    value: "Expr"
    span: Span = _span()
    name_span: Span = _span()


@dataclass(frozen=True)
class Call:
    fn: str
    args: tuple["Expr", ...] = ()
    kwargs: tuple[Kwarg, ...] = ()
    kind: CallKind = CallKind.UNRESOLVED
    span: Span = _span()
    fn_span: Span = _span()
    bare: bool = field(default=False, compare=False)  # written without parentheses (`init learned`)

    def kwarg(self, name: str) -> "Expr | None":
        """Return the value of keyword argument `name`, or None."""
        return next((k.value for k in self.kwargs if k.name == name), None)


@dataclass(frozen=True)
class BinOp:
    op: str  # + - * / **
    lhs: "Expr"
    rhs: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    span: Span = _span()


@dataclass(frozen=True)
class Tuple:
    items: tuple["Expr", ...]
    span: Span = _span()


Expr = Union[Num, Bool, Ref, Call, BinOp, Neg, Tuple]


def children(e: Expr) -> tuple[Expr, ...]:
    """Return the direct sub-expressions of e."""
    if isinstance(e, Call):
        return (*e.args, *(k.value for k in e.kwargs))
    if isinstance(e, BinOp):
        return (e.lhs, e.rhs)
    if isinstance(e, Neg):
        return (e.operand,)
    if isinstance(e, Tuple):
        return e.items
    return ()


def walk(e: Expr) -> Iterator[Expr]:
    """Yield e and all its sub-expressions, parents first."""
    stack = [e]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(children(node)))


# ---- statements -------------------------------------------------------------------


@dataclass(frozen=True)
class Trivia:
    """Comments attached to a node; never compared."""

    comments: tuple[str, ...] = ()
    trailing: str | None = None
    end_comments: tuple[str, ...] = ()


NO_TRIVIA = Trivia()


def _trivia_field():
    return field(default=NO_TRIVIA, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Param:
    name: str
    value: Expr
    span: Span = _span()
    trivia: Trivia = _trivia_field()


class PeriodUnit(enum.Enum):
    TOKENS = "tokens"  # an in-context level: learns inside the forward pass
    STEPS = "steps"  # an outer level: learns across optimiser steps
    NEVER = "never"  # frozen


@dataclass(frozen=True)
class Period:
    unit: PeriodUnit
    count: Expr | None = None  # None iff unit is NEVER
    span: Span = _span()


LEVEL_FIELDS = ("state", "init", "context", "objective", "update", "lr", "retain", "heads", "read", "period")
LEVEL_FLAGS = ("online", "debias", "first_order", "shared")


@dataclass(frozen=True)
class Level:
    """One nested optimisation problem: state learned from a context flow at a period."""

    name: str
    state: Expr
    init: Expr
    context: Expr | None  # None only on a frozen (`period never`) level, which learns from nothing
    objective: Expr
    update: Expr
    lr: Expr | None
    retain: Expr | None
    period: Period
    online: bool = False
    debias: bool = False
    first_order: bool = False  # a `context loss` level in tokens: the outer level does not differentiate its steps
    shared: bool = False  # one state for every block (and repetition) declaring a shared level of this name
    heads: Expr | None = None  # independent memories over equal slices of the features (None: one)
    read: Expr | None = None  # where a read inside a chunk looks: `chunk_start` (None: the default) or `current`
    span: Span = _span()
    name_span: Span = _span()
    trivia: Trivia = _trivia_field()
    field_trivia: tuple[tuple[str, Trivia], ...] = field(default=(), compare=False, repr=False, kw_only=True)
    field_spans: tuple[tuple[str, Span], ...] = field(default=(), compare=False, repr=False, kw_only=True)

    def field_span(self, key: str) -> Span:
        """Return the span of field `key` as written (or the level's name if it was defaulted)."""
        return dict(self.field_spans).get(key, self.name_span)

    def stated_fields(self) -> set[str]:
        """The fields the spec writes (all present ones for a level made without spans)."""
        keys = {k for k, _ in self.field_spans}
        return keys or {f for f in LEVEL_FIELDS if getattr(self, f, None) is not None}

    def field_comments(self, key: str) -> Trivia:
        return dict(self.field_trivia).get(key, NO_TRIVIA)


FROZEN_IGNORES = ("context", "objective", "update", "lr", "retain", "debias", "read")


def ignored_fields(lv: "Level", program_kind: "ProgramKind",
                   scope: "dict[str, Level] | None" = None) -> tuple[str, ...]:
    """The fields a level ignores by what it is, whatever their values (stating one is E314:
    nlc.passes.no_effect says why). `scope`, the levels of lv's scope by name, tells whether a model
    level updated by another level (`update L`) learns anything itself."""
    if lv.period.unit is PeriodUnit.NEVER:
        return FROZEN_IGNORES + ("first_order",)
    ignored = () if learns_loss_in_tokens(lv) and program_kind is ProgramKind.MODEL else ("first_order",)
    if program_kind is ProgramKind.OPTIMIZER and _moves_params_by_a_direction(lv):
        return ("objective",) + ignored
    if program_kind is ProgramKind.MODEL and scope is not None and moved_by_a_level(lv, scope):
        return ("context", "objective") + ignored
    return ignored


def updating_level(lv: "Level") -> str | None:
    """The name of the level that produces lv's update (`update L`; resolved or not), or None for a rule."""
    u = lv.update
    if isinstance(u, Ref) and (u.kind is RefKind.LEVEL or u.kind is RefKind.UNRESOLVED and u.name not in UPDATE_RULES):
        return u.name
    return None


def _named_in(e, fn: str) -> str | None:
    """NAME in a field written `fn(NAME, ...)`, or None for anything else."""
    if isinstance(e, Call) and e.fn == fn and e.args and isinstance(e.args[0], Ref):
        return e.args[0].name
    return None


def gradients_of(lv: "Level") -> str | None:
    """The name in lv's `context grad(NAME)` (a level, or `loss`), or None for any other context."""
    return _named_in(lv.context, "grad")


def restarts_from(lv: "Level") -> str | None:
    """The level in lv's `init reset(L)`, or None for any other init."""
    return _named_in(lv.init, "reset")


def copied_from(lv: "Level") -> str | None:
    """The level in lv's `init copy(L)`, or None for any other init."""
    return _named_in(lv.init, "copy")


def shaped_like(lv: "Level") -> str | None:
    """The level in lv's `state like(L)`, or None for any other state (`like(param)` names `param`)."""
    return _named_in(lv.state, "like")


def level_exprs(level: "Level") -> list[Expr]:
    """The expressions a level's update depends on (context, gates, rule arguments, update)."""
    exprs = [level.update, level.state, level.init, level.objective]
    exprs += [e for e in (level.context, level.lr, level.retain) if e is not None]
    return exprs


def moved_by_a_level(lv: "Level", scope: "dict[str, Level]") -> bool:
    """A model level updated by a level L that does not learn its gradients (`context grad(lv)`): it moves
    by L's state (docs/design.md §1.3), so nothing of its own (`context`, `objective`) is learned."""
    other = scope.get(updating_level(lv) or "")
    return other is not None and gradients_of(other) != lv.name


def reads_current(lv: "Level") -> bool:
    """`read current`: its reads inside a chunk see the chunk's updates up to the token (resolved or not)."""
    r = lv.read
    return isinstance(r, Call) and r.fn == "current" or isinstance(r, Ref) and r.name == "current"


def learns_loss(lv: "Level") -> bool:
    """Whether the level's context is the task loss (`context loss`; resolved or not)."""
    c = lv.context
    return isinstance(c, Call) and c.fn == "loss" or isinstance(c, Ref) and c.name == "loss"


def learns_loss_in_tokens(lv: "Level") -> bool:
    """A `context loss` level counted in tokens: it learns inside the sequence from the model's own
    next-token loss, chunk by chunk (docs/design.md §1.4)."""
    return learns_loss(lv) and lv.period.unit is PeriodUnit.TOKENS


def _moves_params_by_a_direction(lv: Level) -> bool:
    """A `state params` level whose update is a level or an expression, not an update rule
    (resolved or not: the printer also prints programs before name resolution)."""
    u = lv.update
    by_rule = (isinstance(u, Call) and u.kind in (CallKind.FORM, CallKind.UNRESOLVED) and u.fn in UPDATE_RULES
               or isinstance(u, Ref) and u.kind in (RefKind.FORM, RefKind.UNRESOLVED) and u.name in UPDATE_RULES)
    return is_root(lv) and not by_rule


@dataclass(frozen=True)
class Let:
    name: str
    value: Expr
    span: Span = _span()
    name_span: Span = _span()
    trivia: Trivia = _trivia_field()


@dataclass(frozen=True)
class Out:
    value: Expr
    span: Span = _span()
    trivia: Trivia = _trivia_field()


@dataclass(frozen=True)
class Block:
    """A residual block: `x` is its input; the model continues with x + out."""

    name: str
    body: tuple["Stmt", ...]
    span: Span = _span()
    name_span: Span = _span()
    trivia: Trivia = _trivia_field()

    @property
    def lets(self) -> tuple[Let, ...]:
        return tuple(s for s in self.body if isinstance(s, Let))

    @property
    def levels(self) -> tuple[Level, ...]:
        return tuple(s for s in self.body if isinstance(s, Level))

    @property
    def out(self) -> Out | None:
        return next((s for s in self.body if isinstance(s, Out)), None)


@dataclass(frozen=True)
class Repeat:
    """`repeat N { ... }`: N copies of the body, each with its own parameters."""

    count: Expr
    body: tuple["Stmt", ...]
    span: Span = _span()
    trivia: Trivia = _trivia_field()


Stmt = Union[Let, Out, Level, Block, Repeat]


class ProgramKind(enum.Enum):
    MODEL = "model"
    OPTIMIZER = "optimizer"


@dataclass(frozen=True)
class Program:
    """A whole spec: a model or an optimizer, its parameters and its body."""

    kind: ProgramKind
    name: str
    params: tuple[Param, ...]
    body: tuple[Stmt, ...]
    span: Span = _span()
    name_span: Span = _span()
    trivia: Trivia = _trivia_field()
    path: str = field(default="<string>", compare=False, repr=False, kw_only=True)

    @property
    def is_model(self) -> bool:
        return self.kind is ProgramKind.MODEL

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)


def scopes(program: Program) -> Iterator[tuple[tuple[Stmt, ...], Block | None]]:
    """Yield each name scope of a program: (its statements, the block or None for the top level)."""
    if not program.is_model:
        yield program.body, None
    stack: list[Stmt] = list(program.body)
    while stack:
        s = stack.pop(0)
        if isinstance(s, Block):
            yield s.body, s
        elif isinstance(s, Repeat):
            stack[0:0] = list(s.body)


def all_levels(program: Program) -> list[Level]:
    """Return every level of the program, in source order."""
    return [s for body, _ in scopes(program) for s in body if isinstance(s, Level)]


def is_root(level: Level) -> bool:
    """Is this the `state params` level of an optimizer (the parameters themselves)?

    Before name resolution `params` may still be a bare name (a Ref); after it, a call."""
    s = level.state
    return (isinstance(s, Ref) and s.name == "params") or (isinstance(s, Call) and s.fn == "params")
