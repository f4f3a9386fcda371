"""dgd, token by token: the naive reference of chunk.py (tests/test_runtime.py compares them)."""

from __future__ import annotations

import torch

from nlc.runtime.chunkops import as_gate, bcast, per_token


def reference(W: dict, grads: dict, lr, retain) -> dict:
    out = {}
    for name, W0 in W.items():
        k, d = grads[name]
        eta, a = as_gate(lr, d), as_gate(retain, d)
        Wt = W0
        for t in range(d.shape[1]):
            e, at = bcast(eta[:, t], Wt), bcast(a[:, t], Wt)
            if Wt.dim() == 3:
                kt = k[:, t]
                kW = torch.einsum("bi,bio->bo", kt, Wt)
                Wt = at * Wt - e * torch.einsum("bi,bo->bio", kt, kW) - e * per_token(grads[name], t, Wt)
            else:
                kt = k[:, t] if isinstance(k, torch.Tensor) else float(k)
                Wt = (at - e * kt * kt) * Wt - e * per_token(grads[name], t, Wt)
        out[name] = Wt
    return out
