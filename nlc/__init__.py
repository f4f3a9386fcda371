"""nlc: a compiler for Nested Learning models.

Write a level graph (nested optimisation problems: state, context flow,
objective, update rule, period) in the nlc language, check it, and get
PyTorch out. See README.md and docs/design.md.
"""

from nlc.api import check, load, loads
from nlc.backends import build, build_optimizer, generate
from nlc.errors import Diagnostic, SpecError, StreamError
from nlc.printer import print_program
from nlc.version import __version__

__all__ = ["Diagnostic", "SpecError", "StreamError", "build", "build_optimizer", "check", "generate", "load", "loads", "print_program", "__version__"]
