"""Shared levels in generated models (`rt_shared`): every block's pairs of a period, then one step of the rule.

docs/design.md §1.8. A shared level's state is the model's. Each block that declares it reads the
period-start state and, chunk by chunk, `collect`s its factored gradients (at that state, as every
in-context level's) and gates. At the period's end the model calls `learn` with every writer's
items in model order: they are woven token-major (token t: the first block's pair, the second's,
...), as the reference interpreter applies them, and the rule runs once over the n * P items:
its closed form (nlc.rules: `Rule.chunk`) where it has one, else token by token
(`rt_scan.sequential_chunk`, which the sequential kernels always take).
"""

from __future__ import annotations

import torch

from nlc.rules import RULES
from nlc.runtime import scan
from nlc.runtime.loss_levels import initial_aux  # noqa: F401 (generated models call rt_shared.initial_aux)


def collect(items, grads: dict, gates: dict) -> tuple[dict, dict]:
    """A block's items so far with one more chunk's: (factored gradients, gates), tokens along dim 1.

    Numbers and 0-dim gates (the same at every token) are kept as they are."""
    if items is None:
        return grads, gates
    old_grads, old_gates = items
    return ({w: tuple(_join(a, b) for a, b in zip(old_grads[w], f)) for w, f in grads.items()},
            {k: _join(old_gates[k], g) for k, g in gates.items()})


def _join(a, b):
    return torch.cat([a, b], dim=1) if _per_token(b) else b


def _per_token(v) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() >= 2


def weave(items: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """n blocks' items of one period, [B, P, ...] each, as one sequence of n * P items, token-major."""
    d = next(iter(items[0][0].values()))[1]  # a gradient factor [B, P, out]: the dtype, device and length
    grads = {w: tuple(_weave([g[w][i] for g, _ in items], d) for i in range(2)) for w in items[0][0]}
    gates = {k: _weave([gt[k] for _, gt in items], d) for k in items[0][1]}
    return grads, gates


def _weave(values: list, d: torch.Tensor):
    tokens = [v for v in values if _per_token(v)]
    if not tokens and all(isinstance(v, (int, float)) and v == values[0] for v in values):
        return values[0]  # a number every block states alike: the same at every item
    shape = tokens[0].shape if tokens else (*d.shape[:2], 1)  # a gate that is a number spans [B, P, 1]
    full = [v if _per_token(v) else torch.as_tensor(v, dtype=d.dtype, device=d.device).expand(shape) for v in values]
    return torch.stack(full, dim=2).flatten(1, 2)


def learn(rule: str, level: dict, items: list[tuple[dict, dict]], objective: tuple = ("l2",),
          kernels: str = "chunked") -> dict:
    """The shared level's state ({"W", "aux"}) after a period of every block's items (model order)."""
    grads, gates = weave(items)
    form = RULES[rule].chunk
    W, aux = level["W"], level["aux"]
    if kernels == "chunked" and form is not None:
        given = {k: gates[k] for k in form.gates}
        if form.carries:
            W, S = scan.chunk(rule, W, aux[form.carries], grads, **given)
            return {"W": W, "aux": {**aux, form.carries: S}}
        return {"W": scan.chunk(rule, W, grads, **given), "aux": aux}
    step = {"name": "shared", "rule": rule, "objective": objective, "context": "kv", "update_by": None, **gates}
    learned = scan.sequential_chunk([step], {"shared": {"W": W, "aux": aux}}, {"shared": grads})
    return learned["shared"]
