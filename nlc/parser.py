"""nlc text -> syntax tree (`nlc.syntax`), and syntax errors -> E1xx diagnostics.

The lark parser is built once per process (LALR, contextual lexer, positions
propagated). Parse errors are turned into Diagnostics with a caret and, for the
common mistakes, a hint. Comments are collected by a lexer callback and attached
to the nearest statement so that the printer can keep them.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from functools import lru_cache
from typing import Callable

import lark
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from nlc import syntax as S
from nlc.errors import Diagnostic, SpecError, did_you_mean, one_of
from nlc.grammar_file import grammar_text
from nlc.limits import StatementCounter
from nlc.source import Source, Span

MAX_DEPTH = 64  # expressions nested deeper than this are rejected (E108), keeping every pass non-recursive-safe
MAX_BRACKETS = 4 * MAX_DEPTH  # `(` and `{` nested deeper than this are rejected (E108) before parsing

FIELD_KEYWORDS = ("state", "init", "context", "objective", "update", "lr", "retain", "heads", "read", "period")
FLAG_KEYWORDS = ("online", "debias", "first_order", "shared")
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

    Used by the YAML front end: the expression is parsed alone and every position is shifted
    by `offset`, so that spans point into the file (without copying the file once per expression).
    """
    tree = _parse_tree(text, source, "expr", offset)
    return _Builder(source, offset).expr(tree)


def _parse_tree(text: str, source: Source, start: str, offset: int = 0) -> Tree:
    _check_bracket_depth(text, source, offset)
    try:
        return _lark(start).parse(text)
    except UnexpectedInput as e:
        raise SpecError([_syntax_diagnostic(e, source, text, offset, start)]) from None


_BRACKET_OR_COMMENT = re.compile(r"[(){}]|#[^\n]*")


def _check_bracket_depth(text: str, source: Source, offset: int) -> None:
    """Raise E108 at the first bracket nested deeper than MAX_BRACKETS, before lark builds a tree
    as deep as the brackets (a million `(` would take minutes, only to be rejected afterwards)."""
    depth = 0
    for m in _BRACKET_OR_COMMENT.finditer(text):
        ch = m.group()
        if ch in "({":
            depth += 1
            if depth > MAX_BRACKETS:
                span = source.span(offset + m.start(), offset + m.end())
                raise SpecError([Diagnostic("E108", f"brackets nested more than {MAX_BRACKETS} deep", span,
                                            "split the expression into several `let` bindings")])
        elif ch in ")}":
            depth = max(0, depth - 1)


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


def _line_indents(text: str) -> Callable[[int], int]:
    """A function from an offset of `text` to the indentation (spaces and tabs) of its line;
    each line is measured once, however many offsets are asked about."""
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
    known: dict[int, int] = {}

    def indent(pos: int) -> int:
        start = line_starts[bisect.bisect_right(line_starts, pos) - 1]
        if start not in known:
            known[start] = _LEADING_BLANKS.match(text, start).end() - start
        return known[start]

    return indent


_LEADING_BLANKS = re.compile(r"[ \t]*")


def _only_blanks_before(text: str, pos: int, width: int) -> bool:
    """Whether text[pos - width:pos] is all whitespace (scanning back no further than the first non-blank)."""
    i = pos - 1
    while i >= pos - width and i >= 0 and text[i].isspace():
        i -= 1
    return i < pos - width or i < 0


def _unclosed_note(source: Source, text: str, end: int, kinds: str = "({",
                   offset: int = 0) -> tuple[tuple[Span, str], ...]:
    """A note pointing at the delimiter that is probably missing its closing partner, if one is open.
    Offsets in `text` are `offset` characters into `source`."""
    stack, pairs = _open_delimiters(text, end)
    stack = [i for i in stack if text[i] in kinds]
    if not stack:
        return ()
    opener = stack[-1]
    if text[opener] == "{":
        # a `{` whose `}` sits at another indentation probably took the `}` of an outer one
        # (`block b {` ... the block's `}` forgotten ... the model's `}` closes it instead)
        indent = _line_indents(text)
        skewed = [o for o, c in pairs if o > opener and _only_blanks_before(text, c, indent(c))
                  and indent(o) != indent(c)]
        if skewed:
            brace = offset + skewed[0]
            return ((source.span(brace, brace + 1), "this `{` is probably missing its `}`"),)
    return ((source.span(offset + opener, offset + opener + 1), f"this `{text[opener]}` is never closed"),)


def _syntax_diagnostic(e: UnexpectedInput, source: Source, text: str, offset: int = 0,
                       start_rule: str = "start") -> Diagnostic:
    """The diagnostic of a lark error in `text` (a whole file, or with start_rule "expr" one YAML
    expression), which starts `offset` characters into `source`."""
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
        elif unicodedata.category(ch) == "Nd":  # int("٣") is 3 in Python, but a spec's numbers are ASCII
            hint = f"`{ch}` is not an ASCII digit: write numbers with the digits 0-9"
        elif ch == "\ufeff":
            hint = "a byte order mark belongs only at the very start of a file: delete this one"
        shown = f"`{ch}`" if ch.isprintable() else f"U+{ord(ch):04X}"  # an invisible character: its code point
        span = source.span(offset + pos, offset + pos + 1)
        return Diagnostic("E101", f"unexpected character {shown}", span, hint)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        pos = len(text.rstrip())
        notes = _unclosed_note(source, text, len(text), offset=offset)
        words = " ".join(line.split("#")[0] for line in text.splitlines()).split()
        if notes:
            hint = f"a closing {'`)`' if notes[0][0].text == '(' else '`}`'} is probably missing"
        elif not words and start_rule == "expr":
            hint = "the value is empty: write an expression"
        elif not words:
            hint = "the file holds no spec: start with `model NAME(params) {` or `optimizer NAME(params) {`"
        elif "{" not in text and words[0] in ("model", "optimizer"):
            hint = "the spec stops after its name: its body follows in braces, `model NAME(params) { ... }`"
        else:
            hint = "the text stops in the middle of an expression"
        return Diagnostic("E103", "unexpected end of file", source.span(offset + max(0, pos - 1), offset + pos),
                          hint, notes=notes)
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    start = tok.start_pos or 0
    try:  # the exact set of acceptable terminals (LALR's `expected` can be wider)
        expected = set(e.interactive_parser.accepts()) - {"$END"} or set(e.expected)
    except Exception:  # pragma: no cover - older lark without accepts()
        expected = set(e.expected)
    return _unexpected_token(tok, expected, start, source, text, offset)


def _unexpected_token(tok: Token, expected: set[str], start: int, source: Source, text: str,
                      offset: int) -> Diagnostic:
    """The diagnostic of token `tok` found at `start` of `text` (`offset` characters into `source`)."""
    word = str(tok.value)
    end = start + len(word)
    span = source.span(offset + start, offset + end)
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
    field = text[:start].rsplit(None, 1)[-1:]  # the word before the token
    if word == "=" and "EQUAL" not in expected and field and field[0] in FIELD_KEYWORDS:
        value = text[end:].split("\n", 1)[0].split("#", 1)[0].strip()
        hint = f"a level field takes no `=`: write `{field[0]} {value}`" if value else \
            f"a level field takes no `=`: write `{field[0]} VALUE`"
    elif word == "=" and "EQUAL" not in expected:
        hint = "`=` binds names only in `let`, `out`, parameters and keyword arguments"
    elif tok.type in ("NAME", "NUMBER", "LPAR") and expected & {"COMMA", "RPAR"}:
        hint = "a `,` or `)` is probably missing before it"
    elif "RPAR" in expected:  # `let h = rmsnorm(x` and the next statement starts
        hint = "a `)` is probably missing before it"
        notes = _unclosed_note(source, text, start, "(", offset)
    elif tok.type in _STMT_TERMINALS and "RBRACE" in expected:  # a level's `}` forgotten
        hint = "a `}` is probably missing before it"
        notes = _unclosed_note(source, text, start, "{", offset)
    elif tok.type in ("LET", "OUT", "LEVEL", "BLOCK", "REPEAT", "FIELD_KEY", "PERIOD", "FLAG") \
            and "NAME" in expected:
        hint = f"`{word}` is a keyword here; pick another name"
    elif word == "}" and not expected - {"$END", "<END-OF-FILE>"}:
        hint = "this `}` closes nothing: remove it"
    return Diagnostic("E102", f"unexpected {_token_text(tok)}; expected {_describe_expected(expected)}",
                      span, hint, notes=notes)


# ---- lark tree -> syntax tree ---------------------------------------------------


class _Builder:
    """Turns a lark parse tree into `nlc.syntax` nodes (one method a rule).

    The tree's positions are `offset` characters into the source (a YAML expression's place in
    its file). `statements` counts parameters, statements and fields against the limit (E118).
    """

    def __init__(self, source: Source, offset: int = 0):
        self.src = source
        self.offset = offset
        self.statements = StatementCounter()

    def span(self, node: Tree | Token) -> Span:
        if isinstance(node, Token):
            return self.src.span(self.offset + node.start_pos, self.offset + node.end_pos)
        return self.src.span(self.offset + node.meta.start_pos, self.offset + node.meta.end_pos)

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
        self.statements.add(self.span(name))
        return S.Param(self.span(t), str(name), self.span(name), self.expr(value))

    def stmt(self, t: Tree, depth: int = 0) -> S.Stmt:
        self.statements.add(self.span(t.children[0]))
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
        self.statements.add(self.span(key))
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


_CONTAINERS = (S.Program, S.Block, S.Repeat, S.Level)


def attach_comments(program: S.Program, comments: list[tuple[int, int, str]], source: Source,
                    opener: str = "{") -> None:
    """Attach each comment to a node: trailing on its line, else leading the next node.

    `opener` ends a container's header: `{` in nlc text (`level mem {  # ...`), `:` in YAML
    (`- level mem:  # ...`).

    Linear in the number of nodes and comments (a spec of thousands of commented lines must not
    take quadratic time): candidates are looked up by offset, and the container around each
    comment comes from one sweep in source order.
    """
    if not comments:
        return
    nodes = nodes_in_order(program)
    containers = [n for n in nodes if isinstance(n, _CONTAINERS)]
    by_brace, by_end = _trailing_candidates(nodes, containers, source.text, opener)
    starts = [n.span.start for n in nodes]
    enclosing = _innermost_containers(containers, [start for start, _, _ in comments])
    for (start, _end, text), innermost in zip(comments, enclosing):
        target = _trailing_target(source.text, start, by_brace, by_end, opener)
        if target is not None:
            target.trailing = text
            continue
        i = bisect.bisect_right(starts, start)
        nxt = nodes[i] if i < len(nodes) else None
        if nxt is not None and (innermost is None or nxt.span.start < innermost.span.end):
            nxt.comments.append(text)
        elif innermost is not None:
            innermost.end_comments.append(text)
        else:
            program.end_comments.append(text)


def nodes_in_order(program: S.Program) -> list[S.Node]:
    """The program, its parameters, statements and level fields, sorted by where they start."""
    nodes: list[S.Node] = [program]
    stack: list[S.Node] = list(reversed([*program.params, *program.body]))
    while stack:  # pre-order without recursion: blocks may nest deep
        node = stack.pop()
        nodes.append(node)
        if isinstance(node, (S.Block, S.Repeat)):
            stack.extend(reversed(node.body))
        elif isinstance(node, S.Level):
            stack.extend(reversed(node.fields))
    return sorted(nodes, key=lambda n: n.span.start)  # stable: already sorted in practice


def _trailing_candidates(nodes: list[S.Node], containers: list[S.Node], text: str,
                         opener: str) -> tuple[dict[int, list[S.Node]], dict[int, S.Node]]:
    """The containers by the offset of their `{`, and the other nodes by where they end (the
    first in source order wins a tie). YAML's program header, `model: NAME`, ends at its name."""
    by_brace: dict[int, list[S.Node]] = {}
    for c in containers:
        yaml_header = opener == ":" and isinstance(c, S.Program)
        by_brace.setdefault(c.name_span.end - 1 if yaml_header else text.find(opener, c.span.start), []).append(c)
    by_end: dict[int, S.Node] = {}
    for n in nodes:
        if not isinstance(n, _CONTAINERS):
            by_end.setdefault(n.span.end, n)
    return by_brace, by_end


def _trailing_target(text: str, start: int, by_brace: dict[int, list[S.Node]],
                     by_end: dict[int, S.Node], opener: str) -> S.Node | None:
    """The node the comment at `start` trails on its line: a container whose `{` is the last thing
    before it (`level mem {  # ...`), else the statement or field that ends last before it with
    only spaces and commas between."""
    line_start = text.rfind("\n", 0, start) + 1
    before = text[line_start:start]
    last = line_start + len(before.rstrip()) - 1
    if last >= line_start:
        for c in by_brace.get(last, ()):
            if c.trailing is None:
                return c
    gap_start = line_start + len(before.rstrip(" \t,"))
    for end in range(start, gap_start - 1, -1):  # the latest end wins; gaps of two comments never overlap
        if end in by_end:
            return by_end[end]
    return None


def _innermost_containers(containers: list[S.Node], offsets: list[int]) -> list[S.Node | None]:
    """The innermost container (program, block, repeat, level) strictly around each of the rising
    `offsets`. Containers nest, so those open at an offset form a stack; one sweep fills it."""
    out: list[S.Node | None] = []
    stack: list[S.Node] = []
    following = iter(containers)  # sorted by start
    nxt = next(following, None)
    for offset in offsets:
        while nxt is not None and nxt.span.start < offset:
            while stack and stack[-1].span.end <= nxt.span.start:
                stack.pop()
            stack.append(nxt)
            nxt = next(following, None)
        while stack and stack[-1].span.end <= offset:
            stack.pop()
        out.append(stack[-1] if stack else None)
    return out
