"""The public front-end API: load, loads, check (docs/design.md §3).

The back ends' entry points (build, generate, build_optimizer) are in nlc.backends, above this
module: the back ends load specs through it.
"""

from __future__ import annotations

import os
from pathlib import Path

from nlc import ir
from nlc.errors import Diagnostic, Reporter, SpecError
from nlc.files import NotARegularFile, read_regular_bytes
from nlc.limits import max_spec_bytes, too_large
from nlc.lower import lower
from nlc.parser import parse
from nlc.passes.pipeline import Checked, check_ir
from nlc.source import Source

YAML_SUFFIXES = (".yaml", ".yml")


def loads(text: str, path: str = "<string>", format: str | None = None, **params) -> ir.Program:
    """Return the checked IR of spec text (nlc, or YAML when format="yaml" or path ends .yaml)."""
    return _checked(text, path, format, params).program


def load(path: str | Path, **params) -> ir.Program:
    """Return the checked IR of a spec file (.nl, or .yaml/.yml)."""
    return load_checked(path, **params).program


def load_checked(path: str | Path, **params) -> Checked:
    """Return a spec file checked: its IR, parameter values, warnings and what the passes found."""
    return _checked(read_spec(path), str(path), None, params)


def read_spec(path: str | Path) -> str:
    """Return the text of a spec file, or raise SpecError: E601 missing or unreadable, E602 not
    UTF-8, E604 not a regular file, E121 over the size limit (`nlc.limits`).

    The file's type is checked on the open descriptor before anything is read (a FIFO would
    block, /dev/zero never ends: `nlc.files.read_regular_bytes`), and at most limit + 1 bytes
    are read.
    """
    path = Path(path)
    limit = max_spec_bytes()
    try:
        data = read_regular_bytes(path, at_most=limit + 1)
    except FileNotFoundError:
        raise SpecError([Diagnostic("E601", f"no such spec file: {path}", hint="check the path")]) from None
    except NotARegularFile as e:
        if e.kind == "a folder":
            raise SpecError([Diagnostic("E601", f"{path} is a folder, not a spec file")]) from None
        raise SpecError([Diagnostic("E604", f"{path} is not a regular file: it is {e.kind}",
                                    hint="nlc reads specs from regular files; save the text to a file first")]) from None
    except OSError as e:  # permissions, a name too long, a device error...
        raise SpecError([Diagnostic("E601", f"cannot read {path}: {e.strerror or e}")]) from None
    if len(data) > limit:
        size = os.stat(path).st_size
        raise too_large(str(path), f"{size} bytes" if size > limit else f"more than {limit} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SpecError([Diagnostic("E602", f"{path} is not UTF-8 text (byte {e.start})",
                                    hint="specs are UTF-8 text files")]) from None


def check(program: ir.Program | str | Path, **params) -> list[Diagnostic]:
    """Check a program (with parameter overrides); raise SpecError on errors, return warnings.

    Besides parameters, every function here that checks takes the size limits `max_params`,
    `max_state`, `max_depth` and `max_blocks` (nlc.passes.size.SizeLimits: E420, E421).
    """
    if not isinstance(program, ir.Program):
        program = load(program, **params)
    return check_ir(program, params).warnings


def check_with_params(program: ir.Program, **params) -> Checked:
    """Return the checked program with its parameter values (for the back ends)."""
    return check_ir(program, params)


def _checked(text: str, path: str, format: str | None, params) -> Checked:
    is_yaml = format == "yaml" or (format is None and path.endswith(YAML_SUFFIXES))
    text = text.removeprefix("\ufeff")  # a byte order mark, as some editors write one, is not part of the spec
    if len(text) > max_spec_bytes():
        raise too_large(path, f"{len(text)} characters")
    if "\x00" in text:
        raise SpecError([Diagnostic("E602", f"{path} contains NUL bytes: it is not a text spec")])
    source = Source(text, path)
    if is_yaml:
        from nlc.yaml_spec import parse_yaml  # pyyaml: only for YAML specs, not while `nlc` starts

        tree = parse_yaml(source)
    else:
        tree = parse(source)
    rep = Reporter()
    program = lower(tree, rep)
    rep.raise_if_errors()
    return check_ir(program, params)
