"""The plan's values: a closed set of operations over typed operands (docs/design.md §2.6).

Both kinds of program are planned into the same SSA form: a list of `Node`s in
dependency order, each `name = op(args, **attrs)`. An operand is a constant
(`Const`), a hyper-parameter that stays symbolic because a parameter group may
override it (`Hyper`, optimizers only: a model's parameters are folded by the
checker), or a reference to an earlier node (`Ref`). Both back ends (the reference
interpreter and the code generator) of both kinds of program (model, optimizer)
dispatch on `Op`, and nothing else: an operation they do not know cannot reach
them, because `nlc.plan.verify` rejects a plan that holds one.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class Op(enum.Enum):
    """What a plan node computes."""

    INPUT = "input"  # a program input: the block input `x` (model); `grad`, `param`, `step` (optimizer)
    ALIAS = "alias"  # another value under a spec name (`let y = x`)
    NEG = "neg"
    ADD = "add"
    SUB = "sub"
    MUL = "mul"
    DIV = "div"
    POW = "pow"
    UNARY = "unary"  # an elementwise builtin of nlc.unary: attrs["fn"]
    L2NORM = "l2norm"  # x / ||x||_2 over features (a model) or over the whole tensor (an optimizer)
    MEAN = "mean"  # the mean over features (a model) or over the whole tensor (an optimizer)
    CONCAT = "concat"  # features side by side
    SLICE = "slice"  # features attrs["start"] .. attrs["stop"] - 1
    NEWTON_SCHULZ = "newton_schulz"  # orthogonalise a matrix (Muon): args (x, steps)
    LINEAR = "linear"  # the slow layers: node.module names the layer
    CONV = "conv"
    RMSNORM = "rmsnorm"
    SWIGLU = "swiglu"
    ATTENTION = "attention"  # args (x,) or (x, memory stream)
    LEARNED = "learned"  # a learned scalar
    READ = "read"  # a level's state applied to a key (args (key,)) or the state itself (args ()): attrs["level"]
    SPLIT_HEADS = "split_heads"  # [B, T, w] -> [B*h, T, w/h], h = attrs["heads"] (w = 1: the same value for every head)
    MERGE_HEADS = "merge_heads"  # [B*h, T, w] -> [B, T, h*w]: the heads' answers side by side


SYMBOLS = {Op.ADD: "+", Op.SUB: "-", Op.MUL: "*", Op.DIV: "/", Op.POW: "**"}  # the language's, and Python's
OF_SYMBOL = {symbol: op for op, symbol in SYMBOLS.items()}
BINARY = tuple(SYMBOLS)
LAYERS = (Op.LINEAR, Op.CONV, Op.RMSNORM, Op.SWIGLU, Op.ATTENTION, Op.LEARNED)  # a node.module each
STATEFUL = (Op.CONV, Op.ATTENTION)  # carry a cache across streamed pieces (`caches[node.name]`)

ARITY: dict[Op, tuple[int, int | None]] = {  # (fewest, most) arguments; None: any number
    Op.INPUT: (0, 0), Op.ALIAS: (1, 1), Op.NEG: (1, 1), **{op: (2, 2) for op in BINARY},
    Op.UNARY: (1, 1), Op.L2NORM: (1, 1), Op.MEAN: (1, 1), Op.CONCAT: (1, None), Op.SLICE: (1, 1),
    Op.NEWTON_SCHULZ: (2, 2),
    Op.LINEAR: (1, 1), Op.CONV: (1, 1), Op.RMSNORM: (1, 1), Op.SWIGLU: (1, 1), Op.ATTENTION: (1, 2),
    Op.LEARNED: (0, 0), Op.READ: (0, 1), Op.SPLIT_HEADS: (1, 1), Op.MERGE_HEADS: (1, 1),
}

# The operations each kind of program may hold (builtins.OPS says which builtins a spec may call where).
MODEL_OPS = frozenset(Op) - {Op.NEWTON_SCHULZ}
HEADS = (Op.SPLIT_HEADS, Op.MERGE_HEADS)  # a multi-head level's keys, values, gates and reads (attrs["heads"])
OPTIMIZER_OPS = frozenset({Op.INPUT, Op.ALIAS, Op.NEG, *BINARY, Op.UNARY, Op.L2NORM, Op.MEAN, Op.NEWTON_SCHULZ,
                           Op.READ})


@dataclass(frozen=True)
class Const:
    """A number (or a truth value) known when the plan is made."""

    value: float | int | bool


@dataclass(frozen=True)
class Hyper:
    """A hyper-parameter of an optimizer, read from the parameter group at every step."""

    name: str


@dataclass(frozen=True)
class Ref:
    """The value of an earlier node of the same plan."""

    name: str


Operand = Const | Hyper | Ref

ONE = Const(1.0)


@dataclass
class Node:
    """One SSA value: `name = op(args, **attrs)`."""

    name: str
    op: Op
    args: tuple[Operand, ...] = ()
    attrs: dict = field(default_factory=dict)
    width: int | None = None  # a model's features per token; None for a scalar (a learned gate)
    module: str | None = None  # the slow layer it uses (attribute name), for the LAYERS ops
    source: str = ""  # the spec text it came from (for comments)
    line: int = 0
    in_loop: bool = False  # a model's: depends on an in-context read
    phase: str = "pre"  # a model's: "pre" the whole sequence before the chunk loop; "loop" chunk by chunk
    # (reads and what the levels learn from); "post" the whole sequence after the loop (depends on reads,
    # feeds no learning)
    py: bool = False  # an optimizer's: a Python number (hyper-parameters, `step`), not a tensor

    @property
    def refs(self) -> list[str]:
        """The names of the nodes this one reads."""
        return [a.name for a in self.args if isinstance(a, Ref)]


def refs(operands) -> list[str]:
    """The node names among `operands`."""
    return [a.name for a in operands if isinstance(a, Ref)]
