"""The structure module: Cα pair distances → Gaussian basis → per-head attention bias and node encoding.

Shapes: B proteins, L token positions (ESM tokens incl. <cls>/<eos>/padding), K kernels, H attention heads.
A per-position ``coord_mask`` (B, L) says which positions carry a usable Cα; every other position (special tokens,
padding, residues without coordinates, proteins whose structure is dropped) contributes no bias and no encoding,
so a batch without structure leaves the protein language model exactly as it is.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def pair_distances(coords: torch.Tensor) -> torch.Tensor:
    """(B, L, 3) → (B, L, L) Euclidean distances (invariant to rotation and translation)."""
    diff = coords[:, :, None, :] - coords[:, None, :, :]
    # sqrt of a sum with a tiny floor keeps the gradient finite on the diagonal (distance 0).
    return torch.sqrt((diff * diff).sum(-1) + 1e-12)


class GaussianBasis(nn.Module):
    """K learnable normalised Gaussian pdfs of a distance: ψ_k(d) = N(d; μ_k, σ_k). Means/stds init U(0, 3)."""

    def __init__(self, num_kernels: int = 128) -> None:
        super().__init__()
        self.num_kernels = num_kernels
        self.means = nn.Parameter(torch.empty(num_kernels))
        self.stds = nn.Parameter(torch.empty(num_kernels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.means, 0.0, 3.0)
        nn.init.uniform_(self.stds, 0.0, 3.0)

    def forward(self, dist: torch.Tensor) -> torch.Tensor:
        """(…,) distances in Å → (…, K) kernel values (computed in float32 for stability)."""
        d = dist.float().unsqueeze(-1)
        std = self.stds.float().abs() + 1e-2  # |σ| + ε keeps the pdf finite whatever the optimiser does to σ
        z = (d - self.means.float()) / std
        return torch.exp(-0.5 * z * z) / (math.sqrt(2 * math.pi) * std)


class StructureBias(nn.Module):
    """MLP K → hidden → GELU → H on pair kernels: the per-head additive attention bias."""

    def __init__(self, num_heads: int, num_kernels: int = 128, hidden: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Linear(num_kernels, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, num_heads)

    def forward(self, kernels: torch.Tensor) -> torch.Tensor:
        """(B, L, L, K) → (B, H, L, L)."""
        return self.fc2(self.act(self.fc1(kernels))).permute(0, 3, 1, 2)


class NodeEncoding(nn.Module):
    """Σ_j ψ(d_ij) over structured neighbours → Linear(K → D) → × ω: added to the residue embeddings."""

    def __init__(self, hidden_size: int, num_kernels: int = 128, scale: float = 0.01) -> None:
        super().__init__()
        self.proj = nn.Linear(num_kernels, hidden_size)
        self.scale = scale

    def forward(self, kernels: torch.Tensor, pair_mask: torch.Tensor) -> torch.Tensor:
        """kernels (B, L, L, K), pair_mask (B, L, L) bool → (B, L, D), zero where a row has no structure."""
        summed = (kernels * pair_mask.unsqueeze(-1)).sum(dim=2)
        out = self.proj(summed) * self.scale
        return out * pair_mask.any(dim=2, keepdim=True)


class StructureModule(nn.Module):
    """Gaussian basis + attention bias + node encoding, all from one set of pair kernels."""

    def __init__(self, num_heads: int, hidden_size: int, num_kernels: int = 128, bias_hidden: int = 128,
                 node_scale: float = 0.01) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.basis = GaussianBasis(num_kernels)
        self.bias = StructureBias(num_heads, num_kernels, bias_hidden)
        self.node = NodeEncoding(hidden_size, num_kernels, node_scale)

    def forward(self, coords: torch.Tensor, coord_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """coords (B, L, 3) Å, coord_mask (B, L) bool →
        (bias (B, H, L, L) float32, node encoding (B, L, D), kernels (B, L, L, K) float32).

        Bias and encoding are exactly zero wherever either residue of a pair lacks structure.
        """
        coord_mask = coord_mask.bool()
        pair_mask = coord_mask[:, :, None] & coord_mask[:, None, :]
        coords = torch.where(coord_mask.unsqueeze(-1), coords.float(), torch.zeros_like(coords, dtype=torch.float32))
        kernels = self.basis(pair_distances(coords)) * pair_mask.unsqueeze(-1)
        bias = self.bias(kernels.to(self.bias.fc1.weight.dtype)).float()
        bias = bias * pair_mask.unsqueeze(1)
        node = self.node(kernels.to(self.node.proj.weight.dtype), pair_mask)
        return bias, node, kernels

    def bias_and_node(self, coords: torch.Tensor, coord_mask: torch.Tensor, hidden_size: int,
                      chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """Bias (B, H, L, L) and node encoding (B, L, D) without materialising the (B, L, L, K) kernels: only the
        proteins that have structure are computed, ``chunk`` query rows at a time. Equal to :meth:`forward`'s
        first two outputs; used when the kernels themselves are not needed (no stage-0 denoising head)."""
        coord_mask = coord_mask.bool()
        b, length = coord_mask.shape
        dev = coords.device
        bias = torch.zeros(b, self.num_heads, length, length, dtype=torch.float32, device=dev)
        node = torch.zeros(b, length, hidden_size, dtype=self.node.proj.weight.dtype, device=dev)
        rows = torch.nonzero(coord_mask.any(dim=1), as_tuple=True)[0]
        if rows.numel() == 0:
            return bias, node
        cm = coord_mask[rows]
        xyz = torch.where(cm.unsqueeze(-1), coords[rows].float(), torch.zeros_like(coords[rows], dtype=torch.float32))
        sub_bias = torch.zeros(rows.numel(), self.num_heads, length, length, dtype=torch.float32, device=dev)
        summed = torch.zeros(rows.numel(), length, self.basis.num_kernels, dtype=torch.float32, device=dev)
        for s in range(0, length, chunk):
            q = slice(s, min(length, s + chunk))
            pm = cm[:, q, None] & cm[:, None, :]  # (b', c, L)
            diff = xyz[:, q, None, :] - xyz[:, None, :, :]
            k = self.basis(torch.sqrt((diff * diff).sum(-1) + 1e-12)) * pm.unsqueeze(-1)  # (b', c, L, K)
            sub_bias[:, :, q, :] = self.bias(k.to(self.bias.fc1.weight.dtype)).float() * pm.unsqueeze(1)
            summed[:, q] = k.sum(dim=2)
        out = self.node.proj(summed.to(self.node.proj.weight.dtype)) * self.node.scale
        out = out * cm.unsqueeze(-1)  # rows without a Cα get no encoding (as in NodeEncoding)
        bias[rows] = sub_bias
        node[rows] = out.to(node.dtype)
        return bias, node
