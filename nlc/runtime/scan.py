"""Chunk-parallel update rules: the state at the end of a chunk in a few matmuls.

Inside a chunk every per-token gradient is taken at the chunk-start state
(docs/design.md §1.2 "Frequency is exact"), so the per-token rule is a recurrence with
known inputs. For gd and momentum it is a linear scan: the chunk-end state is a
weighted sum of the gradients, with weights from products of the gates. For dgd
(delta rule) the running state feeds back through k k^T; the chunk-end state
follows from one unit-lower-triangular solve (the WY / UT form of DeltaNet).

Gradients arrive factored per weight: g_t = a_t^T d_t with a [B, C, i], d [B, C, o]
(`nlc.runtime.memory.grads`); elementwise memories pass (key, d) with g_t = key * d.
Gates are [B, C] tensors (or floats). Each kernel has a naive per-token reference
(`*_reference`) that the tests compare it against.
"""

from __future__ import annotations

import torch

from nlc.runtime.memory import objective_grad, safe_sqrt
from nlc.runtime.newton_schulz import newton_schulz
from nlc.runtime.rules import delta_momentum_decay, delta_momentum_decay_elementwise

Factor = tuple  # (a, d)


def as_gate(g, like: torch.Tensor) -> torch.Tensor:
    """A gate as a [B, C] tensor (floats and 0-dim scalars broadcast)."""
    B, C = like.shape[0], like.shape[1]
    if not isinstance(g, torch.Tensor):
        return like.new_full((B, C), float(g))
    if g.dim() == 3:
        g = g.squeeze(-1)
    return g.to(like.dtype).expand(B, C)


def suffix_exclusive(a: torch.Tensor) -> torch.Tensor:
    """out[:, t] = prod_{s > t} a[:, s] (1 for the last t), along dim 1."""
    ones = torch.ones_like(a[:, :1])
    rev = torch.flip(torch.cumprod(torch.flip(a[:, 1:], [1]), dim=1), [1])
    return torch.cat([rev, ones], dim=1)


def prefix_exclusive(a: torch.Tensor) -> torch.Tensor:
    """out[:, t] = prod_{s < t} a[:, s] (1 for t = 0), along dim 1."""
    ones = torch.ones_like(a[:, :1])
    return torch.cat([ones, torch.cumprod(a[:, :-1], dim=1)], dim=1)


def decay_matrix(b: torch.Tensor) -> torch.Tensor:
    """G[:, t, u] = prod_{u < r <= t} b[:, r] for t >= u, 0 above the diagonal. b [B, C] -> [B, C, C]."""
    C = b.shape[1]
    tri = torch.ones(C, C, dtype=torch.bool, device=b.device).tril(-1)  # t > u
    m = torch.where(tri, b[:, :, None], torch.ones_like(b)[:, :, None].expand(-1, -1, C))
    G = torch.cumprod(m, dim=1)
    return G.masked_fill(~torch.ones(C, C, dtype=torch.bool, device=b.device).tril(), 0.0)


def minus_weighted_sum(base: torch.Tensor, coef: torch.Tensor, factor: Factor, W: torch.Tensor) -> torch.Tensor:
    """base - sum_t coef_t g_t with g_t = a_t^T d_t (matrices) or a_t * d_t (elementwise memories).

    For matrices one baddbmm, which adds into `base` inside the matmul instead of writing the
    sum and subtracting it (the state is the largest tensor in a chunk step)."""
    a, d = factor
    if W.dim() == 3:
        return torch.baddbmm(base, (coef.unsqueeze(-1) * a).transpose(1, 2), d, alpha=-1)
    g = d * a if isinstance(a, torch.Tensor) else d * float(a)
    c = coef if coef.dim() == 3 else coef.unsqueeze(-1)
    return base - (c * g).sum(1)


def _bcast(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """[B] -> broadcastable against W [B, ...]."""
    return x.view(-1, *([1] * (W.dim() - 1)))


def _any_d(grads: dict) -> torch.Tensor:
    return next(iter(grads.values()))[1]


# Each closed-form rule is split in two: coefficients that depend only on the gates (so
# generated code can compute them for every chunk before the loop) and the application
# to the state, which needs the chunk's gradients. `*_chunk` composes the two.


def gd_coefficients(lr, retain, like: torch.Tensor) -> dict:
    eta, a = as_gate(lr, like), as_gate(retain, like)
    return {"coef": eta * suffix_exclusive(a), "total": a.prod(1)}


def gd_apply(W: dict, grads: dict, c: dict) -> dict:
    return {n: minus_weighted_sum(_bcast(c["total"], W0) * W0, c["coef"], grads[n], W0) for n, W0 in W.items()}


def gd_chunk(W: dict, grads: dict, lr, retain) -> dict:
    """gd over a chunk: W_t = a_t W_{t-1} - eta_t g_t, all g_t at the chunk-start state."""
    return gd_apply(W, grads, gd_coefficients(lr, retain, _any_d(grads)))


def momentum_coefficients(lr, retain, beta, like: torch.Tensor) -> dict:
    eta, a, b = as_gate(lr, like), as_gate(retain, like), as_gate(beta, like)
    G = decay_matrix(b)  # [B, t, u]: prod_{u < r <= t} beta_r
    prefix_b = torch.cumprod(b, dim=1)  # prod_{r <= t} beta_r
    suffix_a = suffix_exclusive(a)  # prod_{s > t} a_s
    return {"coef_S": eta * G[:, -1], "coef_W": eta * torch.einsum("bt,btu->bu", suffix_a, G),
            "carry": (suffix_a * prefix_b).sum(1), "total_a": a.prod(1), "total_b": prefix_b[:, -1]}


def momentum_apply(W: dict, S: dict, grads: dict, c: dict) -> tuple[dict, dict]:
    W_out, S_out = {}, {}
    for name, W0 in W.items():
        S0, g = S[name], grads[name]
        S_out[name] = minus_weighted_sum(_bcast(c["total_b"], S0) * S0, c["coef_S"], g, S0)
        W_out[name] = minus_weighted_sum(torch.addcmul(_bcast(c["total_a"], W0) * W0, _bcast(c["carry"], S0), S0),
                                         c["coef_W"], g, W0)
    return W_out, S_out


def momentum_chunk(W: dict, S: dict, grads: dict, lr, retain, beta) -> tuple[dict, dict]:
    """momentum over a chunk: S_t = beta_t S_{t-1} - eta_t g_t; W_t = a_t W_{t-1} + S_t (Titans eqs. 9-14)."""
    return momentum_apply(W, S, grads, momentum_coefficients(lr, retain, beta, _any_d(grads)))


def dgd_coefficients(lr, retain, like: torch.Tensor) -> dict:
    eta, a = as_gate(lr, like), as_gate(retain, like)
    C = a.shape[1]
    lower = torch.ones(C, C, dtype=torch.bool, device=a.device).tril(-1)
    cum = torch.cumprod(torch.where(lower, a[:, :, None], torch.ones_like(a)[:, :, None].expand(-1, -1, C)),
                        dim=1)  # [B, u, j] = prod_{j<s<=u} a_s
    gamma = torch.cat([torch.ones_like(cum[:, :1]), cum[:, :-1]], dim=1)  # prod_{j<s<u} a_s
    return {"eta": eta, "a": a, "gamma": eta[:, :, None] * gamma, "prefix": prefix_exclusive(a),
            "suffix": suffix_exclusive(a), "total": a.prod(1)}


def dgd_apply(W: dict, grads: dict, c: dict) -> dict:
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
        C = k.shape[1]
        L = (c["gamma"] * torch.einsum("bui,bji->buj", k, k)).tril(-1)
        rhs = eta[:, :, None] * (c["prefix"][:, :, None] * torch.einsum("bci,bio->bco", k, W0) + d)
        eye = torch.eye(C, dtype=k.dtype, device=k.device)
        R = torch.linalg.solve_triangular(eye + L, rhs, upper=False, unitriangular=True)
        out[name] = minus_weighted_sum(_bcast(c["total"], W0) * W0, c["suffix"], (k, R), W0)
    return out


def dgd_chunk(W: dict, grads: dict, lr, retain) -> dict:
    """dgd over a chunk: W_t = (a_t I - eta_t k_t^T k_t) W_{t-1} - eta_t k_t^T d_t (NL eqs. 56-57, 88).

    k_t is each weight's layer input (the first gradient factor). With r_t =
    eta_t (k_t W_{t-1} + d_t): W_C = P W_0 - sum_u (prod_{s>u} a_s) k_u^T r_u, and the
    r_t solve (I + L) R = eta (P_{t-1} K W_0 + D), L[u, j] = eta_u gamma_uj k_u.k_j (j < u).
    """
    return dgd_apply(W, grads, dgd_coefficients(lr, retain, _any_d(grads)))


COEFFICIENTS = {"gd": gd_coefficients, "momentum": momentum_coefficients, "dgd": dgd_coefficients}


def chunk_coefficients(rule: str, chunk: int, **gates) -> list[dict]:
    """Every full chunk's gate coefficients at once, before the chunk loop: a list, one dict a chunk.

    Gates are whole-sequence tensors [B, T, 1] (or floats and 0-dim scalars); the T // chunk
    full chunks are folded into the batch, computed together, and unfolded.
    """
    like = next(g for g in gates.values() if isinstance(g, torch.Tensor) and g.dim() == 3)
    B, T = like.shape[0], like.shape[1]
    n = T // chunk
    if n == 0:
        return []
    folded = {k: (g[:, : n * chunk].reshape(B * n, chunk) if isinstance(g, torch.Tensor) and g.dim() == 3 else g)
              for k, g in gates.items()}
    template = like.new_empty(B * n, chunk)
    coefs = COEFFICIENTS[rule](**folded, like=template)
    # chunk-major and contiguous: every chunk's coefficients have the same strides whatever T is
    per_chunk = {k: v.reshape(B, n, *v.shape[1:]).movedim(1, 0).contiguous().unbind(0) for k, v in coefs.items()}
    return [{k: v[j] for k, v in per_chunk.items()} for j in range(n)]


# ---- naive per-token references (tests compare the kernels with these) ----


def per_token(factor: Factor, t: int, W: torch.Tensor) -> torch.Tensor:
    a, d = factor
    if W.dim() == 3:
        return torch.einsum("bi,bo->bio", a[:, t], d[:, t])
    return d[:, t] * (a[:, t] if isinstance(a, torch.Tensor) else float(a))


def gd_reference(W: dict, grads: dict, lr, retain) -> dict:
    out = {}
    for name, W0 in W.items():
        d = grads[name][1]
        eta, a = as_gate(lr, d), as_gate(retain, d)
        Wt = W0
        for t in range(d.shape[1]):
            Wt = _bcast(a[:, t], Wt) * Wt - _bcast(eta[:, t], Wt) * per_token(grads[name], t, Wt)
        out[name] = Wt
    return out


def momentum_reference(W: dict, S: dict, grads: dict, lr, retain, beta) -> tuple[dict, dict]:
    W_out, S_out = {}, {}
    for name, W0 in W.items():
        d = grads[name][1]
        eta, a, b = as_gate(lr, d), as_gate(retain, d), as_gate(beta, d)
        Wt, St = W0, S[name]
        for t in range(d.shape[1]):
            St = _bcast(b[:, t], St) * St - _bcast(eta[:, t], St) * per_token(grads[name], t, Wt)
            Wt = _bcast(a[:, t], Wt) * Wt + St
        W_out[name], S_out[name] = Wt, St
    return W_out, S_out


def dgd_reference(W: dict, grads: dict, lr, retain) -> dict:
    out = {}
    for name, W0 in W.items():
        k, d = grads[name]
        eta, a = as_gate(lr, d), as_gate(retain, d)
        Wt = W0
        for t in range(d.shape[1]):
            e, at = _bcast(eta[:, t], Wt), _bcast(a[:, t], Wt)
            if Wt.dim() == 3:
                kt = k[:, t]
                kW = torch.einsum("bi,bio->bo", kt, Wt)
                Wt = at * Wt - e * torch.einsum("bi,bo->bio", kt, kW) - e * per_token(grads[name], t, Wt)
            else:
                kt = k[:, t] if isinstance(k, torch.Tensor) else float(k)
                Wt = (at - e * kt * kt) * Wt - e * per_token(grads[name], t, Wt)
        out[name] = Wt
    return out


# ---- the general case: coupled levels and non-linear rules, token by token inside a chunk ----


def _gate_t(g, t: int, W: torch.Tensor):
    if isinstance(g, torch.Tensor):
        if g.dim() == 0:
            return g
        return _bcast(g[:, t], W)
    return g


def sequential_chunk(steps: list[dict], states: dict, grads: dict) -> dict:
    """Run coupled levels token by token over one chunk (the rules without a closed form).

    steps: one dict a level, in update order: {"name", "rule", "objective", "context"
    ("kv" or the name of the level whose gradients it learns from), "update_by"
    (a level name or None), "lr", "retain", "beta", "steps", "beta1", "beta2", "eps"}
    with gates as [B, C] tensors or floats. states: name -> {"W": {...}, "aux": {...},
    "n": int} at the chunk start. grads: name -> factored gradients for "kv" levels.
    Returns the states at the chunk end. Mirrors `nlc.interp.ReferenceBlock.rule`.
    """
    frozen = {s["name"]: states[s["name"]]["W"] for s in steps}
    running = {n: dict(W) for n, W in frozen.items()}
    aux = {s["name"]: {k: (dict(v) if isinstance(v, dict) else v) for k, v in states[s["name"]]["aux"].items()}
           for s in steps}
    C = next(iter(next(iter(grads.values())).values()))[1].shape[1] if grads else 0
    for t in range(C):
        g_t: dict[str, dict] = {}
        # gradients at the chunk-start state; a grad(other) level needs the other's gradient first
        for s in sorted(steps, key=lambda s: s["context"] != "kv"):
            n = s["name"]
            if s["context"] == "kv":
                g_t[n] = {w: per_token(f, t, frozen[n][w]) for w, f in grads[n].items()}
            else:
                g_t[n] = {w: objective_grad(s["objective"], frozen[n][w], g_t[s["context"]][w]) for w in frozen[n]}
        for s in steps:  # rules on the running state, in update order
            n = s["name"]
            for w in running[n]:
                W = running[n][w]
                eta, a = _gate_t(s["lr"], t, W), _gate_t(s["retain"], t, W)
                g = g_t[n][w]
                key = grads[n][w][0] if s["context"] == "kv" else 1.0
                running[n][w] = _rule(s, w, W, g, key, t, eta, a, aux[n], running, newton_schulz)
            if s["rule"] == "adam":
                aux[n]["n"] = aux[n]["n"] + 1
    return {n: {"W": running[n], "aux": aux[n]} for n in running}


def _rule(s, w, W, g, key, t, eta, a, aux, running, newton_schulz):
    if s.get("update_by"):
        return a * W - eta * running[s["update_by"]][w]
    r = s["rule"]
    if r == "gd":
        return a * W - eta * g
    if r in ("momentum", "muon"):
        S = _gate_t(s["beta"], t, W) * aux["S"][w] - eta * g
        aux["S"][w] = S
        return a * W + (newton_schulz(S, int(s["steps"])) if r == "muon" and W.dim() == 3 else S)
    if r == "dgd":
        if W.dim() == 3 and isinstance(key, torch.Tensor):
            k = key[:, t]
            kW = torch.einsum("bi,bio->bo", k, W)
            return a * W - eta * torch.einsum("bi,bo->bio", k, kW) - eta * g
        kt = key[:, t] if isinstance(key, torch.Tensor) else float(key)
        return (a - eta * kt * kt) * W - eta * g
    if r == "delta_momentum":
        beta = _gate_t(s["beta"], t, W)
        S = aux["S"][w]
        if W.dim() == 3:  # [B, d_in, d_out]: the decay acts on the input side (NL eq. 48)
            S = delta_momentum_decay(S, g, beta, input_axis=-2) - eta * g
        else:
            S = delta_momentum_decay_elementwise(S, g, beta) - eta * g
        aux["S"][w] = S
        return a * W + S
    if r == "adam":
        b1, b2, eps = float(s["beta1"]), float(s["beta2"]), float(s["eps"])
        n = aux["n"] + 1
        aux["m"][w] = b1 * aux["m"][w] + (1 - b1) * g
        aux["v"][w] = b2 * aux["v"][w] + (1 - b2) * g * g
        m_hat, v_hat = aux["m"][w] / (1 - b1**n), aux["v"][w] / (1 - b2**n)
        return a * W - eta * m_hat / (safe_sqrt(v_hat) + eps)
    raise ValueError(f"unknown rule {r}")


def concat_pending(pending: list) -> tuple:
    """Join a slow level's chunks into one period: (factored gradients, gates) along time."""
    grads = None
    if pending[0][0] is not None:
        grads = {}
        for w in pending[0][0]:
            a_parts = [p[0][w][0] for p in pending]
            a = torch.cat(a_parts, dim=1) if isinstance(a_parts[0], torch.Tensor) else a_parts[0]
            grads[w] = (a, torch.cat([p[0][w][1] for p in pending], dim=1))
    gates = {}
    for k, g in pending[0][1].items():
        parts = [p[1][k] for p in pending]
        gates[k] = torch.cat(parts, dim=1) if isinstance(g, torch.Tensor) and g.dim() >= 2 else g
    return grads, gates
