"""``SepitModel``: structure-aware ESM-2 + stage-0 heads + projector + a Llama-family causal LM (dense or MoE).

The LLM is used only through public APIs: ``get_input_embeddings()``, ``get_decoder()`` (hidden states from
``inputs_embeds`` + ``attention_mask``), ``get_output_embeddings()`` (logits only where the loss needs them) and, for
generation, its forward with a KV ``cache`` plus one attention function registered with transformers'
``AttentionInterface``. Protein features are scattered into the ``<protein>`` slots with ``masked_scatter`` after a
hard count check.

Generation lives in :mod:`sepit.model.generation` (unpadded prefill, one gathered KV cache, decoding that skips the
padding) and the inference dtype in :mod:`sepit.model.precision`; :meth:`SepitModel.generate`, :meth:`~SepitModel.chat`,
:meth:`~SepitModel.yes_no_probability` and :meth:`~SepitModel.to_precision` are thin wrappers over them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sepit.errors import InputError
from sepit.model import generation
from sepit.model import precision as _precision
from sepit.model.config import ModelConfig
from sepit.model.encoder import EncoderOutput, StructureAwareEsm
from sepit.model.heads import Stage0Heads, denoise_mask, masked_mean
from sepit.model.moe import is_moe, moe_layers, upcycle_to_moe
from sepit.model.packing import PrefixStore
from sepit.model.precision import inference_dtype
from sepit.model.processor import IGNORE, SepitProcessor
from sepit.model.projector import Projector, gather_residues

__all__ = ["SepitModel", "SepitOutput"]


@dataclass
class SepitOutput:
    """``loss`` = ``lm_loss`` + aux weight × ``aux_loss`` (aux is None for a dense LLM); ``num_tokens``: target
    tokens the LM loss averaged over; ``logits`` (num_tokens, V) only when requested."""

    loss: torch.Tensor
    lm_loss: torch.Tensor
    aux_loss: torch.Tensor | None
    num_tokens: int
    logits: torch.Tensor | None = None


class SepitModel(nn.Module):
    """The SEPIT model. Submodules: ``encoder`` (``.esm`` + ``.structure``), ``heads``, ``projector``, ``llm``.

    ``processor`` turns conversations into batches; ``config`` records every architecture choice (saved with the
    weights). Build with :func:`sepit.model.build_model`; save and load with the free functions
    :func:`sepit.model.save_model` and :func:`sepit.model.load_model`.
    """

    def __init__(self, encoder: StructureAwareEsm, heads: Stage0Heads, projector: Projector, llm: nn.Module,
                 processor: SepitProcessor | None, config: ModelConfig, sources: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.heads = heads
        self.projector = projector
        self.llm = llm
        self.processor = processor
        self.config = config
        self.sources = dict(sources or {})
        # The retrieval index the model's homolog context comes from (``retrieval.enabled``): set by training (the
        # dataset's index) and by load_model (the checkpoint's copy); save_model copies it into the checkpoint.
        self.retrieval_index: Path | None = None

    # ---- proteins -------------------------------------------------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor]) -> EncoderOutput:
        """Run the structure-aware encoder on the protein keys of a batch."""
        return self.encoder(batch["protein_input_ids"], batch["protein_attention_mask"], batch.get("coords"),
                            batch.get("coord_mask"))

    def _residue_features(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(N, D_plm): penultimate features of every real residue of the batch's proteins, packed in order (pooled
        when ``projector.pool`` > 1)."""
        enc = self.encode(batch)
        return gather_residues(enc.penultimate, batch["protein_residue_mask"].bool(), self.config.projector.pool)

    def encoder_features(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        """Per protein, its (n_i, D_plm) encoder features before the projector (n_i = its LLM slot count): what
        a cache of a frozen encoder stores; concatenated, they can be passed back as ``protein_features``."""
        feats = self._residue_features(batch)
        pool = self.config.projector.pool
        counts = [-(-int(n) // pool) for n in batch["protein_residue_mask"].sum(dim=1).tolist()]
        return list(torch.split(feats, counts))

    def protein_tokens(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """All proteins of a batch → (N, D_llm): projected penultimate features of their real residues, packed in
        order (pooled when ``projector.pool`` > 1). A batch with ``protein_features`` (N, D_plm) — concatenated
        :meth:`encoder_features`, e.g. from a cache of a frozen encoder — skips the encoder."""
        feats = batch.get("protein_features")
        if feats is None:
            feats = self._residue_features(batch)
        return self.projector(feats.to(self.projector.net[0].weight.dtype))

    def embed_inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, T, D_llm) input embeddings with the protein features in the ``<protein>`` slots."""
        ids = batch["input_ids"]
        embeds = self.llm.get_input_embeddings()(ids)
        slots = ids == self.processor.protein_token_id
        num_slots = int(slots.sum())
        has_proteins = batch.get("protein_features") is not None or (
            "protein_input_ids" in batch and batch["protein_input_ids"].shape[0] > 0)
        feats = self.protein_tokens(batch) if has_proteins else embeds.new_zeros(0, embeds.shape[-1])
        if num_slots != feats.shape[0]:
            raise InputError(None, f"protein token count mismatch: the prompts have {num_slots} <protein> slots but "
                                   f"the proteins give {feats.shape[0]} feature vectors")
        if num_slots == 0:
            return embeds
        return embeds.masked_scatter(slots.unsqueeze(-1), feats.to(embeds.dtype))

    # ---- language model -------------------------------------------------------------------------------------------
    def aux_loss(self, token_mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """Sum over MoE layers of the load-balancing loss of the LLM's last forward, over the tokens where
        ``token_mask`` (B, T) is True (all when None; a mask of another shape than that forward's is a ValueError).
        None for a dense LLM.

        The mask is an argument here rather than something set on the MoE layers before the forward: the layers
        route every token the same whatever the mask, so a forward recomputed by activation checkpointing during
        backward repeats exactly what the first one did, and concurrent forwards share no per-call state."""
        losses = [m.aux_loss(token_mask) for m in moe_layers(self.llm) if m.last_routing is not None]
        return torch.stack(losses).sum() if losses else None

    def forward(self, batch: dict[str, torch.Tensor], *, return_logits: bool = False) -> SepitOutput:
        """Next-token loss on the labelled (assistant) tokens; logits are computed only at those positions.

        batch: ``input_ids``/``attention_mask``/``labels`` (B, T) + protein keys (see ``SepitProcessor.collate``).
        """
        embeds = self.embed_inputs(batch)
        attention_mask = batch["attention_mask"]
        hidden = self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=attention_mask,
                                        use_cache=False).last_hidden_state
        targets = batch["labels"][:, 1:]
        sel = targets != IGNORE
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][sel])
        n = int(sel.sum())
        lm_loss = F.cross_entropy(logits.float(), targets[sel], reduction="sum") / max(n, 1)
        aux = self.aux_loss(attention_mask.bool())  # padding does not count in the load balance
        loss = lm_loss if aux is None else lm_loss + self.config.moe.aux_loss_weight * aux
        return SepitOutput(loss=loss, lm_loss=lm_loss, aux_loss=aux, num_tokens=n,
                           logits=logits if return_logits else None)

    # ---- inference ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def answer_log_likelihood(self, batch: dict[str, torch.Tensor], store: PrefixStore | None = None) -> torch.Tensor:
        """(B,) mean log-probability per labelled (assistant) token of each row: the length-normalised likelihood
        of each conversation's answer, for scoring given options. Rows run unpadded; the options of one question
        run their shared prompt once (:func:`sepit.model.generation.answer_log_likelihood`). A row without labelled
        tokens gets -inf. ``store`` (a :class:`~sepit.model.packing.PrefixStore`): prompt beginnings (header and
        proteins) kept across calls, so later prompts about the same proteins run only their own tokens."""
        return generation.answer_log_likelihood(self, batch, store)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (float32 unless :meth:`to_precision` cast them)."""
        return self.llm.get_input_embeddings().weight.dtype

    def to_precision(self, precision: str = "auto") -> SepitModel:
        """Cast the weights for inference (``auto``: bf16 where the hardware runs it natively, else fp32; see
        :func:`sepit.model.precision.inference_dtype`); returns self. Buffers stay as they are: RoPE frequencies
        rounded to bf16 would shift every position. Yes/no probabilities and token choice still use float32
        logits."""
        _precision.cast_parameters(self, inference_dtype(precision, next(self.parameters()).device))
        return self

    def _eos_ids(self) -> list[int]:
        return generation.eos_ids(self.llm, self.processor.llm_tokenizer)

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], max_new_tokens: int = 256,
                 callback: Callable[[list[str]], None] | None = None, temperature: float = 0.0,
                 store: PrefixStore | None = None) -> list[str]:
        """Answers to a left-padded prompt batch (``add_generation_prompt=True``): greedy at ``temperature`` 0 (the
        default, deterministic), sampling from softmax(logits / temperature) above it.

        Each prompt is encoded and prefilled without padding, so in float32 a batch gives the answers each prompt
        gets alone; then the batch is decoded together from one preallocated KV cache, each row attending over its
        own prompt only (not the padding), and finished answers leave the batch when that saves work.
        ``callback(texts_so_far)`` is called after every step (streaming); ``store`` as in
        :meth:`answer_log_likelihood`. Returns the decoded answers. See :func:`sepit.model.generation.generate`.
        """
        return generation.generate(self, batch, max_new_tokens=max_new_tokens, callback=callback,
                                   temperature=temperature, store=store)

    @torch.no_grad()
    def chat(self, conversations: Sequence[Sequence[dict[str, str]]], proteins: Sequence[Sequence[Any]],
             max_new_tokens: int = 256, callback: Callable[[list[str]], None] | None = None,
             temperature: float = 0.0, store: PrefixStore | None = None) -> list[str]:
        """Answer each conversation (ending with a user turn) about its proteins; batched, greedy by default."""
        batch = self.processor(conversations, proteins, add_generation_prompt=True)
        return self.generate(self.to_device(batch), max_new_tokens=max_new_tokens, callback=callback,
                             temperature=temperature, store=store)

    @torch.no_grad()
    def choose(self, conversations: Sequence[Sequence[dict[str, str]]], proteins: Sequence[Sequence[Any]],
               options: Sequence[Sequence[str]], store: PrefixStore | None = None) -> list[str]:
        """Answer each conversation (ending with a user turn) with the one of its ``options`` that has the highest
        mean log-probability per token (:meth:`answer_log_likelihood`; a tie keeps the earlier option); one batch,
        the options of a conversation running its prompt once. A conversation with one option gets it unscored,
        one without options gets ""."""
        rows: list[list[dict[str, str]]] = []
        row_proteins: list[Sequence[Any]] = []
        owner: list[tuple[int, str]] = []
        best: dict[int, tuple[float, str]] = {}
        for i, (conv, opts) in enumerate(zip(conversations, options)):
            if len(set(opts)) == 1:  # nothing to choose: no forward pass
                best[i] = (0.0, opts[0])
                continue
            for o in opts:
                rows.append([*conv, {"role": "assistant", "content": o}])
                row_proteins.append(proteins[i])
                owner.append((i, o))
        if rows:
            scores = self.answer_log_likelihood(self.to_device(self.processor(rows, row_proteins)), store).tolist()
            for (i, o), sc in zip(owner, scores):
                if i not in best or sc > best[i][0]:
                    best[i] = (sc, o)
        return [best[i][1] if i in best else "" for i in range(len(conversations))]

    @torch.no_grad()
    def answer(self, conversations: Sequence[Sequence[dict[str, str]]], proteins: Sequence[Sequence[Any]],
               options: Sequence[Sequence[str]], max_new_tokens: int = 256, store: PrefixStore | None = None
               ) -> list[str]:
        """Each conversation's answer: chosen among its ``options`` where it has some (:meth:`choose`), else written
        (:meth:`chat`, greedy); ``store`` as in :meth:`answer_log_likelihood`."""
        out = self.choose(conversations, proteins, options, store) if any(options) else [""] * len(conversations)
        written = [i for i, o in enumerate(options) if not o]
        if written:
            for i, t in zip(written, self.chat([conversations[i] for i in written], [proteins[i] for i in written],
                                               max_new_tokens=max_new_tokens, store=store)):
                out[i] = t
        return out

    def _answer_token_ids(self, word: str) -> list[int]:
        return generation.answer_token_ids(self.processor.llm_tokenizer, word)

    @torch.no_grad()
    def yes_no_probability(self, batch: dict[str, torch.Tensor], store: PrefixStore | None = None) -> torch.Tensor:
        """P(yes) / (P(yes) + P(no)) of the first answer token after each prompt (built with
        ``add_generation_prompt=True``; either padding side). Case and leading-space variants are summed; the
        softmax is in float32. Prompts run unpadded, like :meth:`generate`; ``store`` as in
        :meth:`answer_log_likelihood`. → (B,) float32"""
        return generation.yes_no_probability(self, batch, store)

    # ---- stage 0 --------------------------------------------------------------------------------------------------
    def stage0_losses(self, batch: dict[str, torch.Tensor], weights: Mapping[str, float], *, gather: bool = False,
                      generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Stage-0 losses → dict of scalars ``loss`` (Σ ``weights[k]`` × k over the three), ``contrastive``,
        ``denoise`` and ``mlm``.

        - ``contrastive``: InfoNCE of the masked-mean-pooled last hidden states of a clean encoder pass (the
          sequence and coordinates as given, as inference sees them) against ``batch["text_features"]`` (B, Dt),
          the frozen text encoder's pooled captions; ``gather``: negatives from every process (see
          :class:`~sepit.model.heads.ContrastiveHead`).
        - ``mlm`` and ``denoise`` from a second pass over corrupted inputs: ``heads.mask_prob`` of the residues
          masked (80/10/10 BERT corruption, at least one per protein), scored over the 33-token ESM vocabulary; Cα
          coordinates + σ·ε (σ = ``heads.denoise_sigma`` Å, ε ~ N(0, I)) on residues with structure, and the
          denoising head predicts the unit-variance ε (MSE; predicting zero scores 1.0; 0 when the batch has no
          structure).

        batch: protein keys + ``text_features`` (``Stage0Runner.collate``); ``weights``: the training config's
        ``loss_weights`` (keys contrastive, denoise, mlm); ``generator`` draws the corruption (global RNG if None).
        """
        missing = [k for k in ("contrastive", "denoise", "mlm") if k not in weights]
        if missing:
            raise ValueError(f"stage-0 loss weights lack {missing} (the training config's loss_weights give them)")
        if "text_features" not in batch:
            raise InputError(None, "a stage-0 batch needs text_features (B, D): the captions pooled by the frozen "
                                   "text encoder (Stage0Runner.collate adds them)")
        hc = self.config.heads
        ids = batch["protein_input_ids"]
        attn = batch["protein_attention_mask"].bool()
        residues = batch["protein_residue_mask"].bool()
        dev = ids.device
        gen = generator

        def rand(*shape: int) -> torch.Tensor:
            return torch.rand(*shape, generator=gen, device=gen.device if gen is not None else dev).to(dev)

        # masked residues: mask_prob of the residues (at least one per protein)
        chosen = (rand(*ids.shape) < hc.mask_prob) & residues
        none = ~chosen.any(dim=1)
        if bool(none.any()):
            score = rand(*ids.shape).masked_fill(~residues, -1.0)
            first = torch.zeros_like(chosen).scatter_(1, score.argmax(dim=1, keepdim=True), True)
            chosen = chosen | (first & none[:, None])
        roll = rand(*ids.shape)
        aa = torch.tensor(self.processor.amino_acid_ids, device=dev)
        random_aa = aa[(rand(*ids.shape) * len(aa)).long().clamp_max(len(aa) - 1)]
        corrupted = torch.where(chosen & (roll < 0.8), torch.full_like(ids, self.processor.mask_token_id), ids)
        corrupted = torch.where(chosen & (roll >= 0.8) & (roll < 0.9), random_aa, corrupted)

        # coordinate noise σ·ε on residues with structure; the head's target is ε, of unit variance whatever σ
        coords, cmask = batch["coords"].float(), denoise_mask(batch)
        eps = torch.randn(coords.shape, generator=gen, device=gen.device if gen is not None else dev).to(dev)
        eps = eps * cmask.unsqueeze(-1)
        noisy = coords + hc.denoise_sigma * eps
        # corrupted pass; its pair kernels (of the noisy coordinates) feed the denoising head, in training and
        # validation alike
        corrupt = self.encoder(corrupted, attn, noisy, cmask, return_kernels=True)
        mlm = F.cross_entropy(self.heads.mlm(corrupt.last[chosen]).float(), ids[chosen])
        if corrupt.kernels is not None:
            pred = self.heads.denoise(corrupt.last, corrupt.kernels, noisy, cmask)
            denoise = F.mse_loss(pred[cmask].float(), eps[cmask])
        else:
            denoise = corrupt.last.sum() * 0.0

        # clean pass: the protein side of the contrastive loss is what inference encodes (no masks, no noise)
        clean = self.encode(batch)
        contrastive = self.heads.contrastive(masked_mean(clean.last, residues), batch["text_features"],
                                             gather=gather)
        parts = {"contrastive": contrastive, "denoise": denoise, "mlm": mlm}
        loss = sum(float(weights[k]) * v for k, v in parts.items())
        return {"loss": loss, **parts}

    def load_text_encoder(self, device: str | torch.device | None = None) -> nn.Module:
        """The frozen stage-0 text encoder this model was built for (``config.text_encoder``), checked to fit
        the contrastive head."""
        from sepit.errors import SepitError
        from sepit.model.text_encoder import load_text_encoder

        enc = load_text_encoder(self.config.text_encoder, self.config.tiny, device=device)
        want = self.heads.contrastive.text_proj.in_features
        if enc.hidden_size != want:
            raise SepitError(f"text encoder {self.config.text_encoder!r} has width {enc.hidden_size}, but this model's "
                             f"contrastive head expects {want}")
        return enc

    # ---- structure of the model -----------------------------------------------------------------------------------
    @property
    def is_moe(self) -> bool:
        return is_moe(self.llm)

    def upcycle(self) -> SepitModel:
        """Turn the dense LLM into the MoE of ``config.moe`` in place (stage 2); returns self."""
        import dataclasses

        self.llm = upcycle_to_moe(self.llm, self.config.moe.num_experts, copy=False)
        self.config = dataclasses.replace(self.config, moe=dataclasses.replace(self.config.moe, enabled=True))
        return self

    def param_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Every parameter in exactly one named group: plm, structure, heads, projector, llm, experts, router."""
        from sepit.model.params import param_groups

        return param_groups(self)

    def to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Move a batch's tensors to the model's device."""
        dev = next(self.parameters()).device
        return {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
