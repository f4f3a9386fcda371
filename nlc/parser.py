"""nlc text -> syntax tree (`nlc.syntax`), and syntax errors -> E1xx diagnostics.

The lark parser is built once per process (LALR, contextual lexer, positions
propagated). Parse errors are turned into Diagnostics with a caret and, for the
common mistakes, a hint. Comments are collected by a lexer callback and attached
to the nearest statement so that the printer can keep them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import lark
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from nlc import syntax as S
from nlc.errors import Diagnostic, SpecError, did_you_mean, one_of
from nlc.grammar_file import grammar_text
from nlc.source import Source, Span

MAX_DEPTH = 64  # expressions nested deeper than this are rejected (E108), keeping every pass non-recursive-safe

FIELD_KEYWORDS = ("state", "init", "context", "objective", "update", "lr", "retain", "period")
FLAG_KEYWORDS = ("online", "debias")
STMT_KEYWORDS = ("let", "level", "block", "repeat", "out")


@lru_cache(maxsize=None)
def _lark(start: str) -> Lark:
    return Lark(grammar_text(), start=start, parser="lalr", lexer="contextual",
                propagate_positions=True, maybe_placeholders=False)


def parse(source: Source) -> S.Program:
    """Return the syntax tree of a whole nlc file; raise SpecError on a syntax error."""
    tree = _parse_tree(source.text, source, "start")
    program = _Builder(source).program(tree.children[0])
    attach_comments(program, _comment_tokens(source.text), source)
    return program


def parse_expr(text: str, source: Source, offset: int) -> S.Expr:
    """Return the syntax tree of one expression found at `offset` of `source`.

    Used by the YAML front end: the text before the expression is blanked out
    (newlines kept) so that positions, and therefore spans, match the file.
    """
    blank = "".join(c if c == "\n" else " " for c in source.text[:offset])
    tree = _parse_tree(blank + text, source, "expr")
    return _Builder(source).expr(tree)


def _parse_tree(text: str, source: Source, start: str) -> Tree:
    try:
        return _lark(start).parse(text)
    except UnexpectedInput as e:
        raise SpecError([_syntax_diagnostic(e, source, text)]) from None


def _comment_tokens(text: str) -> list[tuple[int, int, str]]:
    """Return (start, end, text) of every `# ...` comment (nlc has no strings, so `#` always starts one)."""
    out = []
    pos = 0
    while True:
        i = text.find("#", pos)
        if i < 0:
            return out
        j = text.find("\n", i)
        j = len(text) if j < 0 else j
        out.append((i, j, text[i:j].rstrip()))
        pos = j


# ---- syntax errors -------------------------------------------------------------

_TOKEN_WORDS = {
    "NAME": "a name", "NUMBER": "a number", "LBRACE": "`{`", "RBRACE": "`}`", "LPAR": "`(`",
    "RPAR": "`)`", "COMMA": "`,`", "EQUAL": "`=`", "ADD_OP": "an operator", "MUL_OP": "an operator",
    "MINUS": "`-`", "$END": "the end of the file", "<END-OF-FILE>": "the end of the file",
    "__ANON_0": "an operator", "PROGRAM_KIND": "`model` or `optimizer`",
    "LET": "`let`", "OUT": "`out`", "BLOCK": "`block`", "REPEAT": "`repeat`", "LEVEL": "`level`",
    "FIELD_KEY": "a level field", "PERIOD": "a level field", "PERIOD_UNIT": "`tokens` or `steps`",
    "NEVER": "`never`", "FLAG": "a level field", "BOOL": "`true` or `false`",
}
_STMT_TERMINALS = {"LET", "OUT", "BLOCK", "REPEAT", "LEVEL"}


def _describe_expected(expected: set[str]) -> str:
    words = dict(_TOKEN_WORDS)
    if {"NAME", "NUMBER"} <= expected:  # where a value may start, say so instead of listing its first tokens
        words.update(dict.fromkeys(("NAME", "NUMBER", "LPAR", "MINUS", "BOOL"), "an expression"))
    items = sorted({words.get(n, n.lower()) for n in expected})
    if not items:  # lark expects nothing more: a YAML expression (start=expr) that is already complete
        return "the end of the expression"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " or " + items[-1]


def _token_text(tok: Token) -> str:
    return "end of file" if tok.type == "$END" else f"`{tok.value}`"


def _open_delimiters(text: str, end: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Scan text[:end] (skipping comments): return the offsets of the `(`/`{` still open, innermost
    last, and the (open, close) offsets of every matched `{ }` pair."""
    stack: list[int] = []
    pairs: list[tuple[int, int]] = []
    i = 0
    while i < end:
        ch = text[i]
        if ch == "#":
            j = text.find("\n", i)
            i = end if j < 0 else j
            continue
        if ch in "({":
            stack.append(i)
        elif ch in ")}" and stack and text[stack[-1]] == "({"[")}".index(ch)]:
            start = stack.pop()
            if ch == "}":
                pairs.append((start, i))
        i += 1
    return stack, pairs


def _indent(text: str, pos: int) -> int:
    line_start = text.rfind("\n", 0, pos) + 1
    line = text[line_start:]
    return len(line) - len(line.lstrip(" \t"))


def _unclosed_note(source: Source, text: str, end: int, kinds: str = "({") -> tuple[tuple[Span, str], ...]:
    """A note pointing at the delimiter that is probably missing its closing partner, if one is open."""
    stack, pairs = _open_delimiters(text, end)
    stack = [i for i in stack if text[i] in kinds]
    if not stack:
        return ()
    opener = stack[-1]
    if text[opener] == "{":
        # a `{` whose `}` sits at another indentation probably took the `}` of an outer one
        # (`block b {` ... the block's `}` forgotten ... the model's `}` closes it instead)
        skewed = [o for o, c in pairs if o > opener and text[c - _indent(text, c):c].strip() == ""
                  and _indent(text, o) != _indent(text, c)]
        if skewed:
            return ((source.span(skewed[0], skewed[0] + 1), "this `{` is probably missing its `}`"),)
    return ((source.span(opener, opener + 1), f"this `{text[opener]}` is never closed"),)


def _syntax_diagnostic(e: UnexpectedInput, source: Source, text: str) -> Diagnostic:
    if isinstance(e, UnexpectedCharacters):
        pos = e.pos_in_stream
        ch = text[pos]
        hint = None
        if ch == ":":
            hint = "fields and arguments take no colon: write `state mlp(dim)` or `depth = 2`"
        elif ch in "\"'":
            hint = "nlc has no strings: write names and numbers without quotes"
        elif ch == ";":
            hint = "statements end where the next one starts; no `;` is needed"
        return Diagnostic("E101", f"unexpected character `{ch}`", source.span(pos, pos + 1), hint)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        pos = len(text.rstrip())
        notes = _unclosed_note(source, text, len(text))
        words = " ".join(line.split("#")[0] for line in text.splitlines()).split()
        if notes:
            hint = f"a closing {'`)`' if notes[0][0].text == '(' else '`}`'} is probably missing"
        elif not words:
            hint = "the file holds no spec: start with `model NAME(params) {` or `optimizer NAME(params) {`"
        elif "{" not in text and words[0] in ("model", "optimizer"):
            hint = "the spec stops after its name: its body follows in braces, `model NAME(params) { ... }`"
        else:
            hint = "the text stops in the middle of an expression"
        return Diagnostic("E103", "unexpected end of file", source.span(max(0, pos - 1), pos), hint, notes=notes)
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    start = tok.start_pos or 0
    span = source.span(start, start + len(str(tok.value)))
    try:  # the exact set of acceptable terminals (LALR's `expected` can be wider)
        expected = set(e.interactive_parser.accepts()) - {"$END"} or set(e.expected)
    except Exception:  # pragma: no cover - older lark without accepts()
        expected = set(e.expected)
    return _unexpected_token(tok, expected, span, source, text)


def _unexpected_token(tok: Token, expected: set[str], span: Span, source: Source | None = None,
                      text: str = "") -> Diagnostic:
    word = str(tok.value)
    if tok.type == "NAME" and "FIELD_KEY" in expected:
        hint = did_you_mean(word, FIELD_KEYWORDS + FLAG_KEYWORDS) or (
            "a level's fields are " + one_of(FIELD_KEYWORDS + FLAG_KEYWORDS))
        return Diagnostic("E104", f"unknown level field `{word}`", span, hint)
    if tok.type == "NAME" and expected & _STMT_TERMINALS:
        hint = did_you_mean(word, STMT_KEYWORDS) or (
            "a body holds " + one_of(STMT_KEYWORDS) + " statements; bind values with `let name = ...`")
        return Diagnostic("E105", f"expected a statement, found `{word}`", span, hint)
    if "PERIOD_UNIT" in expected and "NAME" not in expected:
        return Diagnostic("E106", f"expected `tokens` or `steps` after the period, found {_token_text(tok)}",
                          span, "write the period with its unit: `period 16 tokens` or `period 1 steps`")
    if "PROGRAM_KIND" in expected:
        return Diagnostic("E107", f"expected `model` or `optimizer`, found {_token_text(tok)}", span,
                          "a spec starts with `model NAME(params) {` or `optimizer NAME(params) {`")
    hint = None
    notes: tuple[tuple[Span, str], ...] = ()
    field = text[:span.start].split()[-1:] if text else []
    if word == "=" and "EQUAL" not in expected and field and field[0] in FIELD_KEYWORDS:
        value = text[span.end:].split("\n", 1)[0].split("#", 1)[0].strip()
        hint = f"a level field takes no `=`: write `{field[0]} {value}`" if value else \
            f"a level field takes no `=`: write `{field[0]} VALUE`"
    elif word == "=" and "EQUAL" not in expected:
        hint = "`=` binds names only in `let`, `out`, parameters and keyword arguments"
    elif tok.type in ("NAME", "NUMBER", "LPAR") and expected & {"COMMA", "RPAR"}:
        hint = "a `,` or `)` is probably missing before it"
    elif "RPAR" in expected:  # `let h = rmsnorm(x` and the next statement starts
        hint = "a `)` is probably missing before it"
        notes = _unclosed_note(source, text, span.start, "(") if source is not None else ()
    elif tok.type in _STMT_TERMINALS and "RBRACE" in expected:  # a level's `}` forgotten
        hint = "a `}` is probably missing before it"
        notes = _unclosed_note(source, text, span.start, "{") if source is not None else ()
    elif tok.type in ("LET", "OUT", "LEVEL", "BLOCK", "REPEAT", "FIELD_KEY", "PERIOD", "FLAG") \
            and "NAME" in expected:
        hint = f"`{word}` is a keyword here; pick another name"
    elif word == "}" and not expected - {"$END", "<END-OF-FILE>"}:
        hint = "this `}` closes nothing: remove it"
    return Diagnostic("E102", f"unexpected {_token_text(tok)}; expected {_describe_expected(expected)}",
                      span, hint, notes=notes)


# ---- lark tree -> syntax tree ---------------------------------------------------


class _Builder:
    """Turns a lark parse tree into `nlc.syntax` nodes (one method a rule)."""

    def __init__(self, source: Source):
        self.src = source

    def span(self, node: Tree | Token) -> Span:
        if isinstance(node, Token):
            return self.src.span(node.start_pos, node.end_pos)
        return self.src.span(node.meta.start_pos, node.meta.end_pos)

    # programs and statements
    def program(self, t: Tree) -> S.Program:
        kind_tok, name, *rest = t.children
        params: list[S.Param] = []
        if rest and isinstance(rest[0], Tree) and rest[0].data == "params":
            params = [self.param(p) for p in rest[0].children if p is not None]
            rest = rest[1:]
        return S.Program(self.span(t), kind=str(kind_tok), kind_span=self.span(kind_tok),
                         name=str(name), name_span=self.span(name), params=params,
                         body=[self.stmt(c) for c in rest])

    def param(self, t: Tree) -> S.Param:
        name, value = t.children
        return S.Param(self.span(t), str(name), self.span(name), self.expr(value))

    def stmt(self, t: Tree, depth: int = 0) -> S.Stmt:
        if t.data not in ("block", "repeat"):
            return getattr(self, "stmt_" + t.data)(t)
        if depth >= MAX_DEPTH:  # `repeat`s nested thousands deep would overflow the Python stack
            raise SpecError([Diagnostic("E108", f"blocks and repeats nested more than {MAX_DEPTH} deep",
                                        self.span(t.children[0]), "nest fewer `repeat`s and blocks")])
        return getattr(self, "stmt_" + t.data)(t, depth)

    def stmt_let(self, t: Tree) -> S.Let:
        _, name, value = t.children
        return S.Let(self.span(t), str(name), self.span(name), self.expr(value))

    def stmt_out(self, t: Tree) -> S.Out:
        return S.Out(self.span(t), self.expr(t.children[1]))

    def stmt_block(self, t: Tree, depth: int = 0) -> S.Block:
        _, name, *body = t.children
        return S.Block(self.span(t), str(name), self.span(name), [self.stmt(c, depth + 1) for c in body])

    def stmt_repeat(self, t: Tree, depth: int = 0) -> S.Repeat:
        _, count, *body = t.children
        return S.Repeat(self.span(t), self.expr(count), [self.stmt(c, depth + 1) for c in body])

    def stmt_level(self, t: Tree) -> S.Level:
        _, name, *fields = t.children
        return S.Level(self.span(t), str(name), self.span(name), [self.field(f) for f in fields])

    def field(self, t: Tree) -> S.Field:
        key, *rest = t.children
        span, key_span = self.span(t), self.span(key)
        if t.data == "flag":
            return S.Field(span, str(key), key_span)
        if t.data == "period_never":
            return S.Field(span, "period", key_span, None, "never")
        if t.data == "period_every":
            return S.Field(span, "period", key_span, self.expr(rest[0]), str(rest[1]))
        return S.Field(span, str(key), key_span, self.expr(rest[0]))

    # expressions
    def expr(self, t: Tree | Token, depth: int = 0) -> S.Expr:
        if depth > MAX_DEPTH:
            raise SpecError([Diagnostic("E108", f"expression nested more than {MAX_DEPTH} deep",
                                        self.span(t), "split it into several `let` bindings")])
        sub: Callable[[Tree | Token], S.Expr] = lambda c: self.expr(c, depth + 1)
        span = self.span(t)
        kind = t.type if isinstance(t, Token) else t.data
        if kind == "number":
            return S.Number(span, str(t.children[0]))
        if kind == "boolean":
            return S.Bool(span, str(t.children[0]) == "true")
        if kind == "name":
            return S.Name(span, str(t.children[0]))
        if kind == "neg":
            return S.Neg(span, sub(t.children[0]))
        if kind == "binop":
            lhs, op, rhs = t.children
            return S.BinOp(span, str(op), sub(lhs), sub(rhs))
        if kind == "pow":
            lhs, rhs = t.children
            return S.BinOp(span, "**", sub(lhs), sub(rhs))
        if kind == "tuple":
            return S.Tuple(span, [sub(c) for c in t.children if c is not None])
        if kind == "call":
            fn, *rest = t.children
            args: list[S.Expr] = []
            kwargs: list[S.Kwarg] = []
            items = rest[0].children if rest and rest[0] is not None else []
            for a in items:
                if isinstance(a, Tree) and a.data == "kwarg":
                    k, v = a.children
                    kwargs.append(S.Kwarg(self.span(a), str(k), self.span(k), sub(v)))
                else:
                    args.append(sub(a))
            return S.Call(span, str(fn), self.span(fn), args, kwargs)
        raise AssertionError(f"unhandled parse node {kind}")  # pragma: no cover - grammar and builder agree


# ---- comments -------------------------------------------------------------------


def attach_comments(program: S.Program, comments: list[tuple[int, int, str]], source: Source) -> None:
    """Attach each comment to a node: trailing on its line, else leading the next node."""
    if not comments:
        return
    nodes: list[tuple[S.Node, S.Node | None]] = []  # (node, enclosing container)

    def walk(container: S.Node, children: list[S.Node]) -> None:
        for c in children:
            nodes.append((c, container))
            if isinstance(c, (S.Block, S.Repeat)):
                walk(c, list(c.body))
            elif isinstance(c, S.Level):
                walk(c, list(c.fields))

    nodes.append((program, None))
    walk(program, [*program.params, *program.body])
    containers = [n for n, _ in nodes if isinstance(n, (S.Program, S.Block, S.Repeat, S.Level))]
    for start, _end, text in comments:
        line = source.line_col(start)[0]
        target = _trailing_target(nodes, containers, line, start, source)
        if target is not None:
            target.trailing = text
            continue
        following = [n for n, _ in nodes if n.span.start > start]
        inner = [c for c in containers if c.span.start < start < c.span.end]
        innermost = max(inner, key=lambda c: c.span.start) if inner else None
        if following and (innermost is None or following[0].span.start < innermost.span.end):
            nxt = min(following, key=lambda n: n.span.start)
            nxt.comments.append(text)
        elif innermost is not None:
            innermost.end_comments.append(text)
        else:
            program.end_comments.append(text)


def _trailing_target(nodes, containers, line: int, start: int, source: Source) -> S.Node | None:
    text = source.text
    # a container whose opening `{` is on the comment's line, before it: `level mem {  # ...`
    for c in containers:
        brace = text.find("{", c.span.start)
        if 0 <= brace < start and source.line_col(brace)[0] == line and c.trailing is None:
            between = text[brace + 1:start]
            if not between.strip():
                return c
    # a statement or field that ends on the comment's line, with nothing but spaces before the comment
    ends = [n for n, _ in nodes if not isinstance(n, (S.Program, S.Block, S.Repeat, S.Level))
            and source.line_col(n.span.end)[0] == line and n.span.end <= start
            and not text[n.span.end:start].strip(" \t,")]
    if ends:
        return max(ends, key=lambda n: n.span.end)
    return None
