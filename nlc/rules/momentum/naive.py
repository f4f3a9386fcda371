"""momentum, token by token: the naive reference of chunk.py (tests/test_runtime.py compares them)."""

from __future__ import annotations

from nlc.runtime.chunkops import as_gate, bcast, per_token


def reference(W: dict, S: dict, grads: dict, lr, retain, beta) -> tuple[dict, dict]:
    W_out, S_out = {}, {}
    for name, W0 in W.items():
        d = grads[name][1]
        eta, a, b = as_gate(lr, d), as_gate(retain, d), as_gate(beta, d)
        Wt, St = W0, S[name]
        for t in range(d.shape[1]):
            St = bcast(b[:, t], St) * St - bcast(eta[:, t], St) * per_token(grads[name], t, Wt)
            Wt = bcast(a[:, t], Wt) * Wt + St
        W_out[name], S_out[name] = Wt, St
    return W_out, S_out
