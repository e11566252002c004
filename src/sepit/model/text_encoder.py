"""The frozen text encoder of stage 0 (default all-MiniLM-L6-v2): captions → masked-mean-pooled vectors.

It is not part of :class:`SepitModel` (nor of its checkpoints or parameter groups): stage 0 loads it next to the
model with :func:`load_text_encoder`, and its collate puts the pooled captions in the batch (``text_features``) that
``SepitModel.stage0_losses`` reads.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sepit.model.config import TINY, TinySizes
from sepit.model.heads import masked_mean


class TextEncoder(nn.Module):
    """A frozen HF encoder + its tokenizer. ``forward`` → (B, D) mean of the last hidden states over real tokens."""

    def __init__(self, model: nn.Module, tokenizer, max_length: int = 128) -> None:
        super().__init__()
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.max_length = max_length

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> TextEncoder:  # stays in eval mode: frozen, no dropout
        return super().train(False)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Captions → ``text_input_ids`` / ``text_attention_mask`` (B, T), right-padded, truncated to max_length."""
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {"text_input_ids": enc["input_ids"], "text_attention_mask": enc["attention_mask"]}

    @torch.no_grad()
    def forward(self, text_input_ids: torch.Tensor, text_attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=text_input_ids, attention_mask=text_attention_mask)
        return masked_mean(out.last_hidden_state, text_attention_mask.bool())


def load_text_encoder(name: str, sizes: TinySizes | None = None, device: str | torch.device | None = None
                      ) -> TextEncoder:
    """``tiny`` → a random tiny BERT (seeded); otherwise a registered name or HF directory (``AutoModel``)."""
    from transformers import AutoModel, AutoTokenizer

    if name == TINY:
        from transformers import BertModel

        from sepit.model._tiny import tiny_bert_config, tiny_text_tokenizer

        sizes = sizes or TinySizes()
        tok = tiny_text_tokenizer()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sizes.seed + 3)
            model = BertModel(tiny_bert_config(sizes, tok), add_pooling_layer=False)
    else:
        from sepit.assets import model_path
        from sepit.assets.convert import safetensors_only

        path = model_path(name)
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype=torch.float32, **safetensors_only(path))
    enc = TextEncoder(model, tok)
    return enc.to(device) if device is not None else enc
