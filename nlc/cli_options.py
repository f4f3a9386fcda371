"""Argument types and options that every `nlc` subcommand shares: `-p NAME=VALUE` overrides and the
size limits. A module of its own so that the subcommands (nlc.train.cli, nlc.testing.fuzz, nlc.bench.cli)
and the top-level `nlc.cli` that registers them all import it, never each other.
"""

from __future__ import annotations

import argparse
import math

from nlc.passes.size import SizeLimits


def param(text: str) -> tuple[str, object]:
    """Parse `-p name=value` into (name, int|float|bool)."""
    name, sep, value = text.partition("=")
    if not sep or not name.isidentifier():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    if value in ("true", "false"):
        return name, value == "true"
    if not value.isascii():  # int("٣") is 3 in Python; a spec's numbers are ASCII, and so are overrides
        raise argparse.ArgumentTypeError(f"{name}: {value!r} is not a number (write digits 0-9)")
    try:
        return name, int(value)
    except ValueError:
        try:
            return name, float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name}: {value!r} is not a number") from None


SIZE_HELP = {  # the size limits (nlc.passes.size.SizeLimits; E420, E421) and what each refuses
    "max_params": "refuse a model with more than N parameters (default {})",
    "max_state": "refuse a model whose one sequence (an optimizer whose state for one parameter tensor) "
                 "needs more than N numbers (default {})",
    "max_depth": "refuse an MLP memory deeper than N layers (default {})",
    "max_blocks": "refuse a model that unrolls to more than N blocks (default {})",
}


def add_size_options(p: argparse.ArgumentParser) -> None:
    """--max-params N, --max-state N, --max-depth N, --max-blocks N."""
    for name, help in SIZE_HELP.items():
        default = getattr(SizeLimits(), name)
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=whole, metavar="N",
                       help=help.format(f"{default:.0e}".replace("e+0", "e") if default >= 10**6 else default))


def size_limits(args) -> dict[str, int]:
    """The size limits given on the command line, as keywords for nlc.load / nlc.build."""
    return {k: getattr(args, k) for k in SIZE_HELP if getattr(args, k, None) is not None}


def whole(text: str) -> int:
    """A positive whole number, also written 2e9."""
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        value = int(number) if math.isfinite(number) and number.is_integer() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value
