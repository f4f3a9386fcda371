"""Reads inside a chunk that see the chunk's updates (`read current`, docs/design.md §1.2).

A level with `read current` takes every gradient of a chunk at the chunk-start state, as every level
does, but its read at token t sees W_t, the state after the updates of the chunk's tokens up to and
including t (Titans, TTT's mini-batch form), where other levels read the chunk-start state W_0
(NL eq. 90). Per weight, with g_s = a_s^T d_s the factored gradients (`nlc.runtime.memory.grads`):

    W_t = P_t W_0 + c_t S_0 - sum_{s<=t} M[t,s] g_s

for the rules whose chunk form is `per_token` (nlc.rules.base.ChunkForm; their chunk.py's
`token_coefficients` give P, c and M: gd, W_t = a_t W_{t-1} - eta_t g_t, has M[t,s] = eta_s
prod_{s<r<=t} a_r and no c; momentum adds the carried buffer S_0; docs/design.md §1.3 gives the
recurrences; at t = C - 1 this is the state the chunk kernels give). A layer's output on its input
x_t is then

    x_t W_t = P_t x_t W_0 + c_t x_t S_0 - sum_s M[t,s] (x_t . a_s) d_s,

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
from nlc.runtime.chunkops import as_gate, per_token
from nlc.runtime.memory import act, n_layers
from nlc.runtime.memory import read as read_memory
from nlc.runtime.scan import KERNELS


def token_coefficients(rule: str, q: torch.Tensor, **gates) -> dict:
    """P [B, C], c [B, C] (None without a carried buffer) and M [B, C, C] of the module docstring, for the
    chunk of q: the rule's own (its chunk.py's `token_coefficients`, nlc.rules.base.ChunkForm.per_token)."""
    return KERNELS[rule].token_coefficients(**gates, like=q)


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
                    **gates) -> torch.Tensor:
    """The same reads, token by token: each token's update applied to the running state by the rule's eager
    step (nlc.rules), then the state read at that token."""
    spec = RULES[rule]
    carries = spec.chunk.carries
    running, aux = dict(W), ({carries: dict(S)} if carries else {})
    g = {k: as_gate(v, q) for k, v in gates.items()}
    out = []
    for t in range(q.shape[1]):
        at = {k: v[:, t].view(-1, 1, 1) for k, v in g.items()}
        args = {a.name: at[a.name] for a in spec.args if a.name in at}
        for name in running:
            running[name] = memory_step(spec, name, running[name], per_token(grads[name], t, running[name]), aux,
                                        at["lr"], at["retain"], args, grads[name][0][:, t])
        out.append(read_memory(kind, running, q[:, t : t + 1], residual))
    return torch.cat(out, dim=1)
