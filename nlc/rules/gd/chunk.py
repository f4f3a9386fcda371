"""gd's closed form over a chunk (all gradients at the chunk-start state, docs/design.md §1.2);
naive.py beside it is the token-by-token loop the tests compare it against."""

from __future__ import annotations

import torch

from nlc.runtime.chunkops import any_d, as_gate, bcast, decay_matrix, minus_weighted_sum, suffix_exclusive


def coefficients(lr, retain, like: torch.Tensor) -> dict:
    eta, a = as_gate(lr, like), as_gate(retain, like)
    return {"coef": eta * suffix_exclusive(a), "total": a.prod(1)}


def apply(W: dict, grads: dict, c: dict) -> dict:
    return {n: minus_weighted_sum(bcast(c["total"], W0) * W0, c["coef"], grads[n], W0) for n, W0 in W.items()}


def token_coefficients(lr, retain, like: torch.Tensor) -> dict:
    """Every token's state inside the chunk: W_t = P_t W_0 - sum_{s<=t} M[t,s] g_s with P_t = prod_{r<=t} a_r,
    M[t,s] = eta_s prod_{s<r<=t} a_r (`read current`, nlc.runtime.inside)."""
    eta, a = as_gate(lr, like), as_gate(retain, like)
    return {"P": torch.cumprod(a, dim=1), "c": None, "M": decay_matrix(a) * eta[:, None, :]}


def chunk(W: dict, grads: dict, lr, retain) -> dict:
    """gd over a chunk: W_t = a_t W_{t-1} - eta_t g_t, all g_t at the chunk-start state."""
    return apply(W, grads, coefficients(lr, retain, any_d(grads)))
