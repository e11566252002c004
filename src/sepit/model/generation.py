"""Batched generation and yes/no scoring for :class:`~sepit.model.fusion.SepitModel` (its ``generate``, ``chat`` and
``yes_no_probability`` call these).

Every protein is encoded and every prompt prefilled without padding (equal lengths together), the per-prompt KV
caches are gathered into one preallocated, left-padded cache, and the batch is decoded together: each row attends
over its own prompt only, through an sdpa variant registered with transformers' public ``AttentionInterface``, and
finished answers leave the batch when that saves work. In float32 a prompt gets the same answer batched or alone.

    answers = generate(model, model.processor(convs, prots, add_generation_prompt=True), max_new_tokens=64)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any, Protocol

import torch
from torch import nn

from sepit.errors import InputError
from sepit.model.packing import (
    RAGGED_ATTENTION,
    Group,
    PrefixStore,
    packable,
    run_groups,
    segment_attention,
    served_rows,
)
from sepit.model.precision import logits_fp32
from sepit.model.processor import IGNORE

PROTEIN_KEYS = ("protein_input_ids", "protein_attention_mask", "protein_residue_mask", "coords", "coord_mask")


class GenerationModel(Protocol):
    """What generation uses of a :class:`~sepit.model.fusion.SepitModel`: public attributes and methods only."""

    llm: nn.Module
    processor: Any
    config: Any
    projector: nn.Module

    def embed_inputs(self, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...

    def encoder_features(self, batch: dict[str, torch.Tensor]) -> list[torch.Tensor]: ...


def length_groups(lengths: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """(length, row indices) for each distinct value of ``lengths`` (B,): rows that can run together unpadded."""
    return [(int(n), (lengths == n).nonzero().squeeze(1)) for n in torch.unique(lengths).tolist()]


# ---- decoding attention over a left-padded cache --------------------------------------------------------------------
def _ragged_sdpa(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, sepit_spans: list[tuple[int, int, int, int]] | None = None,
                 sepit_segments: list[tuple[int, int, int, int]] | None = None, **kwargs: Any
                 ) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, except:

    - in a decoding step given ``sepit_spans``: rows [a, b) of the batch then attend over cache slots [s, e) only,
      i.e. not over the left padding of longer prompts (the padding is masked anyway; skipping it saves reading it).
      query (B, H, 1, D), key/value (B, H_kv, S, D), mask (B, 1, 1, S);
    - in a packed forward given ``sepit_segments`` (:func:`sepit.model.packing.segment_attention`): each packed
      prompt attends over itself and its shared prefix only (transformers' mask is not used)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    if sepit_segments is not None:
        return segment_attention(sdpa, module, query, key, value, sepit_segments, **kwargs)
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
def _protein_key(batch: dict[str, torch.Tensor], j: int) -> bytes:
    """Protein ``j`` of a processor batch as bytes (residue ids, coordinates, which residues have them): equal
    keys, equal proteins."""
    real = batch["protein_attention_mask"][j].bool()
    key = batch["protein_input_ids"][j][real].cpu().numpy().tobytes()
    for name in ("coords", "coord_mask"):
        if batch.get(name) is not None:
            key += batch[name][j][real].cpu().numpy().tobytes()
    return key


def unpadded_features(model: GenerationModel, batch: dict[str, torch.Tensor], skip_rows: Collection[int] = ()
                      ) -> dict[str, torch.Tensor]:
    """The batch with ``protein_features`` (N, D_plm) from encoding each protein without padding (proteins of
    equal length together): padding costs compute, and a protein then gets the same features alone or batched.
    A protein that occurs more than once (several questions about it) is encoded once; the proteins of the rows
    ``skip_rows`` (whose beginnings come from a :class:`~sepit.model.packing.PrefixStore`, so their protein slots
    are never read) are not encoded at all and get zeros. Batches without proteins (or with features already) come
    back as they are."""
    if batch.get("protein_features") is not None or batch.get("protein_input_ids") is None \
            or batch["protein_input_ids"].shape[0] == 0:
        return batch
    keys = [_protein_key(batch, j) for j in range(batch["protein_input_ids"].shape[0])]
    skip: set[int] = set()
    if skip_rows:
        per_row = (batch["input_ids"] == model.processor.protein_start_id).sum(dim=1).tolist()
        row_of = [r for r, c in enumerate(per_row) for _ in range(c)]  # proteins are stored row by row
        skip = {j for j, r in enumerate(row_of) if r in skip_rows}
    first: dict[bytes, int] = {}
    for j, k in enumerate(keys):
        if j not in skip:
            first.setdefault(k, j)
    lengths = batch["protein_attention_mask"].sum(dim=1)  # right-padded: real tokens first
    unique = torch.tensor(sorted(first.values()), dtype=torch.long, device=lengths.device)
    features: dict[int, torch.Tensor] = {}
    for n, sel in length_groups(lengths[unique]):
        idx = unique[sel]
        sub = {k: batch[k][idx, :n] for k in PROTEIN_KEYS if batch.get(k) is not None}
        features.update(zip(idx.tolist(), model.encoder_features(sub)))
    if not skip:
        return dict(batch, protein_features=torch.cat([features[first[k]] for k in keys]))
    pool = model.config.projector.pool
    slots = [-(-int(n) // pool) for n in batch["protein_residue_mask"].sum(dim=1).tolist()]
    dtype = model.projector.net[0].weight.dtype
    return dict(batch, protein_features=torch.cat(
        [features[first[k]] if j not in skip else torch.zeros(slots[j], model.projector.in_dim, dtype=dtype,
                                                              device=lengths.device)
         for j, k in enumerate(keys)]))


def prompt_groups(embeds: torch.Tensor, attention_mask: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (row indices, (G, n, D) unpadded embeddings) per group of prompts with the same length n."""
    real = attention_mask.bool()
    for n, idx in length_groups(real.sum(dim=1)):
        if n == 0:
            raise InputError(None, "an empty prompt cannot be answered")
        yield idx, embeds[idx][real[idx]].view(len(idx), n, embeds.shape[-1])


PREFILL_CHUNK = 512  # prompt tokens per prefill forward: a stop request waits for at most one chunk


def prefill_groups(lengths: Sequence[int], bases: Sequence[tuple[bytes, int] | None] | None, chunk: int
                   ) -> tuple[list[int], list[Group]]:
    """The rows :func:`prefill` runs packed (those of at most ``chunk`` tokens; longer ones run alone, in chunks)
    and their :class:`Group` s, one row each (indices into that list of rows)."""
    short = [r for r, n in enumerate(lengths) if n <= chunk]
    return short, [Group([k], base=bases[r] if bases is not None else None, limit=lengths[r] - 1)
                   for k, r in enumerate(short)]


def prefill(llm: nn.Module, embeds: torch.Tensor, attention_mask: torch.Tensor, order: torch.Tensor,
            max_new_tokens: int, between: Callable[[], None] | None = None,
            chunk: int = PREFILL_CHUNK, bases: Sequence[tuple[bytes, int] | None] | None = None,
            store: PrefixStore | None = None) -> tuple[torch.Tensor, Any]:
    """Run every prompt through ``llm`` without padding (packed, or prompts of equal length together), then gather
    their KV caches into one cache for decoding the batch together: cache row k holds batch row ``order[k]``,
    left-padded to the batch's width T.

    embeds (B, T, D), attention_mask (B, T) left-padded → (last-token logits (B, V) float32 in cache row order,
    cache). The cache is preallocated for T + ``max_new_tokens`` (a growing cache copies itself at every step),
    except for sliding-window models, whose cache layers keep only the window.

    A packable LLM (:func:`sepit.model.packing.packable`) runs prompts packed ``chunk`` tokens at a time, each
    row's beginning ``bases[r]`` (:func:`prompt_bases`) once per batch or from ``store``; others run prompts of
    equal length together. A prompt longer than ``chunk`` tokens is prefilled alone, ``chunk`` tokens at a time
    (same cache, same result). ``between()`` runs between forwards and may raise to stop (a timeout or a client
    that left need not wait for a whole long prefill).
    """
    from transformers import DynamicCache, StaticCache

    b, t, _ = embeds.shape
    slot = torch.empty_like(order)
    slot[order] = torch.arange(b, device=order.device)  # cache row of each batch row
    head = llm.get_output_embeddings()
    logits = torch.empty(b, head.weight.shape[0], device=embeds.device)
    parts = []  # (cache rows, prompt length n, cache, ranges): the rows' keys are those cache slots, in order
    started = False

    def pause() -> None:
        nonlocal started
        if started and between is not None:
            between()
        started = True

    real = attention_mask.bool()
    lengths = real.sum(dim=1)
    if packable(llm):
        short, groups = prefill_groups(lengths.tolist(), bases, chunk)
        for run in run_groups(llm.get_decoder(), [embeds[r][real[r]] for r in short], groups, store, budget=chunk):
            pause()
            for k, h in run.ends.items():  # k: index into short
                r = short[k]
                logits[slot[r]] = logits_fp32(head, h[-1:])[0]
                parts.append((slot[r:r + 1], int(lengths[r]), run.cache, run.slots[k]))
        todo = [(torch.tensor([r], device=embeds.device), None) for r in range(b) if int(lengths[r]) > chunk]
    else:
        todo = list(prompt_groups(embeds, attention_mask))
    for idx, e in todo:
        if e is None:
            e = embeds[idx][real[idx]].view(len(idx), int(lengths[idx[0]]), embeds.shape[-1])
        out = None
        for s in range(0, e.shape[1], chunk):
            pause()
            out = llm(inputs_embeds=e[:, s:s + chunk], cache=None if out is None else out.cache, use_cache=True,
                      logits_to_keep=1)
        logits[slot[idx]] = out.logits[:, -1].float()
        parts.append((slot[idx], e.shape[1], out.cache, [(0, e.shape[1])]))
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
        for rows, n, part, ranges in parts:
            keys[rows, :, t - n:] = torch.cat([part.layers[layer].keys[:, :, a:z] for a, z in ranges], dim=2)
            values[rows, :, t - n:] = torch.cat([part.layers[layer].values[:, :, a:z] for a, z in ranges], dim=2)
        cache.update(keys, values, layer)  # copies into the cache
    return logits, cache


# ---- decoding -------------------------------------------------------------------------------------------------------
def next_tokens(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, V) float32 logits → (B,) token ids: argmax at temperature 0, else a sample of softmax(logits / T)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    return torch.multinomial(torch.softmax(logits / temperature, dim=-1), 1).squeeze(1)


def repeated_ngram_tokens(tokens: Sequence[int], n: int) -> list[int]:
    """The tokens that would complete an ``n``-gram already in ``tokens`` (after its last n − 1 tokens)."""
    if n < 1 or len(tokens) < n - 1:
        return []
    tail = list(tokens[len(tokens) - n + 1:]) if n > 1 else []
    return [tokens[i + n - 1] for i in range(len(tokens) - n + 1) if list(tokens[i:i + n - 1]) == tail]


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
             callback: Callable[[list[str]], None] | None = None, temperature: float = 0.0,
             store: PrefixStore | None = None) -> list[str]:
    """``model``'s answers to a left-padded prompt batch (see :meth:`SepitModel.generate`): greedy at
    ``temperature`` 0, else sampled; ``callback(texts_so_far)`` after every step; prompt beginnings (header and
    proteins) from or into ``store``. → one string per prompt."""
    attn = batch["attention_mask"]
    check_generation_args(model.config.max_new_tokens_limit, attn, max_new_tokens, temperature)
    llm = model.llm
    tok = model.processor.llm_tokenizer
    store = store.bind(llm) if store is not None else None
    bases = prompt_bases(batch, model.processor)
    skip: set[int] = set()
    if store is not None and packable(llm):  # rows whose beginning comes from the store need no protein features
        short, groups = prefill_groups(attn.bool().sum(dim=1).tolist(), bases, PREFILL_CHUNK)
        skip = {short[k] for k in served_rows(groups, store)}
    embeds = model.embed_inputs(unpadded_features(model, batch, skip))
    b, t = attn.shape
    lengths = attn.bool().sum(dim=1)
    rows = torch.sort(lengths, descending=True, stable=True).indices  # batch row of each cache row: longest first
    # Between prefill chunks the callback sees no text yet; it may raise to stop, as after a decoding step.
    between = (lambda: callback([""] * b)) if callback is not None else None
    logits, cache = prefill(llm, embeds, attn, rows, max_new_tokens, between, bases=bases, store=store)
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
    ngram = model.config.no_repeat_ngram
    for step in range(max_new_tokens):
        if ngram:
            for k, r in enumerate(rows.tolist()):
                banned = repeated_ngram_tokens(answers[r], ngram)
                if banned:
                    logits[k, banned] = float("-inf")
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


def _common_prefix(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many leading entries of two 1-D token id tensors are equal."""
    m = min(a.shape[0], b.shape[0])
    differ = (a[:m] != b[:m]).nonzero()
    return int(differ[0, 0]) if differ.numel() else m


def shared_prefixes(prompts: Sequence[torch.Tensor], proteins: Sequence[Any] | None = None,
                    min_shared: int = 16) -> list[tuple[list[int], int]]:
    """Prompts that begin alike, as (rows, shared prefix length) groups; every row is in exactly one group.

    Two prompts join when they have the same proteins (``proteins[i]``: any comparable key of row i's proteins) and
    their common prefix of token ids is at least half of the shorter prompt (and ``min_shared`` tokens): the two
    questions of a yes/no pair share their protein and its homolog context, while prompts about different
    proteins share only the chat header. A group's prefix leaves each prompt at least one token of its own; a
    lone prompt is a group with prefix 0. prompts: (n_i,) unpadded token ids."""
    n = len(prompts)
    keys = list(proteins) if proteins is not None else [None] * n
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(n):
        for j in range(i + 1, n):
            shorter = min(prompts[i].shape[0], prompts[j].shape[0])
            if keys[i] == keys[j] and root(i) != root(j) \
                    and _common_prefix(prompts[i], prompts[j]) >= max(min_shared, shorter / 2):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    out = []
    for rows in groups.values():
        if len(rows) == 1:
            out.append((rows, 0))
            continue
        shared = min(_common_prefix(prompts[rows[0]], prompts[r]) for r in rows[1:])
        out.append((rows, min(shared, min(prompts[r].shape[0] for r in rows) - 1)))
    return out


def protein_keys(batch: dict[str, torch.Tensor], start_id: int) -> list[tuple[bytes, ...]]:
    """Per row of a processor batch, its proteins' keys in order: rows with equal keys ask about the same proteins.
    Proteins are stored row by row, one per ``<protein_start>`` token."""
    counts = (batch["input_ids"] == start_id).sum(dim=1).tolist()
    if batch.get("protein_input_ids") is None:
        return [()] * len(counts)
    keys, k = [], 0
    for c in counts:
        keys.append(tuple(_protein_key(batch, j) for j in range(k, k + c)))
        k += c
    return keys


def from_shared_prefix(decoder: nn.Module, prompts: Sequence[torch.Tensor], p: int
                       ) -> tuple[torch.Tensor, list[int]]:
    """Run ``prompts`` ((n_i, D) unpadded embeddings whose first ``p`` positions are the same) through ``decoder``:
    the prefix once, then every prompt's own end together from its KV cache. → (hidden states of the ends (G,
    max end, D), right-padded; each end's length)."""
    cache = decoder(inputs_embeds=prompts[0][None, :p], use_cache=True).cache
    cache.batch_repeat_interleave(len(prompts))
    ends = [x.shape[0] - p for x in prompts]
    x = prompts[0].new_zeros(len(prompts), max(ends), prompts[0].shape[-1])  # own ends, right-padded
    mask = torch.ones(len(prompts), p + max(ends), dtype=torch.long, device=x.device)
    for g, (e, n) in enumerate(zip(prompts, ends)):
        x[g, :n] = e[p:]
        mask[g, p + n:] = 0
    return decoder(inputs_embeds=x, attention_mask=mask, cache=cache, use_cache=True).last_hidden_state, ends


def prompt_bases(batch: dict[str, torch.Tensor], processor: Any) -> list[tuple[bytes, int] | None]:
    """Per row of a processor batch, its beginning up to the last protein's end token — the chat header and the
    proteins, which every prompt about the same proteins begins with — as (key, q positions), or None for a row
    without proteins. Positions count the row's real tokens (rows run unpadded)."""
    import hashlib

    keys = protein_keys(batch, processor.protein_start_id)
    real = batch["attention_mask"].bool()
    out: list[tuple[bytes, int] | None] = []
    for i, prots in enumerate(keys):
        ids = batch["input_ids"][i][real[i]]
        ends = (ids == processor.protein_end_id).nonzero()
        if not prots or not ends.numel():
            out.append(None)
            continue
        q = int(ends[-1, 0]) + 1
        h = hashlib.sha256(ids[:q].cpu().numpy().tobytes())
        for k in prots:
            h.update(len(k).to_bytes(8, "little") + k)
        out.append((h.digest(), q))
    return out


def _groups(shared: Sequence[tuple[list[int], int]], bases: Sequence[tuple[bytes, int] | None],
            limits: Sequence[int]) -> list[Group]:
    """:class:`Group` s from :func:`shared_prefixes` groups: a group's rows share their beginning when all of
    theirs is the same; ``limits[r]``: where row r's own end must start at the latest."""
    out = []
    for rows, p in shared:
        base = bases[rows[0]] if all(bases[r] == bases[rows[0]] for r in rows) else None
        out.append(Group(list(rows), shared=p, base=base, limit=min(limits[r] for r in rows)))
    return out


@torch.no_grad()
def yes_no_probability(model: GenerationModel, batch: dict[str, torch.Tensor],
                       store: PrefixStore | None = None) -> torch.Tensor:
    """P(yes) / (P(yes) + P(no)) of the first answer token after each prompt (see
    :meth:`SepitModel.yes_no_probability`); prompts run unpadded. Prompts that begin alike (the two questions of a
    yes/no pair: same protein, same context) run their shared prefix once and their own ends together from its KV
    cache (:func:`shared_prefixes`); prompts about the same proteins run their beginning once, or take it from
    ``store``. → (B,) float32"""
    real = batch["attention_mask"].bool()
    token_ids = [batch["input_ids"][i][real[i]] for i in range(real.shape[0])]
    shared = shared_prefixes(token_ids, protein_keys(batch, model.processor.protein_start_id))
    ends, _ = _run_prompts(model, batch, shared, [x.shape[0] - 1 for x in token_ids], store)
    last = torch.stack([ends[r][-1] for r in range(len(token_ids))])
    probs = torch.softmax(logits_fp32(model.llm.get_output_embeddings(), last), dim=-1)
    tok = model.processor.llm_tokenizer
    yes = probs[:, answer_token_ids(tok, "yes")].sum(-1)
    no = probs[:, answer_token_ids(tok, "no")].sum(-1)
    return yes / (yes + no).clamp_min(1e-30)


@torch.no_grad()
def answer_log_likelihood(model: GenerationModel, batch: dict[str, torch.Tensor],
                          store: PrefixStore | None = None) -> torch.Tensor:
    """(B,) mean log-probability per labelled (assistant) token of each row (see
    :meth:`SepitModel.answer_log_likelihood`); rows run unpadded, and rows that begin alike (the options of one
    question: same protein, same prompt) run their shared prefix once and their own answers together from its KV
    cache; their beginning (header and proteins) runs once or comes from ``store``. A row without labelled tokens
    gets -inf. → (B,) float32"""
    head = model.llm.get_output_embeddings()
    real = batch["attention_mask"].bool()
    n_rows = real.shape[0]
    token_ids = [batch["input_ids"][i][real[i]] for i in range(n_rows)]
    labels = [batch["labels"][i][real[i]] for i in range(n_rows)]
    out = torch.full((n_rows,), float("-inf"), dtype=torch.float32, device=real.device)

    def score(r: int, hidden: torch.Tensor, start: int) -> None:
        """Row ``r``'s mean log-probability from its hidden states at positions ``start``… (n, D)."""
        targets = labels[r][start + 1:]
        sel = targets != IGNORE
        if not bool(sel.any()):
            return
        lp = torch.log_softmax(logits_fp32(head, hidden[: targets.shape[0]][sel]), dim=-1)
        out[r] = lp.gather(1, targets[sel].unsqueeze(1)).mean()

    # the own end must start at the latest where the logits score the first labelled token
    first = [min(int((lab[1:] != IGNORE).nonzero()[0, 0]) if bool((lab[1:] != IGNORE).any()) else lab.shape[0],
                 lab.shape[0] - 1) for lab in labels]
    shared = [(rows, min(p, *(first[r] for r in rows)))
              for rows, p in shared_prefixes(token_ids, protein_keys(batch, model.processor.protein_start_id))]
    ends, start = _run_prompts(model, batch, shared, first, store)
    for r in range(n_rows):
        score(r, ends[r], start[r])
    return out


def _run_prompts(model: GenerationModel, batch: dict[str, torch.Tensor], shared: Sequence[tuple[list[int], int]],
                 limits: Sequence[int], store: PrefixStore | None) -> tuple[dict[int, torch.Tensor], dict[int, int]]:
    """:func:`prompt_ends` of a processor batch whose rows run in the :func:`shared_prefixes` groups ``shared``
    (``limits[r]``: where row r's own end must start at the latest); the proteins of rows whose beginning comes from
    ``store`` are not encoded."""
    store = store.bind(model.llm) if store is not None else None
    real = batch["attention_mask"].bool()
    groups = _groups(shared, prompt_bases(batch, model.processor), limits)
    skip = served_rows(groups, store) if packable(model.llm) else set()
    embeds = model.embed_inputs(unpadded_features(model, batch, skip))
    return prompt_ends(model.llm, [embeds[i][real[i]] for i in range(real.shape[0])], groups, store)


def prompt_ends(llm: nn.Module, prompts: Sequence[torch.Tensor], groups: Sequence[Group],
                store: PrefixStore | None = None) -> tuple[dict[int, torch.Tensor], dict[int, int]]:
    """The decoder's hidden states of each prompt's own end and where it starts: each group's beginning, shared
    prefix and ends run as :func:`sepit.model.packing.run_groups` runs them (packed) where the LLM allows it; else
    each group's shared prefix once and its rows' ends from its KV cache (a group without one: each row whole).
    prompts: (n_r, D) unpadded embeddings → ({row: (n_r - start, D)}, {row: start})"""
    decoder = llm.get_decoder()
    ends: dict[int, torch.Tensor] = {}
    start: dict[int, int] = {}
    if packable(llm):
        for run in run_groups(decoder, prompts, groups, store.bind(llm) if store is not None else None):
            ends.update(run.ends)
            start.update(run.start)
        return ends, start
    for g in groups:
        if g.shared == 0:
            for r in g.rows:
                ends[r], start[r] = decoder(inputs_embeds=prompts[r][None], use_cache=False).last_hidden_state[0], 0
            continue
        h, lengths = from_shared_prefix(decoder, [prompts[r] for r in g.rows], g.shared)
        for k, r in enumerate(g.rows):
            ends[r], start[r] = h[k, :lengths[k]], g.shared
    return ends, start
