"""Quintic Newton-Schulz orthogonalisation, as in Muon (coefficients 3.4445, -4.7750, 2.0315)."""

from __future__ import annotations

import torch

COEFFS = (3.4445, -4.7750, 2.0315)
EPS = 1e-7


def newton_schulz(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonalise the last two dims of G (U V^T of its SVD); vectors are returned unchanged.

    X <- a X + (b A + c A^2) X with A = X X^T, starting from G / ||G||_F; the
    iteration runs on the wide orientation (rows <= columns) as Muon does.
    """
    if G.dim() < 2:
        return G
    a, b, c = COEFFS
    X = G / (G.norm(dim=(-2, -1), keepdim=True) + EPS)
    tall = G.shape[-2] > G.shape[-1]
    if tall:
        X = X.transpose(-2, -1)
    for _ in range(steps):
        A = X @ X.transpose(-2, -1)
        X = a * X + (b * A + c * A @ A) @ X
    return X.transpose(-2, -1) if tall else X
