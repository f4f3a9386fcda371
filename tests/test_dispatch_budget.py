"""A deterministic guard on what the generated code costs: torch operations dispatched per chunk.

At the sizes nlc trains on a CPU, a chunk step's time is mostly the dispatch of many small
operations, so their count is a cost model that does not depend on the machine or its load:
every aten operation that reaches the dispatcher (views included) is counted with a
TorchDispatchMode, for the forward alone and for forward+backward through the in-context
updates, on two lengths; their difference over the chunks between them is the cost of a chunk
(what runs once a sequence cancels out). A change that adds operations to a chunk fails here;
one that removes some should lower the budget. Timing stays in `nlc bench` (hope_peer, peer).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import nlc
from nlc.bench.build import example

# spec, its parameters, (short, long) lengths, and the budget: (forward, forward+backward) per chunk.
# hope runs at the peer's chunk sizes (nlc bench hope_peer): M_k, M_v, M_eta, M_alpha in one bundle every
# 8 tokens, M_memory every 64 (8 chunks a period, so the lengths are whole periods). M_memory's chunks waited
# in fixed buffers (rt_scan.pend: 6 slice_scatters a chunk, 16 with the backward, more than a list's appends)
# so that the chunk step compiles. The chunk loop's inputs are split once before the loop, not sliced
# at every chunk (2026-11-30: hope 144.5 / 546.75 to 142.5 / 542, titans_lmm 45 / 185.5 to 42 / 176.5; a
# slice's backward also wrote into zeros the size of the whole sequence, which this count does not see).
# M_memory's reads, gradients and rule then moved to its period's end (nlc.codegen.emit.PeriodWork: once
# a period on 64 tokens, not once a chunk on 8, and no buffers): 142.5 / 542 to 123 / 459.25.
# dgd took k W_0 from the gradients' forward pass instead of computing it again (ChunkForm.key_products):
# 123 / 459.25 to 120.75 / 447. A layer's gradient passed back as d W^T with W's gradient in W's layout
# (memory.times_transposed): forward+backward 447 to 445 (hope), 176.5 to 174.5 (titans_lmm).
# The self-generated values read in the gradients' pass (rt_memory.grads_toward_read: one pass on [v; k],
# matmuls twice as tall) add a cat and slices: 120.75 / 445 to 123.125 / 444.375, for +8% compiled
# forward+backward at dim 256 (benchmarks/README.md), where the matmuls' height, not their count, matters.
CASES = {
    "hope": (dict(dim=16, layers=1, chunk=8, memory_chunk=64), (64, 128), (124, 445)),
    "titans_lmm": (dict(dim=16, layers=1, chunk=16), (32, 64), (42, 175)),
}


class _Count(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[func] += 1
        return func(*args, **(kwargs or {}))


def _ops(block, dim: int, T: int, backward: bool) -> int:
    torch.manual_seed(0)
    x = torch.randn(2, T, dim, requires_grad=backward)
    with _Count() as count:
        if backward:
            block(x, block.init_state(2, x))[0].square().mean().backward()
        else:
            with torch.no_grad():
                block(x, block.init_state(2, x))
    return sum(count.ops.values())


@pytest.mark.parametrize("name", CASES)
def test_operations_per_chunk_stay_within_budget(name):
    params, (short, long), budget = CASES[name]
    model = nlc.build(nlc.load(example(name)), **params)
    block = model.blocks[0]
    chunks = (long - short) // params["chunk"]
    got = tuple((_ops(block, params["dim"], long, b) - _ops(block, params["dim"], short, b)) / chunks
                for b in (False, True))
    for what, n, most in zip(("forward", "forward+backward"), got, budget):
        assert n <= most, (f"{name}: {n:g} torch operations a chunk in the {what}, over the budget of {most}: "
                           "what added them? (if it is worth it, raise the budget here and say why)")
