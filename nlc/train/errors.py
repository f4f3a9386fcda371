"""The E6xx diagnostics of training, evaluation and comparison (listed in docs/training.md).

    E603  a streaming length that is not a multiple of the model's alignment
    E610  a data path that does not exist
    E611  a data file that cannot be read
    E612  no text: an empty file, a folder without text files, a split left empty
    E613  a binary data file (NUL bytes or not UTF-8)
    E614  an unknown task, or task options that do not fit
    E615  a data path that is not a regular file or folder (FIFO, device, socket, symlink loop)
    E620  no checkpoint where one was expected
    E621  a corrupt or truncated checkpoint
    E622  a checkpoint (or run folder) of a different spec or configuration
    E623  a run folder that already holds a run (pass --resume, or another --out)
    E624  a checkpoint record listing a file outside its folder (or not a checkpoint file)
    E625  a file where a run or checkpoint folder belongs, or a folder (FIFO, ...) where a file does
    E626  a run's config.json that is not a run record (not JSON, keys missing, wrong types)
    E630  a loss (or gradient) that is NaN or infinite
    E631  a device that is not available
    E632  a level updated across steps with a rule the loop does not implement
    E633  a bad training option (budget, sizes, parameter matching)
    E634  (warning) an evaluation whose loss or outputs are NaN or infinite
    E640  data-parallel training that cannot start (a rank that cannot join, --nproc under torchrun)
    E641  a --batch that does not split over the processes
    E642  another rank stopped or did not answer within --dist-timeout (nlc.train.dist)
"""

from __future__ import annotations

from nlc.errors import Diagnostic, SpecError
from nlc.files import nonfinite_paths


def train_error(code: str, message: str, hint: str | None = None) -> SpecError:
    """Return a SpecError with one diagnostic (no span: these are about files and runs, not specs)."""
    return SpecError([Diagnostic(code, message, hint=hint)])


def nonfinite_warning(result: dict, what: str) -> Diagnostic | None:
    """An E634 warning when an evaluation result holds a NaN or infinite number, or says that the
    model's outputs were not finite ("finite": false); None when everything is finite."""
    found = list(nonfinite_paths(result)) + _nonfinite_outputs(result)
    if not found:
        return None
    shown = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
    return Diagnostic("E634", f"{what} is not finite: {shown}", severity="warning",
                      hint="the model's outputs overflowed (an in-context memory blowing up on this input?); "
                           "the JSON files write such values as null and list them under \"nonfinite\"")


def _nonfinite_outputs(obj, path: str = "") -> list[str]:
    """Where nested dicts say `"finite": false` ("outputs", "by_kv.4 outputs", ...)."""
    if not isinstance(obj, dict):
        return []
    found = [f"{path} outputs" if path else "outputs"] if obj.get("finite") is False else []
    for k, v in obj.items():
        found += _nonfinite_outputs(v, f"{path}.{k}" if path else str(k))
    return found
