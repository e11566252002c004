"""One compressed ``.npz`` holding the Cα coordinates of every protein of a dataset.

Layout (all plain arrays, readable with ``np.load(allow_pickle=False)``): ``ids`` (N,) str, ``offsets`` (N+1,) int64,
``coords`` (T, 3) float32 and ``mask`` (T,) bool concatenated over proteins (protein k owns rows
``offsets[k]:offsets[k+1]``, T = sum of protein lengths), ``coverage`` / ``identity`` (N,) float32 and ``source``
(N,) str (``file:chain`` the coordinates came from), ``format_version`` () int.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sepit._io import atomic_write
from sepit.errors import InputError

from .align import AlignedStructure

FORMAT_VERSION = 1
_KEYS = ("ids", "offsets", "coords", "mask", "coverage", "identity", "source", "format_version")


@dataclass(frozen=True)
class StoredInfo:
    """Per-protein metadata kept beside the coordinates."""

    length: int
    coverage: float
    identity: float
    source: str


class StructureStore:
    """Protein id → (coords (L, 3) float32, mask (L,) bool). Build with :meth:`add`, write with :meth:`save`,
    read with :meth:`load`; ``get(id)`` returns None for proteins without a structure."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}
        self._coords: list[np.ndarray] = []
        self._mask: list[np.ndarray] = []
        self._info: list[StoredInfo] = []

    def add(self, protein_id: str, coords: np.ndarray | AlignedStructure, mask: np.ndarray | None = None, *,
            coverage: float | None = None, identity: float = 1.0, source: str = "") -> None:
        """Add one protein (an :class:`AlignedStructure`, or coords (L, 3) + mask (L,)); a second add replaces it."""
        if isinstance(coords, AlignedStructure):
            a = coords
            coords, mask, identity = a.coords, a.mask, a.identity
            source = source or f"{a.source}:{a.chain}"
        c = np.asarray(coords, dtype=np.float32)
        m = np.ones(len(c), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
        if c.ndim != 2 or c.shape[1] != 3 or m.shape != (len(c),):
            raise ValueError(f"{protein_id}: coords must be (L, 3) and mask (L,), got {c.shape} and {m.shape}")
        if not np.isfinite(c[m]).all():
            raise ValueError(f"{protein_id}: non-finite coordinates")
        c = np.where(m[:, None], c, 0.0).astype(np.float32)
        info = StoredInfo(len(c), float(m.mean()) if coverage is None and len(m) else float(coverage or 0.0),
                          float(identity), source)
        if protein_id in self._index:
            k = self._index[protein_id]
            self._coords[k], self._mask[k], self._info[k] = c, m, info
            return
        self._index[protein_id] = len(self._coords)
        self._coords.append(c)
        self._mask.append(m)
        self._info.append(info)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, protein_id: object) -> bool:
        return protein_id in self._index

    @property
    def ids(self) -> list[str]:
        return list(self._index)

    def get(self, protein_id: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(coords (L, 3) float32, mask (L,) bool), or None when the protein has no structure."""
        k = self._index.get(protein_id)
        return None if k is None else (self._coords[k], self._mask[k])

    def info(self, protein_id: str) -> StoredInfo | None:
        k = self._index.get(protein_id)
        return None if k is None else self._info[k]

    def save(self, path: str | Path) -> None:
        """Write the store atomically as one compressed ``.npz``."""
        lengths = np.array([len(c) for c in self._coords], dtype=np.int64)
        arrays = {
            "ids": np.array(list(self._index), dtype=str),
            "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            "coords": np.concatenate(self._coords) if self._coords else np.zeros((0, 3), np.float32),
            "mask": np.concatenate(self._mask) if self._mask else np.zeros(0, bool),
            "coverage": np.array([i.coverage for i in self._info], dtype=np.float32),
            "identity": np.array([i.identity for i in self._info], dtype=np.float32),
            "source": np.array([i.source for i in self._info], dtype=str),
            "format_version": np.array(FORMAT_VERSION),
        }
        with atomic_write(path, "wb") as f:
            np.savez_compressed(f, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> StructureStore:
        """Read a store written by :meth:`save`; InputError if the file is not one (or is corrupt)."""
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = [k for k in _KEYS if k not in z.files]
                if missing:
                    raise InputError(path, f"not a sepit structure store (missing {', '.join(missing)})")
                data = {k: z[k] for k in _KEYS}
        except FileNotFoundError:
            raise InputError(path, "no such file") from None
        except (OSError, ValueError, EOFError) as e:  # zip errors, pickled arrays, truncated file
            raise InputError(path, f"unreadable structure store ({e})") from None
        if int(data["format_version"]) != FORMAT_VERSION:
            raise InputError(path, f"structure store format {int(data['format_version'])}, expected {FORMAT_VERSION}")
        off, ids = data["offsets"], data["ids"]
        n, total = len(ids), len(data["coords"])
        if (len(off) != n + 1 or off[0] != 0 or off[-1] != total or np.any(np.diff(off) < 0)
                or len(data["mask"]) != total or len(data["coverage"]) != n or len(data["source"]) != n):
            raise InputError(path, "corrupt structure store (array sizes disagree)")
        store = cls()
        coords = data["coords"].astype(np.float32, copy=False)
        for k, pid in enumerate(ids.tolist()):
            a, b = int(off[k]), int(off[k + 1])
            store._index[pid] = k
            store._coords.append(coords[a:b])
            store._mask.append(data["mask"][a:b])
            store._info.append(StoredInfo(b - a, float(data["coverage"][k]), float(data["identity"][k]),
                                          str(data["source"][k])))
        return store
