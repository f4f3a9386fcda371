"""Reads inside a chunk that see the chunk's updates (`read current`, docs/design.md §1.2).

A level with `read current` takes every gradient of a chunk at the chunk-start state, as every level
does, but its read at token t sees W_t, the state after the updates of the chunk's tokens up to and
including t (Titans, TTT's mini-batch form), where other levels read the chunk-start state W_0
(NL eq. 90). Per weight, with g_s = a_s^T d_s the factored gradients (`nlc.runtime.memory.grads`):

    gd        W_t = P_t W_0 - sum_{s<=t} D[t,s] eta_s g_s                  D[t,s] = prod_{s<r<=t} a_r
    momentum  W_t = P_t W_0 + c_t S_0 - sum_{s<=t} (D G)[t,s] eta_s g_s    G[u,s] = prod_{s<r<=u} beta_r,
                                                                          c_t = sum_u D[t,u] prod_{r<=u} beta_r
with P_t = prod_{r<=t} a_r (the rules' recurrences of docs/design.md §1.3 unrolled; at t = C - 1 this is
the state the chunk kernels give). A layer's output on its input x_t is then

    x_t W_t = P_t x_t W_0 + c_t x_t S_0 - sum_s M[t,s] (x_t . a_s) d_s,     M = (D or D G) * eta,

the "dual form": each layer of the memory is read with one product by W_0 (and S_0) and one masked
C x C product with the chunk's gradient factors, never materialising the C per-token states. An MLP
memory applies it layer by layer (its inputs are the previous layer's outputs at the token's own
state). `read_sequential` computes the same token by token, from the per-token states; the
sequential kernels use it, and the tests compare the two.
"""

from __future__ import annotations

import torch

from nlc.rules import RULES
from nlc.rules.ops import memory_step
from nlc.runtime.chunkops import as_gate, decay_matrix, per_token
from nlc.runtime.memory import act, n_layers
from nlc.runtime.memory import read as read_memory



def token_coefficients(rule: str, q: torch.Tensor, lr, retain, beta=None) -> dict:
    """P [B, C], c [B, C] (momentum) and M [B, C, C] of the module docstring, for the chunk of q."""
    eta, a = as_gate(lr, q), as_gate(retain, q)
    D = decay_matrix(a)
    P = torch.cumprod(a, dim=1)
    if rule == "gd":
        return {"P": P, "c": None, "M": D * eta[:, None, :]}
    b = as_gate(beta, q)
    G = decay_matrix(b)
    return {"P": P, "c": torch.einsum("btu,bu->bt", D, torch.cumprod(b, dim=1)), "M": (D @ G) * eta[:, None, :]}


def read(kind: str, W: dict, S: dict | None, grads: dict, coef: dict, q: torch.Tensor, residual: bool) -> torch.Tensor:
    """y_t = M_{W_t}(q_t) for every token t of the chunk, W_t the state after the updates up to t."""
    names = ["W"] if kind == "linear" else [f"W{i}" for i in range(n_layers(W))]
    x = q
    for i, name in enumerate(names):
        a, d = grads[name]
        z = coef["P"].unsqueeze(-1) * torch.bmm(x, W[name])
        if coef["c"] is not None:
            z = z + coef["c"].unsqueeze(-1) * torch.bmm(x, S[name])
        z = z - torch.bmm(torch.bmm(x, a.transpose(1, 2)) * coef["M"], d)
        x = act(z) if i < len(names) - 1 else z
    return x + q if residual and kind == "mlp" else x  # (a linear memory has no residual path)


def read_sequential(kind: str, rule: str, W: dict, S: dict | None, grads: dict, q: torch.Tensor, residual: bool,
                    lr, retain, beta=None) -> torch.Tensor:
    """The same reads, token by token: each token's update applied to the running state by the rule's eager
    step (nlc.rules), then the state read at that token."""
    spec = RULES[rule]
    running, aux = dict(W), ({"momentum": dict(S)} if S is not None else {})
    eta, a = as_gate(lr, q), as_gate(retain, q)
    b = as_gate(beta, q) if beta is not None else None
    out = []
    for t in range(q.shape[1]):
        for name in running:
            g = per_token(grads[name], t, running[name])
            args = {"beta": b[:, t].view(-1, 1, 1)} if b is not None else {}
            running[name] = memory_step(spec, name, running[name], g, aux, eta[:, t].view(-1, 1, 1),
                                        a[:, t].view(-1, 1, 1), args, grads[name][0][:, t])
        out.append(read_memory(kind, running, q[:, t : t + 1], residual))
    return torch.cat(out, dim=1)

