"""FLOPs per token of a model, counted from its plan (matmul-class work: 2 flops a multiply-add).

Counted: linear layers, the LM head, causal convolutions, attention (projections,
scores and weighted sums over the keys each query sees), SwiGLU, memory reads,
and the learning of in-context levels: the closed-form per-token gradients
(a second forward through the memory at the chunk-start state plus the backward
for the deltas) and the chunk update (one weighted sum of factored gradients per
weight; momentum needs two). Elementwise work (norms, gates, activations) is left
out, as profilers' FLOP counters do. `nlc bench roofline` checks this count
against torch.utils.flop_counter on every eager configuration it times.
"""

from __future__ import annotations

from nlc.plan.model import BlockPlan, LevelPlan, ModelPlan
from nlc.plan.ops import Op
from nlc.rules import RULES


def _memory_matmul_flops(lv: LevelPlan) -> int:
    """Flops of one read M(k) per token: sum over weights of 2 * d_in * d_out (elementwise: 0), for
    every head (a head's weights are 1/heads of each width)."""
    return lv.heads * sum(2 * s[0] * s[1] for s in lv.weights.values() if len(s) == 2)


def _attention_flops(node, module, seq: int) -> int:
    d = node.width
    proj = 4 * 2 * d * d  # q, k, v, o
    span = seq / 2  # average causal context over a sequence
    if module.kwargs.get("window"):
        span = min(span, module.kwargs["window"])
    if module.kwargs.get("segment"):
        span = min(span, module.kwargs["segment"] / 2)
    keys = span * (2 if module.kwargs.get("memory") else 1) + module.kwargs.get("persistent", 0)
    extra = 2 * d * d if module.kwargs.get("memory") else 0  # k, v projections of the memory stream
    return int(proj + extra + 2 * 2 * d * keys)


def block_flops(block: BlockPlan, seq: int) -> dict[str, int]:
    """Forward flops per token of one block, by part."""
    modules = {m.attr: m for m in block.modules}
    levels = {lv.name: lv for lv in block.levels}
    parts = {"projections": 0, "attention": 0, "memory reads": 0, "learning": 0}
    for node in block.nodes:
        m = modules.get(node.module) if node.module else None
        if node.op is Op.LINEAR:
            parts["projections"] += 2 * m.args[0] * m.args[1]
        elif node.op is Op.SWIGLU:
            d, h = m.args
            parts["projections"] += 3 * 2 * d * h
        elif node.op is Op.CONV:
            parts["projections"] += 2 * m.args[0] * m.args[1]
        elif node.op is Op.ATTENTION:
            parts["attention"] += _attention_flops(node, m, seq)
        elif node.op is Op.READ:
            lv = levels.get(node.attrs["level"])
            if lv is not None:
                parts["memory reads"] += _memory_matmul_flops(lv)
            else:  # a slow (CMS) level: an ordinary MLP
                slow = next(s for s in block.slow_levels if s.name == node.attrs["level"])
                parts["memory reads"] += sum(2 * s[0] * s[1] for s in slow.weights.values() if len(s) == 2)
    for lv in block.levels:
        read = _memory_matmul_flops(lv)
        first = next(iter(lv.weights.values()))  # no delta flows back past the first layer
        backward = read - (lv.heads * 2 * first[0] * first[1] if lv.depth > 1 else read)
        # the chunk update: weighted sums of factored gradients, the rule's flops factor (nlc.rules)
        sums = RULES[lv.rule].flops * read
        parts["learning"] += read + backward + sums
    return parts


def model_flops(plan: ModelPlan, seq: int) -> dict[str, int]:
    """Forward flops per token of a whole model (blocks, embedding-free head), by part."""
    total = {"head": 2 * plan.dim * plan.vocab}
    for block in plan.blocks:
        for k, v in block_flops(block, seq).items():
            total[k] = total.get(k, 0) + v
    total["total"] = sum(total.values())
    return total
