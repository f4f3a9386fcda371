"""YAML -> the same syntax tree as nlc text (so both lower to the identical IR).

Only PyYAML's safe loader is used (`yaml.compose` with SafeLoader, which keeps
positions for diagnostics). Statements form ordered lists of one-key mappings,
mirroring the text syntax line by line:

    model: titans_lmm              # or `optimizer: NAME`
    params: {dim: 64, chunk: 16}
    body:
      - block memory_layer:
          - let q: l2norm(linear(x, dim))
          - level memory:
              state: mlp(dim)
              context: (q, x)
              period: chunk tokens
              online: true
          - out: linear(memory(q), dim)

Expressions are nlc expressions in YAML strings. E116: the YAML does not have
this shape; E117: the file is not valid YAML; E119: a key given twice in one
mapping (YAML would keep one value silently); E120: a flag (`online`, `debias`, `first_order`)
that is not a YAML boolean.
"""

from __future__ import annotations

import yaml

from nlc import syntax as S
from nlc.errors import Diagnostic, SpecError, did_you_mean
from nlc.limits import StatementCounter
from nlc.parser import FIELD_KEYWORDS, FLAG_KEYWORDS, MAX_DEPTH, attach_comments, nodes_in_order, parse_expr
from nlc.source import Source, Span

KINDS = ("model", "optimizer")


def parse_yaml(source: Source) -> S.Program:
    """Return the syntax tree of a YAML spec; raise SpecError on malformed input."""
    try:
        root = yaml.compose(source.text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        span = source.span(mark.index, mark.index + 1) if mark is not None else None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError([Diagnostic("E117", f"invalid YAML: {problem}", span)]) from None
    except RecursionError:
        raise SpecError([Diagnostic("E117", "invalid YAML: nested too deeply")]) from None
    _reject_aliases(root, source)
    _reject_duplicate_keys(root, source)
    program = _YamlBuilder(source).program(root)
    _end_at_last_child(program, source)
    attach_comments(program, yaml_comments(source.text), source, opener=":")
    return program


def _end_at_last_child(program: S.Program, source: Source) -> None:
    """Make each block, repeat and level end where its last statement or field ends, or after the
    comment lines indented as deep as its contents that follow it (its closing comments: YAML has
    no `}` to put them before). A YAML block collection itself ends where the next, less indented,
    token starts, after any comment lines: those lead what follows."""
    text = source.text

    def children(node: S.Node) -> list[S.Node]:  # of a block, repeat or level (the program keeps its span)
        return node.fields if isinstance(node, S.Level) else node.body if isinstance(node, (S.Block, S.Repeat)) else []

    def indent_at(offset: int) -> int:  # the column of the first non-blank character of offset's line
        start = end = text.rfind("\n", 0, offset) + 1
        while end < len(text) and text[end] == " ":  # no slice: a flow-style line may hold the whole spec
            end += 1
        return end - start

    def closing_comments_end(end: int, depth: int) -> int:
        pos = text.find("\n", end)
        while pos != -1:
            nxt = text.find("\n", pos + 1)
            line = text[pos + 1:nxt if nxt != -1 else len(text)]
            body = line.lstrip(" ")
            if body.strip() and not (body.startswith("#") and len(line) - len(body) >= depth):
                break
            if body.strip():
                end = pos + 1 + len(line.rstrip())
            pos = nxt
        return end

    for node in reversed(nodes_in_order(program)):  # by start: reversed, every node comes after its children
        inside = children(node)
        if inside:
            end = max(c.span.end for c in inside)
            node.span = source.span(node.span.start, closing_comments_end(end, indent_at(inside[0].span.start)))


def yaml_comments(text: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of every YAML comment: a `#` at a line's start or after a space or tab,
    outside quotes (nlc expressions hold no `#`, so only quoted scalars can)."""
    out = []
    offset = 0
    for line in text.splitlines(keepends=True):
        quote = None
        for i, ch in enumerate(line):
            if quote:
                if ch == quote and not (quote == '"' and line[i - 1] == "\\"):
                    quote = None
            elif ch in "'\"" and (i == 0 or line[i - 1] in " \t:-[{,"):
                quote = ch
            elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
                body = line[i:].rstrip("\r\n")
                out.append((offset + i, offset + i + len(body), body))
                break
        offset += len(line)
    return out


def _reject_aliases(root: yaml.Node | None, source: Source) -> None:
    """Raise E116 if a node is reached twice: an alias (`*a`), which can make a cycle or an exponential tree."""
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:
            raise SpecError([Diagnostic("E116", "YAML anchors and aliases (`&a`, `*a`) are not supported",
                                        source.span(node.start_mark.index, node.end_mark.index),
                                        "write the value out in full")])
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            stack.extend(x for kv in node.value for x in kv)


def _reject_duplicate_keys(root: yaml.Node | None, source: Source) -> None:
    """Raise E119 at the first key (in the file) given twice in one mapping: YAML itself would
    keep one of the values without a word (a second `body:` replaced the first).
    Call after `_reject_aliases`, which makes the nodes a tree."""
    repeats = []  # (the repeated key, its first occurrence)
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            first: dict[str, yaml.Node] = {}
            for key, value in node.value:
                stack.extend((key, value))
                if isinstance(key, yaml.ScalarNode) and key.value in first:
                    repeats.append((key, first[key.value]))
                elif isinstance(key, yaml.ScalarNode):
                    first[key.value] = key
    if repeats:
        key, first_key = min(repeats, key=lambda r: r[0].start_mark.index)
        span = source.span(key.start_mark.index, key.end_mark.index)
        first_span = source.span(first_key.start_mark.index, first_key.end_mark.index)
        raise SpecError([Diagnostic("E119", f"key `{key.value}` is given twice", span, "keep one of them",
                                    notes=((first_span, "first given here"),))])


_YAML_BOOL = "tag:yaml.org,2002:bool"


class _YamlBuilder:
    def __init__(self, source: Source):
        self.src = source
        self.statements = StatementCounter()  # the limit on statements (E118), as for nlc text

    def span(self, node: yaml.Node) -> Span:
        return self.src.span(node.start_mark.index, node.end_mark.index)

    def fail(self, node: yaml.Node | None, message: str, hint: str | None = None):
        span = self.span(node) if node is not None else None
        raise SpecError([Diagnostic("E116", message, span, hint)])

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            self.fail(node, f"{what} must be a mapping")
        return node.value

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            self.fail(node, f"{what} must be a single value")
        return node.value

    def program(self, root: yaml.Node | None) -> S.Program:
        if root is None:
            raise SpecError([Diagnostic("E116", "the YAML file is empty", None,
                                        "start with `model: NAME` or `optimizer: NAME`")])
        items = self.mapping(root, "a YAML spec")
        keys = {self.scalar(k, "a key"): (k, v) for k, v in items}
        kinds = [k for k in KINDS if k in keys]
        if len(kinds) != 1:
            self.fail(root, "a YAML spec needs exactly one of `model: NAME` or `optimizer: NAME`")
        extra = set(keys) - {kinds[0], "params", "body"}
        if extra:
            name = sorted(extra)[0]
            self.fail(keys[name][0], f"unknown top-level key `{name}`", "the keys are the kind, `params` and `body`")
        kind_node, name_node = keys[kinds[0]]
        name = self.name(name_node)
        params = []
        if "params" in keys:
            for k, v in self.mapping(keys["params"][1], "`params`"):
                self.statements.add(self.span(k))
                pname = self.name(k)
                params.append(S.Param(self.span(k).to(self.span(v)), pname, self.span(k), self.expr(v)))
        body = self.stmts(keys["body"][1]) if "body" in keys else []
        return S.Program(self.span(root), kind=kinds[0], kind_span=self.span(kind_node), name=name,
                         name_span=self.span(name_node), params=params, body=body)

    def name(self, node: yaml.Node, text: str | None = None) -> str:
        text = self.scalar(node, "a name") if text is None else text
        if not text.isidentifier() or not text.isascii():
            self.fail(node, f"`{text}` is not a valid name", "names are letters, digits and `_`")
        return text

    def stmts(self, node: yaml.Node, depth: int = 0) -> list[S.Stmt]:
        if isinstance(node, yaml.ScalarNode) and node.value == "":
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.fail(node, "a body must be a list of statements", "write each statement as `- let NAME: EXPR`")
        return [self.stmt(item, depth) for item in node.value]

    def stmt(self, node: yaml.Node, depth: int = 0) -> S.Stmt:
        items = self.mapping(node, "a statement")
        if len(items) != 1:
            self.fail(node, "each statement is a mapping with one key",
                      "e.g. `- let q: linear(x, dim)` or `- level mem: {...}`")
        key_node, value = items[0]
        self.statements.add(self.span(key_node))
        key = self.scalar(key_node, "a statement key")
        word, _, rest = key.partition(" ")
        rest = rest.strip()
        span = self.span(key_node).to(self.span(value))  # not the item's: a block collection runs on past comments
        if key == "out":
            return S.Out(span, self.expr(value))
        if word == "let" and rest:
            return S.Let(span, self.name(key_node, rest), self.span(key_node), self.expr(value))
        if word == "block" and rest:
            return S.Block(span, self.name(key_node, rest), self.span(key_node), self.nested(key_node, value, depth))
        if word == "repeat" and rest:
            return S.Repeat(span, self.expr(key_node, rest, offset=len("repeat ")), self.nested(key_node, value, depth))
        if word == "level" and rest:
            return S.Level(span, self.name(key_node, rest), self.span(key_node), self.fields(value))
        self.fail(key_node, f"unknown statement `{key}`",
                  "statements are `let NAME`, `out`, `level NAME`, `block NAME` and `repeat N`")

    def nested(self, key_node: yaml.Node, body: yaml.Node, depth: int) -> list[S.Stmt]:
        """The body of a block or repeat, with the text front end's nesting limit (E108)."""
        if depth >= MAX_DEPTH:
            raise SpecError([Diagnostic("E108", f"blocks and repeats nested more than {MAX_DEPTH} deep",
                                        self.span(key_node), "nest fewer `repeat`s and blocks")])
        return self.stmts(body, depth + 1)

    def fields(self, node: yaml.Node) -> list[S.Field]:
        out = []
        for k, v in self.mapping(node, "a level"):
            self.statements.add(self.span(k))
            key = self.scalar(k, "a field name")
            span = self.span(k).to(self.span(v))
            if key in FLAG_KEYWORDS:
                if self.flag(key, v):
                    out.append(S.Field(span, key, self.span(k)))
                continue
            if key == "period":
                out.append(self.period(span, k, v))
                continue
            if key not in FIELD_KEYWORDS:
                self.fail(k, f"unknown level field `{key}`", did_you_mean(key, FIELD_KEYWORDS + FLAG_KEYWORDS))
            out.append(S.Field(span, key, self.span(k), self.expr(v)))
        return out

    def flag(self, key: str, node: yaml.Node) -> bool:
        """The value of a flag: a YAML boolean (`true`/`false`, or YAML 1.1's `yes`/`no`, `on`/`off`).
        Anything else is E120: `online: treu` or `online: 1` must not quietly mean "not online"."""
        value = yaml.SafeLoader.bool_values.get(node.value.lower()) if isinstance(node, yaml.ScalarNode) else None
        if value is not None and node.tag == _YAML_BOOL:  # `!!bool treu` has the tag but no value
            return value
        if isinstance(node, yaml.ScalarNode) and (node.style in ("'", '"') or value is not None):
            found = f"the text `{node.value}`"  # "true" in quotes, or `!!str true`
        elif isinstance(node, yaml.ScalarNode):
            found = f"`{node.value}`" if node.value else "an empty value"
        else:
            found = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
        raise SpecError([Diagnostic("E120", f"`{key}` must be `true` or `false`, not {found}", self.span(node),
                                    f"write `{key}: true` or `{key}: false` (no quotes), or leave `{key}` out")])

    def period(self, span: Span, k: yaml.Node, v: yaml.Node) -> S.Field:
        text = self.scalar(v, "`period`").strip()
        if text == "never":
            return S.Field(span, "period", self.span(k), None, "never")
        count, _, unit = text.rpartition(" ")
        if unit not in ("tokens", "steps") or not count.strip():
            self.fail(v, f"a period is `N tokens`, `N steps` or `never`, not `{text}`")
        return S.Field(span, "period", self.span(k), self.expr(v, count), unit)

    def expr(self, node: yaml.Node, text: str | None = None, offset: int = 0) -> S.Expr:
        if text is None:
            text = self.scalar(node, "an expression")
        quoted = 1 if getattr(node, "style", None) in ("'", '"') else 0
        return parse_expr(str(text), self.src, node.start_mark.index + quoted + offset)
