"""Proteins as sepit sees them, and the one parser of what users pass as a protein.

    p = protein_from("MKTAYIAKQRQISFVKSHFSRQ")                 # a sequence
    p = protein_from(">sp|P69905|HBA_HUMAN ...\\nMVLSPADK...")  # FASTA text (its first record)
    p = protein_from("1abc.cif.gz", chain="B")                 # a FASTA or structure file (PDB / mmCIF / AlphaFold)
    ps = protein_from_upload(data, "x.pdb.gz")                 # the bytes of an uploaded file
    p = default_protein(ps)        # no chain named: a structure's longest chain, a FASTA file's first record
    ps = read_proteins("structures/")                          # every protein of a file or a folder
    q = as_protein(entry)          # a record (ProteinEntry, a mapping, ...) → a checked Protein, for the model
    msgs = conversation("What does it do?")                    # the chat messages that go with it

The Python API, the CLI, ``sepit annotate``, the HTTP server and the evaluation all read proteins through this
module, and the model's processor takes :class:`Protein`. Data-pipeline records stay richer
(:class:`~sepit.data.records.ProteinEntry`) and become proteins through :func:`as_protein`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from sepit.data.instructions.record import PROTEIN_MARKER, protein_turn, with_context
from sepit.data.readers._text import USER_AA, clean_sequence
from sepit.errors import InputError, UploadTooLarge
from sepit.log import get_logger

log = get_logger(__name__)

__all__ = ["FASTA_SUFFIXES", "PROTEIN_MARKER", "STRUCTURE_SUFFIXES", "USER_AA", "Protein", "as_protein",
           "clean_sequence", "conversation", "default_protein", "input_files", "is_fasta_path", "is_structure_path",
           "parse_fasta_text", "protein_from", "protein_from_sequence", "protein_from_upload", "protein_turn",
           "read_fasta_file", "read_proteins", "read_structure_file"]

FASTA_SUFFIXES = (".fasta", ".fa", ".faa", ".fas", ".fna", ".seq")
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb1")


@dataclass(frozen=True, eq=False)
class Protein:
    """One protein: ``sequence`` (one letter per residue), optional Cα ``coords`` (L, 3) float32 in Å and
    ``coord_mask`` (L,) bool (True where the residue has a usable Cα); ``id`` and ``source`` (file, upload or
    dataset it came from) name it in outputs.

    Built by the parsers of this module, or directly (``Protein(seq, coords, mask, id="x")``). Without
    ``coord_mask``, :func:`as_protein` (which the model's processor applies) counts rows that are non-finite or
    exactly (0, 0, 0) as missing.
    """

    sequence: str
    coords: np.ndarray | None = None  # (L, 3) float32, Å
    coord_mask: np.ndarray | None = None  # (L,) bool
    id: str = field(default="", kw_only=True)
    source: str = field(default="", kw_only=True)

    def __post_init__(self) -> None:
        if isinstance(self.coords, str):  # the old sepit.api.Protein(id, sequence) call order
            raise TypeError("Protein(sequence, coords=None, coord_mask=None, *, id='', source=''): coords must be an "
                            "array, got a string (pass the id as id=...)")

    @property
    def has_structure(self) -> bool:
        """Coordinates with a mask, and at least one residue with a Cα."""
        return self.coords is not None and self.coord_mask is not None and bool(np.asarray(self.coord_mask).any())

    @property
    def mask(self) -> np.ndarray | None:
        """``coord_mask`` under the structure store's name (what built datasets called it)."""
        return self.coord_mask

    def __len__(self) -> int:
        return len(self.sequence)

    def without_structure(self) -> Protein:
        """The same protein, sequence only."""
        return replace(self, coords=None, coord_mask=None)

    def summary(self) -> dict[str, Any]:
        n = int(np.asarray(self.coord_mask).sum()) if self.coord_mask is not None else 0
        return {"id": self.id, "length": len(self.sequence), "has_structure": self.has_structure,
                "residues_with_coords": n, "source": self.source}


# --- records → proteins (the one conversion) ---------------------------------------------------------------------

def _record_id(obj: Any) -> str:
    return str(getattr(obj, "accession", None) or getattr(obj, "id", None) or "")


def as_protein(obj: Any) -> Protein:
    """A checked :class:`Protein` from a Protein, a sequence string, a mapping (``sequence``, optional ``coords``,
    ``coord_mask``, ``id``, ``source``) or any record with ``sequence`` (and optionally ``coords`` /
    ``coord_mask``, ``accession`` or ``id``, ``source``), e.g. a :class:`~sepit.data.records.ProteinEntry`.

    The sequence is stripped and upper-cased (letters are not checked: the model maps unknown ones to ``<unk>``);
    coordinates must be (L, 3); the mask is derived from the coordinates when missing, non-finite rows are masked,
    and masked rows are zeroed. A one-line InputError otherwise.
    """
    if isinstance(obj, Protein):
        p = obj
    elif isinstance(obj, str):
        p = Protein(obj)
    elif isinstance(obj, Mapping):
        p = Protein(obj["sequence"], obj.get("coords"), obj.get("coord_mask"), id=str(obj.get("id") or ""),
                    source=str(obj.get("source") or ""))
    elif hasattr(obj, "sequence"):
        p = Protein(obj.sequence, getattr(obj, "coords", None), getattr(obj, "coord_mask", None),
                    id=_record_id(obj), source=str(getattr(obj, "source", "") or ""))
    else:
        raise InputError(None, f"not a protein: {type(obj).__name__}")
    seq = str(p.sequence).strip().upper()
    if not seq:
        raise InputError(None, "empty protein sequence")
    coords, mask = p.coords, p.coord_mask
    if coords is not None:
        coords = np.asarray(coords, dtype=np.float32)
        if coords.shape != (len(seq), 3):
            raise InputError(None, f"coordinates have shape {coords.shape}, expected ({len(seq)}, 3) for a "
                                   f"sequence of {len(seq)} residues")
        finite = np.isfinite(coords).all(axis=1)
        if mask is None:
            mask = finite & np.any(coords != 0.0, axis=1)
        else:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (len(seq),):
                raise InputError(None, f"coord_mask has shape {mask.shape}, expected ({len(seq)},)")
            mask = mask & finite
        coords = np.where(mask[:, None], coords, 0.0).astype(np.float32)
    elif mask is not None:
        raise InputError(None, "coord_mask given without coords")
    return replace(p, sequence=seq, coords=coords, coord_mask=mask)


# --- user input → proteins (the one parser) ----------------------------------------------------------------------

def protein_from_sequence(text: str, where: str = "sequence") -> Protein:
    """A typed or pasted sequence (never a path: what a server receives) → ``Protein(id="query")``; letters
    checked by :func:`clean_sequence` (``strict``)."""
    return Protein(clean_sequence(text, strict=True, where=where), id="query")


def parse_fasta_text(text: str, where: str = "FASTA") -> list[Protein]:
    """FASTA records in a string → proteins (id: the UniProt accession, else the header's first word); ``;``
    comment lines are ignored; a sequence with anything but amino-acid letters is a one-line InputError."""
    from sepit.data.readers.fasta import fasta_records, parse_fasta_header

    out: list[Protein] = []
    lines = (line.strip() for line in text.splitlines())
    for header, chunks in fasta_records(lines, InputError(None, f"{where}: not FASTA (text before the first '>' "
                                                                "header)")):
        pid = parse_fasta_header(header).get("accession") or f"record{len(out) + 1}"
        seq = "".join(c for c in chunks if not c.startswith(";"))
        out.append(Protein(clean_sequence(seq, strict=True, where=f"{where} record {pid!r}"), id=pid, source=where))
    if not out:
        raise InputError(None, f"{where}: no FASTA records")
    return out


def _strip_gz(name: str) -> str:
    return name[:-3] if name.lower().endswith(".gz") else name


def is_structure_path(path: str | Path) -> bool:
    return Path(_strip_gz(str(path))).suffix.lower() in STRUCTURE_SUFFIXES


def is_fasta_path(path: str | Path) -> bool:
    return Path(_strip_gz(str(path))).suffix.lower() in FASTA_SUFFIXES


def read_fasta_file(path: str | Path) -> list[Protein]:
    """All records of a FASTA file (plain or compressed; UniProt headers give their accession as the id).

    The data reader's rules apply: records whose sequence is not letters are skipped with a warning; a file with
    none left is an InputError.
    """
    from sepit.data.readers import SkipLog, read_fasta

    skips = SkipLog()
    proteins = [Protein(e.sequence, id=e.accession, source=str(path)) for e in read_fasta(path, skips)]
    if skips:
        log.warning("%s: skipped %s", path, skips.summary())
    if not proteins:
        raise InputError(path, "no usable FASTA records")
    return proteins


def read_structure_file(path: str | Path, chain: str | None = None, *, name: str | None = None) -> list[Protein]:
    """Protein chains of a PDB / mmCIF / AlphaFold file (plain or gzipped) with their Cα traces.

    ``chain`` selects one chain (an InputError lists the chains when it is absent); ``name`` replaces the file stem
    in the ids (``<name>:<chain>``). All chains come back in file order; :func:`default_protein` picks the one to use
    when no chain was named.
    """
    from sepit.data.structures import parse_structure

    traces = parse_structure(path, chain=chain)
    if not traces:
        raise InputError(path, "no protein chain with residues found" + (f" (chain {chain})" if chain else ""))
    stem = name or Path(_strip_gz(Path(path).name)).stem
    return [_protein_from_trace(t, stem, str(path)) for t in traces]


def _protein_from_trace(trace: Any, stem: str, source: str) -> Protein:
    coords = np.asarray(trace.coords, dtype=np.float32).reshape(-1, 3)
    mask = np.asarray(trace.mask, dtype=bool).reshape(-1)
    seq = str(trace.sequence)
    if not (len(seq) == coords.shape[0] == mask.shape[0]):
        raise InputError(source, f"chain {trace.chain}: sequence and coordinates differ in length")
    coords = np.where(mask[:, None], coords, 0.0).astype(np.float32)
    return Protein(seq, coords, mask, id=f"{stem}:{trace.chain}", source=source)


def input_files(folder: Path) -> list[Path]:
    """FASTA and structure files under ``folder`` (recursively, sorted); an InputError when there are none."""
    files = sorted(f for f in folder.rglob("*") if f.is_file() and (is_structure_path(f) or is_fasta_path(f)))
    if not files:
        raise InputError(folder, "folder holds no FASTA or structure files (.fasta/.fa/.pdb/.cif, optionally .gz)")
    return files


def read_proteins(path: str | Path, chain: str | None = None) -> list[Protein]:
    """Every protein in a FASTA file, a structure file (its chains, or ``chain``) or a folder of such files."""
    p = Path(path)
    if p.is_dir():
        return [prot for f in input_files(p) for prot in read_proteins(f, chain)]
    if not p.is_file():
        raise InputError(p, "no such file or folder")
    if is_fasta_path(p):
        return read_fasta_file(p)
    if is_structure_path(p):
        return read_structure_file(p, chain)
    raise InputError(p, "unknown file type: expected FASTA (.fasta/.fa/.faa) or a structure (.pdb/.cif/.ent), "
                        "optionally gzipped")


def protein_from(protein: Any, chain: str | None = None) -> Protein:
    """Turn what a user passes (sequence, FASTA record, file path, ``Protein``, a record with ``sequence``) into one
    :class:`Protein`.

    A structure file with several protein chains gives its longest unless ``chain`` picks one; a FASTA file or a
    folder gives its first record (see :func:`default_protein`).
    """
    if isinstance(protein, Protein):
        return protein
    if isinstance(protein, Path) or (isinstance(protein, str) and "\n" not in protein and os.path.isfile(protein)):
        return default_protein(read_proteins(Path(protein), chain), str(protein))
    if isinstance(protein, str):
        text = protein.strip()
        if text.startswith(">"):
            return parse_fasta_text(text, "FASTA record")[0]
        try:
            return protein_from_sequence(text)
        except InputError:
            if "/" in text or "." in text:  # meant as a path
                raise InputError(text, "no such file") from None
            raise
    seq = getattr(protein, "sequence", None)
    if isinstance(seq, str):  # a ProteinEntry or any record with .sequence (and .accession / .id)
        pid = _record_id(protein) or "query"
        return Protein(clean_sequence(seq, strict=True, where=pid), id=pid)
    raise InputError(None, f"cannot read a protein from a {type(protein).__name__}: pass a sequence, a FASTA "
                           "record, a FASTA/structure file path or a sepit.proteins.Protein")


def default_protein(found: Sequence[Protein], where: str = "") -> Protein:
    """The one protein an input holding several stands for when the user named no chain or record.

    The chains of one structure file (proteins with coordinates, all from one source): the longest, the first in
    file order among equally long ones — a complex's main chain, not a light chain or a bound peptide that happens
    to come first (thrombin 1a4w: the 259-residue heavy chain H, not the 26-residue light chain L). Anything else
    (FASTA records, a folder's files): the first. Logs which one it took and that ``chain=`` / ``--chain`` picks
    another. The API, the CLI and the server all choose through here.
    """
    if not found:
        raise InputError(where or None, "no protein found")
    if len(found) == 1:
        return found[0]
    if not (all(p.coords is not None for p in found) and len({p.source for p in found}) == 1):
        log.info("%s holds %d proteins; using the first (%s)", where, len(found), found[0].id)
        return found[0]
    best = max(found, key=len)  # max keeps the first of equal maxima: ties go to file order
    chains = ", ".join(f"{_chain_of(p)} {len(p)} aa" for p in found)
    log.info("%s has %d protein chains (%s); using the longest, chain %s (chain=... / --chain picks another)",
             where, len(found), chains, _chain_of(best))
    return best


def _chain_of(p: Protein) -> str:
    return p.id.rsplit(":", 1)[-1]


def protein_from_upload(data: bytes, filename: str, chain: str | None = None, *,
                        max_unpacked_bytes: int = 64 * 1024 * 1024) -> list[Protein]:
    """Parse an uploaded structure or FASTA file held in memory.

    The bytes are (un-gzipped with a size cap, then) written to a fresh private temporary folder under a fixed
    name chosen here — never at a path taken from the request; only the suffix of ``filename`` is used, to tell the
    format. The folder is removed afterwards.
    """
    label = os.path.basename(filename or "upload") or "upload"
    if data[:2] == b"\x1f\x8b":
        data = _gunzip_capped(data, max_unpacked_bytes, label)
    base = _strip_gz(label.lower())
    suffix = Path(base).suffix
    if suffix in FASTA_SUFFIXES or data.lstrip()[:1] == b">":
        return parse_fasta_text(data.decode("utf-8", errors="replace"), label)
    if suffix not in STRUCTURE_SUFFIXES:  # sniff: mmCIF starts with data_, PDB with record names
        suffix = ".cif" if data.lstrip()[:5].lower() == b"data_" else ".pdb"
    with tempfile.TemporaryDirectory(prefix="sepit-upload-") as tmp:  # mode 0700, unique
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            proteins = read_structure_file(path, chain, name=Path(base).stem or "upload")
        except InputError as e:
            raise InputError(label, e.problem) from None
    return [replace(p, source=label) for p in proteins]


def _gunzip_capped(data: bytes, limit: int, label: str) -> bytes:
    """Gzipped ``data`` unpacked as the file readers unpack a ``.gz`` file (Python's ``gzip``: every member in
    order, zero padding after the last one skipped), but in memory and at most ``limit`` bytes: UploadTooLarge
    above it, a one-line InputError for corrupt or truncated data or trailing garbage — never the part read so far
    (a cut-short upload would otherwise be answered as if it were the whole protein)."""
    import gzip
    import io

    from sepit.data.readers._open import DECOMPRESS_ERRORS

    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
            out = f.read(limit + 1)
    except DECOMPRESS_ERRORS as e:
        raise InputError(label, f"corrupt or truncated gzip data ({e})") from None
    if len(out) > limit:
        raise UploadTooLarge(label, f"unpacks to more than {limit} bytes")
    return out


# --- the question that goes with a protein -----------------------------------------------------------------------

def conversation(question: str, history: Sequence[dict[str, str]] = (), context: str = "") -> list[dict[str, str]]:
    """Chat messages for a question about one protein: ``history`` (earlier user / assistant turns, oldest first),
    then the question; the protein marker goes in the first user turn, followed by ``context`` (the homolog block
    of :mod:`sepit.retrieval`, when the model uses one). One-line InputErrors for an empty question,
    a wrong role or a ``<protein>`` typed by the user."""
    question = question.strip()
    if not question:
        raise InputError(None, "empty question")
    msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in history]
    for m in msgs:
        if m["role"] not in ("user", "assistant"):
            raise InputError(None, f"chat history: role must be user or assistant, got {m['role']!r}")
        if PROTEIN_MARKER in m["content"]:
            raise InputError(None, "chat history: '<protein>' is reserved for the protein's place")
    if PROTEIN_MARKER in question:
        raise InputError(None, "question: '<protein>' is reserved for the protein's place")
    msgs.append({"role": "user", "content": question})
    first = next(i for i, m in enumerate(msgs) if m["role"] == "user")
    msgs[first] = {"role": "user", "content": with_context(protein_turn(msgs[first]["content"]), context)}
    return msgs
