"""The E6xx diagnostics of training, evaluation and comparison (listed in docs/training.md).

    E603  a streaming length that is not a multiple of the model's alignment
    E610  a data path that does not exist
    E611  a data file that cannot be read
    E612  no text: an empty file, a folder without text files, a split left empty
    E613  a binary data file (NUL bytes or not UTF-8)
    E614  an unknown task, or task options that do not fit
    E620  no checkpoint where one was expected
    E621  a corrupt or truncated checkpoint
    E622  a checkpoint (or run folder) of a different spec or configuration
    E623  a run folder that already holds a run (pass --resume, or another --out)
    E630  a loss (or gradient) that is NaN or infinite
    E631  a device that is not available
    E632  a level updated across steps with a rule the loop does not implement
    E633  a bad training option (budget, sizes, parameter matching)
"""

from __future__ import annotations

from nlc.errors import Diagnostic, SpecError


def train_error(code: str, message: str, hint: str | None = None) -> SpecError:
    """Return a SpecError with one diagnostic (no span: these are about files and runs, not specs)."""
    return SpecError([Diagnostic(code, message, hint=hint)])
