"""Streaming state helpers shared by the interpreter and generated modules."""

from __future__ import annotations

from nlc.errors import Diagnostic, SpecError


def check_alignment(position: int, alignment: int) -> None:
    """Streaming pieces must start at a multiple of the model's largest in-context period."""
    if position % alignment:
        raise SpecError([Diagnostic(
            "E603", f"streaming state is at token {position}, not a multiple of {alignment}",
            hint=f"feed pieces whose lengths are multiples of {alignment} tokens (the largest period); "
                 "only the last piece may be shorter")])
