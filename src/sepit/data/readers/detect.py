"""Pick the reader for a protein file from its content (not its name): ``read_proteins(path)``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Literal

from sepit.errors import InputError

from ..records import ProteinEntry
from ._open import DECOMPRESS_ERRORS, open_text
from .fasta import read_fasta
from .skiplog import SkipLog
from .sprot2014 import SPROT2014_COLUMNS, GoInfo, HumanInfo, read_sprot2014
from .uniprot_flat import read_uniprot_flat
from .uniprot_tsv import read_uniprot_tsv
from .uniprot_xml import read_uniprot_xml

Format = Literal["uniprot_flat", "uniprot_xml", "uniprot_tsv", "fasta", "sprot2014"]
FORMATS: tuple[str, ...] = ("uniprot_flat", "uniprot_xml", "uniprot_tsv", "fasta", "sprot2014")


def sniff_format(path: str | Path) -> Format:
    """The format of a protein file, from its first non-blank (decompressed) line; InputError if none fits."""
    try:
        with open_text(path) as f:
            head = f.read(8192)
    except DECOMPRESS_ERRORS as e:
        raise InputError(path, f"compressed data is corrupt or truncated ({e})") from None
    first = next((ln.strip("\ufeff \r") for ln in head.splitlines() if ln.strip()), "")
    if not first:
        raise InputError(path, "empty file")
    if first.startswith("ID   "):
        return "uniprot_flat"
    if first.startswith("<") and "uniprot" in head.lower():
        return "uniprot_xml"
    if first.startswith(">"):
        return "fasta"
    cols = {c.strip().lower() for c in first.split("\t")}
    if {c.lower() for c in SPROT2014_COLUMNS} <= cols:
        return "sprot2014"
    if {"entry", "sequence"} <= cols or {"accession", "sequence"} <= cols:
        return "uniprot_tsv"
    raise InputError(path, "unrecognised protein file (expected UniProt flat/XML/TSV, FASTA or the 2014 GO table)")


def read_proteins(path: str | Path, skips: SkipLog | None = None, *, fmt: Format | None = None,
                  go_terms: Mapping[str, GoInfo] | str | Path | None = None,
                  human: Mapping[str, HumanInfo] | str | Path | None = None) -> Iterator[ProteinEntry]:
    """Stream :class:`ProteinEntry` records from any supported file; the format is sniffed unless ``fmt`` is given.

    ``go_terms``/``human`` only matter for the 2014 GO table (see :func:`read_sprot2014`).
    """
    fmt = fmt or sniff_format(path)
    if fmt == "uniprot_flat":
        return read_uniprot_flat(path, skips)
    if fmt == "uniprot_xml":
        return read_uniprot_xml(path, skips)
    if fmt == "uniprot_tsv":
        return read_uniprot_tsv(path, skips)
    if fmt == "fasta":
        return read_fasta(path, skips)
    if fmt == "sprot2014":
        return read_sprot2014(path, go_terms, human, skips)
    raise InputError(path, f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
