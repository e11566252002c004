"""Stage-0 heads: contrastive projection, equivariant coordinate denoising, masked-residue prediction.

All three read the encoder's last hidden states (B, L, D); ``mask`` arguments are (B, L) bool.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D), (B, L) bool → (B, D) mean over the True positions (zero rows stay zero)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


class ContrastiveHead(nn.Module):
    """Protein and text projections to a shared space + a learnable temperature (CLIP-style InfoNCE)."""

    def __init__(self, protein_dim: int, text_dim: int, dim: int = 512, temperature_init: float = 0.07) -> None:
        super().__init__()
        self.protein_proj = nn.Linear(protein_dim, dim)
        self.text_proj = nn.Linear(text_dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature_init)))

    def forward(self, protein_pooled: torch.Tensor, text_pooled: torch.Tensor) -> torch.Tensor:
        """(B, Dp), (B, Dt) → symmetric InfoNCE loss (scalar); the pair (i, i) is the positive."""
        p = F.normalize(self.protein_proj(protein_pooled), dim=-1)
        t = F.normalize(self.text_proj(text_pooled.to(self.text_proj.weight.dtype)), dim=-1)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()  # CLIP's cap on 1/temperature
        logits = scale * p @ t.t()
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class DenoisingHead(nn.Module):
    """E(3)-equivariant noise predictor: Δx_i = Σ_h w_h Σ_j a^h_ij · s^h_ij · (x_i − x_j) / |x_i − x_j|.

    The weights a (attention over structured j), s (pair gate) and w are functions of invariant inputs only
    (hidden states and pair kernels of distances), so rotating the input coordinates rotates the prediction and
    translating them leaves it unchanged.
    """

    def __init__(self, hidden_size: int, num_kernels: int = 128, num_heads: int = 8) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = max(hidden_size // num_heads, 1)
        self.q = nn.Linear(hidden_size, self.head_dim * num_heads)
        self.k = nn.Linear(hidden_size, self.head_dim * num_heads)
        self.pair_bias = nn.Linear(num_kernels, num_heads)
        self.pair_gate = nn.Sequential(nn.Linear(num_kernels, num_kernels), nn.GELU(),
                                       nn.Linear(num_kernels, num_heads))
        self.out = nn.Linear(num_heads, 1, bias=False)

    def forward(self, hidden: torch.Tensor, kernels: torch.Tensor, coords: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """hidden (B, L, D), kernels (B, L, L, K), coords (B, L, 3), mask (B, L) bool → predicted noise (B, L, 3)
        (zero where mask is False)."""
        b, n, _ = hidden.shape
        h = self.num_heads
        q = self.q(hidden).view(b, n, h, self.head_dim).transpose(1, 2)
        k = self.k(hidden).view(b, n, h, self.head_dim).transpose(1, 2)
        kernels = kernels.to(q.dtype)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + self.pair_bias(kernels).permute(0, 3, 1, 2)
        pair_mask = mask[:, :, None] & mask[:, None, :]
        pair_mask = pair_mask & ~torch.eye(n, dtype=torch.bool, device=mask.device)  # no self term (x_i − x_i = 0)
        scores = scores.masked_fill(~pair_mask[:, None], float("-inf"))
        attn = torch.softmax(scores.float(), dim=-1).nan_to_num(0.0)  # rows with no neighbour → 0
        gate = self.pair_gate(kernels).permute(0, 3, 1, 2).float()  # (B, H, L, L)
        coords = coords.float()
        rel = coords[:, :, None, :] - coords[:, None, :, :]  # (B, L, L, 3): x_i − x_j
        unit = rel / torch.sqrt((rel * rel).sum(-1, keepdim=True) + 1e-6)
        vec = torch.einsum("bhij,bijc->bhic", attn * gate, unit)  # (B, H, L, 3)
        pred = self.out(vec.permute(0, 2, 3, 1).to(self.out.weight.dtype)).squeeze(-1)  # (B, L, 3)
        return pred * mask.unsqueeze(-1)


class MaskedResidueHead(nn.Module):
    """ESM-style LM head (Linear → GELU → LayerNorm → Linear) over the real ESM vocabulary (33 tokens)."""

    def __init__(self, hidden_size: int, vocab_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(hidden_size)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(…, D) → (…, vocab) logits."""
        return self.decoder(self.norm(self.act(self.dense(hidden))))


class Stage0Heads(nn.Module):
    """The three stage-0 heads together (parameter group ``heads``)."""

    def __init__(self, protein_dim: int, text_dim: int, vocab_size: int, num_kernels: int = 128,
                 contrastive_dim: int = 512, temperature_init: float = 0.07) -> None:
        super().__init__()
        self.contrastive = ContrastiveHead(protein_dim, text_dim, contrastive_dim, temperature_init)
        self.denoise = DenoisingHead(protein_dim, num_kernels)
        self.mlm = MaskedResidueHead(protein_dim, vocab_size)
