"""Slow (outer-level) layers shared by the interpreter and the generated code.

Each layer works on a whole chunk `[B, T, D]` (`forward`) and carries whatever
history it needs between calls in an explicit cache (streaming), so that running
a sequence in pieces equals running it whole. Parameter names and creation order
are part of the contract: the interpreter and generated modules build the same
layers in the same order, so their state_dicts are interchangeable.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nlc.builtins import attention_cache_length

EPS = 1e-6


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """x / ||x||_2 over the last dimension."""
    return F.normalize(x, dim=-1, eps=EPS)


class Linear(nn.Linear):
    """x W^T (+ b); default bias off."""

    def __init__(self, d_in: int, d_out: int, bias: bool = False):
        super().__init__(d_in, d_out, bias=bias)


class RMSNorm(nn.Module):
    """RMSNorm with a learned gain."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, EPS)


class LearnedScalar(nn.Module):
    """A learned scalar gate (a slow parameter)."""

    def __init__(self, init: float):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(float(init)))

    def forward(self) -> torch.Tensor:
        return self.value


class SwiGLU(nn.Module):
    """W3 (silu(W1 x) * W2 x)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = Linear(dim, hidden)
        self.w2 = Linear(dim, hidden)
        self.w3 = Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w3(F.silu(self.w1(x)) * self.w2(x))


class CausalConv(nn.Module):
    """Causal depthwise 1-D convolution over time with `width` taps.

    cache: the last `width - 1` inputs `[B, width-1, D]` (zeros at the start).
    """

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.width = width
        bound = 1 / math.sqrt(width)
        self.weight = nn.Parameter(torch.empty(dim, width).uniform_(-bound, bound))

    def init_cache(self, batch: int, dim: int, like: torch.Tensor) -> torch.Tensor:
        return like.new_zeros(batch, self.width - 1, dim)

    def forward(self, x: torch.Tensor, cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, D], cache [B, W-1, D] -> (y [B, T, D], new cache)."""
        T = x.shape[1]
        full = torch.cat([cache, x], dim=1)  # [B, W-1+T, D]
        windows = full.unfold(1, self.width, 1)  # [B, T, D, W]
        y = (windows * self.weight).sum(-1)
        return y, full[:, T:].contiguous()  # the strides of a fresh cache (a compiled step sees one layout)


def rope(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding. x [B, H, T, Dh], pos [T] (absolute positions)."""
    half = x.shape[-1] // 2
    freqs = 10000.0 ** (-torch.arange(half, device=x.device, dtype=x.dtype) / half)
    angles = pos.to(x.dtype)[:, None] * freqs[None, :]  # [T, half]
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half], x[..., half : 2 * half]
    rotated = torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
    return torch.cat([rotated, x[..., 2 * half :]], dim=-1)


class Attention(nn.Module):
    """Causal softmax attention with RoPE: a non-parametric memory with infinite period.

    window > 0: each token sees the last `window` tokens (itself included).
    segment > 0: each token sees only its own aligned segment of `segment` tokens.
    persistent > 0: learned key/value tokens every query sees (Titans' persistent memory).
    memory: an extra stream [B, T, D] projected to keys/values at the same positions
    (Titans MAC: the memory's answers are attended to alongside the tokens).

    cache: {"k", "v": past token keys/values [B, H, L, Dh]; "mk", "mv": past memory
    keys/values; "pos": the absolute position of the next token (a Python int)}.
    Only what future queries can still see is kept, so the cache is bounded when
    window or segment is set. With a window it has a fixed length, `capacity` (the
    window less one, or less if segments are shorter), from the first call: the
    slots before the sequence's start hold zeros at negative positions, which no
    query sees (a call at the sequence's start leaves them out). So a chunk step
    that reads it has the same shapes at every later chunk, and one compiled graph
    serves them all (nlc.runtime.compile).
    """

    def __init__(self, dim: int, heads: int = 1, window: int = 0, segment: int = 0, persistent: int = 0,
                 memory: bool = False):
        super().__init__()
        self.dim, self.heads, self.window, self.segment = dim, heads, window, segment
        self.head_dim = dim // heads
        self.scale = 1 / math.sqrt(self.head_dim)
        self.q = Linear(dim, dim)
        self.k = Linear(dim, dim)
        self.v = Linear(dim, dim)
        self.o = Linear(dim, dim)
        self.n_persistent = persistent
        if persistent:
            self.persistent_k = nn.Parameter(torch.randn(heads, persistent, self.head_dim) * self.scale)
            self.persistent_v = nn.Parameter(torch.randn(heads, persistent, self.head_dim) * self.scale)
        self.memory = memory

    @property
    def capacity(self) -> int | None:
        """The cache's fixed length (window set), or None: it keeps what later queries can see,
        a length that changes from call to call (a segment's tokens so far; everything without
        window or segment). The rule is nlc.builtins.attention_cache_length, which the size
        estimate counts too."""
        return attention_cache_length(self.window, self.segment)

    def init_cache(self, batch: int, like: torch.Tensor) -> dict:
        empty = like.new_zeros(batch, self.heads, 0, self.head_dim)
        past = empty if self.capacity is None else like.new_zeros(batch, self.heads, self.capacity, self.head_dim)
        return {"k": past, "v": past, "mk": past if self.memory else empty, "mv": past if self.memory else empty,
                "pos": 0}

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, Dh]

    def _visible(self, qpos: torch.Tensor, kpos: torch.Tensor) -> torch.Tensor:
        visible = (kpos[None, :] <= qpos[:, None]) & (kpos[None, :] >= 0)  # causal, [T, L]; a fixed cache's
        # slots before the sequence's start have negative positions
        if self.window:
            visible = visible & (kpos[None, :] > qpos[:, None] - self.window)
        if self.segment:
            visible = visible & (kpos[None, :] // self.segment == qpos[:, None] // self.segment)
        return visible

    def _kept(self, length: int, next_pos: int) -> int:
        """How many of the newest cached positions a query at next_pos or later can still see."""
        if self.capacity is not None:
            return min(length, self.capacity)
        return min(length, next_pos % self.segment) if self.segment else length

    def _stream(self, q, qpos, k, v, past_k, past_v, start: int):
        """One stream's (the tokens', or the memory's) masked scores [B, H, T, L] and values [B, H, L, Dh],
        and what the cache keeps of its keys and values. Before the first token a fixed cache holds only
        zeros that no query sees: they are left out of the scores (a whole sequence from its start pays
        nothing for them) and fill the kept cache up to its length."""
        T = q.shape[2]
        fresh = self.capacity is not None and start == 0
        keys, values = (k, v) if fresh else (torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2))
        kpos = torch.arange(start + T - keys.shape[2], start + T, device=q.device)
        scores = torch.einsum("bhtd,bhld->bhtl", q, keys).mul(self.scale)
        scores = scores.masked_fill(~self._visible(qpos, kpos), -math.inf)
        kept_k, kept_v = (torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)) if fresh else (keys, values)
        keep = self._kept(kept_k.shape[2], start + T)
        return scores, values, kept_k[:, :, kept_k.shape[2] - keep:], kept_v[:, :, kept_v.shape[2] - keep:]

    def forward(self, x: torch.Tensor, cache: dict, memory: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """x [B, T, D] (and memory [B, T, D]) -> (y [B, T, D], new cache)."""
        B, T, _ = x.shape
        start = cache["pos"]
        qpos = torch.arange(start, start + T, device=x.device)
        q = rope(self._split(self.q(x)), qpos)
        scores, values, *kept = self._stream(q, qpos, rope(self._split(self.k(x)), qpos), self._split(self.v(x)),
                                             cache["k"], cache["v"], start)
        parts_s, parts_v = [scores], [values]
        new = {"pos": start + T, "k": kept[0], "v": kept[1], "mk": cache["mk"], "mv": cache["mv"]}
        if self.memory:
            scores, values, new["mk"], new["mv"] = self._stream(
                q, qpos, rope(self._split(self.k(memory)), qpos), self._split(self.v(memory)), cache["mk"], cache["mv"],
                start)
            parts_s.append(scores)
            parts_v.append(values)
        if self.n_persistent:
            pk = self.persistent_k.unsqueeze(0).expand(B, -1, -1, -1)
            pv = self.persistent_v.unsqueeze(0).expand(B, -1, -1, -1)
            parts_s.insert(0, torch.einsum("bhtd,bhpd->bhtp", q, pk).mul(self.scale))
            parts_v.insert(0, pv)
        attn = torch.softmax(torch.cat(parts_s, dim=-1), dim=-1)
        y = torch.einsum("bhtl,bhld->bhtd", attn, torch.cat(parts_v, dim=2))
        return self.o(y.transpose(1, 2).reshape(B, T, self.dim)), new
