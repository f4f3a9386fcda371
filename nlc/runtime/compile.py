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
forward is compiled (in place, as `nn.Module.compile` does, so parameter names and
checkpoints do not change). So is every block of a model with shared levels: such a model
calls its blocks one shared period at a time (a few chunks), and between the periods its
shared levels learn (`learn_shared`, compiled as a step of its own), so a block's work
outside its chunk loop would otherwise run eagerly once a period.
"""

from __future__ import annotations

import types

import torch
import torch._functorch.config as functorch_config
from torch import nn

from nlc.runtime.chunks import in_order
from nlc.runtime.state import state_bytes


def compile_chunks(model: nn.Module, chunks_per_graph: int = 1, **options) -> nn.Module:
    """Compile the `chunk_step` of every block of a generated model in place (blocks without a
    chunk loop, and every block of a model with shared levels: their whole forward; such a model's
    `learn_shared` too); return the model.

    options go to torch.compile (defaults: dynamic=None, so that a new batch size or length
    makes the shapes symbolic after one recompile instead of compiling again for every size;
    recompile_limit=RECOMPILE_LIMIT, see there; fullgraph stays False so that an unforeseen
    recompile limit falls back to eager instead of failing; the tests check there are no graph
    breaks). A model that cannot compile (`second_order`, see SECOND_ORDER) is a ValueError,
    before anything is compiled. Most chunk steps have the
    same shapes at every chunk (a sliding window's attention cache has a fixed length,
    `runtime.layers.Attention.capacity`; slower levels' gradients wait in fixed buffers). One
    whose inputs grow chunk by chunk (an attention inside the loop over the whole past) compiles
    again once its length changes, with that length symbolic, and that graph serves every later
    chunk.
    The eager `chunk_step` stays the definition; `uncompile_chunks` undoes this.

    chunks_per_graph: consecutive chunks run as one compiled graph (`StepPerDevice.run_chunks`):
    the same steps in the same order, with a compiled call's fixed cost (dynamo's guards,
    AOTAutograd's wrappers, an autograd node) paid once a group; each graph is that many
    chunks long, so compiling takes longer. A group never crosses the end of a `period_step`'s
    period (the period step needs the period's chunks first). A block compiled whole has all of a
    call's chunks in one graph already: there it changes nothing.
    """
    if not isinstance(chunks_per_graph, int) or isinstance(chunks_per_graph, bool) or chunks_per_graph < 1:
        raise ValueError(f"chunks_per_graph must be a positive integer, not {chunks_per_graph!r}")
    if getattr(model, "second_order", False):
        raise ValueError(f"this model's {SECOND_ORDER}; {SECOND_ORDER_HINT}, or run it eagerly")
    options = {"dynamic": None, "recompile_limit": RECOMPILE_LIMIT, **options}
    period_by_period = hasattr(model, "learn_shared")  # the model calls its blocks a shared period at a time
    for block in model.blocks:
        if period_by_period or not hasattr(block, "chunk_step"):
            # no chunk loop, or a loop of a period's few chunks: a fixed-size graph whatever the length
            # (measured: shared_memory forward+backward 1.02-1.09x eager's with chunk steps alone,
            # 2.1-2.5x with whole blocks and learn_shared; benchmarks/README.md)
            block._compiled_call_impl = StepPerDevice(block._call_impl, options)  # as nn.Module.compile does
        else:
            block.compiled_step = StepPerDevice(block.chunk_step, options, chunks_per_graph)
            if hasattr(block, "period_step"):  # slower levels' work once a period: its own graph
                block.compiled_period = StepPerDevice(block.period_step, options)
    if period_by_period:
        model.learn_shared = StepPerDevice(model.learn_shared, options)
    return model


# A chunk step compiles one graph for each situation it meets: with or without autograd, the first chunk
# (buffers not yet allocated), a partial last chunk, and which slower periods end at the chunk. A block with
# two periods meets more than dynamo's default limit of 8 (examples/mixed_memories.nl: 10 in one
# forward+backward and one forward), and past the limit the step silently runs eagerly. The count is bounded
# by the spec, not by the sequence's length.
RECOMPILE_LIMIT = 64

# A model whose `context loss` levels differentiate through their steps (not `first_order`): the training
# backward differentiates every block twice, and torch.compile's AOTAutograd has no double backward.
SECOND_ORDER = ("`context loss` levels differentiate through their own steps, so each training step takes a "
                "second-order gradient through every block, which torch.compile cannot take")
SECOND_ORDER_HINT = "mark those levels `first_order` to compile"  # (nlc train --compile says it too, E633)


# Inductor options for chunk steps that run on the CPU. cpp_wrapper: the graph's kernels are called
# from generated C++ instead of a generated Python function, whose cost per kernel (allocating each
# buffer, asserting each input's strides, a Python call) was about a sixth of a Hope chunk's
# forward+backward on two cores. Measured in one process, interleaved (benchmarks/README.md, "Where
# the time goes"): Hope at the peer's chunk sizes +13.5% forward+backward, titans_memory +6% (dim 64)
# and +2% (dim 256); compile time unchanged (hope 49 s -> 42 s, titans_lmm 25 s).
CPU_INDUCTOR_OPTIONS = {"cpp_wrapper": True}

# AOTAutograd saves every activation the backward reads unless its activation memory budget asks it to
# recompute some (`torch._functorch.config.activation_memory_budget`, 1.0 by default: save them all). On
# the CPU a chunk step with small states is bound by the number of its kernels and of the tensors handed
# from the forward to the backward, not by arithmetic, and recomputing cheap ones in the backward is
# faster; with large states the recomputation streams them again. Measured in one process, interleaved,
# forward+backward, budget 0.3 against 1.0 (benchmarks/README.md): Hope at the peer's dim 64 +12.5% to
# +16.5%, dim 128 x 1k +9% to +13%, titans_memory dim 64 +9% to +12% (states of 0.1-1 MiB a batch);
# Hope at dim 256 -2% to +4%, titans_memory dim 256 -2%, titans_lmm dim 256 -7%, Hope at dim 64 with a
# batch of 16 0 to +2% (2.6-8 MiB). Gradients bitwise the same in every case. So a CPU step whose carried
# tensors (states, caches; with a chunk's own inputs, which are small) total at most
# RECOMPUTE_MAX_STATE_BYTES at its first call compiles with RECOMPUTE_BUDGET; other devices and larger
# states keep torch's default. (The budget is a process-wide setting, changed only for the call.)
RECOMPUTE_BUDGET = 0.3
RECOMPUTE_MAX_STATE_BYTES = 2 * 2**20


class StepPerDevice:
    """A block's chunk (or period) step under torch.compile (or a whole block's call, or a model's
    `learn_shared`), compiled once per device type: on the
    CPU with `CPU_INDUCTOR_OPTIONS`, elsewhere as `options` say. The device is the first tensor
    argument's, read when the step is called, since a model is often compiled before it is moved.

    `run_chunks` (called by `nlc.runtime.chunks.run`) runs a chunk loop `chunks_per_graph` chunks
    a compiled call: the group's steps unrolled into one graph."""

    def __init__(self, step, options: dict, chunks_per_graph: int = 1):
        self.step, self.options, self.chunks_per_graph = step, options, chunks_per_graph
        self.compiled: dict[str, object] = {}  # device type -> the compiled step
        self.grouped: dict[str, object] = {}  # device type -> the compiled group of steps
        self.budget: dict[str, float | None] = {}  # device type -> AOTAutograd's activation budget (None: torch's)

    def __call__(self, *args):
        kind = _device_type(args)
        compiled = self.compiled.get(kind)
        if compiled is None:
            compiled = self.compiled[kind] = torch.compile(self.step, **self._options(kind))
        return self._run(kind, args, compiled, args)

    def _run(self, kind: str, carried, compiled, args):
        """compiled(*args) under the activation budget of `kind` (chosen at the first call from the carried
        tensors' size, `RECOMPUTE_BUDGET`), which any compiling inside the call then uses."""
        if kind not in self.budget:
            small = kind == "cpu" and state_bytes(carried) <= RECOMPUTE_MAX_STATE_BYTES
            self.budget[kind] = RECOMPUTE_BUDGET if small and self._inductor() else None
        budget = self.budget[kind]
        if budget is None:
            return compiled(*args)
        before = functorch_config.activation_memory_budget
        functorch_config.activation_memory_budget = budget
        try:
            return compiled(*args)
        finally:
            functorch_config.activation_memory_budget = before

    def run_chunks(self, carried: tuple, calls: list[tuple], outputs: int) -> tuple[list[list], tuple]:
        """`nlc.runtime.chunks.in_order` with up to `chunks_per_graph` consecutive chunks a compiled
        call (the last group may be shorter: a graph of its own length)."""
        group = self.chunks_per_graph
        if group == 1:
            return in_order(self, carried, calls, outputs)
        kind = _device_type(carried)
        compiled = self.grouped.get(kind)
        if compiled is None:
            step = self.step

            def steps(carried, calls, outputs):
                return in_order(step, carried, calls, outputs)

            steps = _own_code(steps, f"{getattr(step, '__qualname__', 'step')}_x{group}")
            compiled = self.grouped[kind] = torch.compile(steps, **self._options(kind))
        parts: list[list] = [[] for _ in range(outputs)]
        for i in range(0, len(calls), group):
            group_parts, carried = self._run(kind, carried, compiled, (carried, tuple(calls[i:i + group]), outputs))
            for part, values in zip(parts, group_parts):
                part.extend(values)
        return parts, carried

    def _inductor(self) -> bool:
        """Does the step compile with inductor's defaults (no other backend, no mode)?"""
        return self.options.get("backend", "inductor") == "inductor" and "mode" not in self.options

    def _options(self, kind: str) -> dict:
        options = dict(self.options)
        if kind == "cpu" and self._inductor():
            options["options"] = {**CPU_INDUCTOR_OPTIONS, **options.get("options", {})}
        return options


def _own_code(fn, name: str):
    """fn with a code object of its own, named `name`. Dynamo keeps its compiled graphs, and counts
    recompiles against its limit, per code object: every group runner defined by the same `def`
    would share one cache, and a process with several models would run out of recompiles and fall
    back to eager. (Each generated block's `chunk_step` is its own code already.)"""
    code = fn.__code__.replace(co_name=name, co_qualname=name)
    return types.FunctionType(code, fn.__globals__, name, fn.__defaults__, fn.__closure__)


def _device_type(args) -> str:
    """The device type of the first tensor in args (tensors, or dicts, tuples and lists of them)."""
    for arg in args:
        if isinstance(arg, torch.Tensor):
            return arg.device.type
        if isinstance(arg, (dict, tuple, list)) and arg:
            kind = _device_type(arg.values() if isinstance(arg, dict) else arg)
            if kind:
                return kind
    return ""


def uncompile_chunks(model: nn.Module) -> nn.Module:
    """Undo `compile_chunks`: every block runs eagerly again."""
    for block in model.blocks:
        vars(block).pop("compiled_step", None)  # the class attribute (None) shows again
        vars(block).pop("compiled_period", None)
        block._compiled_call_impl = None  # a whole block's (nn.Module.__call__ runs it when set)
    vars(model).pop("learn_shared", None)  # a model with shared levels: its own method shows again
    return model
