"""dgd's closed form over a chunk (all gradients at the chunk-start state, docs/design.md §1.2);
naive.py beside it is the token-by-token loop the tests compare it against."""

from __future__ import annotations

import torch

from nlc.runtime.chunkops import (any_d, as_gate, bcast, gate_products, minus_weighted_sum, suffix_exclusive,
                                  unit_lower_solve)


def coefficients(lr, retain, like: torch.Tensor) -> dict:
    eta, a = as_gate(lr, like), as_gate(retain, like)
    cum = gate_products(a)  # [B, u, j] = prod_{j<s<=u} a_s; only j <= u is read below
    # every other product of gates is a slice of this one cumprod (each cumprod costs a dozen
    # operations in the backward): prod_{j<s<u} (gamma), prod_{s>t} = cum[C-1, t] (suffix),
    # prod_{s<t} = a_0 cum[t-1, 0] (prefix), the whole chunk's a_0 cum[C-1, 0] (total)
    gamma = torch.cat([torch.ones_like(cum[:, :1]), cum[:, :-1]], dim=1)
    prefix = torch.cat([torch.ones_like(a[:, :1]), a[:, :1] * cum[:, :-1, 0]], dim=1)
    # computed once a chunk and shared by every weight (and every member of a bundle): eta_u gamma_uj
    # below the diagonal, eta_t P_{t-1}, eta_t as a column
    return {"eta": eta, "a": a, "gamma": (eta[:, :, None] * gamma).tril(-1),
            "eta_prefix": (eta * prefix)[:, :, None], "eta_col": eta[:, :, None], "suffix": cum[:, -1],
            "total": a[:, 0] * cum[:, -1, 0]}


def apply(W: dict, grads: dict, c: dict, products: dict | None = None) -> dict:
    """products: each weight's k W_0 (`ChunkForm.key_products`), which the gradients' forward pass
    computed; without them they are computed here."""
    out = {}
    eta, a = c["eta"], c["a"]
    for name, W0 in W.items():
        k, d = grads[name]
        if W0.dim() == 2:  # elementwise memory: a linear scan with coefficients a - eta k^2
            k2 = k * k if isinstance(k, torch.Tensor) else float(k) ** 2
            cc = a.unsqueeze(-1) - eta.unsqueeze(-1) * k2 * torch.ones_like(d)
            g = d * k if isinstance(k, torch.Tensor) else d * float(k)
            out[name] = cc.prod(1) * W0 - (eta.unsqueeze(-1) * suffix_exclusive(cc) * g).sum(1)
            continue
        L = c["gamma"] * torch.bmm(k, k.transpose(1, 2))  # strictly lower, as gamma is
        kW = products[name] if products else torch.bmm(k, W0)
        rhs = torch.addcmul(c["eta_col"] * d, c["eta_prefix"], kW)
        R = unit_lower_solve(L, rhs)  # (I + L) R = rhs
        out[name] = minus_weighted_sum(bcast(c["total"], W0) * W0, c["suffix"], (k, R), W0)
    return out


def chunk(W: dict, grads: dict, lr, retain, products: dict | None = None) -> dict:
    """dgd over a chunk: W_t = (a_t I - eta_t k_t^T k_t) W_{t-1} - eta_t k_t^T d_t (NL eqs. 56-57, 88).

    k_t is each weight's layer input (the first gradient factor). With r_t =
    eta_t (k_t W_{t-1} + d_t): W_C = P W_0 - sum_u (prod_{s>u} a_s) k_u^T r_u, and the
    r_t solve (I + L) R = eta (P_{t-1} K W_0 + D), L[u, j] = eta_u gamma_uj k_u.k_j (j < u).
    """
    return apply(W, grads, coefficients(lr, retain, any_d(grads)), products)
