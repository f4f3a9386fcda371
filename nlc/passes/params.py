"""Evaluate a program's parameters: defaults, overridden by build-time values.

`nlc.build(prog, dim=128)` and `nlc check -p dim=128` pass overrides; every
other pass sees plain numbers. Diagnostics: E208 unknown parameter override,
E401 a parameter (or period) that is not a number, E408 division by zero,
E413 arithmetic on `true`/`false`.
"""

from __future__ import annotations

import math
from typing import Mapping

from nlc import builtins as B
from nlc import ir
from nlc.errors import Reporter, did_you_mean
from nlc.unary import UNARY_OPS

Value = int | float | bool


def evaluate(program: ir.Program, overrides: Mapping[str, Value], rep: Reporter) -> dict[str, Value]:
    """Return every parameter's value, overrides applied."""
    env: dict[str, Value] = {}
    if program.is_model:
        env.update(B.IMPLICIT_MODEL_PARAMS)
    declared = {p.name for p in program.params} | set(env)
    bad_values = False
    for name, value in overrides.items():
        if name not in declared:
            hint = did_you_mean(name, declared) or f"the parameters are {', '.join(sorted(declared))}"
            rep.error("E208", f"unknown parameter `{name}` for {program.kind.value} `{program.name}`",
                      program.name_span, hint)
        if not isinstance(value, (bool, int, float)) or isinstance(value, float) and not math.isfinite(value):
            rep.error("E401", f"parameter `{name}` must be set to a finite number or true/false, not {value!r}",
                      program.name_span)
            bad_values = True
    if bad_values:
        return env
    for name in set(B.IMPLICIT_MODEL_PARAMS) & set(overrides) if program.is_model else ():
        env[name] = overrides[name]  # `dim=128` at build time: defaults such as `head = dim / 4` see 128
    for p in program.params:
        if p.name in overrides:
            env[p.name] = overrides[p.name]
            continue
        value = fold(p.value, env, rep)
        if value is None:
            continue
        env[p.name] = value
    for name, value in overrides.items():
        if name in declared:
            env[name] = value
    return env


def fold(e: ir.Expr, env: Mapping[str, Value], rep: Reporter) -> Value | None:
    """Return the constant value of e over parameters, or None (and a diagnostic) if it has none."""
    if isinstance(e, (ir.Num, ir.Bool)):
        return e.value
    if isinstance(e, ir.Ref):
        if e.name in env:
            return env[e.name]
        if e.kind in (ir.RefKind.PARAM, ir.RefKind.UNRESOLVED):
            return None  # an undefined name was reported by resolve; a failed parameter by its own fold
        rep.error("E401", f"`{e.name}` is not a number known at build time", e.span,
                  "only numbers, parameters and arithmetic on them are allowed here")
        return None
    if isinstance(e, ir.Neg):
        v = fold(e.operand, env, rep)
        return None if v is None else -v
    if isinstance(e, ir.BinOp):
        a, b = fold(e.lhs, env, rep), fold(e.rhs, env, rep)
        if a is None or b is None:
            return None
        return arith(e, a, b, rep)
    if isinstance(e, ir.Call) and e.fn in UNARY_OPS and len(e.args) == 1 and not e.kwargs:
        v = fold(e.args[0], env, rep)
        return None if v is None else fold_unary(e, v, rep)
    rep.error("E401", "expected a number here", e.span, "only numbers, parameters and arithmetic are allowed")
    return None


def fold_unary(e: ir.Call, v: Value, rep: Reporter) -> Value | None:
    """An elementwise builtin of a constant (nlc.unary's scalar form), or None and E408 if not finite."""
    if isinstance(v, bool):
        rep.error("E413", f"`{e.fn}` needs a number, not `{str(v).lower()}`", e.span)
        return None
    try:
        r = UNARY_OPS[e.fn].scalar(v)
    except (ValueError, OverflowError):
        r = math.nan
    if not math.isfinite(r):
        rep.error("E408", f"`{e.fn}({v})` is not a finite number", e.span)
        return None
    return r


def arith(e: ir.BinOp, a: Value, b: Value, rep: Reporter) -> Value | None:
    """Return a op b on constants, reporting division by zero and overflow."""
    if isinstance(a, bool) or isinstance(b, bool):
        rep.error("E413", f"`{e.op}` needs numbers, not `{str(a if isinstance(a, bool) else b).lower()}`", e.span)
        return None
    try:
        if e.op == "+":
            r = a + b
        elif e.op == "-":
            r = a - b
        elif e.op == "*":
            r = a * b
        elif e.op == "/":
            r = a / b
            if isinstance(a, int) and isinstance(b, int) and a % b == 0:
                r = a // b
        else:
            if abs(b) > 1024 or (isinstance(a, int) and abs(a) > 2**62):
                raise OverflowError
            r = a ** b
            if isinstance(r, complex):
                raise ValueError
    except ZeroDivisionError:
        rep.error("E408", "division by zero", e.span)
        return None
    except (OverflowError, ValueError):
        rep.error("E408", "this arithmetic overflows or has no real value", e.span)
        return None
    if isinstance(r, float) and not math.isfinite(r) or isinstance(r, int) and abs(r) > 2**62:
        rep.error("E408", "this arithmetic overflows", e.span)
        return None
    return r
