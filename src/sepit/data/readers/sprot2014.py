"""Readers of the shared 2014 Swiss-Prot GO table, its GO-term dictionary and the human UniProt table.

Table (``sprot2014_go_50k.tsv[.xz]``, tab-separated with a header):
``accession, length, split, has_structure, human_gene_symbol, human_gene_name, human_EC, human_Pfam, GO_MF,
GO_BP, GO_CC, sequence`` — list fields are ``;``-separated. Rows with ``split == "eval"`` are reserved for evaluation
and come out with ``split_hint="eval"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from sepit.errors import InputError

from ..records import DomainRef, GoAspect, GoTerm, ProteinEntry
from ._open import LineSource
from ._text import clean_sequence, dedupe, split_list
from .skiplog import SkipLog

SPROT2014_COLUMNS = ("accession", "length", "split", "has_structure", "human_gene_symbol", "human_gene_name",
                     "human_EC", "human_Pfam", "GO_MF", "GO_BP", "GO_CC", "sequence")
# GO.sqlite's root pseudo-term, its 2014 "obsolete_*" bins and a synonym-type row: not annotatable terms.
_GO_PSEUDO_TERMS = frozenset({"all", "obsolete_molecular_function", "obsolete_biological_process",
                              "obsolete_cellular_component", "systematic_synonym"})
_GO_COLUMNS: tuple[tuple[str, GoAspect], ...] = (("GO_MF", "MF"), ("GO_BP", "BP"), ("GO_CC", "CC"))


@dataclass(frozen=True)
class GoInfo:
    """One GO term: ``ontology`` is MF/BP/CC ("" when GO 2022 no longer has the id); ``status`` is
    ``current``/``obsolete``/``absent``; ``obsolete`` is True unless current."""

    id: str
    ontology: str
    name: str
    definition: str = ""
    status: str = "current"

    @property
    def obsolete(self) -> bool:
        return self.status != "current"


@dataclass(frozen=True)
class HumanInfo:
    """A row of the human UniProt table (``human_uniprot_orghs2022.tsv.xz``)."""

    accession: str
    gene_symbol: str = ""
    gene_name: str = ""
    ec: tuple[str, ...] = ()
    pfam: tuple[str, ...] = ()
    entrez_id: str = ""
    chromosome: str = ""


def _header(path: Path, line: str | None, required: tuple[str, ...]) -> dict[str, int]:
    if line is None:
        raise InputError(path, "empty file, expected a tab-separated table with a header")
    cols = [c.strip() for c in line.rstrip("\n").split("\t")]
    missing = [c for c in required if c not in cols]
    if missing:
        raise InputError(path, f"not the expected table: missing column(s) {', '.join(missing)}")
    return {c: i for i, c in enumerate(cols)}


def _rows(path: str | Path, required: tuple[str, ...], skips: SkipLog) -> Iterator[dict[str, str]]:
    """Dict rows of a headed TSV; rows with the wrong number of fields are skipped as ``"malformed row"``."""
    src = LineSource(path, skips)
    it = iter(src)
    idx = _header(Path(path), next(it, None), required)
    n = len(idx)
    for lineno, line in enumerate(it, start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) != n:
            skips.add("malformed row", f"{Path(path).name}:{lineno}: {len(fields)} fields, expected {n}")
            continue
        yield {c: fields[i] for c, i in idx.items()}


def read_go_terms(path: str | Path, skips: SkipLog | None = None) -> dict[str, GoInfo]:
    """GO id → :class:`GoInfo` from ``go_terms.tsv[.xz]`` (``go_id, ontology, name_2022, name_2014, status_2022,
    definition_2022``).

    The name is the GO 2022 one for current terms; obsolete and absent terms keep their 2014 name (the 2022 name of
    an obsolete term is just ``"obsolete " + old name``). A leading ``"OBSOLETE. "`` is dropped from definitions.
    """
    skips = skips if skips is not None else SkipLog()
    out: dict[str, GoInfo] = {}
    req = ("go_id", "ontology", "name_2022", "name_2014", "status_2022", "definition_2022")
    for row in _rows(path, req, skips):
        go_id = row["go_id"].strip()
        if go_id in _GO_PSEUDO_TERMS:
            continue
        if not go_id.startswith("GO:"):
            skips.add("malformed GO id", f"{Path(path).name}: {go_id!r}")
            continue
        status = row["status_2022"].strip() or "current"
        n22, n14 = row["name_2022"].strip(), row["name_2014"].strip()
        if status != "current" and n14:
            name = n14
        else:
            name = n22 or n14
        name = name.removeprefix("obsolete ")
        definition = row["definition_2022"].strip()
        if definition.startswith("OBSOLETE."):
            definition = definition[len("OBSOLETE."):].strip()
        out[go_id] = GoInfo(go_id, row["ontology"].strip(), name, definition, status)
    if not out:
        raise InputError(path, "no GO terms found")
    return out


def read_human_table(path: str | Path, skips: SkipLog | None = None) -> dict[str, HumanInfo]:
    """Human UniProt accession → :class:`HumanInfo` from ``human_uniprot_orghs2022.tsv[.xz]``."""
    skips = skips if skips is not None else SkipLog()
    out: dict[str, HumanInfo] = {}
    req = ("uniprot_accession", "gene_symbol", "gene_name", "EC", "Pfam")
    for row in _rows(path, req, skips):
        acc = row["uniprot_accession"].strip()
        if not acc:
            skips.add("malformed row", f"{Path(path).name}: empty accession")
            continue
        out[acc] = HumanInfo(acc, row["gene_symbol"].strip(), row["gene_name"].strip(), split_list(row["EC"]),
                             split_list(row["Pfam"]), row.get("entrez_gene_id", "").strip(),
                             row.get("chromosome", "").strip())
    return out


def read_sprot2014(table: str | Path, go_terms: Mapping[str, GoInfo] | str | Path | None = None,
                   human: Mapping[str, HumanInfo] | str | Path | None = None,
                   skips: SkipLog | None = None) -> Iterator[ProteinEntry]:
    """Stream :class:`ProteinEntry` records from the shared 2014 table (plain, .gz or .xz).

    ``go_terms`` (a dict from :func:`read_go_terms`, or its path) fills GO names; ``human`` (a dict from
    :func:`read_human_table`, or its path) fills a human protein's gene/name/EC/Pfam where the table left them
    empty. Rows with a bad sequence, a length that disagrees with the sequence, a bad GO id or a duplicate
    accession are skipped with a reason in ``skips``. ``extra`` carries ``has_structure`` (``"0"``/``"1"``) and, for
    human proteins, ``chromosome``/``entrez_id`` when the human table has them.
    """
    skips = skips if skips is not None else SkipLog()
    go = read_go_terms(go_terms, skips) if isinstance(go_terms, (str, Path)) else (go_terms or {})
    hum = read_human_table(human, skips) if isinstance(human, (str, Path)) else (human or {})
    name = Path(table).name
    seen: set[str] = set()
    for row in _rows(table, SPROT2014_COLUMNS, skips):
        acc = row["accession"].strip()
        seq = clean_sequence(row["sequence"])
        if not acc:
            skips.add("malformed row", f"{name}: empty accession")
            continue
        if seq is None:
            skips.add("bad sequence", f"{name}: {acc}")
            continue
        if row["length"].strip() and row["length"].strip() != str(len(seq)):
            skips.add("length mismatch", f"{name}: {acc} says {row['length'].strip()}, sequence has {len(seq)}")
            continue
        if acc in seen:
            skips.add("duplicate accession", f"{name}: {acc}")
            continue
        terms: list[GoTerm] = []
        bad = ""
        for col, aspect in _GO_COLUMNS:
            for gid in split_list(row[col]):
                if not (gid.startswith("GO:") and gid[3:].isdigit()):
                    bad = gid
                    break
                info = go.get(gid)
                terms.append(GoTerm(gid, aspect, info.name if info else ""))
        if bad:
            skips.add("bad GO id", f"{name}: {acc} has {bad!r}")
            continue
        seen.add(acc)
        h = hum.get(acc)
        gene = row["human_gene_symbol"].strip() or (h.gene_symbol if h else "")
        pname = row["human_gene_name"].strip() or (h.gene_name if h else "")
        ec = split_list(row["human_EC"]) or (h.ec if h else ())
        pfam = split_list(row["human_Pfam"]) or (h.pfam if h else ())
        is_human = h is not None or any(row[c].strip() for c in SPROT2014_COLUMNS[4:8])
        extra = [("has_structure", "1" if row["has_structure"].strip() == "1" else "0")]
        if h is not None:
            extra += [(k, v) for k, v in (("entrez_id", h.entrez_id), ("chromosome", h.chromosome)) if v]
        yield ProteinEntry(
            accession=acc, sequence=seq, name=pname, gene=gene,
            organism="Homo sapiens" if is_human else "",
            ec=dedupe(ec), go=tuple(dedupe(terms)),
            domains=tuple(DomainRef("Pfam", p) for p in dedupe(pfam)),
            split_hint="eval" if row["split"].strip() == "eval" else "",
            source="sprot2014", extra=tuple(extra))
