"""torch.compile for generated models, one chunk step at a time.

`torch.compile(model)` traces the whole forward, and the chunk loop unrolls into it:
a graph that grows with the sequence (T / chunk copies of the step) and takes minutes
to compile. Every full chunk runs the same computation on tensors of the same shapes,
so compiling each block's `chunk_step` gives a few small graphs (the first chunk, the
later ones, a partial last chunk; with and without autograd) that every chunk reuses;
the work before and after the loop is a few large matmuls over the whole sequence
that eager mode already runs well. On the CPU a chunk step's graph is many small
kernels, so it is compiled with inductor's C++ wrapper (`StepPerDevice`). Blocks
without in-context levels (attention, MLPs, CMS levels) have no loop: their whole
forward is compiled (`nn.Module.compile`, in place, so parameter names and checkpoints
do not change).
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
            block.compiled_step = StepPerDevice(block.chunk_step, options)
            if hasattr(block, "period_step"):  # slower levels' work once a period: its own graph
                block.compiled_period = StepPerDevice(block.period_step, options)
    if eager:
        warnings.warn(f"chunk steps left eager (they grow chunk by chunk): {', '.join(eager)}", stacklevel=2)
    return model


# Inductor options for chunk steps that run on the CPU. cpp_wrapper: the graph's kernels are called
# from generated C++ instead of a generated Python function, whose cost per kernel (allocating each
# buffer, asserting each input's strides, a Python call) was about a sixth of a Hope chunk's
# forward+backward on two cores. Measured in one process, interleaved (benchmarks/README.md, "Where
# the time goes"): Hope at the peer's chunk sizes +13.5% forward+backward, titans_memory +6% (dim 64)
# and +2% (dim 256); compile time unchanged (hope 49 s -> 42 s, titans_lmm 25 s).
CPU_INDUCTOR_OPTIONS = {"cpp_wrapper": True}


class StepPerDevice:
    """A block's chunk (or period) step under torch.compile, compiled once per device type: on the
    CPU with `CPU_INDUCTOR_OPTIONS`, elsewhere as `options` say. The device is the first tensor
    argument's, read when the step is called, since a model is often compiled before it is moved."""

    def __init__(self, step, options: dict):
        self.step, self.options, self.compiled = step, options, {}

    def __call__(self, *args):
        kind = _device_type(args)
        compiled = self.compiled.get(kind)
        if compiled is None:
            compiled = self.compiled[kind] = torch.compile(self.step, **self._options(kind))
        return compiled(*args)

    def _options(self, kind: str) -> dict:
        options = dict(self.options)
        inductor = options.get("backend", "inductor") == "inductor" and "mode" not in options
        if kind == "cpu" and inductor:
            options["options"] = {**CPU_INDUCTOR_OPTIONS, **options.get("options", {})}
        return options


def _device_type(args) -> str:
    """The device type of the first tensor in args (tensors, or dicts of them: a level's weights)."""
    for arg in args:
        if isinstance(arg, torch.Tensor):
            return arg.device.type
        if isinstance(arg, dict) and arg:
            kind = _device_type(arg.values())
            if kind:
                return kind
    return ""


def uncompile_chunks(model: nn.Module) -> nn.Module:
    """Undo `compile_chunks`: every block runs eagerly again."""
    for block in model.blocks:
        vars(block).pop("compiled_step", None)  # the class attribute (None) shows again
        vars(block).pop("compiled_period", None)
        block._compiled_call_impl = None  # set by nn.Module.compile
    return model
