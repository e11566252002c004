"""Packed forwards: many prompts (or prompt ends) of different lengths through the LLM's decoder as one sequence.

The linear layers then multiply one tall matrix instead of one short one per prompt: on a 2-core CPU the matrix
products of 16 prompts of ~140 tokens run 1.8× faster packed (docs/benchmarks.md, "Packed prompts"). Attention
stays per prompt: the sdpa variant registered in :mod:`sepit.model.generation` reads ``sepit_segments`` and lets
each part attend, causally, over itself and over an optional range of earlier cache slots (a prefix it shares with
other parts, run once by an earlier packed forward). No padding is computed, and a part's result does not depend
on what it is packed with beyond float rounding.

    hidden, cache = packed_forward(decoder, [e1, e2, e3])            # three whole prompts, (Σn, D)
    ends, _ = packed_forward(decoder, [x1, x2], prefixes=[(0, 40), (0, 40)], cache=cache)  # two ends of e1[:40]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

RAGGED_ATTENTION = "sepit_ragged_sdpa"  # the registered sdpa variant that reads segments (sepit.model.generation)

# Prompt tokens per packed forward (yes/no and option scoring; generation prefill packs its 512-token chunks).
# Matrix products of ~1,000 rows run near the CPU's peak (16 yes/no prompts: 8.9 s unpacked, 6.6 s packed 512
# tokens at a time, 6.2 s 1,024, 6.0 s 2,048); more rows would
# make a stop request (server) wait longer for the forward in progress.
PACK_TOKENS = 1024


def packable(llm: nn.Module) -> bool:
    """Whether ``llm`` runs packed forwards: its attention is sepit's registered sdpa variant (which reads the
    segments; eager or flash attention would attend across parts) and no layer keeps a sliding window (its cache
    would keep only the packed sequence's last window)."""
    from transformers import DynamicCache

    return getattr(llm.config, "_attn_implementation", None) == RAGGED_ATTENTION \
        and not any(DynamicCache(config=llm.config).is_sliding)


def segment_attention(sdpa: Callable[..., tuple[torch.Tensor, Any]], module: nn.Module, query: torch.Tensor,
                      key: torch.Tensor, value: torch.Tensor, segments: Sequence[tuple[int, int, int, int]],
                      **kwargs: Any) -> tuple[torch.Tensor, None]:
    """sdpa per part of a packed forward. query (1, H, Q, D); key/value (1, H_kv, past + Q, D), the last Q slots
    this forward's own; ``segments`` (start, stop, a, b): queries [start, stop) attend causally over their own keys
    and fully over the earlier slots [a, b) (a == b: none). → ((1, Q, H, D), None) like transformers' sdpa."""
    past = key.shape[2] - query.shape[2]
    outs = []
    for start, stop, a, b in segments:
        q = query[:, :, start:stop]
        k, v = key[:, :, past + start:past + stop], value[:, :, past + start:past + stop]
        mask = None  # causal over its own keys
        if b > a:
            k = torch.cat([key[:, :, a:b], k], dim=2)
            v = torch.cat([value[:, :, a:b], v], dim=2)
            n = stop - start
            mask = torch.ones(n, b - a + n, dtype=torch.bool, device=query.device).tril(diagonal=b - a)[None, None]
        outs.append(sdpa(module, q, k, v, mask, **kwargs)[0])
    return torch.cat(outs, dim=1), None


def packed_forward(decoder: nn.Module, parts: Sequence[torch.Tensor], *,
                   prefixes: Sequence[tuple[int, int]] | None = None, cache: Any = None
                   ) -> tuple[torch.Tensor, Any]:
    """Run ``parts`` ((n_i, D) embeddings) through ``decoder`` (a packable LLM's decoder) in one forward: part i
    attends over itself and, with ``prefixes[i]`` = (a, b), over the slots [a, b) an earlier packed forward wrote
    into ``cache`` (its first position is then b - a). → (hidden states (Σ n_i, D), the cache, which now also holds
    this forward's keys and values after the earlier ones)."""
    from transformers import DynamicCache

    prefixes = list(prefixes) if prefixes is not None else [(0, 0)] * len(parts)
    if cache is None:
        cache = DynamicCache(config=decoder.config)
    segments, positions, s = [], [], 0
    for x, (a, b) in zip(parts, prefixes):
        segments.append((s, s + x.shape[0], a, b))
        positions.append(torch.arange(b - a, b - a + x.shape[0], device=x.device))
        s += x.shape[0]
    out = decoder(inputs_embeds=torch.cat(list(parts))[None], position_ids=torch.cat(positions)[None], cache=cache,
                  use_cache=True, sepit_segments=segments)
    return out.last_hidden_state[0], out.cache


def packs(lengths: Sequence[int], budget: int = PACK_TOKENS) -> list[list[int]]:
    """Indices of ``lengths`` in order, cut into packs of at most ``budget`` tokens (a longer item alone)."""
    out: list[list[int]] = []
    total = budget + 1
    for i, n in enumerate(lengths):
        if total + n > budget:
            out.append([])
            total = 0
        out[-1].append(i)
        total += n
    return out


def ends_after_prefixes(decoder: nn.Module, prompts: Sequence[torch.Tensor], groups: Sequence[tuple[list[int], int]],
                        budget: int = PACK_TOKENS) -> dict[int, torch.Tensor]:
    """The hidden states of each prompt's end: for every group (rows, p) of prompts ((n_r, D) embeddings) whose
    first p positions are the same, the shared prefix runs once and each row's positions p… attend over it
    (p = 0: the row runs whole). Groups are packed ``budget`` tokens at a time. → {row: (n_r - p, D)}"""
    out: dict[int, torch.Tensor] = {}
    sizes = [p + sum(prompts[r].shape[0] - p for r in rows) for rows, p in groups]
    for pack in packs(sizes, budget):
        shared = [(g, groups[g][1]) for g in pack if groups[g][1] > 0]
        cache, slot, span = None, 0, {}
        if shared:
            _, cache = packed_forward(decoder, [prompts[groups[g][0][0]][:p] for g, p in shared])
            for g, p in shared:
                span[g] = (slot, slot + p)
                slot += p
        parts, prefixes, rows_in = [], [], []
        for g in pack:
            rows, p = groups[g]
            for r in rows:
                parts.append(prompts[r][p:])
                prefixes.append(span.get(g, (0, 0)))
                rows_in.append(r)
        hidden, _ = packed_forward(decoder, parts, prefixes=prefixes, cache=cache)
        for r, h in zip(rows_in, hidden.split([x.shape[0] for x in parts])):
            out[r] = h
    return out
