"""A block's chunk loop, as generated code runs it (`rt_chunks.run`).

A generated block's forward first gathers every chunk's inputs (its slices of what was computed
before the loop, hoisted coefficients, flags), then runs its `chunk_step` over them in order,
carrying the levels' states (and caches) from each chunk to the next. Eagerly that is the plain
loop `in_order`. Under `nlc.runtime.compile.compile_chunks` the step is a `StepPerDevice`, which
may run several consecutive chunks as one compiled graph (`chunks_per_graph`): the same steps in
the same order, with the fixed cost of a compiled call (guards, autograd wrappers) paid once a
group instead of once a chunk.
"""

from __future__ import annotations


def run(step, carried: tuple, calls: list[tuple], outputs: int) -> tuple[list[list], tuple]:
    """Run `step(*carried, *call)` for every call in order, each returning `outputs` values and then
    the new carried values; return each output's values chunk by chunk (one list an output) and
    the carried values after the last chunk."""
    runner = getattr(step, "run_chunks", None)  # a compiled step groups chunks (compile_chunks)
    if runner is not None:
        return runner(carried, calls, outputs)
    return in_order(step, carried, calls, outputs)


def in_order(step, carried: tuple, calls, outputs: int) -> tuple[list[list], tuple]:
    """`run`'s definition: one step a chunk, in order (also the body of a compiled group of chunks)."""
    parts: list[list] = [[] for _ in range(outputs)]
    for call in calls:
        result = step(*carried, *call)
        for part, value in zip(parts, result[:outputs]):
            part.append(value)
        carried = tuple(result[outputs:])
    return parts, carried
