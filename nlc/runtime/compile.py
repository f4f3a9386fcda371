"""torch.compile for generated models, one chunk step at a time.

`torch.compile(model)` traces the whole forward, and the chunk loop unrolls into it:
a graph that grows with the sequence (T / chunk copies of the step) and takes minutes
to compile. Every full chunk runs the same computation on tensors of the same shapes,
so compiling each block's `chunk_step` gives a few small graphs (the first chunk, the
later ones, a partial last chunk; with and without autograd) that every chunk reuses;
the work before and after the loop is a few large matmuls over the whole sequence
that eager mode already runs well. Blocks without in-context levels (attention, MLPs,
CMS levels) have no loop: their whole forward is compiled (`nn.Module.compile`, in
place, so parameter names and checkpoints do not change).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


def compile_chunks(model: nn.Module, **options) -> nn.Module:
    """Compile the `chunk_step` of every block of a generated model in place (blocks without a
    chunk loop: their forward); return the model.

    options go to torch.compile (default dynamic=None: a new batch size or length makes
    the shapes symbolic after one recompile instead of compiling again for every size;
    fullgraph stays False so that an unforeseen recompile limit falls back to eager
    instead of failing; the tests check there are no graph breaks). Blocks whose chunk
    step grows chunk by chunk (an attention cache inside the loop over a window or the whole
    past; a segment that divides the chunk empties at every chunk and compiles) would
    recompile as it grows: they stay eager, with a warning.
    The eager `chunk_step` stays the definition; `uncompile_chunks` undoes this.
    """
    options = {"dynamic": None, **options}
    eager = []
    for i, block in enumerate(model.blocks):
        if not hasattr(block, "chunk_step"):  # no chunk loop: a fixed-size graph whatever the length
            block.compile(**options)
        elif not block.step_shapes_fixed:
            eager.append(f"blocks.{i}")
        else:
            block.compiled_step = torch.compile(block.chunk_step, **options)
            if hasattr(block, "period_step"):  # slower levels' work once a period: its own graph
                block.compiled_period = torch.compile(block.period_step, **options)
    if eager:
        warnings.warn(f"chunk steps left eager (they grow chunk by chunk): {', '.join(eager)}", stacklevel=2)
    return model


def uncompile_chunks(model: nn.Module) -> nn.Module:
    """Undo `compile_chunks`: every block runs eagerly again."""
    for block in model.blocks:
        vars(block).pop("compiled_step", None)  # the class attribute (None) shows again
        vars(block).pop("compiled_period", None)
        block._compiled_call_impl = None  # set by nn.Module.compile
    return model
