"""Stage-0 heads: contrastive projection, equivariant coordinate denoising, masked-residue prediction.

All three read the encoder's last hidden states (B, L, D); ``mask`` arguments are (B, L) bool.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L, D), (B, L) bool → (B, D) mean over the True positions (zero rows stay zero)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp_min(1.0)


def denoise_mask(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """A stage-0 batch's positions that get coordinate noise and score the denoising loss: residues with a Cα
    → (B, L) bool. The denoising loss is a mean over these; a batch with none has no denoising signal."""
    return batch["coord_mask"].bool() & batch["protein_residue_mask"].bool()


class _GatherRows(torch.autograd.Function):
    """All-gather along dim 0 over the default process group; backward returns to each rank the gradient of its own
    rows summed over every rank's loss. (``torch.distributed.nn.functional.all_gather`` does the same, but torch
    2.13 deprecates it with a FutureWarning, pointing to a private module instead.)"""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rows = (dist.get_rank() * x.shape[0], (dist.get_rank() + 1) * x.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()  # all_reduce works in place; autograd may still hold ``grad``
        dist.all_reduce(grad)  # every rank's loss reaches these rows through its own copy of the gathered tensor
        return grad[ctx.rows[0]:ctx.rows[1]]


def gather_rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(n_r, D) on each rank r of the default process group → ((Σ n_r, D) every rank's rows in rank order, the
    offset of this rank's rows), differentiable. Ranks may hold different numbers of rows (padded for the
    collective, then dropped)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    n = torch.tensor([x.shape[0]], device=x.device)
    counts = [torch.empty_like(n) for _ in range(world)]
    dist.all_gather(counts, n)
    sizes = [int(c) for c in counts]
    longest = max(sizes)
    full = _GatherRows.apply(F.pad(x, (0, 0, 0, longest - x.shape[0])))  # (world · longest, D)
    keep = torch.cat([torch.arange(s) + r * longest for r, s in enumerate(sizes)]).to(x.device)
    return full[keep], sum(sizes[:rank])


class ContrastiveHead(nn.Module):
    """Protein and text projections to a shared space + a learnable temperature (CLIP-style InfoNCE)."""

    def __init__(self, protein_dim: int, text_dim: int, dim: int = 512, temperature_init: float = 0.07) -> None:
        super().__init__()
        self.protein_proj = nn.Linear(protein_dim, dim)
        self.text_proj = nn.Linear(text_dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature_init)))

    def forward(self, protein_pooled: torch.Tensor, text_pooled: torch.Tensor, *, gather: bool = False
                ) -> torch.Tensor:
        """(B, Dp), (B, Dt) → symmetric InfoNCE loss (scalar); the pair (i, i) is the positive.

        ``gather``: when a process group of more than one process is initialised, the negatives are every process's
        pairs (projections gathered with their gradient, as CLIP trains): each process scores its own B rows against
        all N = Σ B columns, and its loss is scaled by world / N, so that the mean of the processes' losses (what
        data-parallel gradient averaging takes) is the mean over all N rows — one process with the global batch.
        Without a group (or with one process) it is the local loss.
        """
        p = F.normalize(self.protein_proj(protein_pooled), dim=-1).float()
        t = F.normalize(self.text_proj(text_pooled.to(self.text_proj.weight.dtype)), dim=-1).float()
        world = dist.get_world_size() if gather and dist.is_available() and dist.is_initialized() else 1
        if world > 1:
            both, offset = gather_rows(torch.cat([p, t], dim=-1))  # one collective for both sides
            all_p, all_t = both.split(p.shape[-1], dim=-1)
        else:
            all_p, all_t, offset = p, t, 0
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()  # CLIP's cap on 1/temperature
        target = offset + torch.arange(p.shape[0], device=p.device)
        total = F.cross_entropy(scale * p @ all_t.t(), target, reduction="sum") \
            + F.cross_entropy(scale * t @ all_p.t(), target, reduction="sum")
        return 0.5 * total * world / all_p.shape[0]


class DenoisingHead(nn.Module):
    """E(3)-equivariant noise predictor over each residue's ``neighbours`` nearest structured residues N(i) (by the
    noisy distances): Δx_i = Σ_h w_h Σ_{j∈N(i)} a^h_ij · s^h_ij · (x_i − x_j) / |x_i − x_j|.

    The weights a (attention over N(i)), s (pair gate) and w are functions of invariant inputs only (hidden states
    and pair kernels of distances), and so is N(i), so rotating the input coordinates rotates the prediction and
    translating them leaves it unchanged. Why only the nearest: noise on a Cα shows in its distances to the
    residues next to it (its chain neighbours' 3.8 Å above all). Attention over all L residues spread each pair's
    weight to ~1/L, and in the demo's stage 0 the head stayed at predicting zero; over N(i) it learns within tens
    of steps, and its pair MLPs run on B·L·k pairs, not B·L². The parameters are those of the all-pairs head.
    """

    def __init__(self, hidden_size: int, num_kernels: int = 128, num_heads: int = 8, neighbours: int = 8) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = max(hidden_size // num_heads, 1)
        self.neighbours = neighbours
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
        h, hd = self.num_heads, self.head_dim
        coords = coords.float()
        rel = coords[:, :, None, :] - coords[:, None, :, :]  # (B, L, L, 3): x_i − x_j
        dist = torch.sqrt((rel * rel).sum(-1) + 1e-12)
        pair = mask[:, :, None] & mask[:, None, :]
        pair = pair & ~torch.eye(n, dtype=torch.bool, device=mask.device)  # no self term (x_i − x_i = 0)
        k = min(self.neighbours, n - 1)
        near, idx = dist.masked_fill(~pair, float("inf")).topk(k, dim=-1, largest=False)  # (B, L, k)
        real = torch.isfinite(near)  # a residue with fewer than k structured others has padding slots
        rows = torch.arange(b, device=idx.device)[:, None, None]
        cols = torch.arange(n, device=idx.device)[None, :, None]
        pk = kernels[rows, cols, idx]  # (B, L, k, K): the pair kernels of each residue and its neighbours
        pk = pk.to(self.pair_bias.weight.dtype)
        q = self.q(hidden).view(b, n, h, hd)
        keys = self.k(hidden).view(b, n, h, hd)[rows, idx]  # (B, L, k, H, hd)
        scores = torch.einsum("bihd,bikhd->bikh", q, keys) / math.sqrt(hd) + self.pair_bias(pk)  # (B, L, k, H)
        scores = scores.float().masked_fill(~real[..., None], float("-inf"))
        attn = torch.softmax(scores, dim=2).nan_to_num(0.0)  # rows with no neighbour → 0
        gate = self.pair_gate(pk).float()  # (B, L, k, H)
        rel = rel[rows, cols, idx]  # (B, L, k, 3)
        unit = rel / torch.sqrt((rel * rel).sum(-1, keepdim=True) + 1e-6)
        vec = torch.einsum("bikh,bikc->bich", attn * gate, unit)  # (B, L, 3, H)
        pred = self.out(vec.to(self.out.weight.dtype)).squeeze(-1)  # (B, L, 3)
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
