"""What a run records a spec by: its program and hash, with the parameter overrides (model and optimizer specs).

Below nlc.train.loop and nlc.train.outer, which both check a run's specs with it.
"""

from __future__ import annotations

import hashlib
import json

import nlc
from nlc.codegen import spec_hash


def spec_identity(spec_text: str, spec_path: str, params: dict, limits: dict | None = None):
    """(program, spec hash) of a spec text with parameter overrides (checked within the size limits).

    The hash is that of the program's canonical text (which holds the spec's name, and is what
    the text and its format, from the path, parse to) and of the overrides: everything that
    decides the model built. Without overrides it is the plain canonical spec hash."""
    prog = nlc.loads(spec_text, spec_path, **{**params, **(limits or {})})
    plain = spec_hash(prog)
    if not params:
        return prog, plain
    overrides = json.dumps(params, sort_keys=True, allow_nan=False)
    return prog, hashlib.sha256(f"{plain}\0{overrides}".encode()).hexdigest()
