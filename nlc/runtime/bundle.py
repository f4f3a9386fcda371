"""Bundles: in-context levels that learn alike, stacked into one state along the batch.

Levels of a block with the same memory shape, closed-form rule, period, gates, objective
and key (Hope's M_k, M_v, M_eta, M_alpha and M_mem) differ only in their weights and
values. Stacked member-major along the batch (rows [i*B, (i+1)*B) are member i), they
read, take gradients and learn as one level with batch G*B: one matmul where there were
G, one closed-form kernel where there were G (nlc.codegen.emit decides what is bundled;
docs/design.md §2.7). Every row is computed exactly as the member alone would compute it.
"""

from __future__ import annotations

import torch


def stack(states: list[dict]) -> dict:
    """The members' states {name: [B, ...]} as one {name: [G*B, ...]}, member-major."""
    return {name: torch.cat([s[name] for s in states]) for name in states[0]}


def split(state: dict, members: int) -> list[dict]:
    """The inverse of `stack`: one state per member (views of the bundle's tensors)."""
    parts = {name: t.chunk(members) for name, t in state.items()}
    return [{name: parts[name][i] for name in state} for i in range(members)]


def take(state: dict, rows: tuple[int, ...], members: int) -> dict:
    """The bundle's state restricted to some members, in the order given (a view for a run of
    consecutive members, else a copy)."""
    B = next(iter(state.values())).shape[0] // members
    if list(rows) == list(range(rows[0], rows[0] + len(rows))):
        return {name: t[rows[0] * B:(rows[-1] + 1) * B] for name, t in state.items()}
    return {name: torch.cat([t[i * B:(i + 1) * B] for i in rows]) for name, t in state.items()}


def tile(x, members: int):
    """A per-sequence tensor ([B, ...], at least 2 dims) repeated for every member along the batch;
    numbers and scalar tensors (the same for every member) as they are."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        return x
    return x.repeat(members, *([1] * (x.dim() - 1)))
