"""The elementwise unary builtins (`silu`, `sigmoid`, ..., `abs`), written once.

Each op has one scalar form (Python numbers: constant folding at check time, an
optimizer's gates over `step`) and the torch function for tensors, named by the text
generated code calls (`F.silu`); nlc.runtime.unary resolves those names to functions for
the interpreters. Every consumer reads this table: the checker (nlc.passes.params.fold),
the model and optimizer interpreters, the model emitter and the optimizer code generator,
and the optimizer runtime's scalar helpers. The module imports no torch: the front end
(`nlc check`) stays free of it.

The scalar forms are the numerically stable ones (no overflow for large |x|), so a
constant the checker folds is the value the tensor form gives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x)) if x >= 0 else math.exp(x) / (1 + math.exp(x))


def silu(x: float) -> float:
    return x * sigmoid(x)


def softplus(x: float) -> float:
    return math.log1p(math.exp(-abs(x))) + max(x, 0.0)


def relu(x: float) -> float:
    return max(x, 0.0)


def gelu(x: float) -> float:
    return 0.5 * x * (1 + math.erf(x / math.sqrt(2)))


@dataclass(frozen=True)
class UnaryOp:
    """One elementwise builtin: its scalar form and the code generated modules call."""

    name: str
    scalar: Callable[[float], float]
    tensor_code: str  # the torch function, as generated code calls it on a tensor: `F.silu`, `torch.sqrt`
    scalar_code: str  # as generated optimizer code calls it on a Python number: `math.sqrt`, `rt.sigmoid`


UNARY_OPS: dict[str, UnaryOp] = {op.name: op for op in (
    UnaryOp("silu", silu, "F.silu", "rt.silu"),
    UnaryOp("sigmoid", sigmoid, "torch.sigmoid", "rt.sigmoid"),
    UnaryOp("softplus", softplus, "F.softplus", "rt.softplus"),
    UnaryOp("relu", relu, "torch.relu", "rt.relu"),
    UnaryOp("gelu", gelu, "F.gelu", "rt.gelu"),
    UnaryOp("tanh", math.tanh, "torch.tanh", "math.tanh"),
    UnaryOp("exp", math.exp, "torch.exp", "math.exp"),
    UnaryOp("sqrt", math.sqrt, "torch.sqrt", "math.sqrt"),
    UnaryOp("abs", abs, "torch.abs", "abs"),
)}

