"""IR -> canonical nlc text (what `nlc fmt` writes).

Canonical means: two-space indentation, one statement or field per line, level
fields in a fixed order (state, init, context, objective, update, lr, retain,
period, then flags), minimal parentheses, numbers in Python's shortest repr.
Comments are kept. `loads(print_program(p)) == p` for every valid program, and
printing is idempotent.
"""

from __future__ import annotations

from nlc import ir

INDENT = "  "
LINE_WIDTH = 88

# binding strength: higher binds tighter
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "neg": 3, "**": 4}


def print_program(p: ir.Program) -> str:
    """Return the canonical source text of a program."""
    out: list[str] = []
    _comments(out, p.trivia.comments, 0)
    header = f"{p.kind.value} {p.name}"
    params = [f"{q.name} = {print_expr(q.value)}" for q in p.params]
    one_line = f"{header}({', '.join(params)}) {{" if params else f"{header} {{"
    has_param_comments = any(q.trivia.comments or q.trivia.trailing for q in p.params)
    if len(one_line) <= LINE_WIDTH and not has_param_comments:
        out.append(_trail(one_line, p.trivia.trailing))
    else:
        out.append(f"{header}(")
        for q, text in zip(p.params, params):
            _comments(out, q.trivia.comments, 1)
            out.append(_trail(INDENT + text + ",", q.trivia.trailing))
        out.append(_trail(") {", p.trivia.trailing))  # where it was read from: after the `{`
    _body(out, p.body, 1, p.kind)
    _comments(out, p.trivia.end_comments, 1)
    out.append("}")
    return "\n".join(out) + "\n"


def _trail(line: str, comment: str | None) -> str:
    return f"{line}  {comment}" if comment else line


def _comments(out: list[str], comments: tuple[str, ...], depth: int) -> None:
    out.extend(INDENT * depth + c for c in comments)


def _body(out: list[str], body: tuple[ir.Stmt, ...], depth: int, kind: ir.ProgramKind) -> None:
    prev = None
    scope = {s.name: s for s in body if isinstance(s, ir.Level)}
    for s in body:
        # a blank line before and after every multi-line statement, for the eye
        if prev is not None and (_is_multiline(s) or _is_multiline(prev)):
            out.append("")
        _stmt(out, s, depth, kind, scope)
        prev = s


def _is_multiline(s: ir.Stmt) -> bool:
    return isinstance(s, (ir.Level, ir.Block, ir.Repeat))


def _stmt(out: list[str], s: ir.Stmt, depth: int, kind: ir.ProgramKind, scope: dict[str, ir.Level]) -> None:
    pad = INDENT * depth
    _comments(out, s.trivia.comments, depth)
    if isinstance(s, ir.Let):
        out.append(_trail(f"{pad}let {s.name} = {print_expr(s.value)}", s.trivia.trailing))
    elif isinstance(s, ir.Out):
        out.append(_trail(f"{pad}out = {print_expr(s.value)}", s.trivia.trailing))
    elif isinstance(s, ir.Block):
        out.append(_trail(f"{pad}block {s.name} {{", s.trivia.trailing))
        _body(out, s.body, depth + 1, kind)
        _comments(out, s.trivia.end_comments, depth + 1)
        out.append(pad + "}")
    elif isinstance(s, ir.Repeat):
        out.append(_trail(f"{pad}repeat {print_expr(s.count)} {{", s.trivia.trailing))
        _body(out, s.body, depth + 1, kind)
        _comments(out, s.trivia.end_comments, depth + 1)
        out.append(pad + "}")
    else:
        _level(out, s, depth, kind, scope)


def level_fields(lv: ir.Level, kind: ir.ProgramKind, scope: dict[str, ir.Level] | None = None) -> list[tuple[str, str]]:
    """(field, text) of every field a level states, in canonical order; a flag's text is ""; the
    fields the level would ignore (E314; `scope` holds the levels beside it) are left out. The YAML
    printer writes the same list."""
    fields: list[tuple[str, str | None]] = [
        ("state", print_expr(lv.state)),
        ("init", print_expr(lv.init)),
        ("context", None if lv.context is None else print_expr(lv.context)),
        ("objective", print_expr(lv.objective)),
        ("update", print_expr(lv.update)),
        ("lr", None if lv.lr is None else print_expr(lv.lr)),
        ("retain", None if lv.retain is None else print_expr(lv.retain)),
        ("heads", None if lv.heads is None else print_expr(lv.heads)),
        ("read", None if lv.read is None else print_expr(lv.read)),
    ]
    ignored = ir.ignored_fields(lv, kind, scope)  # what the level would ignore (E314) is never written
    fields = [(k, text) for k, text in fields if text is not None and k not in ignored]
    p = lv.period
    fields.append(("period", "never" if p.unit is ir.PeriodUnit.NEVER else f"{print_expr(p.count)} {p.unit.value}"))
    for flag in ir.LEVEL_FLAGS:
        if getattr(lv, flag):
            fields.append((flag, ""))
    return fields


def _level(out: list[str], lv: ir.Level, depth: int, kind: ir.ProgramKind, scope: dict[str, ir.Level]) -> None:
    pad = INDENT * depth
    out.append(_trail(f"{pad}level {lv.name} {{", lv.trivia.trailing))
    for key, text in level_fields(lv, kind, scope):
        trivia = lv.field_comments(key)
        _comments(out, trivia.comments, depth + 1)
        line = f"{pad}{INDENT}{key} {text}".rstrip()
        out.append(_trail(line, trivia.trailing))
    _comments(out, lv.trivia.end_comments, depth + 1)
    out.append(pad + "}")


def print_expr(e: ir.Expr, parent_prec: int = 0, right: bool = False) -> str:
    """Return an expression's canonical text, parenthesised only where needed."""
    if isinstance(e, ir.Num):
        return format_number(e.value)
    if isinstance(e, ir.Bool):
        return "true" if e.value else "false"
    if isinstance(e, ir.Ref):
        return e.name
    if isinstance(e, ir.Tuple):
        return "(" + ", ".join(print_expr(i) for i in e.items) + ("," if len(e.items) == 1 else "") + ")"
    if isinstance(e, ir.Call):
        if e.bare and not e.args and not e.kwargs:
            return e.fn
        args = [print_expr(a) for a in e.args] + [f"{k.name} = {print_expr(k.value)}" for k in e.kwargs]
        return f"{e.fn}({', '.join(args)})"
    if isinstance(e, ir.Neg):
        prec = _PREC["neg"]
        text = "-" + print_expr(e.operand, prec)
        return f"({text})" if prec < parent_prec else text
    assert isinstance(e, ir.BinOp)
    prec = _PREC[e.op]
    if e.op == "**":  # right-associative; the base binds tighter than unary minus
        text = f"{print_expr(e.lhs, prec + 1)} ** {print_expr(e.rhs, _PREC['neg'])}"
    else:
        text = f"{print_expr(e.lhs, prec)} {e.op} {print_expr(e.rhs, prec + 1)}"
    return f"({text})" if prec < parent_prec else text


def format_number(v: int | float) -> str:
    """Return the shortest text that reads back as the same number and type."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    text = repr(float(v))
    if "inf" in text or "nan" in text:  # not valid nlc; lowering rejects such numbers
        raise ValueError(f"cannot print non-finite number {v}")
    return text
