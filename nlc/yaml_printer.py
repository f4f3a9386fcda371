"""IR -> the YAML form of a spec (what `nlc fmt --to yaml` writes); comments kept.

The YAML form (nlc/yaml_spec.py reads it) mirrors the text syntax line by line: statements are
a list of one-key mappings (`- let q: EXPR`, `- level m:` with its fields, `- block b:` and
`- repeat N:` with their bodies), expressions are nlc expressions in YAML scalars. The fields,
their order and what is left out (fields a level ignores) are the canonical printer's
(nlc/printer.py), so `loads(print_yaml(p), format="yaml") == p` for every valid program.
Comments are YAML comments at the same places: leading lines before a statement, parameter or
field, trailing ones after it on its line (characters YAML cannot hold are written `\\uXXXX`).
"""

from __future__ import annotations

import json
import re

import yaml

from nlc import ir
from nlc.printer import level_fields, print_expr

INDENT = "  "


def print_yaml(p: ir.Program) -> str:
    """Return the YAML text of a program."""
    out: list[str] = []
    _comments(out, p.trivia.comments, "")
    out.append(_trail(f"{p.kind.value}: {p.name}", p.trivia.trailing))
    if p.params:
        out.append("params:")
        for q in p.params:
            _comments(out, q.trivia.comments, INDENT)
            out.append(_trail(f"{INDENT}{q.name}: {scalar(print_expr(q.value))}", q.trivia.trailing))
    out.append("body:")
    _body(out, p.body, INDENT, p.kind)
    _comments(out, p.trivia.end_comments, INDENT)
    return "\n".join(out) + "\n"


def scalar(text: str) -> str:
    """`text` as a YAML scalar that reads back as exactly `text`: plain where YAML allows it,
    double-quoted (JSON, which is YAML) where a plain scalar would be read as something else."""
    try:
        node = yaml.compose(f"k: {text}", Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        node = None
    value = node.value[0][1] if isinstance(node, yaml.MappingNode) and len(node.value) == 1 else None
    if isinstance(value, yaml.ScalarNode) and value.style is None and value.value == text:
        return text
    return json.dumps(text, ensure_ascii=False)


def _trail(line: str, comment: str | None) -> str:
    return f"{line}  {_printable(comment)}" if comment else line


def _comments(out: list[str], comments: tuple[str, ...], pad: str) -> None:
    out.extend(pad + _printable(c) for c in comments)


def _printable(comment: str) -> str:
    """A comment YAML can hold: characters YAML refuses anywhere in a file (control characters
    such as ESC, which an nlc comment may hold) or reads as a line break are written `\\uXXXX`."""
    return _NON_PRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", comment)


# what YAML refuses, and what it reads as a line break (NEL, LS, PS), which would end the comment
_NON_PRINTABLE = re.compile(f"{yaml.reader.Reader.NON_PRINTABLE.pattern}|[\x85\u2028\u2029]")


def _body(out: list[str], body: tuple[ir.Stmt, ...], pad: str, kind: ir.ProgramKind) -> None:
    """Each statement as a list item at `pad`; what an item holds sits two columns right of its `- `."""
    inner = pad + INDENT + INDENT
    scope = {s.name: s for s in body if isinstance(s, ir.Level)}
    for s in body:
        _comments(out, s.trivia.comments, pad)
        if isinstance(s, ir.Let):
            out.append(_trail(f"{pad}- let {s.name}: {scalar(print_expr(s.value))}", s.trivia.trailing))
        elif isinstance(s, ir.Out):
            out.append(_trail(f"{pad}- out: {scalar(print_expr(s.value))}", s.trivia.trailing))
        elif isinstance(s, (ir.Block, ir.Repeat)):
            head = f"block {s.name}" if isinstance(s, ir.Block) else f"repeat {print_expr(s.count)}"
            out.append(_trail(f"{pad}- {scalar(head)}:", s.trivia.trailing))
            _body(out, s.body, inner, kind)
            _comments(out, s.trivia.end_comments, inner)
        else:
            out.append(_trail(f"{pad}- level {s.name}:", s.trivia.trailing))
            for key, text in level_fields(s, kind, scope):
                trivia = s.field_comments(key)
                _comments(out, trivia.comments, inner)
                value = "true" if text == "" else scalar(text)  # a flag is a YAML boolean
                out.append(_trail(f"{inner}{key}: {value}", trivia.trailing))
            _comments(out, s.trivia.end_comments, inner)
