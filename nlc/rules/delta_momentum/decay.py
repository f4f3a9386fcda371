"""The product of delta momentum, m (beta I - grad^T grad) on the weight's input side (NL eq. 48), for
every back end: in-context memories (nlc.rules.ops.MEMORY) and optimizers (nlc.optim.runtime.delta_product)."""

from __future__ import annotations

import torch


def delta_momentum_decay(m: torch.Tensor, g: torch.Tensor, beta, input_axis: int = -1) -> torch.Tensor:
    """beta m - (the projection of m onto g on its input side): NL eq. 48's m (beta I - grad^T grad).

    m and g are matrices (with any leading batch dims). `input_axis` says which of the
    last two axes is the weight's input: -1 for [..., d_out, d_in] (torch weights, the
    paper), -2 for [..., d_in, d_out] (in-context memories, read as k @ W). The product is
    taken in the cheaper order. `beta` is a number or broadcasts against m.
    """
    if input_axis == -2:  # [..., d_in, d_out] is the transpose of the paper's layout: (beta I - g g^T) m
        return delta_momentum_decay(m.mT, g.mT, beta.mT if _is_matrix_gate(beta) else beta).mT
    if m.shape[-2] <= m.shape[-1]:
        proj = (m @ g.mT) @ g
    else:
        proj = m @ (g.mT @ g)
    return beta * m - proj


def delta_momentum_decay_elementwise(m: torch.Tensor, g: torch.Tensor, beta) -> torch.Tensor:
    """(beta - g^2) m: eq. 48 for an elementwise (diagonal) memory, where grad^T grad is diag(g^2)."""
    return (beta - g * g) * m


def _is_matrix_gate(beta) -> bool:
    return isinstance(beta, torch.Tensor) and beta.dim() >= 2
