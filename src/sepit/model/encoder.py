"""Structure-aware protein encoder: any Hugging Face ``EsmModel`` + :class:`StructureModule`, through public APIs.

How the structure enters ESM without touching its code:

* node encoding: ``esm.embeddings(input_ids, attention_mask)`` gives the usual embeddings (token dropout, padding
  zeroed); ω·node encoding is added on the sequence axis and the sum goes back in as ``inputs_embeds``.
* attention bias: the per-head bias (B, H, L, L) plus −inf on padded keys is passed as a float 4-D
  ``attention_mask``. transformers' ``create_bidirectional_mask`` returns a 4-D mask as-is, and both the ``sdpa``
  and ``eager`` attention add a float mask to the scaled scores before the softmax, in every layer — exactly the
  research code's "same bias added to every layer's scores" (tests/test_model_structure.py checks this numerically).
  Flash-attention kernels cannot take a float mask, so only ``sdpa`` and ``eager`` are allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from sepit.model.structure import StructureModule

ALLOWED_ATTN = ("sdpa", "eager")


@dataclass
class EncoderOutput:
    """``penultimate``/``last``: (B, L, D) hidden states of the last-but-one / last layer (final layer norm
    applied to ``last``); ``kernels``: (B, L, L, K) pair kernels, or None unless requested (``return_kernels``) and
    the batch had structure."""

    penultimate: torch.Tensor
    last: torch.Tensor
    kernels: torch.Tensor | None


class StructureAwareEsm(nn.Module):
    """ESM-2 whose every attention layer sees a structure bias, and whose embeddings get ω·node encoding."""

    def __init__(self, esm: nn.Module, structure: StructureModule) -> None:
        super().__init__()
        attn = getattr(esm.config, "_attn_implementation", None)
        if attn not in ALLOWED_ATTN:
            raise ValueError(f"the protein encoder needs attn_implementation in {ALLOWED_ATTN} (a float attention "
                             f"bias cannot go through {attn!r})")
        if esm.config.num_hidden_layers < 2:
            raise ValueError("the protein encoder needs at least 2 layers (its penultimate layer feeds the LLM)")
        if structure.num_heads != esm.config.num_attention_heads:
            raise ValueError(f"structure bias has {structure.num_heads} heads, ESM has "
                             f"{esm.config.num_attention_heads}")
        self.esm = esm
        self.structure = structure

    @property
    def hidden_size(self) -> int:
        return int(self.esm.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, coords: torch.Tensor | None = None,
                coord_mask: torch.Tensor | None = None, *, return_kernels: bool = False) -> EncoderOutput:
        """input_ids/attention_mask (B, L) ESM tokens with <cls>/<eos>; coords (B, L, 3) Å aligned to the tokens;
        coord_mask (B, L) bool (False at special tokens, padding and residues without structure).

        ``return_kernels``: also return the (B, L, L, K) pair kernels (stage 0's denoising head reads them); without
        it the bias and node encoding are computed without ever holding that tensor, and the output's ``kernels``
        is None. The two ways give the same bias and encoding."""
        attention_mask = attention_mask.bool()
        embeds = self.esm.embeddings(input_ids=input_ids, attention_mask=attention_mask.long())
        key_pad = torch.zeros(attention_mask.shape, dtype=torch.float32, device=embeds.device)
        key_pad = key_pad.masked_fill(~attention_mask, float("-inf"))[:, None, None, :]  # (B, 1, 1, L)
        kernels = None
        if coords is not None and coord_mask is not None and bool(coord_mask.any()):
            coord_mask = coord_mask.bool() & attention_mask
            if return_kernels:
                bias, node, kernels = self.structure(coords, coord_mask)
            else:  # no (B, L, L, K) tensor, proteins without structure skipped
                bias, node = self.structure.bias_and_node(coords, coord_mask, self.hidden_size)
            embeds = embeds + node.to(embeds.dtype)
            mask = bias + key_pad  # (B, H, L, L)
        else:
            mask = key_pad  # no structure anywhere: only padding is masked, ESM runs exactly as without us
        out = self.esm(inputs_embeds=embeds, attention_mask=mask.to(embeds.dtype), output_hidden_states=True)
        return EncoderOutput(penultimate=out.hidden_states[-2], last=out.last_hidden_state, kernels=kernels)
