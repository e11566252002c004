"""Training items and their order: deterministic per (seed, epoch), length-grouped, split across ranks.

An item is one training example before tokenisation: for stage 0 a (protein, caption) pair, for stages 1–2 a
conversation with its proteins. Batches of similar length waste less compute on padding (the LLM never sees
padding as content either way: it is masked out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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


#: items per shuffled block (× the global batch) and blocks per window: an epoch's order is worked out one window of
#: ``BLOCK × WINDOW_BLOCKS`` global batches at a time (131,072 items at a global batch of 32)
BLOCK, WINDOW_BLOCKS = 256, 16


class EpochOrder:
    """One epoch's global batches of item indices: ``order[k]`` is batch k (a list of ints), ``len`` their number.

    The items are cut into blocks of ``BLOCK`` global batches; the blocks are shuffled, and each run of
    ``WINDOW_BLOCKS`` of them forms a window whose items are shuffled together (with length grouping: sorted by
    length inside shuffled runs of ``mega`` batches, then the window's batches shuffled — the usual "length-grouped
    sampler"). Only the window being trained on is held (4 bytes per item of it) and it is worked out when its first
    batch is asked for, so memory and the latency of an epoch's first step do not grow with the number of items. A
    dataset of at most one window is shuffled whole. Every item is in exactly one batch, except that a final
    partial batch is dropped when there is at least one full batch."""

    def __init__(self, lengths: Any, global_batch: int, seed: int, epoch: int, group_by_length: bool,
                 mega: int) -> None:
        self.n = len(lengths)
        self.lengths, self.gb, self.seed, self.epoch = lengths, global_batch, seed, epoch
        self.group, self.mega = group_by_length, mega
        block = global_batch * BLOCK
        self.blocks = np.random.default_rng([seed, epoch]).permutation(-(-self.n // block))
        self.block = block
        starts = self.blocks * block
        sizes = np.minimum(starts + block, self.n) - starts
        windows = [sizes[w:w + WINDOW_BLOCKS].sum() for w in range(0, len(sizes), WINDOW_BLOCKS)]
        per_window = np.array([max(1, m // global_batch) if self.n < global_batch else m // global_batch
                               for m in windows], dtype=np.int64)
        self.first = np.concatenate([[0], np.cumsum(per_window)])  # batch number where each window starts
        self._held: tuple[int, np.ndarray, np.ndarray] | None = None  # (window, its items in order, batch order)

    def __len__(self) -> int:
        return int(self.first[-1])

    def __getitem__(self, k: int) -> list[int]:
        if not 0 <= k < len(self):
            raise IndexError(k)
        w = int(np.searchsorted(self.first, k, side="right")) - 1
        if self._held is None or self._held[0] != w:
            self._held = (w, *self._window(w))
        _, items, batch_ids = self._held
        s = int(batch_ids[k - self.first[w]]) * self.gb
        return items[s:s + self.gb].tolist()

    def _window(self, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Window ``w``'s items in their order, and the order of its batches."""
        dtype = np.int32 if self.n < 2**31 else np.int64
        blocks = self.blocks[w * WINDOW_BLOCKS:(w + 1) * WINDOW_BLOCKS]
        items = np.concatenate([np.arange(b * self.block, min((b + 1) * self.block, self.n), dtype=dtype)
                                for b in blocks])
        rng = np.random.default_rng([self.seed, self.epoch, w + 1])
        rng.shuffle(items)
        n_batches = int(self.first[w + 1] - self.first[w])
        if self.group:
            run = self.gb * self.mega
            for s in range(0, len(items), run):
                seg = items[s:s + run]
                seg[:] = seg[np.argsort(-np.asarray(self.lengths[seg]), kind="stable")]  # longest first
        batch_ids = np.arange(n_batches)
        if self.group:
            rng.shuffle(batch_ids)
        return items, batch_ids


def epoch_batches(lengths: Any, global_batch: int, seed: int, epoch: int, group_by_length: bool = True,
                  mega: int = 32) -> EpochOrder:
    """The global batches of one epoch over items of ``lengths`` ((N,) array, or anything with ``len`` and
    indexing by an int array, such as :attr:`ItemSource.lengths`): see :class:`EpochOrder`."""
    return EpochOrder(lengths, global_batch, seed, epoch, group_by_length, mega)


def steps_per_epoch(n_items: int, global_batch: int) -> int:
    return max(1, n_items // global_batch) if n_items >= global_batch else 1


def shard(batch: list[int], rank: int, world: int, micro: int, accum: int) -> list[list[int]]:
    """This rank's micro-batches of a global batch: rank r takes a contiguous slice, cut into ``accum`` parts."""
    per_rank = math.ceil(len(batch) / world)
    mine = batch[rank * per_rank:(rank + 1) * per_rank]
    return [mine[i * micro:(i + 1) * micro] for i in range(accum) if mine[i * micro:(i + 1) * micro]]
