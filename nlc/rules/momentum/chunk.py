"""momentum's closed form over a chunk (all gradients at the chunk-start state, docs/design.md §1.2);
naive.py beside it is the token-by-token loop the tests compare it against."""

from __future__ import annotations

import torch

from nlc.runtime.chunkops import any_d, as_gate, bcast, decay_matrix, minus_weighted_sum, suffix_exclusive


def coefficients(lr, retain, beta, like: torch.Tensor) -> dict:
    eta, a, b = as_gate(lr, like), as_gate(retain, like), as_gate(beta, like)
    G = decay_matrix(b)  # [B, t, u]: prod_{u < r <= t} beta_r
    prefix_b = torch.cumprod(b, dim=1)  # prod_{r <= t} beta_r
    suffix_a = suffix_exclusive(a)  # prod_{s > t} a_s
    return {"coef_S": eta * G[:, -1], "coef_W": eta * torch.einsum("bt,btu->bu", suffix_a, G),
            "carry": (suffix_a * prefix_b).sum(1), "total_a": a.prod(1), "total_b": prefix_b[:, -1]}


def token_coefficients(lr, retain, beta, like: torch.Tensor) -> dict:
    """Every token's state inside the chunk: W_t = P_t W_0 + c_t S_0 - sum_{s<=t} M[t,s] g_s, with
    D[t,u] = prod_{u<r<=t} a_r, G[u,s] = prod_{s<r<=u} beta_r, P_t = prod_{r<=t} a_r,
    c_t = sum_u D[t,u] prod_{r<=u} beta_r and M = (D G) eta (`read current`, nlc.runtime.inside)."""
    eta, a, b = as_gate(lr, like), as_gate(retain, like), as_gate(beta, like)
    D = decay_matrix(a)
    return {"P": torch.cumprod(a, dim=1), "c": torch.einsum("btu,bu->bt", D, torch.cumprod(b, dim=1)),
            "M": (D @ decay_matrix(b)) * eta[:, None, :]}


def apply(W: dict, S: dict, grads: dict, c: dict) -> tuple[dict, dict]:
    W_out, S_out = {}, {}
    for name, W0 in W.items():
        S0, g = S[name], grads[name]
        S_out[name] = minus_weighted_sum(bcast(c["total_b"], S0) * S0, c["coef_S"], g, S0)
        W_out[name] = minus_weighted_sum(torch.addcmul(bcast(c["total_a"], W0) * W0, bcast(c["carry"], S0), S0),
                                         c["coef_W"], g, W0)
    return W_out, S_out


def chunk(W: dict, S: dict, grads: dict, lr, retain, beta) -> tuple[dict, dict]:
    """momentum over a chunk: S_t = beta_t S_{t-1} - eta_t g_t; W_t = a_t W_{t-1} + S_t (Titans eqs. 9-14)."""
    return apply(W, S, grads, coefficients(lr, retain, beta, any_d(grads)))
