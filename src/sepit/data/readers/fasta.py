"""Streaming FASTA reader: UniProt headers (``>sp|P69905|HBA_HUMAN Name OS=... OX=... GN=...``) are parsed for
accession, entry name, protein name, organism and gene; any other header gives its first word as the accession and
the rest as the name. :func:`fasta_records` is the one FASTA parsing core: this reader and the user-input parser of
:mod:`sepit.proteins` both split records with it."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from sepit.errors import InputError

from ..records import ProteinEntry
from ._open import LineSource
from ._text import clean_sequence
from .skiplog import SkipLog

_UNIPROT = re.compile(r"^(sp|tr)\|([^|\s]+)\|(\S+)\s*(.*)$")
_TAG = re.compile(r"\s(OS|OX|GN|PE|SV)=")


def parse_fasta_header(header: str) -> dict[str, str]:
    """``"sp|P69905|HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens OX=9606 GN=HBA1 PE=1 SV=2"`` →
    ``{"accession": "P69905", "entry_name": "HBA_HUMAN", "name": "Hemoglobin subunit alpha",
    "organism": "Homo sapiens", "taxid": "9606", "gene": "HBA1", "reviewed": "1"}``."""
    header = header.strip()
    m = _UNIPROT.match(header)
    if not m:
        acc, _, rest = header.partition(" ")
        return {"accession": acc, "name": rest.strip()}
    out = {"accession": m.group(2), "entry_name": m.group(3), "reviewed": "1" if m.group(1) == "sp" else "0"}
    desc = " " + m.group(4)
    parts = _TAG.split(desc)  # [name, key, value, key, value, ...]
    out["name"] = re.sub(r"\s*\((?:Fragment|Fragments)\)$", "", parts[0].strip())
    for key, value in zip(parts[1::2], parts[2::2], strict=False):
        field = {"OS": "organism", "OX": "taxid", "GN": "gene"}.get(key)
        if field:
            out[field] = value.strip()
    return out


def fasta_records(lines: Iterable[str], not_fasta: Exception) -> Iterator[tuple[str, list[str]]]:
    """``(header, lines)`` per FASTA record: the header without its ``>`` (and line end), the record's lines
    stripped (blank and ``;`` lines included: callers decide what they mean). Blank and ``;`` lines (old-style
    comments) before the first header are skipped; any other text there raises ``not_fasta``."""
    header: str | None = None
    chunks: list[str] = []
    for line in lines:
        if line.startswith(">"):
            if header is not None:
                yield header, chunks
            header, chunks = line[1:].rstrip("\n"), []
        elif header is None:
            if line.strip() and not line.startswith(";"):
                raise not_fasta
        else:
            chunks.append(line.strip())
    if header is not None:
        yield header, chunks


def read_fasta(path: str | Path, skips: SkipLog | None = None) -> Iterator[ProteinEntry]:
    """Stream proteins of a FASTA file (plain/gz/xz). Records with an empty or non-amino-acid sequence are skipped.

    Raises InputError for an empty file or one whose first non-blank line is not a ``>`` header.
    """
    skips = skips if skips is not None else SkipLog()
    src = LineSource(path, skips)
    name = Path(path).name
    last: tuple[str, list[str]] | None = None  # held back one record: only the last can be cut by a truncation
    for record in fasta_records(src, InputError(path, "not a FASTA file (first line is not a '>' header)")):
        if last is not None:
            entry = _make(*last, name, skips)
            if entry is not None:
                yield entry
        last = record
    if last is None:
        raise InputError(path, "empty file" if src.lines == 0 else "no FASTA records")
    if src.truncated:  # the last record may be cut anywhere in its sequence
        skips.add("entry cut by truncated input", f"{name}: {last[0][:40]}")
    else:
        entry = _make(*last, name, skips)
        if entry is not None:
            yield entry


def _make(header: str, chunks: list[str], source: str, skips: SkipLog) -> ProteinEntry | None:
    h = parse_fasta_header(header)
    acc = h.get("accession", "")
    if not acc:
        skips.add("missing accession", f"{source}: empty header")
        return None
    raw = "".join(chunks)
    if not raw:
        skips.add("missing sequence", f"{source}: {acc}")
        return None
    seq = clean_sequence(raw)
    if seq is None:
        skips.add("bad sequence", f"{source}: {acc}")
        return None
    extra = tuple((k, h[k]) for k in ("entry_name", "taxid", "reviewed") if h.get(k))
    return ProteinEntry(accession=acc, sequence=seq, name=h.get("name", ""), gene=h.get("gene", ""),
                        organism=h.get("organism", ""), source="fasta", extra=extra)
