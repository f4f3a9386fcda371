"""The syntax tree: what the user wrote, with a span on every node.

Built by `nlc.parser` from nlc text and by `nlc.yaml_spec` from YAML. No names
are resolved here and no defaults are filled: that is `nlc.lower`'s job.
Comments ride along (leading, trailing, and before a closing brace) so that
`nlc fmt` keeps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nlc.source import Span


@dataclass
class Node:
    span: Span
    comments: list[str] = field(default_factory=list, kw_only=True)
    trailing: str | None = field(default=None, kw_only=True)


# ---- expressions --------------------------------------------------------------


@dataclass
class Number(Node):
    text: str


@dataclass
class Bool(Node):
    value: bool


@dataclass
class Name(Node):
    id: str


@dataclass
class Kwarg(Node):
    name: str
    name_span: Span
    value: "Expr"


@dataclass
class Call(Node):
    fn: str
    fn_span: Span
    args: list["Expr"]
    kwargs: list[Kwarg]


@dataclass
class BinOp(Node):
    op: str  # one of + - * / **
    lhs: "Expr"
    rhs: "Expr"


@dataclass
class Neg(Node):
    operand: "Expr"


@dataclass
class Tuple(Node):
    items: list["Expr"]


Expr = Number | Bool | Name | Call | BinOp | Neg | Tuple


# ---- statements ---------------------------------------------------------------


@dataclass
class Param(Node):
    name: str
    name_span: Span
    value: Expr


@dataclass
class Let(Node):
    name: str
    name_span: Span
    value: Expr


@dataclass
class Out(Node):
    value: Expr


@dataclass
class Field(Node):
    """One line of a level: `key value [unit]`, or a bare flag (`online`)."""

    key: str
    key_span: Span
    value: Expr | None = None
    unit: str | None = None  # "tokens" | "steps" | "never" for `period`


@dataclass
class Level(Node):
    name: str
    name_span: Span
    fields: list[Field]
    end_comments: list[str] = field(default_factory=list)


@dataclass
class Block(Node):
    name: str
    name_span: Span
    body: list["Stmt"]
    end_comments: list[str] = field(default_factory=list)


@dataclass
class Repeat(Node):
    count: Expr
    body: list["Stmt"]
    end_comments: list[str] = field(default_factory=list)


Stmt = Let | Out | Level | Block | Repeat


@dataclass
class Program(Node):
    kind: str  # "model" | "optimizer"
    kind_span: Span
    name: str
    name_span: Span
    params: list[Param]
    body: list[Stmt]
    end_comments: list[str] = field(default_factory=list)
