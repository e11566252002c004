"""Streaming reader of UniProt TSV exports (REST ``format=tsv`` and the older website download).

Columns are matched by their header, case-insensitively, under both the current and the older names (``Gene
Ontology (molecular function)`` / ``Gene ontology (molecular function)``, ``Pfam`` / ``Cross-reference (Pfam)``).
Only ``Entry`` and ``Sequence`` are required; other columns fill what they can.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from sepit.errors import InputError

from ..records import DomainRef, GoAspect, GoTerm, ProteinEntry
from ._comments import parse_catalytic, parse_cofactor, parse_location, parse_text_topic, split_topics
from ._open import LineSource
from ._text import clean_sequence, clean_text, dedupe, split_list
from .skiplog import SkipLog

# field → accepted header names (lower case)
COLUMNS: dict[str, tuple[str, ...]] = {
    "accession": ("entry", "accession"),
    "entry_name": ("entry name",),
    "sequence": ("sequence",),
    "name": ("protein names",),
    "gene": ("gene names (primary)", "gene names", "gene names  (primary )"),
    "organism": ("organism",),
    "length": ("length",),
    "mass": ("mass",),
    "function": ("function [cc]",),
    "catalytic": ("catalytic activity",),
    "cofactor": ("cofactor",),
    "location": ("subcellular location [cc]",),
    "subunit": ("subunit structure", "subunit structure [cc]"),
    "pathway": ("pathway",),
    "ec": ("ec number",),
    "keywords": ("keywords",),
    "similarity": ("sequence similarities",),
    "go_mf": ("gene ontology (molecular function)",),
    "go_bp": ("gene ontology (biological process)",),
    "go_cc": ("gene ontology (cellular component)",),
    "taxid": ("organism (id)", "organism id"),
}
# REST names the column after the database ("Pfam"); the old website called it "Cross-reference (Pfam)".
_DOMAIN_COLUMNS = {db: (db.lower(), f"cross-reference ({db.lower()})")
                   for db in ("Pfam", "InterPro", "PROSITE", "SMART", "PANTHER", "SUPFAM", "Gene3D")}
_GO_ITEM = re.compile(r"\s*(.*?)\s*\[(GO:\d{7})\]")
_GO_ASPECTS: tuple[tuple[str, GoAspect], ...] = (("go_mf", "MF"), ("go_bp", "BP"), ("go_cc", "CC"))


def _first_name(names: str) -> str:
    """``"Cytochrome c (Cyt c) (EC 1.1.1.1) [Cleaved into: ...]"`` → ``"Cytochrome c"``: the recommended name comes
    first, followed by alternative names as trailing `` (...)`` groups, which are peeled off from the end."""
    name = names.split(" [", 1)[0].strip()
    while name.endswith(")"):
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                break
        if i <= 0 or name[i - 1] != " ":  # "NAD(P)H" — parentheses inside a word are part of the name
            break
        name = name[: i - 1].rstrip()
    return name


def read_uniprot_tsv(path: str | Path, skips: SkipLog | None = None) -> Iterator[ProteinEntry]:
    """Stream proteins of a UniProt TSV export (plain/gz/xz); needs ``Entry`` and ``Sequence`` columns."""
    skips = skips if skips is not None else SkipLog()
    src = LineSource(path, skips)
    it = iter(src)
    name = Path(path).name
    head = next(it, None)
    if head is None:
        raise InputError(path, "empty file")
    cols = [c.strip().lower() for c in head.rstrip("\n").split("\t")]
    idx: dict[str, int] = {}
    for field, names in COLUMNS.items():
        for n in names:
            if n in cols:
                idx[field] = cols.index(n)
                break
    dom_idx = {db: cols.index(n) for db, names in _DOMAIN_COLUMNS.items() for n in names if n in cols}
    if "accession" not in idx or "sequence" not in idx:
        raise InputError(path, "not a UniProt TSV export (needs 'Entry' and 'Sequence' columns)")
    for lineno, line in enumerate(it, start=2):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) != len(cols):
            skips.add("malformed row", f"{name}:{lineno}: {len(fields)} fields, expected {len(cols)}")
            continue
        entry = _row(fields, idx, dom_idx, name, skips)
        if entry is not None:
            yield entry


def _row(fields: list[str], idx: dict[str, int], dom_idx: dict[str, int], source: str,
         skips: SkipLog) -> ProteinEntry | None:
    def get(field: str) -> str:
        return fields[idx[field]].strip() if field in idx else ""

    acc = get("accession")
    seq = clean_sequence(get("sequence"))
    if not acc:
        skips.add("missing accession", f"{source}: empty Entry")
        return None
    if seq is None:
        skips.add("bad sequence" if get("sequence") else "missing sequence", f"{source}: {acc}")
        return None
    if get("length").isdigit() and int(get("length")) != len(seq):
        skips.add("length mismatch", f"{source}: {acc} says {get('length')}, sequence has {len(seq)}")
        return None
    catalytic: list[str] = []
    ec = list(split_list(get("ec")))
    for block in split_topics(get("catalytic"), "CATALYTIC ACTIVITY"):
        rx, ecs = parse_catalytic(block)
        catalytic += rx
        ec += ecs
    locations: list[str] = []
    topologies: list[str] = []
    for block in split_topics(get("location"), "SUBCELLULAR LOCATION"):
        locs, topo = parse_location(block)
        locations += locs
        topologies += topo
    go = [GoTerm(gid, aspect, gname) for field, aspect in _GO_ASPECTS for gname, gid in _GO_ITEM.findall(get(field))]
    domains = [DomainRef(db, d) for db, i in dom_idx.items() for d in split_list(fields[i])]
    mass = get("mass").replace(",", "")
    gene = get("gene").split()[0] if get("gene") else ""
    extra = [(k, get(k)) for k in ("entry_name", "taxid") if get(k)]
    extra += [("similarity", parse_text_topic(t)) for t in split_topics(get("similarity"), "SIMILARITY")]
    if topologies:
        extra.append(("membrane_topology", ";".join(dedupe(topologies))))
    return ProteinEntry(
        accession=acc, sequence=seq, name=clean_text(_first_name(get("name"))), gene=gene,
        organism=get("organism"),
        function=tuple(t for t in (parse_text_topic(b) for b in split_topics(get("function"), "FUNCTION")) if t),
        catalytic_activity=dedupe(catalytic), ec=dedupe(ec),
        cofactors=dedupe(c for b in split_topics(get("cofactor"), "COFACTOR") for c in parse_cofactor(b)),
        subcellular_location=dedupe(locations),
        subunit=tuple(parse_text_topic(b) for b in split_topics(get("subunit"), "SUBUNIT")),
        pathway=tuple(parse_text_topic(b) for b in split_topics(get("pathway"), "PATHWAY")),
        keywords=dedupe(split_list(get("keywords"))), go=dedupe(go), domains=dedupe(domains),
        mass=int(mass) if mass.isdigit() else None, source="uniprot_tsv", extra=tuple(extra))
