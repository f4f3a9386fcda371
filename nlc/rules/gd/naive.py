"""gd, token by token: the naive reference of chunk.py (tests/test_runtime.py compares them)."""

from __future__ import annotations

from nlc.runtime.chunkops import as_gate, bcast, per_token


def reference(W: dict, grads: dict, lr, retain) -> dict:
    out = {}
    for name, W0 in W.items():
        d = grads[name][1]
        eta, a = as_gate(lr, d), as_gate(retain, d)
        Wt = W0
        for t in range(d.shape[1]):
            Wt = bcast(a[:, t], Wt) * Wt - bcast(eta[:, t], Wt) * per_token(grads[name], t, Wt)
        out[name] = Wt
    return out
