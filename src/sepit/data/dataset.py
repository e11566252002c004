"""Read a built dataset (``sepit data build -o DIR``): manifest, proteins with their structures, instruction records.

    ds = InstructionDataset("data/default")
    ds.manifest["counts"]["records"]                     # {"train": ..., "valid": ..., "test": ...}
    p = ds.protein("P69905")                             # a sepit.proteins.Protein: sequence, coords (L, 3), mask
    ds.protein_info("P69905")["split"]                   # its row of proteins.jsonl (split, identity to train, ...)
    for rec in ds.records(split="train", kinds=("open", "yesno")): rec.messages, rec.answer
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from sepit.data.instructions.record import Instruction
from sepit.data.record_index import RecordIndex
from sepit.data.split import SPLITS
from sepit.data.structures import StructureStore
from sepit.errors import InputError
from sepit.proteins import Protein

FORMAT = "sepit-instructions"


class InstructionDataset:
    """A built dataset directory. Proteins and the structure store load on first use; records stream from disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        mf = self.path / "manifest.json"
        if not mf.is_file():
            raise InputError(self.path, "not a sepit dataset (no manifest.json); build one with `sepit data build`")
        try:
            self.manifest: dict[str, Any] = json.loads(mf.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(mf, f"unreadable manifest ({e.msg} at line {e.lineno})") from None
        if self.manifest.get("format") != FORMAT:
            raise InputError(mf, f"not a sepit instruction dataset manifest (format {self.manifest.get('format')!r})")
        self._proteins: dict[str, dict[str, Any]] | None = None
        self._store: StructureStore | None = None

    # --- proteins -------------------------------------------------------------------------------------------------
    def _protein_meta(self) -> dict[str, dict[str, Any]]:
        if self._proteins is None:
            out: dict[str, dict[str, Any]] = {}
            path = self.path / "proteins.jsonl"
            try:
                with open(path, encoding="utf-8") as f:
                    for n, line in enumerate(f, start=1):
                        if line.strip():
                            try:
                                d = json.loads(line)
                            except json.JSONDecodeError:
                                raise InputError(path, f"line {n} is not JSON") from None
                            out[d["id"]] = d
            except FileNotFoundError:
                raise InputError(path, "missing (incomplete dataset)") from None
            self._proteins = out
        return self._proteins

    @property
    def store(self) -> StructureStore:
        if self._store is None:
            self._store = StructureStore.load(self.path / "structures.npz")
        return self._store

    def protein_info(self, protein_id: str) -> dict[str, Any]:
        """The protein's line of ``proteins.jsonl`` (split, identity to train, splits at other thresholds, ...)."""
        return self._protein_meta()[protein_id]

    def protein_ids(self, split: str | None = None) -> list[str]:
        """Protein ids in file order (optionally of one split)."""
        return [k for k, d in self._protein_meta().items() if split is None or d["split"] == split]

    def protein(self, protein_id: str) -> Protein:
        """One protein with its structure: Cα ``coords`` (L, 3) float32 Å and ``coord_mask`` (L,) bool, None
        without one (KeyError if the dataset does not have it). Its split, identity to the training set and other
        facts are in :meth:`protein_info`."""
        d = self._protein_meta()[protein_id]
        got = self.store.get(protein_id) if d.get("has_structure") else None
        return Protein(d["sequence"], None if got is None else got[0], None if got is None else got[1],
                       id=protein_id, source=str(self.path))

    def __len__(self) -> int:
        """Number of instruction records (all splits)."""
        return sum(self.manifest["counts"]["records"].values())

    # --- records --------------------------------------------------------------------------------------------------
    def shards(self, split: str) -> list[Path]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
        return [self.path / f for f in self.manifest["files"]["records"].get(split, [])]

    def records(self, split: str | None = None, kinds: Iterable[str] | None = None,
                tasks: Iterable[str] | None = None) -> Iterator[Instruction]:
        """Stream records (of one split, or all in train/valid/test order), filtered by kind and task."""
        kind_set = set(kinds) if kinds is not None else None
        task_set = set(tasks) if tasks is not None else None
        for sp in [split] if split else SPLITS:
            for shard in self.shards(sp):
                with open(shard, encoding="utf-8") as f:
                    for n, line in enumerate(f, start=1):
                        if not line.strip():
                            continue
                        try:
                            d = json.loads(line)
                        except json.JSONDecodeError:
                            raise InputError(shard, f"line {n} is not JSON") from None
                        if (kind_set is None or d["kind"] in kind_set) and (task_set is None or d["task"] in task_set):
                            yield Instruction.from_json(d)

    def record_index(self, split: str) -> RecordIndex:
        """The split's :class:`~sepit.data.record_index.RecordIndex` (byte offsets, kinds, tasks, sizes of its
        records, memory-mapped): what training streams records through."""
        shards = [str(p.relative_to(self.path)) for p in self.shards(split)]
        index_file = self.path / "records" / f"{split}.index" / "meta.json"
        if index_file.is_file():
            return RecordIndex.open(self.path, split)
        meta = self._protein_meta()
        return RecordIndex.open(self.path, split, shards, {k: len(d["sequence"]) for k, d in meta.items()},
                                {k for k, d in meta.items() if d.get("has_structure")})

    def record(self, n: int, split: str | None = None) -> Instruction:
        """The ``n``-th record (0-based, in :meth:`records` order); IndexError past the end."""
        if n < 0:
            raise IndexError(n)
        count = 0
        for rec in self.records(split=split):
            if count == n:
                return rec
            count += 1
        raise IndexError(f"record {n} is past the end ({count} records)")
