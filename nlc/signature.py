"""Signatures of builtins: argument types, arguments with defaults, and a builtin's entry.

Shared by the builtin tables (nlc.builtins) and the update-rule registry (nlc.rules), which
states each rule's arguments with these types; it imports nothing of nlc's, so both can use it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ArgType(enum.Enum):
    TENSOR = "a tensor"
    POSINT = "a positive whole number"
    NONNEG = "a whole number >= 0"
    NUMBER = "a number"
    BOOL = "`true` or `false`"
    GATE = "a scalar gate (a number, `learned(...)` or a per-token expression of width 1)"
    LEVEL = "the name of a level"
    ANY = "a value"


REQUIRED = object()


@dataclass(frozen=True)
class Arg:
    name: str
    type: ArgType
    default: object = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Builtin:
    """A builtin: its name, arguments and what it means."""

    name: str
    args: tuple[Arg, ...]
    doc: str
    variadic: bool = False  # takes any number (>= 1) of positional tensors (concat)
    scope: str = "any"  # "model", "optimizer" or "any"

    def arg(self, name: str) -> Arg | None:
        return next((a for a in self.args if a.name == name), None)
