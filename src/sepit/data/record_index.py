"""A per-split index of a dataset's instruction records: where each JSONL line starts, and what training needs to
choose and order records without reading them (kind, task, sizes).

The full 2014 set has ~10M records: as Python objects they would take gigabytes per training process. This index
is a folder of one ``.npy`` column per field (23 bytes per record in all), memory-mapped: choosing records touches
only the 3 bytes of their kind and task, a batch's lengths and offsets only its own rows, and the page cache shares
what was read between the processes of a node. A record is read from its shard only when a batch needs it.

    idx = RecordIndex.open(dataset_dir, "train")        # written by `sepit data build` (built once if missing)
    rows = idx.select(kinds=("open", "yesno"))          # (N,) int64 row numbers, in file order
    rec = idx.read(rows[0])                             # an Instruction, parsed from its line
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

import numpy as np

from sepit._io import atomic_write
from sepit.data.instructions.record import Instruction
from sepit.errors import InputError

#: one column per field, a value per record: its shard and byte offset, kind and task codes, the text's characters,
#: the residues of its proteins, how many proteins it has, and whether every one of them has a structure
COLUMNS = {"shard": "<u2", "offset": "<u8", "kind": "u1", "task": "<u2", "text_chars": "<i4", "residues": "<i4",
           "n_proteins": "u1", "structured": "u1"}
KINDS = ("caption", "open", "yesno")
CHUNK = 1 << 16  # records per step of a scan over a column


def index_dir(root: Path, split: str) -> Path:
    """``records/<split>.index/``: ``<column>.npy`` per field of :data:`COLUMNS` + ``meta.json`` (shards, tasks)."""
    return root / "records" / f"{split}.index"


class RecordIndexWriter:
    """Collects the rows of one split while its shards are written (``add`` once per line, in order)."""

    def __init__(self) -> None:
        self.tasks: dict[str, int] = {}
        self._rows: list[tuple[int, ...]] = []

    def add(self, shard: int, offset: int, rec: Instruction, residues: int, structured: bool) -> None:
        """``residues``: of all its proteins; ``structured``: every one of its proteins has a structure."""
        task = self.tasks.setdefault(rec.task, len(self.tasks))
        text = sum(len(m["content"]) for m in rec.messages)
        self._rows.append((shard, offset, KINDS.index(rec.kind), task, text, residues, len(rec.protein_ids),
                           int(structured)))

    def save(self, root: Path, split: str, shards: list[str]) -> None:
        folder = index_dir(root, split)
        folder.mkdir(parents=True, exist_ok=True)
        table = np.array(self._rows, dtype=np.int64).reshape(-1, len(COLUMNS))
        for n, (name, dtype) in enumerate(COLUMNS.items()):
            with atomic_write(folder / f"{name}.npy", "wb") as f:
                np.save(f, table[:, n].astype(dtype))
        with atomic_write(folder / "meta.json") as f:  # written last: its presence says the columns are complete
            json.dump({"shards": shards, "tasks": sorted(self.tasks, key=self.tasks.__getitem__),
                       "kinds": list(KINDS)}, f)


class RecordIndex:
    """The index of one split, memory-mapped; :meth:`read` parses one record from its shard."""

    def __init__(self, root: Path, columns: dict[str, np.ndarray], shards: list[str], tasks: list[str]) -> None:
        self.root = root
        self.col = columns  # field → (N,) memory-mapped column
        self.shards = shards
        self.tasks = tasks
        self._files: dict[int, IO[bytes]] = {}

    def __len__(self) -> int:
        return len(self.col["offset"])

    @classmethod
    def open(cls, root: str | Path, split: str, shards: list[str] | None = None,
             residues: dict[str, int] | None = None, structured: set[str] | None = None) -> RecordIndex:
        """The index of ``split`` in dataset ``root``. A dataset built before indexes existed gets one built now
        from its ``shards`` (with the proteins' lengths ``residues`` and the ids of those with a structure),
        kept in sepit's cache folder."""
        root = Path(root)
        folder = index_dir(root, split)
        if not (folder / "meta.json").is_file():
            if shards is None or residues is None:
                raise InputError(folder, "missing: rebuild the dataset with `sepit data build`")
            folder = _build_missing(root, split, shards, residues, structured or set())
        columns: dict[str, np.ndarray] = {}
        for name, dtype in COLUMNS.items():
            path = folder / f"{name}.npy"
            try:
                columns[name] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise InputError(path, f"unreadable record index column ({e}); rebuild the dataset") from None
            if columns[name].dtype != np.dtype(dtype) or columns[name].shape != columns["shard"].shape:
                raise InputError(path, "record index column of another format or length; rebuild the dataset")
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(folder / "meta.json", f"unreadable ({e}); rebuild the dataset") from None
        return cls(root, columns, list(meta["shards"]), list(meta["tasks"]))

    def select(self, kinds: Iterable[str] | None = None, tasks: Iterable[str] | None = None,
               structured: bool = False) -> np.ndarray:
        """(N,) int32 row numbers of the records of ``kinds`` and ``tasks`` (None: all), and with ``structured``
        only those whose proteins all have a structure, in file order."""
        kind_codes = None if kinds is None else [KINDS.index(k) for k in kinds if k in KINDS]
        task_codes = None if tasks is None else [self.tasks.index(t) for t in tasks if t in self.tasks]
        n = len(self)
        dtype = np.int32 if n < 2**31 else np.int64
        parts = []
        for s in range(0, n, CHUNK):  # in small chunks: no full-size temporaries left in the heap
            keep = np.ones(min(CHUNK, n - s), dtype=bool)
            if kind_codes is not None:
                keep &= np.isin(self.col["kind"][s:s + CHUNK], kind_codes)
            if task_codes is not None:
                keep &= np.isin(self.col["task"][s:s + CHUNK], task_codes)
            if structured:
                keep &= self.col["structured"][s:s + CHUNK] == 1
            parts.append((np.flatnonzero(keep) + s).astype(dtype))
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    def read(self, row: int) -> Instruction:
        """The record of ``row``, read from its shard."""
        shard, offset = int(self.col["shard"][row]), int(self.col["offset"][row])
        f = self._files.get(shard)
        if f is None:
            f = self._files[shard] = open(self.root / self.shards[shard], "rb")  # noqa: SIM115 - see close()
        f.seek(offset)
        line = f.readline()
        try:
            return Instruction.from_json(json.loads(line))
        except (ValueError, KeyError):
            raise InputError(self.root / self.shards[shard], f"no record at byte {offset}: the record "
                             "index does not match the shard (rebuild the dataset)") from None

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()

    def __getstate__(self) -> dict:  # open files stay with their process
        return {**self.__dict__, "_files": {}}


def _build_missing(root: Path, split: str, shards: list[str], residues: dict[str, int],
                   structured: set[str]) -> Path:
    """Scan ``shards`` once and write their index under ``$SEPIT_HOME/record-index/<dataset key>/``."""
    from sepit.log import get_logger
    from sepit.paths import sepit_home

    stamp = [(s, os.stat(root / s).st_size, os.stat(root / s).st_mtime_ns) for s in shards]
    key = hashlib.sha256(json.dumps([str(root.resolve()), stamp]).encode()).hexdigest()[:16]
    cache = sepit_home() / "record-index" / key
    folder = index_dir(cache, split)
    if (folder / "meta.json").is_file():
        return folder
    get_logger(__name__).info(f"{root}: indexing the {split} records once (datasets built by this version carry "
                              f"the index); cached in {cache}")
    w = RecordIndexWriter()
    for n, shard in enumerate(shards):
        offset = 0
        with open(root / shard, "rb") as f:
            for line in f:
                if line.strip():
                    try:
                        rec = Instruction.from_json(json.loads(line))
                    except (ValueError, KeyError):
                        raise InputError(root / shard, f"a line at byte {offset} is not a record") from None
                    w.add(n, offset, rec, sum(residues.get(p, 0) for p in rec.protein_ids),
                          all(p in structured for p in rec.protein_ids))
                offset += len(line)
    w.save(cache, split, [str((root / s).resolve()) for s in shards])
    return folder
