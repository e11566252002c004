"""Training items and their order: deterministic per (seed, epoch), length-grouped, split across ranks.

An item is one training example before tokenisation: for stage 0 a (protein, caption) pair, for stages 1–2 a
conversation with its proteins. Batches of similar length waste less compute on padding (the LLM never sees
padding as content either way: it is masked out).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Item:
    """One example. ``messages`` (stages 1–2) or ``caption`` (stage 0); ``proteins`` are
    :class:`sepit.proteins.Protein` s."""

    id: str
    proteins: tuple[Any, ...]
    messages: tuple[dict[str, str], ...] = ()
    caption: str = ""
    task: str = ""
    length: int = 0
    protein_ids: tuple[str, ...] = field(default=())


def epoch_batches(items: list[Item], global_batch: int, seed: int, epoch: int, group_by_length: bool = True,
                  mega: int = 32) -> list[list[int]]:
    """Indices of ``items`` in global batches for one epoch (the last partial batch is dropped when there is at
    least one full batch). With length grouping, items are sorted by length inside shuffled windows of
    ``mega`` batches, then the batch order is shuffled — the usual "length-grouped sampler"."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(items)))
    rng.shuffle(order)
    if group_by_length:
        window = global_batch * mega
        order = [i for s in range(0, len(order), window)
                 for i in sorted(order[s:s + window], key=lambda j: items[j].length, reverse=True)]
    batches = [order[s:s + global_batch] for s in range(0, len(order), global_batch)]
    if len(batches) > 1 and len(batches[-1]) < global_batch:
        batches.pop()
    if group_by_length:
        rng.shuffle(batches)
    return batches


def steps_per_epoch(n_items: int, global_batch: int) -> int:
    return max(1, n_items // global_batch) if n_items >= global_batch else 1


def shard(batch: list[int], rank: int, world: int, micro: int, accum: int) -> list[list[int]]:
    """This rank's micro-batches of a global batch: rank r takes a contiguous slice, cut into ``accum`` parts."""
    per_rank = math.ceil(len(batch) / world)
    mine = batch[rank * per_rank:(rank + 1) * per_rank]
    return [mine[i * micro:(i + 1) * micro] for i in range(accum) if mine[i * micro:(i + 1) * micro]]
