"""Batched generation and yes/no scoring for :class:`~sepit.model.fusion.SepitModel` (its ``generate``, ``chat`` and
``yes_no_probability`` call these).

Every protein is encoded and every prompt prefilled without padding (equal lengths together), the per-prompt KV
caches are gathered into one preallocated, left-padded cache, and the batch is decoded together: each row attends
over its own prompt only, through an sdpa variant registered with transformers' public ``AttentionInterface``, and
finished answers leave the batch when that saves work. In float32 a prompt gets the same answer batched or alone.

    answers = generate(model, model.processor(convs, prots, add_generation_prompt=True), max_new_tokens=64)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from sepit.errors import InputError
from sepit.model.precision import logits_fp32

PROTEIN_KEYS = ("protein_input_ids", "protein_attention_mask", "protein_residue_mask", "coords", "coord_mask")
RAGGED_ATTENTION = "sepit_ragged_sdpa"


class GenerationModel(Protocol):
    """What generation uses of a :class:`~sepit.model.fusion.SepitModel`: public attributes and methods only."""

    llm: nn.Module
    processor: Any
    config: Any

    def embed_inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def encoder_features(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]: ...


def length_groups(lengths: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """(length, row indices) for each distinct value of ``lengths`` (B,): rows that can run together unpadded."""
    return [(int(n), (lengths == n).nonzero().squeeze(1)) for n in torch.unique(lengths).tolist()]


# ---- decoding attention over a left-padded cache --------------------------------------------------------------------
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


def register_ragged_attention() -> None:
    """Register :func:`_ragged_sdpa` under :data:`RAGGED_ATTENTION` with transformers' public attention registry
    (its masks are sdpa's, so a model switched to it runs exactly as with sdpa unless given spans)."""
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(RAGGED_ATTENTION, _ragged_sdpa)
    AttentionMaskInterface.register(RAGGED_ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])


def use_ragged_attention(llm: nn.Module) -> nn.Module:
    """Switch an sdpa LLM to :data:`RAGGED_ATTENTION` once, when the model is put together; returns it.

    transformers picks a forward's attention from the model's config, not from an argument, so switching per
    generation would change state that concurrent generations (two server threads) share. Switched once, every
    forward (training, prefill, yes/no) still runs transformers' sdpa with sdpa's masks; only the decoding steps
    that pass ``sepit_spans`` skip the padding. Other implementations (eager, flash) are left as they are."""
    if getattr(llm.config, "_attn_implementation", None) == "sdpa":
        register_ragged_attention()
        llm.set_attn_implementation(RAGGED_ATTENTION)
    return llm


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


# ---- prompts without padding ----------------------------------------------------------------------------------------
def unpadded_features(model: GenerationModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch with ``protein_features`` (N, D_plm) from encoding each protein without padding (proteins of
    equal length together): padding costs compute, and a protein then gets the same features alone or batched.
    Batches without proteins (or with features already) come back as they are."""
    if batch.get("protein_features") is not None or batch.get("protein_input_ids") is None \
            or batch["protein_input_ids"].shape[0] == 0:
        return batch
    per_protein: list[torch.Tensor | None] = [None] * batch["protein_input_ids"].shape[0]
    for n, idx in length_groups(batch["protein_attention_mask"].sum(dim=1)):  # right-padded: real tokens first
        sub = {k: batch[k][idx, :n] for k in PROTEIN_KEYS if batch.get(k) is not None}
        for i, f in zip(idx.tolist(), model.encoder_features(sub)):
            per_protein[i] = f
    return dict(batch, protein_features=torch.cat(per_protein))


def prompt_groups(embeds: torch.Tensor, attention_mask: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (row indices, (G, n, D) unpadded embeddings) per group of prompts with the same length n."""
    real = attention_mask.bool()
    for n, idx in length_groups(real.sum(dim=1)):
        if n == 0:
            raise InputError(None, "an empty prompt cannot be answered")
        yield idx, embeds[idx][real[idx]].view(len(idx), n, embeds.shape[-1])


PREFILL_CHUNK = 512  # prompt tokens per prefill forward: a stop request waits for at most one chunk


def prefill(llm: nn.Module, embeds: torch.Tensor, attention_mask: torch.Tensor, order: torch.Tensor,
            max_new_tokens: int, between: Callable[[], None] | None = None,
            chunk: int = PREFILL_CHUNK) -> tuple[torch.Tensor, Any]:
    """Run every prompt through ``llm`` without padding (prompts of equal length together), then gather their KV
    caches into one cache for decoding the batch together: cache row k holds batch row ``order[k]``, left-padded
    to the batch's width T.

    embeds (B, T, D), attention_mask (B, T) left-padded → (last-token logits (B, V) float32 in cache row order,
    cache). The cache is preallocated for T + ``max_new_tokens`` (a growing cache copies itself at every step),
    except for sliding-window models, whose cache layers keep only the window.

    Prompts longer than ``chunk`` tokens are prefilled ``chunk`` tokens at a time (same cache, same result);
    ``between()`` runs between chunks and may raise to stop (a timeout or a client that left need not wait for a
    whole long prefill).
    """
    from transformers import DynamicCache, StaticCache

    b, t, _ = embeds.shape
    slot = torch.empty_like(order)
    slot[order] = torch.arange(b, device=order.device)  # cache row of each batch row
    logits = torch.empty(b, llm.get_output_embeddings().weight.shape[0], device=embeds.device)
    parts = []
    for idx, e in prompt_groups(embeds, attention_mask):
        out = None
        for s in range(0, e.shape[1], chunk):
            if s and between is not None:
                between()
            out = llm(inputs_embeds=e[:, s:s + chunk], cache=None if out is None else out.cache, use_cache=True,
                      logits_to_keep=1)
        logits[slot[idx]] = out.logits[:, -1].float()
        parts.append((slot[idx], e.shape[1], out.cache))
    cache = StaticCache(config=llm.config, max_cache_len=t + max_new_tokens)
    if any(cache.is_sliding):
        window = int(llm.config.sliding_window)
        if t >= window:  # its prefill cache would hold only the window: no left-padded batch cache to build
            raise InputError(None, f"a prompt of {t} tokens is longer than this LLM's sliding window ({window})")
        cache = DynamicCache(config=llm.config)
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


# ---- decoding -------------------------------------------------------------------------------------------------------
def next_tokens(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, V) float32 logits → (B,) token ids: argmax at temperature 0, else a sample of softmax(logits / T)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    return torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1).squeeze(1)


def eos_ids(llm: nn.Module, tokenizer: Any) -> list[int]:
    """The ids that end an answer: the LLM's generation config's EOS id(s), plus the tokenizer's."""
    ids = llm.generation_config.eos_token_id if llm.generation_config is not None else None
    ids = [ids] if isinstance(ids, int) else list(ids or [])
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def check_generation_args(limit: int, attention_mask: torch.Tensor, max_new_tokens: int, temperature: float) -> None:
    """One-line InputErrors for a bad length cap (1..``limit``), right padding or a temperature outside [0, 10]."""
    if not 1 <= max_new_tokens <= limit:
        raise InputError(None, f"max_new_tokens must be between 1 and {limit}, got {max_new_tokens}")
    if attention_mask.shape[1] and not bool(attention_mask[:, -1].all()):
        raise InputError(None, "generation needs left-padded prompts (collate with padding_side='left')")
    if not 0.0 <= temperature <= 10.0:
        raise InputError(None, f"temperature must be between 0 and 10, got {temperature}")


@torch.no_grad()
def generate(model: GenerationModel, batch: dict[str, torch.Tensor], max_new_tokens: int = 256,
             callback: Callable[[list[str]], None] | None = None, temperature: float = 0.0) -> list[str]:
    """``model``'s answers to a left-padded prompt batch (see :meth:`SepitModel.generate`): greedy at
    ``temperature`` 0, else sampled; ``callback(texts_so_far)`` after every step. → one string per prompt."""
    attn = batch["attention_mask"]
    check_generation_args(model.config.max_new_tokens_limit, attn, max_new_tokens, temperature)
    llm = model.llm
    tok = model.processor.llm_tokenizer
    embeds = model.embed_inputs(unpadded_features(model, batch))
    b, t = attn.shape
    lengths = attn.bool().sum(dim=1)
    rows = torch.sort(lengths, descending=True, stable=True).indices  # batch row of each cache row: longest first
    # Between prefill chunks the callback sees no text yet; it may raise to stop, as after a decoding step.
    between = (lambda: callback([""] * b)) if callback is not None else None
    logits, cache = prefill(llm, embeds, attn, rows, max_new_tokens, between)
    static = not any(cache.is_sliding)  # preallocated: T + max_new_tokens slots, read through a 4D mask
    # The 4D additive mask (rows, 1, 1, slots) reaches attention as it is: left padding and the slots not yet
    # written are masked. Sliding-window caches get the 2D mask and transformers builds theirs.
    bias = embeds.new_full((b, 1, 1, t + max_new_tokens), torch.finfo(embeds.dtype).min)
    bias[:, 0, 0, :t].masked_fill_(attn.bool()[rows], 0.0)
    mask = attn.bool()[rows]
    positions = lengths[rows, None]  # (rows, 1): each prompt's own next position
    starts = t - positions[:, 0]  # first real cache slot of each row, ascending
    ragged = static and llm.config._attn_implementation == RAGGED_ATTENTION  # see use_ragged_attention
    chunks = row_chunks(starts.tolist(), t) if ragged else []
    eos = torch.tensor(eos_ids(llm, tok), device=embeds.device)
    done = torch.zeros(b, dtype=torch.bool, device=embeds.device)  # per cache row: answered (EOS emitted)
    answers: list[list[int]] = [[] for _ in range(b)]
    embed = llm.get_input_embeddings()
    for step in range(max_new_tokens):
        nxt = next_tokens(logits, temperature)
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
        out = llm(inputs_embeds=embed(nxt)[:, None], attention_mask=bias if static else mask,
                  position_ids=positions, cache=cache, use_cache=True, **extra)
        positions = positions + 1
        logits = out.logits[:, -1].float()
    return tok.batch_decode(answers, skip_special_tokens=True)


# ---- yes / no -------------------------------------------------------------------------------------------------------
def answer_token_ids(tokenizer: Any, word: str) -> list[int]:
    """First-token ids of ``word``, ``Word``, `` word``, `` Word`` (a first token that is only whitespace — a
    byte-level tokenizer's lone space — says nothing about the answer and is left out)."""
    ids = set()
    for variant in (word, word.capitalize(), " " + word, " " + word.capitalize()):
        enc = tokenizer(variant, add_special_tokens=False)["input_ids"]
        if enc and tokenizer.decode(enc[:1]).strip():
            ids.add(enc[0])
    return sorted(ids)


@torch.no_grad()
def yes_no_probability(model: GenerationModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """P(yes) / (P(yes) + P(no)) of the first answer token after each prompt (see
    :meth:`SepitModel.yes_no_probability`); prompts run unpadded. → (B,) float32"""
    embeds = model.embed_inputs(unpadded_features(model, batch))
    decoder = model.llm.get_decoder()
    last = embeds.new_empty(embeds.shape[0], embeds.shape[-1])
    for idx, e in prompt_groups(embeds, batch["attention_mask"]):
        last[idx] = decoder(inputs_embeds=e, use_cache=False).last_hidden_state[:, -1]
    probs = torch.softmax(logits_fp32(model.llm.get_output_embeddings(), last), dim=-1)
    tok = model.processor.llm_tokenizer
    yes = probs[:, answer_token_ids(tok, "yes")].sum(-1)
    no = probs[:, answer_token_ids(tok, "no")].sum(-1)
    return yes / (yes + no).clamp_min(1e-30)
