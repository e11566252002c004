"""Training items streamed from a built dataset: a sequence (``len``, ``[i]``) whose items are read from disk when
a batch needs them, with the per-item lengths the length-grouped sampler orders by.

A process holds 4 bytes per selected record (its row number; lengths are read from the index when the epoch order
needs them) plus what it touches of the memory-mapped record index (:class:`~sepit.data.record_index.RecordIndex`:
3 bytes per record to choose them, shared through the page cache), instead of
every record as Python objects (~2 kB each with its protein): the full 2014 set's 10.3M records would otherwise
take tens of GB per rank. ``benchmarks/bench_records.py`` measures it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from sepit.data.instructions.record import Instruction
from sepit.data.record_index import RecordIndex
from sepit.train.batching import Item


class _Lengths:
    """Items' lengths, as :meth:`StageRunner._items` counts them (residues cropped to ``max_protein_len`` per
    protein, + characters of text / 4), read from the record index when asked for: ``lengths[idx]`` → int32 array."""

    def __init__(self, index: RecordIndex, rows: np.ndarray, max_protein_len: int) -> None:
        self.index, self.rows, self.max_len = index, rows, max_protein_len

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, idx: Any) -> np.ndarray:
        rows, col = self.rows[idx], self.index.col
        residues = np.minimum(col["residues"][rows], col["n_proteins"][rows].astype(np.int32) * self.max_len)
        return (residues + col["text_chars"][rows] // 4).astype(np.int32)


class ItemSource:
    """The items of ``rows`` of ``index``; ``make(record)`` turns a record into the stage's :class:`Item` (reading
    its proteins), ``transform(item)`` may then change it (homolog context). ``max_protein_len`` crops proteins in
    the lengths as ``make`` crops them."""

    def __init__(self, index: RecordIndex, rows: np.ndarray, make: Callable[[Instruction], Item],
                 max_protein_len: int) -> None:
        self.index = index
        self.rows = rows.astype(np.int32 if len(index) < 2**31 else np.int64, copy=False)
        self.make = make
        self.transform: Callable[[Item], Item] | None = None
        self.lengths = _Lengths(index, self.rows, max_protein_len)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Item:
        item = self.make(self.index.read(int(self.rows[i])))
        return self.transform(item) if self.transform is not None else item

    def task_counts(self) -> dict[str, int]:
        codes = np.bincount(self.index.col["task"][self.rows], minlength=len(self.index.tasks))
        return dict(sorted((self.index.tasks[t], int(n)) for t, n in enumerate(codes) if n))

    def head(self, n: int) -> list[Item]:
        """The first ``n`` items, read now."""
        return [self[i] for i in range(min(n, len(self)))]


def task_counts(items: Any) -> dict[str, int]:
    """Items per task of a list of items or an :class:`ItemSource` (without reading its records)."""
    if isinstance(items, ItemSource):
        return items.task_counts()
    return dict(sorted(Counter(i.task for i in items).items()))


def item_lengths(items: Any) -> Any:
    """Lengths of a list of items ((N,) array) or of an :class:`ItemSource` (read from its index when indexed)."""
    if isinstance(items, ItemSource):
        return items.lengths
    return np.fromiter((i.length for i in items), dtype=np.int64, count=len(items))
