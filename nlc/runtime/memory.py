"""Memories: initial states, reads, and closed-form per-token gradients.

A memory's state is a dict of batched tensors (one memory per sequence):
  linear(d_in, d_out):  {"W": [B, d_in, d_out]},            M(k) = k W
  mlp(dim, hidden, L):  {"W0": [B, d, h], ..., "W{L-1}": [B, h, d]},
                        M(k) = a_{L-1} W_{L-1} (+ k if residual), a_0 = k, a_{l+1} = gelu(a_l W_l)
  vector(n), like(...): {"m": [B, n]} or the shapes of another memory; M(k) = m * k
Objectives (per token, on y = M(k)): their value and gradient are nlc.objectives' entries.

`grads` returns, for every weight W_l, the factors (a_l, d_l) with
dl/dW_l = a_l^T d_l per token, so a chunk's gradients are never materialised:
sum_t c_t g_t = (c * A)^T D is one matmul. The interpreter does not use them; it
takes gradients with torch.autograd (tests compare the two).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nlc.objectives import OBJECTIVES


def act(z: torch.Tensor) -> torch.Tensor:
    return F.gelu(z)


def act_backward(d: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """d * gelu'(z), gelu'(z) = Phi(z) + z phi(z), in one kernel (torch's own, differentiable twice)."""
    return torch.ops.aten.gelu_backward(d, z)


def n_layers(state: dict) -> int:
    return sum(1 for k in state if k.startswith("W") and k[1:].isdigit())


def read(kind: str, state: dict, k: torch.Tensor | None, residual: bool = False) -> torch.Tensor:
    """M(k) for a batched state; k is [B, d_in] or [B, T, d_in] (None reads an elementwise memory)."""
    return read_with_cache(kind, state, k, residual)[0]


def _per_token(product, a: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """product(a, W) for batched [B, T, .] rows, applied to a [B, d] (one token) as T = 1."""
    return product(a.unsqueeze(1), W).squeeze(1) if a.dim() == 2 else product(a, W)


def _mm(a: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    # a [B, d] or [B, T, d]; W [B, d, e]. matmul, not einsum: einsum's permutes and views cost
    # more dispatches than the product itself at a chunk's sizes (nlc bench dispatch counts)
    return _per_token(torch.bmm, a, W)


class _TimesTransposed(torch.autograd.Function):
    """d W^T for d [B, T, o], W [B, h, o] -> [B, T, h] (a gradient passed back through a layer), with
    W's gradient computed as g^T d, in W's own layout. torch.bmm(d, W.transpose(1, 2)) gives it as the
    transpose of a [B, o, h] product instead: under torch.compile on the CPU, adding that to W's other
    gradient contributions became a scalar loop reading one operand with a stride of h floats, 1.5 ms
    of titans_lmm's 7.5 ms chunk step at dim 256. The same products, so the same values bit for bit
    (tests/test_runtime.py); titans_lmm's compiled forward+backward +9% at dim 256 (benchmarks/README.md).
    Its backward is torch operations, so it can be differentiated again; forward and context are
    separate (`setup_context`), so torch.func's transforms (grad, vmap) work through it too."""

    generate_vmap_rule = True

    @staticmethod
    def forward(d: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
        return torch.bmm(d, W.transpose(1, 2))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        d, W = ctx.saved_tensors
        return torch.bmm(g, W), torch.bmm(g.transpose(1, 2), d)


def times_transposed(d: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """d W^T for d [B, o] or [B, T, o] and W [B, h, o] (`_TimesTransposed`)."""
    return _per_token(_TimesTransposed.apply, d, W)


def read_with_cache(kind: str, state: dict, k, residual: bool = False):
    """Return (M(k), layer inputs [a_0..a_{L-1}], layer products [a_0 W_0..a_{L-1} W_{L-1}]).

    A layer's product is its output before the activation (the next layer's pre-activation) or,
    for the last layer, before the residual: `linear` memories have one, [k W]; elementwise ones none."""
    if kind in ("vector", "like") and "m" in state:
        m = state["m"] if not isinstance(k, torch.Tensor) or k.dim() == 2 else state["m"].unsqueeze(1)
        return (m if k is None else m * k), [k], []
    if kind == "linear" or (kind == "like" and "W" in state):
        y = _mm(k, state["W"])
        return y, [k], [y]
    L = n_layers(state)
    a, inputs, products = k, [k], []
    for i in range(L - 1):
        z = _mm(a, state[f"W{i}"])
        products.append(z)
        a = act(z)
        inputs.append(a)
    y = _mm(a, state[f"W{L - 1}"])
    products.append(y)
    return (y + k if residual else y), inputs, products


def _key_products(state: dict, products: list) -> dict:
    """{weight: its layer input times it} at the keys (`key_products` rules reuse them, nlc.rules.dgd)."""
    if "m" in state:
        return {}
    if "W" in state:
        return {"W": products[0]}
    return {f"W{i}": z for i, z in enumerate(products)}


def safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """sqrt(v) for v >= 0 whose gradient at v = 0 is 0, not inf (Adam's second moment of a weight
    whose gradient is exactly zero would otherwise make every gradient through the update NaN)."""
    pos = v > 0
    return torch.where(pos, v, torch.ones_like(v)).sqrt() * pos


def objective_value(objective: tuple, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The per-token inner loss (objective: the plan's (name, *arguments); nlc.objectives), summed
    over features: [...] -> [...] (last dim reduced)."""
    name, *args = objective
    return OBJECTIVES[name].value(y, v, torch, *args).sum(-1)


def objective_grad(objective: tuple, y: torch.Tensor, v) -> torch.Tensor:
    """d objective / d y, elementwise, broadcast to y's shape where it has fewer entries (the dot
    objective's gradient -v does not read y; `v` may be a number) (nlc.objectives)."""
    name, *args = objective
    g = OBJECTIVES[name].grad(y, v, torch, *args)
    if not isinstance(g, torch.Tensor):
        return torch.full_like(y, g)
    return g if g.shape == y.shape else g.expand(torch.broadcast_shapes(g.shape, y.shape))


def grads(kind: str, state: dict, k, v, objective: tuple, residual: bool = False, products: bool = False):
    """Per-token gradient factors {weight: (a, d)} with dl/dW = a^T d (elementwise memories: (k, d)).

    With `products`, also each weight's product with its layer input at the keys, {weight: a W}
    (computed by the gradients' forward pass anyway): (factors, products)."""
    if isinstance(v, torch.Tensor) and k is not None and not isinstance(k, torch.Tensor):
        # a constant key (`context (1, v)`, elementwise memories): the same key for every token, so the
        # read is [B, C, n] like the values, not [B, n] (which would broadcast the batch against time)
        k = torch.full_like(v, float(k))
    y, inputs, layer_products = read_with_cache(kind, state, k, residual)
    factors = _factors(state, k, y, inputs, layer_products, v, objective)
    return (factors, _key_products(state, layer_products)) if products else factors


def read_and_grads(kind: str, state: dict, q: torch.Tensor, k: torch.Tensor, v, objective: tuple,
                   residual: bool = False, products: bool = False):
    """(M(q), grads(k, v)) at one state: one pass through the memory for the read and the
    gradients' forward, on the queries and keys side by side ([B, 2C, d]), so each weight is
    read once and the matmuls are twice as tall. Matrix memories (linear, mlp) only. With
    `products`, grads' key products too: (M(q), factors, products)."""
    return _read_then_grads(kind, state, q, k, v, objective, residual, products)


def grads_toward_read(kind: str, state: dict, k: torch.Tensor, q: torch.Tensor, objective: tuple,
                      residual: bool = False, products: bool = False):
    """grads(k, M(q)): the gradients at keys k toward the memory's own read at q, its
    self-generated values (Hope, NL arXiv:2512.24695 eqs. 83-85 and 95: v^_t = M_{t-1}(v_t)),
    with the read and the gradients' forward in one pass, [q; k] side by side, as in
    `read_and_grads`. The values are those of `read(kind, state, q, residual)` then `grads`
    (up to rounding), and differentiable the same way. Matrix memories (linear, mlp) only."""
    out = _read_then_grads(kind, state, q, k, None, objective, residual, products)
    return out[1:] if products else out[1]


def _read_then_grads(kind: str, state: dict, q, k, v, objective: tuple, residual: bool, products: bool):
    """`read_and_grads`; with v None the values are the read at q itself (`grads_toward_read`)."""
    n = q.shape[1]
    y, inputs, layer_products = read_with_cache(kind, state, torch.cat([q, k], dim=1), residual)
    read = y[:, :n]
    keys = [a[:, n:] for a in inputs]
    # the last layer's product is needed only as a key product (a slice is an operation a chunk)
    at_keys = [z[:, n:] for z in (layer_products if products else layer_products[:-1])]
    factors = _factors(state, keys[0], y[:, n:], keys, at_keys, read if v is None else v, objective)
    return (read, factors, _key_products(state, at_keys)) if products else (read, factors)


def _factors(state: dict, k, y, inputs: list, products: list, v, objective: tuple) -> dict:
    """The gradient factors of every weight, backwards from dl/dy (layer inputs and products given: a
    layer's product is the next layer's pre-activation)."""
    dy = objective_grad(objective, y, v)
    if "m" in state:
        return {"m": (k, dy)}
    if "W" in state:
        return {"W": (k, dy)}
    L = n_layers(state)
    out = {f"W{i}": None for i in range(L)}  # layer order, filled from the last layer back
    d = dy
    for i in range(L - 1, -1, -1):
        out[f"W{i}"] = (inputs[i], d)
        if i > 0:
            W = state[f"W{i}"]
            d = act_backward(times_transposed(d, W), products[i - 1])
    return out


class MemoryInit(nn.Module):
    """The initial state of an in-context memory; `learned` makes it a slow parameter (meta-learning).

    With `heads` h > 1, `weights` are one head's shapes and each weight holds the h heads' initial
    states, [h, ...]; a batch of B sequences starts as B*h rows, head-minor (docs/design.md §1.7)."""

    def __init__(self, weights: dict, kind: str, residual: bool, mode: str = "learned", heads: int = 1):
        super().__init__()
        self.names = list(weights)
        self.heads = heads
        # `zeros` and `identity` states are rebuilt by every init_state: their random hidden layers
        # (identity MLPs) must be the same every time, so they come from a fixed seed, not the global RNG
        generator = torch.Generator().manual_seed(IDENTITY_SEED) if mode != "learned" else None
        for i, (name, shape) in enumerate(weights.items()):
            last = i == len(weights) - 1
            t = _initial(name, shape, kind, residual, mode, last=last, generator=generator)
            if heads > 1:  # learned: a draw per head; zeros, identity: each head is what one memory would be
                t = torch.stack([t, *(_initial(name, shape, kind, residual, mode, last=last) if mode == "learned"
                                      else t for _ in range(heads - 1))])
            if mode == "learned":
                self.register_parameter(name, nn.Parameter(t))
            else:
                self.register_buffer(name, t, persistent=False)

    def forward(self, batch: int) -> dict:
        """The initial state, expanded over the batch: {name: [B, ...]} ([B*heads, ...] with heads)."""
        out = {n: getattr(self, n).unsqueeze(0).expand(batch, *getattr(self, n).shape) for n in self.names}
        if self.heads > 1:
            out = {n: w.reshape(batch * self.heads, *w.shape[2:]) for n, w in out.items()}
        return out


IDENTITY_SEED = 0  # the hidden layers of an `init identity` MLP memory, of a model or an optimizer (nlc.optim.runtime)


def _initial(name: str, shape: tuple, kind: str, residual: bool, mode: str, last: bool,
             generator: torch.Generator | None = None) -> torch.Tensor:
    if mode == "zeros":
        return torch.zeros(shape)
    if mode == "identity":
        if kind == "vector" or name == "m":
            return torch.ones(shape)
        if len(shape) == 2 and (kind == "linear" or not residual) and shape[0] == shape[1] and last:
            return torch.eye(shape[0])
        return torch.zeros(shape) if last else torch.randn(shape, generator=generator) / math.sqrt(shape[0])
    # learned: small random weights; the last layer of a residual MLP starts near the identity map
    if kind in ("vector",) or name == "m":
        return torch.zeros(shape)
    std = 1 / math.sqrt(shape[0])
    if last and residual:
        std *= 0.1
    return torch.randn(shape) * std


class SlowMemory(nn.Module):
    """A level updated across optimiser steps (CMS, `period N steps`) or frozen (`never`): slow weights."""

    def __init__(self, weights: dict, kind: str, residual: bool, init: str = "learned", trainable: bool = True):
        super().__init__()
        self.kind, self.residual, self.names = kind, residual, list(weights)
        for i, (name, shape) in enumerate(weights.items()):
            t = _initial(name, shape, kind, residual, "learned" if init == "learned" else init,
                         last=(i == len(weights) - 1))
            self.register_parameter(name, nn.Parameter(t, requires_grad=trainable))

    def initial(self, batch: int) -> dict:
        """Its current weights, expanded over the batch: the initial state of an in-context level
        that copies this one (`init copy(slow)`), {name: [B, ...]}."""
        return {n: getattr(self, n).unsqueeze(0).expand(batch, *getattr(self, n).shape) for n in self.names}

    def forward(self, k: torch.Tensor | None) -> torch.Tensor:
        return read(self.kind, self.initial(k.shape[0]), k, self.residual)


def copy_initial(target: SlowMemory, source: nn.Module) -> None:
    """Start a `steps`/`never` level from another level's initial weights (`init copy`), once, at build time.

    `source` holds the weights under the same names: a SlowMemory, or a MemoryInit."""
    with torch.no_grad():
        for n in target.names:
            getattr(target, n).copy_(getattr(source, n))
