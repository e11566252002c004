"""Structures for a build: a mapping TSV (file, chain → accession) + a directory of PDB/mmCIF files → one
:class:`~sepit.data.structures.StructureStore`, plus each protein's structure header for its caption.

Mapping TSV (tab-separated, with a header). Recognised columns: the accession (``accession`` or
``best_sprot2014_acc``), the file (``file_in_tar``, ``file`` or ``path``, relative to the structures directory; a
leading ``structures/`` folder may be missing there), ``chain`` (optional: every protein chain is tried), and
optionally ``confident_map`` (rows with ``0`` are ignored), ``pdb_id``, ``title``, ``keywords``. The shared
``structure_chains_to_sprot2014.tsv`` is such a file.

Of several chains mapped to one protein, the accepted one covering most residues wins. Unreadable files, files
without a protein chain and chains that do not match their protein are counted in the build's skip log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from sepit.data.readers import SkipLog
from sepit.data.readers._open import LineSource
from sepit.data.structures import (
    AlignedStructure,
    ChainTrace,
    Rejection,
    StructureStore,
    align_to_sequence,
    parse_structure,
)
from sepit.errors import InputError
from sepit.log import progress

_ACC_COLS = ("accession", "best_sprot2014_acc", "uniprot", "uniprot_accession")
_FILE_COLS = ("file_in_tar", "file", "path")


@dataclass(frozen=True)
class MapRow:
    accession: str
    file: str
    chain: str = ""
    pdb_id: str = ""
    title: str = ""
    keywords: str = ""


@dataclass(frozen=True)
class Header:
    """What a caption says about a protein's structure."""

    pdb_id: str
    chain: str
    title: str


def read_structure_map(path: str | Path, skips: SkipLog | None = None) -> list[MapRow]:
    """Rows of a mapping TSV (see the module docstring); InputError if the header lacks accession/file columns."""
    skips = skips if skips is not None else SkipLog()
    lines = iter(LineSource(path, skips))
    first = next(lines, None)
    if first is None:
        raise InputError(path, "empty structure map, expected a TSV with a header")
    cols = [c.strip() for c in first.rstrip("\n").split("\t")]
    acc = next((c for c in _ACC_COLS if c in cols), None)
    fcol = next((c for c in _FILE_COLS if c in cols), None)
    if acc is None or fcol is None:
        raise InputError(path, f"structure map needs an accession column ({'/'.join(_ACC_COLS)}) and a file "
                               f"column ({'/'.join(_FILE_COLS)}); found {', '.join(cols)}")
    idx = {c: i for i, c in enumerate(cols)}
    out: list[MapRow] = []
    for n, line in enumerate(lines, start=2):
        if not line.strip():
            continue
        f = line.rstrip("\n").split("\t")
        if len(f) != len(cols):
            skips.add("malformed structure map row", f"{Path(path).name}:{n}")
            continue

        def get(c: str, f: list[str] = f) -> str:
            return f[idx[c]].strip() if c in idx else ""

        if "confident_map" in idx and get("confident_map") not in ("1", "true", "True"):
            continue
        if not get(acc) or not get(fcol):
            skips.add("malformed structure map row", f"{Path(path).name}:{n}: empty accession or file")
            continue
        out.append(MapRow(get(acc), get(fcol), get("chain"), get("pdb_id"), get("title"), get("keywords")))
    return out


def _resolve(root: Path, name: str) -> Path | None:
    p = Path(name)
    cands = [root / p, root / p.name] + ([root.joinpath(*p.parts[1:])] if len(p.parts) > 1 else [])
    return next((c for c in cands if c.is_file()), None)


def _reason(r: Rejection) -> str:
    """A countable category from a rejection ("identity 0.85 < 0.90" → "identity N < N")."""
    return "structure rejected: " + re.sub(r"\d+(?:\.\d+)?%?", "N", r.reason)


def structures_from_files(sequences: Mapping[str, str], map_rows: Iterable[MapRow], root: str | Path,
                          skips: SkipLog) -> tuple[StructureStore, dict[str, Header], list[Path]]:
    """Parse and align mapped chains of the proteins in ``sequences``; returns the store, headers of the stored
    proteins and the structure files used (for the manifest's checksums)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "structures directory not found")
    by_acc: dict[str, list[MapRow]] = {}
    for r in map_rows:
        if r.accession in sequences:
            by_acc.setdefault(r.accession, []).append(r)
    cache: dict[Path, list[ChainTrace] | None] = {}
    store = StructureStore()
    headers: dict[str, Header] = {}
    used: dict[Path, None] = {}
    for accession in progress(list(by_acc), desc="structures", unit="protein"):
        best: tuple[AlignedStructure, MapRow, ChainTrace] | None = None
        for row in by_acc[accession]:
            path = _resolve(root, row.file)
            if path is None:
                skips.add("structure file missing", row.file)
                continue
            if path not in cache:
                try:
                    cache[path] = parse_structure(path)
                except InputError as e:
                    cache[path] = None
                    skips.add("structure file unusable", str(e))
            traces = cache[path] or []
            if row.chain and traces and not any(tr.chain == row.chain for tr in traces):
                have = ", ".join(tr.chain for tr in traces)
                skips.add("mapped chain not in structure file", f"{accession}: {row.file} has no protein chain "
                                                                f"{row.chain} (has {have})")
            for tr in traces:
                if row.chain and tr.chain != row.chain:
                    continue
                res = align_to_sequence(tr, sequences[accession])
                if isinstance(res, Rejection):
                    if row.chain:  # an explicitly mapped chain that does not fit is worth reporting
                        skips.add(_reason(res), f"{accession}: {res}")
                    continue
                used[path] = None
                if best is None or res.coverage > best[0].coverage:
                    best = (res, row, tr)
        if best is not None:
            a, row, tr = best
            store.add(accession, a)
            headers[accession] = Header(row.pdb_id or tr.header.pdb_id, a.chain, row.title or tr.header.title)
    return store, headers, sorted(used)
