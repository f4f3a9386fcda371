"""What may reach generated source, and a check of what did.

Generated modules are executed (`nlc.build`) and imported by users (`nlc compile`),
so nothing a user controls may become code. Two layers keep it so:

1. Escaping at the source: spec names are checked identifiers (and mangled by
   `nlc.names.py_name` away from the generator's own names), numbers are formatted,
   strings are `repr`'d, and free text that only ever sits in comments and
   docstrings (the spec's file name, which can hold newlines or quotes) passes
   through `comment_text`.
2. An audit of the result (`audit_source`): the generated module is parsed and
   every node must be of a kind the generator means to emit, every import one it
   means to import, and no name or attribute may reach Python's machinery for
   running code (`exec`, `eval`, `__import__`, dunder attributes, ...). A module
   that fails the audit is never executed or written: that is an internal error
   (E505), reported with the offending line.
"""

from __future__ import annotations

import ast

from nlc.errors import Diagnostic, SpecError
from nlc.names import FORBIDDEN_NAMES

# The kinds of syntax the templates and emitters produce (module level, classes,
# methods, statements and expressions). Anything else in a generated module means
# that text from outside reached it.
ALLOWED_NODES: frozenset[type] = frozenset({
    ast.Module, ast.Expr, ast.Constant, ast.Import, ast.ImportFrom, ast.alias, ast.ClassDef, ast.FunctionDef,
    ast.arguments, ast.arg, ast.Return, ast.Assign, ast.AugAssign, ast.For, ast.If, ast.IfExp, ast.Continue,
    ast.Raise, ast.With, ast.withitem, ast.Pass, ast.Name, ast.Attribute, ast.Subscript, ast.Slice, ast.Call,
    ast.keyword, ast.Tuple, ast.List, ast.Dict, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.DictComp,
    ast.ListComp, ast.comprehension, ast.Load, ast.Store,
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.USub, ast.Not, ast.And, ast.Or,
    ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn,
    ast.BitOr,  # `dict | None` annotations
})
# Modules a generated module may import (exactly these, or their submodules under nlc.runtime / nlc.optim).
ALLOWED_IMPORTS = ("math", "torch", "torch.nn", "torch.nn.functional", "nlc.runtime", "nlc.optim")
# The dunder names generated code legitimately uses.
ALLOWED_DUNDERS = frozenset({"__init__", "__name__"})


def comment_text(text: str) -> str:
    """Text that can sit in a comment or a docstring: printable characters, no quotes or backslashes.

    Anything else (newlines, unicode line separators, quotes, backslashes, control
    characters) becomes `?`: the text is for people to read, never parsed back.
    """
    return "".join(c if c.isprintable() and c not in "\"'\\" else "?" for c in text)


def audit_source(source: str, name: str) -> None:
    """Raise SpecError E505 unless `source` holds only what the generator means to emit."""
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        _fail(name, e.lineno or 0, f"it does not parse: {e.msg}")
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if type(node) not in ALLOWED_NODES:
            _fail(name, line, f"it holds a `{type(node).__name__}` node, which nlc never emits")
        if isinstance(node, ast.Import):
            for alias in node.names:
                _check_import(name, line, alias.name)
        elif isinstance(node, ast.ImportFrom):
            _check_import(name, line, node.module or "")
        elif isinstance(node, ast.Name):
            _check_name(name, line, node.id)
        elif isinstance(node, ast.Attribute):
            _check_name(name, line, node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            _check_name(name, line, node.name)
        elif isinstance(node, ast.arg):
            _check_name(name, line, node.arg)
        elif isinstance(node, ast.keyword) and node.arg is not None:
            _check_name(name, line, node.arg)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Constant):
            _fail(name, line, "it calls a constant")
        elif isinstance(node, ast.comprehension) and node.is_async:
            _fail(name, line, "it holds an async comprehension")


def _check_import(name: str, line: int, module: str) -> None:
    ok = module in ALLOWED_IMPORTS or module.startswith(("nlc.runtime.", "nlc.optim."))
    if not ok:
        _fail(name, line, f"it imports `{module}`")


def _check_name(name: str, line: int, ident: str) -> None:
    if ident in FORBIDDEN_NAMES:
        _fail(name, line, f"it uses `{ident}`")
    if ident.startswith("__") and ident.endswith("__") and ident not in ALLOWED_DUNDERS:
        _fail(name, line, f"it uses the special name `{ident}`")


def _fail(name: str, line: int, why: str):
    raise SpecError([Diagnostic(
        "E505", f"internal error: the code generated for `{name}` failed nlc's safety audit at line {line}: {why}",
        hint="nothing was run or written; please report this spec (it is a bug in nlc)")])
