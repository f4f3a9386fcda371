"""The elementwise unary builtins as torch functions (nlc.unary names them), for the interpreters."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nlc.unary import UNARY_OPS

_MODULES = {"torch": torch, "F": F}


def _resolve(code: str):
    module, name = code.split(".")
    return getattr(_MODULES[module], name)


TENSOR_UNARY = {name: _resolve(op.tensor_code) for name, op in UNARY_OPS.items()}


def apply_unary(name: str, x):
    """op(x) on a tensor or a Python number (the same value either way)."""
    return TENSOR_UNARY[name](x) if isinstance(x, torch.Tensor) else UNARY_OPS[name].scalar(x)
