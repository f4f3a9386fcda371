"""Multi-head memories: a level split into h heads is h independent memories (docs/design.md §1.7).

Inside a forward, the heads are rows of the batch: a batch of B sequences is B*h rows, head-minor
(row b*h + i is head i of sequence b), so every read, gradient and rule runs once for all heads,
as for one memory with h times the batch. Keys, values and gates are split the same way, and the
heads' answers are put back side by side. The streaming state a forward takes and returns keeps
the heads apart, [B, h, ...], so that its first dimension is the batch like every other state's.
"""

from __future__ import annotations

import torch

from nlc.runtime.state import map_tensors


def split(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, w] -> [B*heads, T, w/heads]: row b*heads + i holds head i's features of sequence b.
    A 1-wide value (a gate shared by the heads) is repeated for every head."""
    B, T, w = x.shape
    if w == 1:
        return x.repeat_interleave(heads, dim=0)
    return x.reshape(B, T, heads, w // heads).transpose(1, 2).reshape(B * heads, T, w // heads)


def merge(y: torch.Tensor, heads: int) -> torch.Tensor:
    """[B*heads, T, w] -> [B, T, heads*w]: the heads' answers side by side, head 0 first."""
    Bh, T, w = y.shape
    return y.reshape(Bh // heads, heads, T, w).transpose(1, 2).reshape(Bh // heads, T, heads * w)


def fold(state, heads: int):
    """A level's state as the streaming state holds it, [B, heads, ...], as the forward uses it,
    [B*heads, ...] (nested dicts and lists walked; numbers as they are)."""
    return map_tensors(lambda t: t.reshape(t.shape[0] * t.shape[1], *t.shape[2:]), state)


def unfold(state, heads: int):
    """The inverse of `fold`: [B*heads, ...] -> [B, heads, ...]."""
    return map_tensors(lambda t: t.reshape(t.shape[0] // heads, heads, *t.shape[1:]), state)

