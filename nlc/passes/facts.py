"""What `nlc check` hands forward: typed facts about a checked program (docs/design.md §2.4).

The passes compute each level's state shape (the shapes pass), its period (the frequency
pass) and the value of every constant expression they type (the shapes pass). They record
them here, in a `ProgramFacts` that `nlc.passes.pipeline.Checked` carries, so that the
planners (`nlc.plan`, `nlc.plan.optimizer`) and the level graph (`nlc.graph`) read them
instead of binding state calls and folding expressions a second time.

A level is identified by its scope (the `ir.Block` it is declared in; None for an optimizer's
top level) and its name: two blocks may share a name, and a `repeat`ed block is one scope
(its instances share their facts, as they share their parameters).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nlc import ir

Value = int | float | bool

UNIT_RANK = {ir.PeriodUnit.TOKENS: 0, ir.PeriodUnit.STEPS: 1, ir.PeriodUnit.NEVER: 2}


@dataclass(frozen=True)
class Frequency:
    """A level's period: how often it updates (count 0 for never). Sortable, fastest first."""

    unit: ir.PeriodUnit
    count: int

    @property
    def never(self) -> bool:
        return self.unit is ir.PeriodUnit.NEVER

    @property
    def key(self) -> tuple[int, int]:
        return (UNIT_RANK[self.unit], self.count)

    def __str__(self) -> str:
        if self.never:
            return "never"
        word = self.unit.value if self.count != 1 else self.unit.value[:-1]
        return f"every {self.count} {word}" if self.count != 1 else f"every {word}"


@dataclass(frozen=True)
class StateShape:
    """A level's state: its kind and widths ("P": shaped like the optimised parameter).

    kind: linear | mlp | vector | like | params. An MLP (and a `like` of one) has `depth` layers
    through `hidden` features (hidden 0 when depth is 1) and may be `residual`; a `like` state
    takes all of these from the level it is shaped like (`like_of`; None for `like(param)`).
    The widths are the whole memory's; with `heads` h > 1 each head holds the same kind of state
    at 1/h of each width (docs/design.md §1.7).
    """

    kind: str
    d_in: int | str
    d_out: int | str
    hidden: int = 0
    depth: int = 1
    residual: bool = False
    like_of: str | None = None
    heads: int = 1  # `heads h`: h independent memories, each over 1/h of d_in, hidden and d_out

    @property
    def layers(self) -> tuple[int, int]:
        """(hidden, depth): what two states must share, besides kind and widths, to be copies."""
        return (self.hidden, self.depth)

    def describe(self) -> str:
        """`linear 8->16`, `mlp 8->32->8` (depth 2), `mlp 8->32 (x3)->8` (depth 4), `... in 4 heads`."""
        heads = f" in {self.heads} heads" if self.heads > 1 else ""
        if self.depth == 1:
            return f"{self.kind} {self.d_in}->{self.d_out}{heads}"
        return f"{self.kind} {self.d_in}->{self.hidden}{f' (x{self.depth - 1})' if self.depth > 2 else ''}" \
               f"->{self.d_out}{heads}"


@dataclass
class ScopeFacts:
    """The facts of one scope: each level's state shape and period."""

    shapes: dict[str, StateShape] = field(default_factory=dict)
    periods: dict[str, Frequency] = field(default_factory=dict)


class ProgramFacts:
    """Shapes, periods and constants of a checked program, recorded by the passes that computed them."""

    def __init__(self, env: dict[str, Value]):
        self.env = env  # the parameters' values
        self._scopes: dict[int, tuple[ir.Block | None, ScopeFacts]] = {}  # id(block) -> (block, its facts)
        self._constants: dict[int, tuple[ir.Expr, Value]] = {}  # id(expr) -> (expr, its value)

    # ---- recorded by the passes ----
    def scope(self, block: ir.Block | None) -> ScopeFacts:
        """The facts of `block`'s scope (None: an optimizer's top level), created on first use."""
        entry = self._scopes.get(id(block))
        if entry is None:
            entry = self._scopes[id(block)] = (block, ScopeFacts())  # holding the block keeps its id unique
        return entry[1]

    def record_constant(self, e: ir.Expr, value: Value) -> None:
        self._constants[id(e)] = (e, value)  # holding e keeps its id from being reused

    # ---- read by the planners ----
    def shape(self, block: ir.Block | None, level: str) -> StateShape:
        return self.scope(block).shapes[level]

    def period(self, block: ir.Block | None, level: str) -> Frequency:
        return self.scope(block).periods[level]

    def constant(self, e: ir.Expr) -> Value | None:
        """The value the checker folded `e` to, or None if it typed `e` as something else (or never saw it).

        Literals the planners make themselves (a default such as `ir.Num(0.9)`) are their own value.
        """
        if isinstance(e, (ir.Num, ir.Bool)):
            return e.value
        entry = self._constants.get(id(e))
        return entry[1] if entry is not None and entry[0] is e else None

    def const(self, e: ir.Expr) -> Value:
        """The value of an expression the checker proved constant (a width, a count, a number gate)."""
        value = self.constant(e)
        if value is None:  # pragma: no cover - a clean check folded every such expression
            raise AssertionError(f"internal error: no constant value recorded for `{e}`")
        return value
