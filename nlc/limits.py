"""The front end's input limits: how large a spec may be before nlc refuses to read it.

Real specs are a few kilobytes (the largest example is 4 KB) and a few dozen statements.
The limits keep hostile or accidental input (a 10 MB file, a log passed by mistake) from
costing minutes of parsing: past a limit nlc stops with a coded error that names the limit
and the environment variable that raises it.

- the size of a spec file in bytes (or of spec text in characters): E121,
  `NLC_MAX_SPEC_BYTES`, default 256 KiB (60 times the largest example; parsing that
  much takes seconds, where a 10 MB file took minutes);
- the number of statements (parameters, `let`/`out`/`level`/`block`/`repeat` statements
  and level fields): E118, `NLC_MAX_STATEMENTS`, default 10,000.
"""

from __future__ import annotations

import os

from nlc.errors import Diagnostic, SpecError
from nlc.source import Span

MAX_SPEC_BYTES_VAR = "NLC_MAX_SPEC_BYTES"
MAX_SPEC_BYTES = 256 << 10
MAX_STATEMENTS_VAR = "NLC_MAX_STATEMENTS"
MAX_STATEMENTS = 10_000


def max_spec_bytes() -> int:
    """The largest spec accepted, in bytes: $NLC_MAX_SPEC_BYTES, else 256 KiB."""
    return _limit(MAX_SPEC_BYTES_VAR, MAX_SPEC_BYTES, "E121")


def max_statements() -> int:
    """The most statements a spec may hold: $NLC_MAX_STATEMENTS, else 10,000."""
    return _limit(MAX_STATEMENTS_VAR, MAX_STATEMENTS, "E118")


def _limit(var: str, default: int, code: str) -> int:
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise SpecError([Diagnostic(code, f"{var}={text!r} is not a positive whole number",
                                    hint=f"unset {var} for the default limit ({default})")])
    return int(text)


def too_large(what: str, size: str) -> SpecError:
    """E121 for a spec over the size limit; `size` says how large, e.g. "2000000 bytes"."""
    limit = max_spec_bytes()
    return SpecError([Diagnostic(
        "E121", f"{what} is too large: {size} (the limit is {limit} bytes)",
        hint=f"specs are a few kilobytes; for a larger one raise the limit: {MAX_SPEC_BYTES_VAR}={2 * limit}")])


class StatementCounter:
    """Counts a spec's statements as they are built; raises E118 at the first one past the limit."""

    def __init__(self) -> None:
        self.count = 0
        self.limit: int | None = None  # read when first needed: a YAML expression never counts

    def add(self, span: Span) -> None:
        if self.limit is None:
            self.limit = max_statements()
        self.count += 1
        if self.count > self.limit:
            raise SpecError([Diagnostic(
                "E118", f"the spec has more than {self.limit} statements", span,
                f"split it into smaller specs, or raise the limit: {MAX_STATEMENTS_VAR}={2 * self.limit}")])
