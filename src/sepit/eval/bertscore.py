"""BERTScore (Zhang et al. 2020) over a local Hugging Face encoder, as ``bert_score.BERTScorer`` computes it with
``idf=False`` and no baseline rescaling — the research code's setting — without any hub access.

Per pair: both texts are encoded as ``[CLS] tokens [SEP]`` (content truncated to ``max_tokens``=500 word pieces,
as the research code truncated), hidden states of layer ``num_layers`` (default: the last, as the research code
used) are L2-normalised, and greedy matching on cosine similarity gives
``P = mean_i max_j sim(hyp_i, ref_j)`` over candidate tokens and ``R = mean_j max_i sim`` over reference tokens
(``[CLS]``/``[SEP]`` take part in the max but carry weight 0, exactly like bert_score), ``F = 2PR/(P+R)``.
An empty side gives 0.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sepit.errors import SepitError
from sepit.eval.text import resolve_model_dir
from sepit.log import get_logger

log = get_logger(__name__)


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Hide transformers' load report (an unused pooler is "missing" in encoders saved without one) and bars."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


@dataclass(frozen=True)
class BertScores:
    """Per-pair precision, recall and F1 in [0, 1] (arrays of shape (N,))."""

    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray


class BertScorer:
    """BERTScore with any local HF encoder directory (or a registered model name such as ``minilm_l6_v2``)."""

    def __init__(self, model: str | Path = "minilm_l6_v2", *, num_layers: int | None = None, batch_size: int = 32,
                 device: str = "cpu", max_tokens: int = 500) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from sepit.assets.convert import safetensors_only

        d = resolve_model_dir(model)
        try:
            with _quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
                self.model = AutoModel.from_pretrained(str(d), local_files_only=True,
                                                       **safetensors_only(d)).to(device).eval()
        except (OSError, ValueError) as e:
            raise SepitError(f"{d}: cannot load a BERTScore encoder from this directory ({type(e).__name__})") \
                from None
        n_layers = int(getattr(self.model.config, "num_hidden_layers", 0))
        self.num_layers = n_layers if num_layers is None else int(num_layers)
        if not 0 < self.num_layers <= n_layers:
            raise SepitError(f"{d}: num_layers={self.num_layers} but the encoder has {n_layers} layers")
        if self.tokenizer.cls_token_id is None or self.tokenizer.sep_token_id is None:
            raise SepitError(f"{d}: BERTScore needs a BERT-style tokenizer with [CLS]/[SEP] tokens")
        self.model_dir = d
        self.batch_size = batch_size
        self.device = device
        self.max_tokens = max_tokens
        self._torch = torch

    def encode(self, text: str) -> list[int]:
        """Token ids ``[CLS] ... [SEP]`` of one text (content truncated to ``max_tokens`` pieces)."""
        ids = self.tokenizer.encode(text.strip(), add_special_tokens=False)[: self.max_tokens]
        limit = min(int(getattr(self.model.config, "max_position_embeddings", 512)), 512) - 2
        return [self.tokenizer.cls_token_id, *ids[:limit], self.tokenizer.sep_token_id]

    def embed(self, texts: Sequence[str]):
        """Normalised token embeddings ``(N, L, D)``, token mask ``(N, L)`` and token weights ``(N, L)``."""
        torch = self._torch
        encoded = [self.encode(t) for t in texts]
        length = max(len(e) for e in encoded)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(encoded), length), pad, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for i, e in enumerate(encoded):
            ids[i, : len(e)] = torch.tensor(e)
            mask[i, : len(e)] = 1
        special = (ids == self.tokenizer.cls_token_id) | (ids == self.tokenizer.sep_token_id)
        weight = (mask.bool() & ~special).float()
        chunks = []
        with torch.no_grad():
            for s in range(0, len(encoded), self.batch_size):
                out = self.model(input_ids=ids[s:s + self.batch_size].to(self.device),
                                 attention_mask=mask[s:s + self.batch_size].to(self.device),
                                 output_hidden_states=True)
                chunks.append(out.hidden_states[self.num_layers].float().cpu())
        emb = torch.cat(chunks)
        emb = emb / emb.norm(dim=-1, keepdim=True)
        return emb, mask.float(), weight

    def score(self, candidates: Sequence[str], references: Sequence[str]) -> BertScores:
        """BERTScore P/R/F1 of each candidate against its reference."""
        torch = self._torch
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates for {len(references)} references")
        if not candidates:
            e = np.zeros(0)
            return BertScores(e, e, e)
        ps, rs, fs = [], [], []
        for s in range(0, len(candidates), self.batch_size):
            h_emb, h_mask, h_w = self.embed(candidates[s:s + self.batch_size])
            r_emb, r_mask, r_w = self.embed(references[s:s + self.batch_size])
            sim = torch.bmm(h_emb, r_emb.transpose(1, 2))  # (B, Lh, Lr); padding pairs are set to 0 as bert_score
            sim = sim * (h_mask.unsqueeze(2) * r_mask.unsqueeze(1))
            p_tok, r_tok = sim.max(dim=2).values, sim.max(dim=1).values
            h_tot, r_tot = h_w.sum(1), r_w.sum(1)
            p = (p_tok * h_w).sum(1) / h_tot.clamp(min=1)
            r = (r_tok * r_w).sum(1) / r_tot.clamp(min=1)
            empty = (h_tot == 0) | (r_tot == 0)
            p, r = p.masked_fill(empty, 0.0), r.masked_fill(empty, 0.0)
            f = torch.nan_to_num(2 * p * r / (p + r), nan=0.0)
            ps.append(p), rs.append(r), fs.append(f)
        return BertScores(torch.cat(ps).numpy(), torch.cat(rs).numpy(), torch.cat(fs).numpy())
