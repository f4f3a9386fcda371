"""The pieces closed-form chunk kernels are built from: gates as [B, C] tensors, products of gates
along a chunk, and weighted sums of factored per-token gradients.

Inside a chunk every per-token gradient is taken at the chunk-start state (docs/design.md §1.2),
so a rule's per-token recurrence has known inputs. Gradients arrive factored per weight:
g_t = a_t^T d_t with a [B, C, i], d [B, C, o] (`nlc.runtime.memory.grads`); elementwise memories
pass (key, d) with g_t = key * d. Gates are [B, C] tensors (or floats). The rule kernels
themselves live with their rules (`nlc.rules.gd`, `nlc.rules.momentum`, `nlc.rules.dgd`).
"""

from __future__ import annotations

import torch

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


def gate_products(b: torch.Tensor) -> torch.Tensor:
    """P[:, t, u] = prod_{u < r <= t} b[:, r] for t >= u (1 on the diagonal), in one cumprod; the
    entries above the diagonal are not products of gates and are left for the caller to ignore or
    mask. b [B, C] -> [B, C, C]."""
    C = b.shape[1]
    tri = torch.ones(C, C, dtype=torch.bool, device=b.device).tril(-1)  # t > u
    return torch.cumprod(torch.where(tri, b[:, :, None], torch.ones_like(b)[:, :, None].expand(-1, -1, C)), dim=1)


def decay_matrix(b: torch.Tensor) -> torch.Tensor:
    """G[:, t, u] = prod_{u < r <= t} b[:, r] for t >= u, 0 above the diagonal. b [B, C] -> [B, C, C]."""
    C = b.shape[1]
    return gate_products(b).masked_fill(~torch.ones(C, C, dtype=torch.bool, device=b.device).tril(), 0.0)


def compiled_on_cpu(t: torch.Tensor) -> bool:
    """True while torch.compile traces code for the CPU, where some steps take another form of the same
    arithmetic (`minus_weighted_sum`, `unit_lower_solve`): measured here; other devices keep eager's."""
    return torch.compiler.is_compiling() and t.device.type == "cpu"


def minus_weighted_sum(base: torch.Tensor, coef: torch.Tensor, factor: Factor, W: torch.Tensor) -> torch.Tensor:
    """base - sum_t coef_t g_t with g_t = a_t^T d_t (matrices) or a_t * d_t (elementwise memories).

    For matrices, eager: one baddbmm, which adds into `base` inside the matmul instead of writing
    the sum and subtracting it (the state is the largest tensor in a chunk step). Under
    torch.compile on the CPU: the product, then the subtraction, which inductor fuses with the
    kernel that computes `base`; an external baddbmm there first copies `base` into its output
    (a state-sized copy per weight, 135 us at dim 256). Measured in one process, interleaved:
    compiled titans_lmm +7% forward+backward at dim 256, Hope +5% at dim 64; eager the
    subtraction is 5-12% slower (benchmarks/README.md)."""
    a, d = factor
    if W.dim() == 3:
        left = (coef.unsqueeze(-1) * a).transpose(1, 2)
        if compiled_on_cpu(W):
            return base - torch.bmm(left, d)
        return torch.baddbmm(base, left, d, alpha=-1)
    g = d * a if isinstance(a, torch.Tensor) else d * float(a)
    c = coef if coef.dim() == 3 else coef.unsqueeze(-1)
    return base - (c * g).sum(1)


# Longest chunk solved row by row under torch.compile on the CPU (`unit_lower_solve`): the rows
# unroll into the graph, so a long chunk (a slow level's period of 64 tokens) keeps the library solve.
SUBSTITUTION_MAX_ROWS = 16


def unit_lower_solve(L: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """R with (I + L) R = rhs, for L [B, C, C] read strictly below its diagonal and rhs [B, C, N].

    Eager (and on other devices): one LAPACK solve. Under torch.compile on the CPU, a chunk of at
    most SUBSTITUTION_MAX_ROWS rows is solved by forward substitution, row by row,
    R_i = rhs_i - sum_{j<i} L_ij R_j: small products inductor compiles into the graph, where the
    library solve is an external call that first copies both operands into column-major order
    (31 us for 8 rows at dim 64, more than the arithmetic by far). The same values up to rounding
    (tests/test_runtime.py holds both paths equal, values and gradients); measured in one process,
    interleaved, with the C++ wrapper: Hope's chunk step forward+backward +4-6% at dims 64 and 128
    (benchmarks/README.md)."""
    if compiled_on_cpu(rhs) and L.shape[-1] <= SUBSTITUTION_MAX_ROWS:
        return forward_substitution(L, rhs)
    # unitriangular: the solve reads only below the diagonal and takes ones on it, so L stands for I + L
    return torch.linalg.solve_triangular(L, rhs, upper=False, unitriangular=True)


def forward_substitution(L: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """`unit_lower_solve` row by row, in torch operations (C - 1 of them unrolled)."""
    C = L.shape[-1]
    R = rhs[:, :1]
    for i in range(1, C):
        row = rhs[:, i:i + 1] - torch.einsum("bj,bjn->bn", L[:, i, :i], R).unsqueeze(1)
        R = torch.cat([R, row], dim=1)
    return R


def bcast(x: torch.Tensor, W: torch.Tensor) -> torch.Tensor:
    """[B] -> broadcastable against W [B, ...]."""
    return x.view(-1, *([1] * (W.dim() - 1)))


def any_d(grads: dict) -> torch.Tensor:
    """The second factor of any weight's gradients: a tensor shaped like the chunk ([B, C, ...])."""
    return next(iter(grads.values()))[1]


def per_token(factor: Factor, t: int, W: torch.Tensor) -> torch.Tensor:
    """Token t's gradient, formed from its factors (the naive references and the sequential fallback)."""
    a, d = factor
    if W.dim() == 3:
        return torch.einsum("bi,bo->bio", a[:, t], d[:, t])
    return d[:, t] * (a[:, t] if isinstance(a, torch.Tensor) else float(a))


def gate_t(g, t: int, W: torch.Tensor):
    """Token t's value of a [B, C] gate, broadcastable against W (floats and 0-dim scalars as they are)."""
    if isinstance(g, torch.Tensor):
        if g.dim() == 0:
            return g
        return bcast(g[:, t], W)
    return g
