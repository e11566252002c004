"""``SepitModel``: structure-aware ESM-2 + stage-0 heads + projector + a Llama-family causal LM (dense or MoE).

The LLM is used only through public APIs: ``get_input_embeddings()``, ``get_decoder()`` (hidden states from
``inputs_embeds`` + ``attention_mask``), ``get_output_embeddings()`` (logits only where the loss needs them) and, for
generation, its forward with a KV ``cache`` plus one attention function registered with transformers'
``AttentionInterface`` (sdpa that skips left padding while decoding). Protein features are scattered into the
``<protein>`` slots with ``masked_scatter`` after a hard count check.

Generation (:meth:`SepitModel.generate`): every prompt is prefilled without padding, the per-prompt KV caches are
gathered into one preallocated cache and the batch is decoded together; :meth:`SepitModel.to_precision` casts the
weights for inference (bf16 where the hardware runs it natively, else fp32)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sepit.errors import ConfigError, InputError
from sepit.model.config import ModelConfig
from sepit.model.encoder import EncoderOutput, StructureAwareEsm
from sepit.model.heads import Stage0Heads, masked_mean
from sepit.model.moe import is_moe, moe_layers, upcycle_to_moe
from sepit.model.processor import IGNORE, SepitProcessor
from sepit.model.projector import Projector, gather_residues

PROTEIN_KEYS = ("protein_input_ids", "protein_attention_mask", "protein_residue_mask", "coords", "coord_mask")
PRECISIONS = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` itself when it is one of :data:`PRECISIONS`, else a one-line ConfigError."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AMX or AVX512-BF16). Elsewhere bf16 is emulated and slower
    than fp32, so ``auto`` stays in fp32 there."""
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # a torch build without the CPU capability probe
            pass
    return False


def inference_dtype(precision: str, device: str | torch.device) -> torch.dtype:
    """The weights' dtype for inference: ``auto`` is bf16 where the hardware runs it natively (CUDA with bf16, CPUs
    with AMX / AVX512-BF16) and fp32 elsewhere; never fp16 (the training loop's rule, extended to bf16 CPUs)."""
    check_precision(precision)
    if precision != "auto":
        return torch.bfloat16 if precision == "bf16" else torch.float32
    device = torch.device(device)
    if device.type == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation flag
            native = torch.cuda.is_bf16_supported()
        return torch.bfloat16 if native else torch.float32
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return torch.float32


def _length_groups(lengths: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """(length, row indices) for each distinct value of ``lengths`` (B,): rows that can run together unpadded."""
    return [(int(n), (lengths == n).nonzero().squeeze(1)) for n in torch.unique(lengths).tolist()]


# ---- decoding attention over a left-padded cache --------------------------------------------------------------------
RAGGED_ATTENTION = "sepit_ragged_sdpa"


def _ragged_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, sepit_spans: list[tuple[int, int, int, int]] | None = None,
                 **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, except in a decoding step given ``sepit_spans``: rows [a, b) of the batch then
    attend over cache slots [s, e) only, i.e. not over the left padding of longer prompts (the padding is masked
    anyway; skipping it saves reading it). query (B, H, 1, D), key/value (B, H_kv, S, D), mask (B, 1, 1, S)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    if sepit_spans is None or query.shape[2] != 1:
        return sdpa(module, query, key, value, attention_mask, **kwargs)
    outs = [sdpa(module, query[a:b], key[a:b, :, s:e], value[a:b, :, s:e], attention_mask[a:b, :, :, s:e],
                 **kwargs)[0] for a, b, s, e in sepit_spans]
    return torch.cat(outs), None


def _register_ragged_attention() -> None:
    """Register :func:`_ragged_sdpa` under :data:`RAGGED_ATTENTION` with transformers' public attention registry
    (its masks are sdpa's, so a model switched to it runs exactly as with sdpa unless given spans)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(RAGGED_ATTENTION, _ragged_sdpa)
    AttentionMaskInterface.register(RAGGED_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def row_chunks(starts: Sequence[int], width: int, overhead: int = 256) -> list[tuple[int, int, int]]:
    """Contiguous chunks (a, b, s) of rows whose first real cache slots ``starts`` are ascending, s = starts[a]:
    each chunk attends over slots [s, width) in one call. Chosen to minimise the slots read plus ``overhead`` slots'
    worth per call (dynamic programming over the cut points; O(B²), B = rows)."""
    n = len(starts)
    best, cut = [0] + [None] * n, [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + overhead + (j - i) * (width - starts[i])
            if best[j] is None or cost < best[j]:
                best[j], cut[j] = cost, i
    chunks, j = [], n
    while j:
        chunks.append((cut[j], j, int(starts[cut[j]])))
        j = cut[j]
    return chunks[::-1]


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
    weights). Build with :func:`sepit.model.build_model`, load with :func:`sepit.model.load_model`.
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
    def _set_token_mask(self, mask: torch.Tensor | None) -> None:
        # Padding must not count in the load-balancing loss. The mask stays set until the next forward (not cleared
        # on return) so that activation checkpointing recomputes exactly the same thing during backward.
        for layer in moe_layers(self.llm):
            layer.token_mask = mask

    def _hidden(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        self._set_token_mask(attention_mask.bool())
        out = self.llm.get_decoder()(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        return out.last_hidden_state

    def aux_loss(self) -> torch.Tensor | None:
        """Sum over MoE layers of the load-balancing loss of the last forward (None for a dense LLM)."""
        losses = [m.last_aux_loss for m in moe_layers(self.llm) if m.last_aux_loss is not None]
        return torch.stack(losses).sum() if losses else None

    def forward(self, batch: dict[str, torch.Tensor], *, return_logits: bool = False) -> SepitOutput:
        """Next-token loss on the labelled (assistant) tokens; logits are computed only at those positions.

        batch: ``input_ids``/``attention_mask``/``labels`` (B, T) + protein keys (see ``SepitProcessor.collate``).
        """
        embeds = self.embed_inputs(batch)
        hidden = self._hidden(embeds, batch["attention_mask"])
        targets = batch["labels"][:, 1:]
        sel = targets != IGNORE
        logits = self.llm.get_output_embeddings()(hidden[:, :-1][sel])
        n = int(sel.sum())
        lm_loss = F.cross_entropy(logits.float(), targets[sel], reduction="sum") / max(n, 1)
        aux = self.aux_loss()
        loss = lm_loss if aux is None else lm_loss + self.config.moe.aux_loss_weight * aux
        return SepitOutput(loss=loss, lm_loss=lm_loss, aux_loss=aux, num_tokens=n,
                           logits=logits if return_logits else None)

    def _eos_ids(self) -> list[int]:
        tok = self.processor.llm_tokenizer
        ids = self.llm.generation_config.eos_token_id if self.llm.generation_config is not None else None
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if tok.eos_token_id is not None and tok.eos_token_id not in ids:
            ids.append(tok.eos_token_id)
        return ids

    # ---- inference ------------------------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (float32 unless :meth:`to_precision` cast them)."""
        return self.llm.get_input_embeddings().weight.dtype

    def to_precision(self, precision: str = "auto") -> SepitModel:
        """Cast the weights for inference (``auto``: bf16 where the hardware runs it natively, else fp32; see
        :func:`inference_dtype`); returns self. Buffers stay as they are: RoPE frequencies rounded to bf16 would
        shift every position. Yes/no probabilities and token choice still use float32 logits."""
        dtype = inference_dtype(precision, next(self.parameters()).device)
        for p in self.parameters():
            if p.is_floating_point() and p.dtype != dtype:
                p.data = p.data.to(dtype)  # in place: tied weights (embeddings = LM head) stay one tensor
        return self

    def _unpadded_features(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch with ``protein_features`` (N, D_plm) from encoding each protein without padding (proteins of
        equal length together): padding costs compute, and a protein then gets the same features alone or batched.
        Batches without proteins (or with features already) come back as they are."""
        if batch.get("protein_features") is not None or batch.get("protein_input_ids") is None \
                or batch["protein_input_ids"].shape[0] == 0:
            return batch
        per_protein: list[torch.Tensor | None] = [None] * batch["protein_input_ids"].shape[0]
        for n, idx in _length_groups(batch["protein_attention_mask"].sum(dim=1)):  # right-padded: real tokens first
            sub = {k: batch[k][idx, :n] for k in PROTEIN_KEYS if batch.get(k) is not None}
            for i, f in zip(idx.tolist(), self.encoder_features(sub)):
                per_protein[i] = f
        return dict(batch, protein_features=torch.cat(per_protein))

    def _prompt_groups(self, embeds: torch.Tensor, attention_mask: torch.Tensor):
        """Yield (row indices, (G, n, D) unpadded embeddings) per group of prompts with the same length n."""
        real = attention_mask.bool()
        for n, idx in _length_groups(real.sum(dim=1)):
            if n == 0:
                raise InputError(None, "an empty prompt cannot be answered")
            yield idx, embeds[idx][real[idx]].view(len(idx), n, embeds.shape[-1])

    def _logits_fp32(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, D) hidden states → (B, V) float32 logits (the LM head in float32 whatever the weights' dtype)."""
        head = self.llm.get_output_embeddings()
        if head.weight.dtype == torch.float32:
            return head(hidden)
        bias = None if getattr(head, "bias", None) is None else head.bias.float()
        return F.linear(hidden.float(), head.weight.float(), bias)

    def _prefill(self, embeds: torch.Tensor, attention_mask: torch.Tensor, order: torch.Tensor, max_new_tokens: int):
        """Run every prompt without padding (prompts of equal length together), then gather their KV caches into
        one cache for decoding the batch together: cache row k holds batch row ``order[k]``, left-padded to the
        batch's width T.

        embeds (B, T, D), attention_mask (B, T) left-padded → (last-token logits (B, V) float32 in cache row order,
        cache). The cache is preallocated for T + ``max_new_tokens`` (a growing cache copies itself at every step),
        except for sliding-window models, whose cache layers keep only the window.
        """
        from transformers import DynamicCache, StaticCache

        b, t, _ = embeds.shape
        slot = torch.empty_like(order)
        slot[order] = torch.arange(b, device=order.device)  # cache row of each batch row
        logits = torch.empty(b, self.llm.get_output_embeddings().weight.shape[0], device=embeds.device)
        parts = []
        for idx, e in self._prompt_groups(embeds, attention_mask):
            out = self.llm(inputs_embeds=e, use_cache=True, logits_to_keep=1)
            logits[slot[idx]] = out.logits[:, -1].float()
            parts.append((slot[idx], e.shape[1], out.cache))
        cache = StaticCache(config=self.llm.config, max_cache_len=t + max_new_tokens)
        if any(cache.is_sliding):
            window = int(self.llm.config.sliding_window)
            if t >= window:  # its prefill cache would hold only the window: no left-padded batch cache to build
                raise InputError(None, f"a prompt of {t} tokens is longer than this LLM's sliding window ({window})")
            cache = DynamicCache(config=self.llm.config)
        k0, v0 = parts[0][2].layers[0].keys, parts[0][2].layers[0].values
        # One left-padded staging pair for all layers: the padding stays zero, every layer overwrites the rest
        # (fresh memory is slow to touch; a pair per layer would cost more than the copies).
        keys = k0.new_zeros(b, k0.shape[1], t, k0.shape[3])
        values = v0.new_zeros(b, v0.shape[1], t, v0.shape[3])
        for layer in range(len(parts[0][2].layers)):
            for rows, n, part in parts:
                keys[rows, :, t - n:] = part.layers[layer].keys
                values[rows, :, t - n:] = part.layers[layer].values
            cache.update(keys, values, layer)  # copies into the cache
        return logits, cache

    @staticmethod
    def _next_tokens(logits: torch.Tensor, temperature: float) -> torch.Tensor:
        """(B, V) float32 logits → (B,) token ids: argmax at temperature 0, else a sample of softmax(logits / T)."""
        if temperature <= 0:
            return logits.argmax(dim=-1)
        return torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1).squeeze(1)

    @torch.no_grad()
    def generate(self, batch: dict[str, torch.Tensor], max_new_tokens: int = 256,
                 callback: Callable[[list[str]], None] | None = None, temperature: float = 0.0) -> list[str]:
        """Answers to a left-padded prompt batch (``add_generation_prompt=True``): greedy at ``temperature`` 0 (the
        default, deterministic), sampling from softmax(logits / temperature) above it.

        Each prompt is encoded and prefilled without padding, so in float32 a batch gives the answers each prompt
        gets alone; then the batch is decoded together from one preallocated KV cache, each row attending over its
        own prompt only (not the padding), and finished answers leave the batch when that saves work.
        ``callback(texts_so_far)`` is called after every step (streaming). Returns the decoded answers.
        """
        limit = self.config.max_new_tokens_limit
        if not 1 <= max_new_tokens <= limit:
            raise InputError(None, f"max_new_tokens must be between 1 and {limit}, got {max_new_tokens}")
        attn = batch["attention_mask"]
        if attn.shape[1] and not bool(attn[:, -1].all()):
            raise InputError(None, "generation needs left-padded prompts (collate with padding_side='left')")
        if not 0.0 <= temperature <= 10.0:
            raise InputError(None, f"temperature must be between 0 and 10, got {temperature}")
        tok = self.processor.llm_tokenizer
        embeds = self.embed_inputs(self._unpadded_features(batch))
        self._set_token_mask(None)
        b, t = attn.shape
        lengths = attn.bool().sum(dim=1)
        rows = torch.sort(lengths, descending=True, stable=True).indices  # batch row of each cache row: longest first
        logits, cache = self._prefill(embeds, attn, rows, max_new_tokens)
        static = not any(cache.is_sliding)  # preallocated: T + max_new_tokens slots, read through a 4D mask
        # The 4D additive mask (rows, 1, 1, slots) reaches attention as it is: left padding and the slots not yet
        # written are masked. Sliding-window caches get the 2D mask and transformers builds theirs.
        bias = embeds.new_full((b, 1, 1, t + max_new_tokens), torch.finfo(embeds.dtype).min)
        bias[:, 0, 0, :t].masked_fill_(attn.bool()[rows], 0.0)
        mask = attn.bool()[rows]
        positions = lengths[rows, None]  # (rows, 1): each prompt's own next position
        starts = t - positions[:, 0]  # first real cache slot of each row, ascending
        ragged = static and self.llm.config._attn_implementation == "sdpa"
        chunks = row_chunks(starts.tolist(), t) if ragged else []
        eos = torch.tensor(self._eos_ids(), device=embeds.device)
        done = torch.zeros(b, dtype=torch.bool, device=embeds.device)  # per cache row: answered (EOS emitted)
        answers: list[list[int]] = [[] for _ in range(b)]
        embed = self.llm.get_input_embeddings()
        if ragged:
            _register_ragged_attention()
            self.llm.set_attn_implementation(RAGGED_ATTENTION)
        try:
            for step in range(max_new_tokens):
                nxt = self._next_tokens(logits, temperature)
                for r, token, finished in zip(rows.tolist(), nxt.tolist(), done.tolist()):
                    if not finished:
                        answers[r].append(token)
                done = done | torch.isin(nxt, eos)
                if callback is not None:
                    callback(tok.batch_decode(answers, skip_special_tokens=True))
                left = max_new_tokens - step - 1
                if left == 0 or bool(done.all()):
                    break
                # Dropping finished rows copies the cache once; keeping them costs their share of every later step.
                if int(done.sum()) * left >= int((~done).sum()):
                    keep = (~done).nonzero().squeeze(1)
                    if static:
                        cache.reorder_cache(keep)  # index_select along the batch: drops the finished rows
                    else:
                        cache.batch_select_indices(keep)
                    rows, nxt, bias, mask, positions, starts, done = (
                        x[keep] for x in (rows, nxt, bias, mask, positions, starts, done))
                    chunks = row_chunks(starts.tolist(), t) if ragged else []
                bias[:, 0, 0, t + step] = 0.0  # the slot this step writes
                if not static:
                    mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
                extra = {"sepit_spans": [(a, z, s, t + step + 1) for a, z, s in chunks]} if ragged else {}
                out = self.llm(inputs_embeds=embed(nxt)[:, None], attention_mask=bias if static else mask,
                               position_ids=positions, cache=cache, use_cache=True, **extra)
                positions = positions + 1
                logits = out.logits[:, -1].float()
        finally:
            if ragged:
                self.llm.set_attn_implementation("sdpa")
        return tok.batch_decode(answers, skip_special_tokens=True)

    @torch.no_grad()
    def chat(self, conversations: Sequence[Sequence[dict[str, str]]], proteins: Sequence[Sequence[Any]],
             max_new_tokens: int = 256, callback: Callable[[list[str]], None] | None = None,
             temperature: float = 0.0) -> list[str]:
        """Answer each conversation (ending with a user turn) about its proteins; batched, greedy by default."""
        batch = self.processor(conversations, proteins, add_generation_prompt=True)
        return self.generate(self.to_device(batch), max_new_tokens=max_new_tokens, callback=callback,
                             temperature=temperature)

    def _answer_token_ids(self, word: str) -> list[int]:
        """First-token ids of ``word``, ``Word``, `` word``, `` Word`` (a first token that is only whitespace — a
        byte-level tokenizer's lone space — says nothing about the answer and is left out)."""
        tok = self.processor.llm_tokenizer
        ids = set()
        for variant in (word, word.capitalize(), " " + word, " " + word.capitalize()):
            enc = tok(variant, add_special_tokens=False)["input_ids"]
            if enc and tok.decode(enc[:1]).strip():
                ids.add(enc[0])
        return sorted(ids)

    @torch.no_grad()
    def yes_no_probability(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """P(yes) / (P(yes) + P(no)) of the first answer token after each prompt (built with
        ``add_generation_prompt=True``; either padding side). Case and leading-space variants are summed; the
        softmax is in float32. Prompts run unpadded, like :meth:`generate`. → (B,) float32"""
        embeds = self.embed_inputs(self._unpadded_features(batch))
        self._set_token_mask(None)
        last = embeds.new_empty(embeds.shape[0], embeds.shape[-1])
        for idx, e in self._prompt_groups(embeds, batch["attention_mask"]):
            last[idx] = self.llm.get_decoder()(inputs_embeds=e, use_cache=False).last_hidden_state[:, -1]
        probs = torch.softmax(self._logits_fp32(last), dim=-1)
        yes = probs[:, self._answer_token_ids("yes")].sum(-1)
        no = probs[:, self._answer_token_ids("no")].sum(-1)
        return yes / (yes + no).clamp_min(1e-30)

    # ---- stage 0 --------------------------------------------------------------------------------------------------
    def stage0_losses(self, batch: dict[str, torch.Tensor], text_encoder: nn.Module,
                      generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Stage-0 losses from one encoder pass over corrupted inputs → dict of scalars ``loss`` (weighted sum),
        ``contrastive`` (InfoNCE vs the frozen text encoder), ``denoise`` (MSE of predicted vs added Cα noise,
        σ = heads.denoise_sigma Å, on residues with structure; 0 when the batch has none) and ``mlm`` (masked
        residues over the 33-token ESM vocabulary; ``heads.mask_prob`` of the residues, 80/10/10 BERT corruption).

        batch: protein keys + ``text_input_ids``/``text_attention_mask`` (``SepitProcessor.stage0_batch``).
        """
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

        # coordinate noise on residues with structure
        coords, cmask = batch["coords"].float(), batch["coord_mask"].bool() & residues
        noise = torch.randn(coords.shape, generator=gen, device=gen.device if gen is not None else dev).to(dev)
        noise = noise * hc.denoise_sigma * cmask.unsqueeze(-1)
        enc = self.encoder(corrupted, attn, coords + noise, cmask)
        last = enc.last

        mlm = F.cross_entropy(self.heads.mlm(last[chosen]).float(), ids[chosen])
        if enc.kernels is not None:
            pred = self.heads.denoise(last, enc.kernels, coords + noise, cmask)
            denoise = F.mse_loss(pred[cmask].float(), noise[cmask])
        else:
            denoise = last.sum() * 0.0
        with torch.no_grad():
            text = text_encoder(batch["text_input_ids"], batch["text_attention_mask"])
        contrastive = self.heads.contrastive(masked_mean(last, residues), text)
        loss = hc.contrastive_weight * contrastive + hc.denoise_weight * denoise + hc.mlm_weight * mlm
        return {"loss": loss, "contrastive": contrastive, "denoise": denoise, "mlm": mlm}

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

    def save_pretrained(self, directory) -> None:
        """Write ``directory`` atomically: model.safetensors, sepit_config.json, HF configs and tokenizers."""
        from sepit.model.checkpoint import save_model

        save_model(self, directory)
