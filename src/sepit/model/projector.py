"""Projector from the protein encoder's penultimate layer to the LLM width, and optional residue pooling."""

from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    """Linear → GELU → Linear (``num_layers=2``, the default) or one Linear (``num_layers=1``)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int | None = None, num_layers: int = 2) -> None:
        super().__init__()
        self.in_dim = in_dim  # the encoder's feature width (D_plm)
        if num_layers == 1:
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim))
        elif num_layers == 2:
            hidden_dim = hidden_dim or out_dim
            self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, out_dim))
        else:
            raise ValueError(f"num_layers must be 1 or 2, got {num_layers}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(…, in_dim) → (…, out_dim)."""
        return self.net(x)


def pooled_length(num_residues: int, pool: int) -> int:
    """How many LLM tokens a protein of ``num_residues`` residues becomes: ceil(L / pool)."""
    return -(-num_residues // pool)


def gather_residues(hidden: torch.Tensor, residue_mask: torch.Tensor, pool: int = 1) -> torch.Tensor:
    """Real residue features of every protein, packed in order: (P, L, D), (P, L) bool → (N, D).

    With ``pool`` > 1 each run of ``pool`` consecutive residues is averaged (the last run may be shorter), so
    protein i contributes ceil(L_i / pool) rows.
    """
    if pool == 1:
        return hidden[residue_mask]
    rows = []
    for h, m in zip(hidden, residue_mask):
        x = h[m]  # (L_i, D)
        n = x.shape[0]
        k = pooled_length(n, pool)
        pad = k * pool - n
        x = torch.cat([x, x.new_zeros(pad, x.shape[1])]) if pad else x
        w = torch.cat([x.new_ones(n), x.new_zeros(pad)]).view(k, pool, 1)
        rows.append((x.view(k, pool, -1) * w).sum(1) / w.sum(1))
    return torch.cat(rows) if rows else hidden.new_zeros(0, hidden.shape[-1])
