"""Chunk-parallel learning, as generated model code calls it (`rt_scan`): every rule through its registry entry.

Inside a chunk every per-token gradient is taken at the chunk-start state
(docs/design.md §1.2 "Frequency is exact"), so the per-token rule is a recurrence with
known inputs. A rule with a closed form (nlc.rules: `Rule.chunk`) advances a level by a
chunk in a few matmuls: `chunk` (or `chunk_coefficients` before the loop and `chunk_apply`
inside it). Coupled levels and rules without a closed form run token by token inside the
chunk (`sequential_chunk`), with each rule's eager step. Nothing here knows a rule by name.

Gradients arrive factored per weight: g_t = a_t^T d_t with a [B, C, i], d [B, C, o]
(`nlc.runtime.memory.grads`); elementwise memories pass (key, d) with g_t = key * d.
Gates are [B, C] tensors (or floats).
"""

from __future__ import annotations

import importlib

import torch

from nlc.rules import RULES, number_arg
from nlc.rules.ops import copy_aux, memory_step
from nlc.runtime.chunkops import any_d, gate_t, per_token
from nlc.runtime.memory import objective_grad

# each closed-form rule's kernels (nlc/rules/<rule>/chunk.py), imported once
KERNELS = {name: importlib.import_module(f"{rule.chunk.package}.chunk") for name, rule in RULES.items() if rule.chunk}


def chunk(rule: str, W: dict, *carried_and_grads, **gates):
    """A closed-form rule over one chunk: the new state (and its carried buffer, `Rule.chunk.carries`)."""
    return KERNELS[rule].chunk(W, *carried_and_grads, **gates)


def chunk_apply(rule: str, W: dict, *carried_and_grads, **products):
    """A closed-form rule over one chunk, with the chunk's coefficients from `chunk_coefficients`
    (`products=`: the gradients' key products, `ChunkForm.key_products` rules)."""
    return KERNELS[rule].apply(W, *carried_and_grads, **products)


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
    coefs = KERNELS[rule].coefficients(**folded, like=template)
    # chunk-major and contiguous: every chunk's coefficients have the same strides whatever T is
    per_chunk = {k: v.reshape(B, n, *v.shape[1:]).movedim(1, 0).contiguous().unbind(0) for k, v in coefs.items()}
    return [{k: v[j] for k, v in per_chunk.items()} for j in range(n)]


# ---- the general case: coupled levels and non-linear rules, token by token inside a chunk ----


def sequential_chunk(steps: list[dict], states: dict, grads: dict) -> dict:
    """Run coupled levels token by token over one chunk (the rules without a closed form).

    steps: one dict a level, in update order: {"name", "rule", "objective", "context"
    ("kv", the name of the level whose gradients it learns from, or "by": moved by its updater's
    state alone, no gradient), "update_by"
    (a level name or None), "lr", "retain", and the rule's arguments by name}
    with gates as [B, C] tensors or floats. states: name -> {"W": {...}, "aux": {...},
    "n": int} at the chunk start, and "running": {...} for a level inside its period (slower than
    the chunk, in a group of different periods): the state its rule has reached, which its reads
    and gradients do not see before its period ends ("W" is what they see). grads: name -> factored
    gradients for "kv" levels. Returns the running states at the chunk end. Mirrors
    `nlc.interp.ReferenceBlock.rule`.
    """
    frozen = {s["name"]: states[s["name"]]["W"] for s in steps}
    running = {s["name"]: dict(states[s["name"]].get("running", frozen[s["name"]])) for s in steps}
    aux = {s["name"]: copy_aux(states[s["name"]]["aux"]) for s in steps}
    C = any_d(next(iter(grads.values()))).shape[1] if grads else 0
    # gradients at the chunk-start state; a grad(other) level needs the other's gradient first
    grad_order = sorted(steps, key=lambda s: s["context"] not in ("kv", "by"))
    for t in range(C):
        g_t: dict[str, dict] = {}
        for s in grad_order:
            n = s["name"]
            if s["context"] == "kv":
                g_t[n] = {w: per_token(f, t, frozen[n][w]) for w, f in grads[n].items()}
            elif s["context"] == "by":
                g_t[n] = {w: None for w in frozen[n]}
            else:
                g_t[n] = {w: objective_grad(s["objective"], frozen[n][w], g_t[s["context"]][w]) for w in frozen[n]}
        for s in steps:  # rules on the running state, in update order
            n = s["name"]
            for w in running[n]:
                W = running[n][w]
                eta, a = gate_t(s["lr"], t, W), gate_t(s["retain"], t, W)
                key = grads[n][w][0] if s["context"] == "kv" else 1.0
                running[n][w] = _rule(s, w, W, g_t[n][w], key, t, eta, a, aux[n], running)
            if RULES[s["rule"]].counts and not s.get("update_by"):
                aux[n]["n"] = aux[n]["n"] + 1
    return {n: {"W": running[n], "aux": aux[n]} for n in running}


def _rule(s, w, W, g, key, t, eta, a, aux, running):
    """One level's weight w after token t: its rule's eager step (or the state of the level that updates it)."""
    if s.get("update_by"):
        return a * W - eta * running[s["update_by"]][w]
    rule = RULES[s["rule"]]
    args = {arg.name: number_arg(arg, gate_t(s[arg.name], t, W)) for arg in rule.args}
    return memory_step(rule, w, W, g, aux, eta, a, args, key[:, t] if isinstance(key, torch.Tensor) else key)


def pend(pending, grads, gates: dict, at: int, period: int) -> tuple:
    """A slower level's chunk written into its period's buffers: (factored gradients, gates), each
    tensor [B, period, ...] with this chunk's tokens at positions at .. at + C.

    The buffers have the same shapes at every chunk (allocated at the first chunk of a forward,
    when `pending` is None, and overwritten by every period after), so a compiled chunk step
    takes them as it takes the states, instead of a list that grows chunk by chunk. At the
    period's end they hold the whole period, in order.
    Gradient factors that are numbers (a constant key) and gates that are numbers or scalars
    are the same at every token: kept as they are.
    """
    def put(buffer, value):
        if not isinstance(value, torch.Tensor) or value.dim() < 2:
            return value
        if buffer is None:
            buffer = value.new_zeros(value.shape[0], period, *value.shape[2:])
        return torch.slice_scatter(buffer, value, dim=1, start=at, end=at + value.shape[1])

    old_grads, old_gates = pending if pending is not None else (None, None)
    new_grads = None if grads is None else {
        w: tuple(put(None if old_grads is None else old_grads[w][i], f[i]) for i in range(2))
        for w, f in grads.items()}
    new_gates = {k: put(None if old_gates is None else old_gates[k], g) for k, g in gates.items()}
    return new_grads, new_gates
