"""What every generated module shares, models and optimizers alike: the jinja2 environment of
the templates and the header's facts (the spec's hash and its displayed path).

Both `nlc.codegen` (models) and `nlc.codegen.optimizer` import it; it imports neither.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import jinja2

from nlc import ir
from nlc.printer import print_program

ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def spec_hash(program: ir.Program) -> str:
    """The sha256 of the program's canonical text (layout does not change it; comments do)."""
    return hashlib.sha256(print_program(program).encode()).hexdigest()


def display_path(path: str) -> str:
    """The spec's path as the header shows it: relative to the working folder when inside it, else its name."""
    p = Path(path)
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return p.name if p.is_absolute() else str(p)
