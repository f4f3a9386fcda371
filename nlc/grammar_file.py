"""Locate grammar/nlc.lark, in a source checkout or an installed wheel."""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files  # an installed wheel ships the grammar as nlc/grammar/
from pathlib import Path


@lru_cache(maxsize=None)
def grammar_text() -> str:
    """Return the text of the nlc grammar."""
    checkout = Path(__file__).resolve().parent.parent / "grammar" / "nlc.lark"
    if checkout.is_file():
        return checkout.read_text(encoding="utf-8")

    return (files("nlc") / "grammar" / "nlc.lark").read_text(encoding="utf-8")
