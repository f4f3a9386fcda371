"""`context loss` levels counted in tokens: learning from the model's own next-token loss, chunk by chunk.

docs/design.md §1.4. A model with such levels runs chunk-major: every block reads a chunk of
the fastest such period N0, then the head scores it; at the end of each level's period P the
level takes one step of its rule (nlc.rules, through `memory_step` as in-context levels do) from
the gradient, at the state its reads saw, of

    L = mean over the period's predictions t -> t+1 whose answer t+1 lies in the period
        of cross_entropy(logits_t, token_{t+1})        (per sequence; summed over the batch)

Prequential: each target is a token already read, and no output sees its own answer. The step
is differentiable (the outer level meta-learns through it: second order) unless the level is
`first_order`, whose gradient is taken as data. Generated models call `period_loss`, `track`
and `step` here; the reference interpreter (nlc.interp) computes the loss itself, token by token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nlc.rules import RULES
from nlc.rules import ops as rule_ops


def period_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """The mean next-token loss of a period's predictions, per sequence, summed over the batch.

    logits [B, P, V] and tokens [B, P] of one period: position t predicts token t+1 (P-1 predictions).
    """
    predictions = logits.shape[1] - 1
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1),
                           reduction="sum") / predictions


def track(weights: dict) -> dict:
    """The level's weights as the reads of a new period use them: in the graph, so that its gradient exists."""
    return {k: w if in_graph(w) else w.detach().contiguous().requires_grad_() for k, w in weights.items()}


def in_graph(w: torch.Tensor) -> bool:
    """Whether autograd can differentiate with respect to `w` as it is: the output of a recorded operation,
    or a leaf of its own that requires grad. Not a view made under no_grad (a learned initial state
    expanded over the batch in `nlc eval`: it says requires_grad but has no graph), and not a
    constant; those become a fresh contiguous leaf (an expanded leaf gets no gradient through einsum)."""
    return w.grad_fn is not None or (w.requires_grad and w.is_leaf and w._base is None)


def step(level: dict, loss: torch.Tensor, rule: str, lr: float, retain: float, args: dict,
         first_order: bool) -> dict:
    """The level's state ({"W": weights, "aux": buffers}) after one step of `rule` from loss's gradient."""
    W = level["W"]
    names = list(W)
    grads = torch.autograd.grad(loss, [W[n] for n in names], create_graph=not first_order, retain_graph=True,
                                allow_unused=True)  # the outer backward and slower levels reuse the graph
    aux = rule_ops.copy_aux(level["aux"])
    r = RULES[rule]
    new = {}
    for n, g in zip(names, grads):
        g = torch.zeros_like(W[n]) if g is None else g.detach() if first_order else g
        new[n] = rule_ops.memory_step(r, n, W[n], g, aux, lr, retain, args, None)
    if r.counts:
        aux["n"] = aux.get("n", 0) + 1
    return {"W": new, "aux": aux}


def initial_aux(rule: str, weights: dict) -> dict:
    """The rule's buffers at zero, and a counting rule's step count (generated code names the rule)."""
    return rule_ops.initial_aux(RULES[rule], weights)
