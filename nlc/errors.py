"""Diagnostics: every user-facing problem is a value with a code, a span and a hint.

Codes are stable (tests pin rendered text): E1xx syntax and structure, E2xx
names, E3xx graph and frequency, E4xx shapes and types, E5xx code generation,
E6xx runtime and data. Rendering follows rustc: a header, the location, the
source line and a caret line under the span.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from nlc.source import Span

TAB = "    "


@dataclass(frozen=True)
class Diagnostic:
    """One problem in a spec: code, message, where, and how to fix it."""

    code: str
    message: str
    span: Span | None = None
    hint: str | None = None
    label: str | None = None
    notes: tuple[tuple[Span, str], ...] = ()
    severity: str = "error"

    def render(self) -> str:
        """Return the diagnostic as text with the source line and a caret."""
        lines = [f"{self.severity}[{self.code}]: {self.message}"]
        if self.span is not None:
            lines.extend(_render_span(self.span, self.label))
        for span, text in self.notes:
            lines.append(f"note: {text}")
            lines.extend(_render_span(span, None))
        if self.hint:
            lines.append(f"  = hint: {self.hint}")
        return "\n".join(lines)

    def to_json(self) -> dict:
        """Return a JSON-ready dict (for `nlc check --json`)."""
        out: dict = {"code": self.code, "severity": self.severity, "message": self.message}
        if self.span is not None:
            out.update(
                file=self.span.path,
                line=self.span.line,
                column=self.span.col,
                end_line=self.span.end_line,
                end_column=self.span.end_col,
            )
        if self.hint:
            out["hint"] = self.hint
        return out


def _render_span(span: Span, label: str | None) -> list[str]:
    line, col = span.line, span.col
    src_line = span.source.line_text(line)
    gutter = " " * len(str(line))
    prefix = src_line[: col - 1].replace("\t", TAB)
    shown = src_line.replace("\t", TAB)
    if span.end_line == line:
        width = len(src_line[col - 1 : span.end_col - 1].replace("\t", TAB))
    else:
        width = len(src_line) - (col - 1)
    carets = "^" * max(1, width)
    out = [f"{gutter}--> {span.path}:{line}:{col}", f"{gutter} |", f"{line} | {shown}".rstrip()]
    out.append(f"{gutter} | {' ' * len(prefix)}{carets}" + (f" {label}" if label else ""))
    return out


class SpecError(Exception):
    """A spec has errors; `.diagnostics` lists them, str() renders them all."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        # errors first (what stopped the spec), then warnings, each in the order found
        self.diagnostics = tuple(sorted(diagnostics, key=lambda d: d.severity != "error"))
        super().__init__(self.render())

    def render(self) -> str:
        """Return every diagnostic rendered, separated by blank lines."""
        return "\n\n".join(d.render() for d in self.diagnostics)

    @property
    def codes(self) -> list[str]:
        """Return the codes of the diagnostics, in order."""
        return [d.code for d in self.diagnostics]

    def to_json(self) -> str:
        return json.dumps([d.to_json() for d in self.diagnostics], indent=2)


class StreamError(SpecError, ValueError):
    """A model called with bad input (tokens, a streaming state): a coded diagnostic, and a ValueError.

    Raised by `nlc.runtime.state.check_stream` (E603, E605-E609) as StreamError(code, message,
    hint); catch it as either class. It keeps ValueError's constructor, not SpecError's: torch.compile
    can trace raising it then, so a compiled forward raises it as eager does (under fullgraph=True,
    dynamo's own error quotes it).
    """

    __init__ = ValueError.__init__

    @property
    def diagnostics(self) -> tuple[Diagnostic, ...]:
        code, message, *hint = self.args
        return (Diagnostic(code, message, hint=hint[0] if hint else None),)

    def __str__(self) -> str:
        return self.render()


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """Return a "did you mean `x`?" hint for the closest candidate, if any is close."""
    matches = difflib.get_close_matches(name, sorted(set(candidates)), n=1, cutoff=0.6)
    return f"did you mean `{matches[0]}`?" if matches else None


def one_of(names: Iterable[str]) -> str:
    """Return "`a`, `b` or `c`" for a hint listing choices."""
    items = [f"`{n}`" for n in sorted(names)]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


@dataclass
class Reporter:
    """Collects diagnostics during one pass."""

    diagnostics: list[Diagnostic] = field(default_factory=list)

    def error(self, code: str, message: str, span: Span | None, hint: str | None = None,
              label: str | None = None, notes: tuple[tuple[Span, str], ...] = ()) -> None:
        self.diagnostics.append(Diagnostic(code, message, span, hint, label, notes))

    def warn(self, code: str, message: str, span: Span | None, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic(code, message, span, hint, severity="warning"))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    def raise_if_errors(self) -> None:
        if self.errors:
            raise SpecError(self.diagnostics)
