"""Packed forwards: many prompts (or prompt ends) of different lengths through the LLM's decoder as one sequence,
and prompt beginnings kept for the prompts that begin the same way.

The linear layers then multiply one tall matrix instead of one short one per prompt: on a 2-core CPU 16 yes/no
prompts of ~140 tokens run 1.4× faster packed (docs/benchmarks.md, "Yes/no scoring"). Attention stays per prompt:
the sdpa variant registered in :mod:`sepit.model.generation` reads ``sepit_segments`` and lets each part attend,
causally, over itself and over ranges of earlier cache slots (its prefix: a stored beginning, a prefix it shares
with other parts). No padding is computed, and a part's result does not depend on what it is packed with beyond
float rounding.

    hidden, cache = packed_forward(decoder, [e1, e2, e3])            # three whole prompts, (Σn, D)
    ends, _ = packed_forward(decoder, [x1, x2], prefixes=[[(0, 40)], [(0, 40)]], cache=cache)  # two ends of e1[:40]
    for run in run_groups(decoder, prompts, [Group([0, 1], shared=52, base=(key, 40))], store): ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

RAGGED_ATTENTION = "sepit_ragged_sdpa"  # the registered sdpa variant that reads segments (sepit.model.generation)

# Prompt tokens per packed forward. Matrix products of ~1,000 rows run near a CPU's peak (16 yes/no prompts: 8.9 s
# unpacked, 6.6 s packed 512 tokens at a time, 6.2 s 1,024, 6.0 s 2,048); a pack's keys and values are held until
# it is done.
PACK_TOKENS = 1024


def packable(llm: nn.Module) -> bool:
    """Whether ``llm`` runs packed forwards: its attention is sepit's registered sdpa variant (which reads the
    segments; eager or flash attention would attend across parts) and no layer keeps a sliding window (its cache
    would keep only the packed sequence's last window)."""
    from transformers import DynamicCache

    return getattr(llm.config, "_attn_implementation", None) == RAGGED_ATTENTION \
        and not any(DynamicCache(config=llm.config).is_sliding)


Range = tuple[int, int]  # cache slots [a, b)


def segment_attention(sdpa: Callable[..., tuple[torch.Tensor, Any]], module: nn.Module, query: torch.Tensor,
                      key: torch.Tensor, value: torch.Tensor, segments: Sequence[tuple[int, int, Sequence[Range]]],
                      **kwargs: Any) -> tuple[torch.Tensor, None]:
    """sdpa per part of a packed forward. query (1, H, Q, D); key/value (1, H_kv, past + Q, D), the last Q slots
    this forward's own; ``segments`` (start, stop, ranges): queries [start, stop) attend fully over the earlier
    slots of ``ranges`` (in order: the part's prefix) and causally over their own. → ((1, Q, H, D), None) like
    transformers' sdpa."""
    past = key.shape[2] - query.shape[2]
    outs = []
    for start, stop, ranges in segments:
        q = query[:, :, start:stop]
        k, v = key[:, :, past + start:past + stop], value[:, :, past + start:past + stop]
        mask = None  # causal over its own keys
        if ranges:
            k = torch.cat([key[:, :, a:b] for a, b in ranges] + [k], dim=2)
            v = torch.cat([value[:, :, a:b] for a, b in ranges] + [v], dim=2)
            n, p = stop - start, sum(b - a for a, b in ranges)
            mask = torch.ones(n, p + n, dtype=torch.bool, device=query.device).tril(diagonal=p)[None, None]
        outs.append(sdpa(module, q, k, v, mask, **kwargs)[0])
    return torch.cat(outs, dim=1), None


def packed_forward(decoder: nn.Module, parts: Sequence[torch.Tensor], *,
                   prefixes: Sequence[Sequence[Range]] | None = None, cache: Any = None
                   ) -> tuple[torch.Tensor, Any]:
    """Run ``parts`` ((n_i, D) embeddings) through ``decoder`` (a packable LLM's decoder) in one forward: part i
    attends over itself and over the slots ``prefixes[i]`` (ranges, in order) that earlier forwards wrote into
    ``cache``: its prefix, whose length is the part's first position. → (hidden states (Σ n_i, D), the cache,
    which now also holds this forward's keys and values after the earlier ones)."""
    from transformers import DynamicCache

    prefixes = [tuple(r) for r in prefixes] if prefixes is not None else [()] * len(parts)
    if cache is None:
        cache = DynamicCache(config=decoder.config)
    segments, positions, s = [], [], 0
    for x, ranges in zip(parts, prefixes):
        segments.append((s, s + x.shape[0], ranges))
        p = sum(b - a for a, b in ranges)
        positions.append(torch.arange(p, p + x.shape[0], device=x.device))
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


KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values (H_kv, n, D)


class PrefixStore:
    """Keys and values of prompt beginnings (the chat header and the proteins, up to the last protein's end token)
    for later prompts that begin the same way: the other questions about a protein, or the same questions asked
    again without homologs. Those prompts then run only their own tokens.

    Holds up to ``max_gb``; once full, new beginnings are not kept, so an evaluation that passes over the same
    proteins twice, in the same order, still finds the first ones again (least-recently-used eviction would find
    none). One store serves one LLM at one precision: :meth:`bind` refuses another. ``hits`` / ``misses`` count
    lookups."""

    def __init__(self, max_gb: float = 2.0) -> None:
        self.max_bytes = int(max_gb * 2**30)
        self.bytes = 0
        self.hits = self.misses = 0
        self._kv: dict[bytes, KV] = {}
        self._owner: Any = None

    def bind(self, llm: nn.Module) -> PrefixStore:
        """Tie the store to ``llm`` (its first user); a ValueError for any other model."""
        import weakref

        owner = self._owner() if self._owner is not None else None
        if owner is None:
            self._owner = weakref.ref(llm)
            self._kv.clear()
            self.bytes = 0
        elif owner is not llm:
            raise ValueError("this PrefixStore holds another model's prompts: make one store per model")
        return self

    def __len__(self) -> int:
        return len(self._kv)

    def __contains__(self, key: bytes) -> bool:
        return key in self._kv

    def get(self, key: bytes) -> KV | None:
        kv = self._kv.get(key)
        if kv is None:
            self.misses += 1
        else:
            self.hits += 1
        return kv

    def put(self, key: bytes, kv: KV) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in kv)
        if key not in self._kv and self.bytes + size <= self.max_bytes:
            self._kv[key] = [(k.clone(), v.clone()) for k, v in kv]  # not views of a whole pack's cache
            self.bytes += size


@dataclass
class Group:
    """Rows of a batch that run together: they share their first ``shared`` positions (0: nothing shared), and,
    when ``base`` = (key, q) is given, their first q positions are a stored beginning (:class:`PrefixStore`). Every
    row's own end starts at most at ``limit`` (the positions after it must be computed: the last prompt token for
    yes/no, the first scored answer token for likelihoods)."""

    rows: list[int]
    shared: int = 0
    base: tuple[bytes, int] | None = None
    limit: int | None = None

    def usable_base(self) -> tuple[bytes, int] | None:
        """``base`` where its end is within ``limit`` (else the rows run from their first position)."""
        return self.base if self.base is not None and (self.limit is None or self.base[1] <= self.limit) else None


def served_rows(groups: Sequence[Group], store: PrefixStore | None) -> set[int]:
    """Rows whose beginning :func:`run_groups` will take from ``store``: their first positions (and the protein
    features there) are never computed."""
    return {r for g in groups if (b := g.usable_base()) is not None and store is not None and b[0] in store
            for r in g.rows}


@dataclass
class PackRun:
    """One pack's results: the cache its forwards filled; per row the hidden states of its own end, where that end
    starts, and the cache ranges holding the row's positions 0… in order."""

    cache: Any
    ends: dict[int, torch.Tensor] = field(default_factory=dict)
    start: dict[int, int] = field(default_factory=dict)
    slots: dict[int, list[Range]] = field(default_factory=dict)


def _layers_kv(cache: Any, a: int, b: int) -> KV:
    return [(layer.keys[0, :, a:b], layer.values[0, :, a:b]) for layer in cache.layers]


def run_groups(decoder: nn.Module, prompts: Sequence[torch.Tensor], groups: Sequence[Group],
               store: PrefixStore | None = None, budget: int = PACK_TOKENS) -> Iterator[PackRun]:
    """Run ``prompts`` ((n_r, D) embeddings) group by group, packed ``budget`` tokens at a time (one
    :class:`PackRun` per pack): each group's stored beginning is taken from ``store`` or run once (and kept there),
    its shared prefix runs once after it, and each row's own end last, attending over both."""
    from transformers import DynamicCache

    bases = [g.usable_base() for g in groups]
    own = [max(g.shared, b[1] if b else 0) for g, b in zip(groups, bases)]
    sizes = [own[i] + sum(prompts[r].shape[0] - own[i] for r in g.rows) for i, g in enumerate(groups)]
    for pack in packs(sizes, budget):
        # 1. the beginnings: from the store, else run (packed) and kept
        keys: dict[bytes, int] = {}
        for i in pack:
            if bases[i] is not None:
                keys.setdefault(bases[i][0], i)
        kv: dict[bytes, KV] = {}
        missing = []
        for key, i in keys.items():
            got = store.get(key) if store is not None else None
            if got is None:
                missing.append((key, i))
            else:
                kv[key] = got
        if missing:
            _, ca = packed_forward(decoder, [prompts[groups[i].rows[0]][:bases[i][1]] for _, i in missing])
            s = 0
            for key, i in missing:
                q = bases[i][1]
                kv[key] = _layers_kv(ca, s, s + q)
                if store is not None:
                    store.put(key, kv[key])
                s += q
        cache, base_range, slot = None, {}, 0
        if kv:
            cache = DynamicCache(config=decoder.config)
            order = list(kv)
            for layer in range(len(kv[order[0]])):
                cache.update(torch.cat([kv[k][layer][0] for k in order], dim=1)[None],
                             torch.cat([kv[k][layer][1] for k in order], dim=1)[None], layer)
            for k in order:
                q = kv[k][0][0].shape[1]
                base_range[k] = (slot, slot + q)
                slot += q
        # 2. the shared prefixes after the beginnings
        prefix: dict[int, list[Range]] = {i: [base_range[bases[i][0]]] if bases[i] else [] for i in pack}
        mids = [i for i in pack if groups[i].shared > (bases[i][1] if bases[i] else 0)]
        if mids:
            q0 = [bases[i][1] if bases[i] else 0 for i in mids]
            parts = [prompts[groups[i].rows[0]][q:groups[i].shared] for i, q in zip(mids, q0)]
            _, cache = packed_forward(decoder, parts, prefixes=[prefix[i] for i in mids], cache=cache)
            for i, x in zip(mids, parts):
                prefix[i] = prefix[i] + [(slot, slot + x.shape[0])]
                slot += x.shape[0]
        # 3. every row's own end
        run = PackRun(cache)
        parts, pre, rows = [], [], []
        for i in pack:
            for r in groups[i].rows:
                parts.append(prompts[r][own[i]:])
                pre.append(prefix[i])
                rows.append(r)
                run.start[r] = own[i]
        hidden, run.cache = packed_forward(decoder, parts, prefixes=pre, cache=cache)
        for r, x, ranges, h in zip(rows, parts, pre, hidden.split([x.shape[0] for x in parts])):
            run.ends[r] = h
            run.slots[r] = [*ranges, (slot, slot + x.shape[0])]
            slot += x.shape[0]
        yield run
