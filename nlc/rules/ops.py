"""The operations of a rule's step on in-context memory states (`MEMORY`), batched over the sequence batch.

States are [B, d_in, d_out] matrices (a memory read as M(k) = k W: the weight's input is axis -2)
or [B, n] vectors (elementwise memories); gates are floats, 0-dim tensors or [B, 1(, 1)]. The
optimizer's twin, for parameter-shaped tensors, is nlc.optim.runtime.PARAMETERS; the code
generator's, which writes the step as text, is in nlc.codegen.optimizer (see nlc.rules.base).
"""

from __future__ import annotations

import torch

from nlc.rules.delta_momentum.decay import delta_momentum_decay, delta_momentum_decay_elementwise
from nlc.runtime.memory import safe_sqrt
from nlc.runtime.newton_schulz import newton_schulz


class MemoryOps:
    torch = torch

    @staticmethod
    def sqrt(x):
        return safe_sqrt(x)  # a gradient of 0, not inf, at 0: the outer level backpropagates through the step

    @staticmethod
    def orthogonalize(x, steps):
        return newton_schulz(x, int(steps)) if x.dim() == 3 else x

    @staticmethod
    def delta_decay(m, g, beta):
        if m.dim() == 3:  # [B, d_in, d_out]: the decay acts on the input side (NL eq. 48)
            return delta_momentum_decay(m, g, beta, input_axis=-2)
        return delta_momentum_decay_elementwise(m, g, beta)

    @staticmethod
    def key_decay(W, retain, lr, key):
        """a W - eta k^T (k W) for a matrix and its layer input k [B, d_in]; (a - eta k^2) W elementwise
        (key None: the constant key 1 of a `grad(...)` context)."""
        if W.dim() == 3 and isinstance(key, torch.Tensor):
            kW = torch.einsum("bi,bio->bo", key, W)
            return retain * W - lr * torch.einsum("bi,bo->bio", key, kW)
        k2 = key * key if isinstance(key, torch.Tensor) else 1.0 if key is None else float(key) ** 2
        return (retain - lr * k2) * W

    @staticmethod
    def bias_correction(beta, n):
        return 1 - beta**n

    @staticmethod
    def keep(name, value, why=""):
        return value


MEMORY = MemoryOps()


def initial_aux(rule, weights: dict) -> dict:
    """A level's rule buffers at the start, each shaped like its weight and zero (`aux[k][w]`), and a
    counting rule's step count `aux["n"]` (what `memory_step` reads and updates)."""
    aux: dict = {k: {w: torch.zeros_like(v) for w, v in weights.items()} for k in rule.aux}
    if rule.counts:
        aux["n"] = 0
    return aux


def copy_aux(aux: dict) -> dict:
    """A copy that `memory_step` can update without touching `aux` (its buffers are replaced, not written)."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in aux.items()}


def memory_step(rule, w: str, W, g, aux: dict, lr, retain, args: dict, key):
    """Weight `w` of an in-context memory after one step of `rule` (a registry entry); its buffers are
    `aux[k][w]` (updated here) and `aux["n"]` the steps taken so far. The reference interpreter and the
    generated chunk fallback (nlc.runtime.scan) both step through this."""
    W_new, new_aux = rule.step(W, g, {k: aux[k][w] for k in rule.aux}, lr, retain, args, MEMORY,
                               count=aux.get("n", 0) + 1, key=key)
    for k, v in new_aux.items():
        aux[k][w] = v
    return W_new
