"""Streaming reader of UniProt XML (``uniprot_sprot.xml[.gz]``, single-entry ``.xml`` downloads).

Uses ``xml.etree.ElementTree.iterparse`` and clears every finished ``<entry>`` (and its place under the root), so
memory stays bounded however many entries the file holds.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from sepit.errors import InputError

from ..records import DomainRef, Feature, GoAspect, GoTerm, ProteinEntry
from ._comments import parse_cofactor, parse_text_topic
from ._open import DECOMPRESS_ERRORS, open_binary
from ._text import clean_sequence, clean_text, dedupe
from .skiplog import SkipLog
from .uniprot_flat import DOMAIN_DBS

_GO_ASPECT: dict[str, GoAspect] = {"F": "MF", "P": "BP", "C": "CC"}
_TEXT_TOPICS = {"function": "function", "subunit": "subunit", "pathway": "pathway"}
_EXTRA_TOPICS = {"similarity": "similarity", "domain": "domain", "tissue specificity": "tissue_specificity",
                 "PTM": "ptm"}


# UniProt XML feature types → flat-file FT keys.
XML_FEATURE_KEYS = {
    "initiator methionine": "INIT_MET", "signal peptide": "SIGNAL", "transit peptide": "TRANSIT",
    "propeptide": "PROPEP", "chain": "CHAIN", "peptide": "PEPTIDE", "topological domain": "TOPO_DOM",
    "transmembrane region": "TRANSMEM", "intramembrane region": "INTRAMEM", "domain": "DOMAIN", "repeat": "REPEAT",
    "calcium-binding region": "CA_BIND", "zinc finger region": "ZN_FING", "DNA-binding region": "DNA_BIND",
    "nucleotide phosphate-binding region": "NP_BIND", "region of interest": "REGION", "coiled-coil region": "COILED",
    "short sequence motif": "MOTIF", "compositionally biased region": "COMPBIAS", "active site": "ACT_SITE",
    "metal ion-binding site": "METAL", "binding site": "BINDING", "site": "SITE", "non-standard amino acid": "NON_STD",
    "modified residue": "MOD_RES", "lipid moiety-binding region": "LIPID", "glycosylation site": "CARBOHYD",
    "disulfide bond": "DISULFID", "cross-link": "CROSSLNK", "splice variant": "VAR_SEQ", "sequence variant": "VARIANT",
    "mutagenesis site": "MUTAGEN", "unsure residue": "UNSURE", "sequence conflict": "CONFLICT",
    "non-consecutive residues": "NON_CONS", "non-terminal residue": "NON_TER", "helix": "HELIX", "turn": "TURN",
    "strand": "STRAND"}


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _child(el: ET.Element | None, name: str) -> ET.Element | None:
    if el is None:
        return None
    for c in el:
        if _local(c.tag) == name:
            return c
    return None


def _text(el: ET.Element | None) -> str:
    return "" if el is None else " ".join("".join(el.itertext()).split())


def read_uniprot_xml(path: str | Path, skips: SkipLog | None = None) -> Iterator[ProteinEntry]:
    """Stream entries of a UniProt XML file (plain/gz/xz). Malformed entries are skipped with a reason.

    A file that is not XML, or XML without ``<entry>`` elements, raises InputError; XML broken after some entries
    (a truncated download) keeps the entries read and records ``"truncated input"``.
    """
    skips = skips if skips is not None else SkipLog()
    name = Path(path).name
    n_entries = 0
    with open_binary(path) as f:
        it = ET.iterparse(f, events=("start", "end"))
        root: ET.Element | None = None
        try:
            for event, el in it:
                if root is None:
                    root = el
                if event != "end" or _local(el.tag) != "entry":
                    continue
                entry = _parse_entry(el, name, skips)
                n_entries += 1
                el.clear()
                root.clear()  # drop the finished entry from the root too, or the tree grows without bound
                if entry is not None:
                    yield entry
        except ET.ParseError as e:
            if n_entries == 0:
                raise InputError(path, f"not UniProt XML ({e})") from None
            skips.add("truncated input", f"{name}: XML breaks after {n_entries} entries ({e})")
        except DECOMPRESS_ERRORS as e:
            if n_entries == 0:
                raise InputError(path, f"compressed data is corrupt or truncated ({e})") from None
            skips.add("truncated input", f"{name}: stream ends after {n_entries} entries ({e})")
    if n_entries == 0:
        raise InputError(path, "no UniProt <entry> elements")


def _parse_entry(el: ET.Element, source: str, skips: SkipLog) -> ProteinEntry | None:
    accs = [_text(a) for a in _children(el, "accession")]
    if not accs or not accs[0]:
        skips.add("missing accession", f"{source}: <entry> without <accession>")
        return None
    acc = accs[0]
    seq_el = _child(el, "sequence")
    seq = clean_sequence(_text(seq_el)) if seq_el is not None else None
    if seq_el is None or not _text(seq_el):
        skips.add("missing sequence", f"{source}: {acc}")
        return None
    if seq is None:
        skips.add("bad sequence", f"{source}: {acc}")
        return None
    declared = seq_el.get("length")
    if declared and declared.isdigit() and int(declared) != len(seq):
        skips.add("length mismatch", f"{source}: {acc} says {declared}, sequence has {len(seq)}")
        return None
    mass = seq_el.get("mass")

    protein = _child(el, "protein")
    pname = ""
    ec: list[str] = []
    if protein is not None:
        for tag in ("recommendedName", "submittedName", "alternativeName"):
            nm = _child(protein, tag)
            if nm is not None and not pname:
                pname = _text(_child(nm, "fullName"))
        ec += [_text(e) for e in protein.iter() if _local(e.tag) == "ecNumber"]
    gene = ""
    for g in _children(el, "gene"):
        names = _children(g, "name")
        primary = [n for n in names if n.get("type") == "primary"] or names
        if primary:
            gene = _text(primary[0])
            break
    org = _child(el, "organism")
    organism = ""
    taxid = ""
    if org is not None:
        sci = [n for n in _children(org, "name") if n.get("type") == "scientific"]
        organism = _text(sci[0]) if sci else ""
        tx = [d for d in _children(org, "dbReference") if d.get("type") == "NCBI Taxonomy"]
        taxid = tx[0].get("id", "") if tx else ""

    texts: dict[str, list[str]] = {"function": [], "subunit": [], "pathway": []}
    catalytic: list[str] = []
    cofactors: list[str] = []
    locations: list[str] = []
    topologies: list[str] = []
    extra: list[tuple[str, str]] = []
    entry_name = _text(_child(el, "name"))
    if entry_name:
        extra.append(("entry_name", entry_name))
    if len(accs) > 1:
        extra.append(("secondary_accessions", ";".join(accs[1:])))
    for c in _children(el, "comment"):
        kind = c.get("type", "")
        if kind in _TEXT_TOPICS:
            texts[_TEXT_TOPICS[kind]] += [parse_text_topic(_text(t)) for t in _children(c, "text")]
        elif kind == "catalytic activity":
            rx = _child(c, "reaction")
            if rx is not None:
                catalytic.append(clean_text(_text(_child(rx, "text"))))
                ec += [d.get("id", "") for d in _children(rx, "dbReference") if d.get("type") == "EC"]
            catalytic += [clean_text(_text(t)).rstrip(".") for t in _children(c, "text")]  # pre-2018 entries
        elif kind == "cofactor":
            cofactors += [_text(_child(cf, "name")) for cf in _children(c, "cofactor")]
            if not _children(c, "cofactor"):
                cofactors += [x for t in _children(c, "text") for x in parse_cofactor(_text(t))]
        elif kind == "subcellular location":
            for sl in _children(c, "subcellularLocation"):
                locs = [_text(x) for x in _children(sl, "location")]
                if locs:
                    locations.append(", ".join(locs))
                topologies += [_text(x) for x in _children(sl, "topology")]
        elif kind in _EXTRA_TOPICS:
            extra += [(_EXTRA_TOPICS[kind], parse_text_topic(_text(t))) for t in _children(c, "text")]
    if topologies:
        extra.append(("membrane_topology", ";".join(dedupe(topologies))))

    go: list[GoTerm] = []
    domains: list[DomainRef] = []
    pdb: list[str] = []
    for d in _children(el, "dbReference"):
        db, ident = d.get("type", ""), d.get("id", "")
        props = {p.get("type", ""): p.get("value", "") for p in _children(d, "property")}
        if db == "GO":
            term = props.get("term", "")
            aspect = _GO_ASPECT.get(term[:1])
            if aspect is not None:
                evidence = props.get("evidence", "")
                go.append(GoTerm(ident, aspect, term[2:], evidence if evidence.startswith("ECO:")
                                 else evidence.split(":")[0]))
        elif db in DOMAIN_DBS:
            domains.append(DomainRef(db, ident, props.get("entry name", "")))
        elif db == "PDB":
            pdb.append(ident)
        elif db == "EC":  # pre-2015 XML names the protein's EC numbers as entry-level references
            ec.append(ident)
    if pdb:
        extra.append(("pdb", ";".join(pdb)))
    if taxid:
        extra.append(("taxid", taxid))
    keywords = [_text(k) for k in _children(el, "keyword")]
    features = [_parse_feature(f) for f in _children(el, "feature")]
    return ProteinEntry(
        accession=acc, sequence=seq, name=clean_text(pname), gene=gene, organism=organism,
        function=tuple(t for t in texts["function"] if t), catalytic_activity=dedupe(x for x in catalytic if x),
        ec=dedupe(e for e in ec if e), cofactors=dedupe(x for x in cofactors if x),
        subcellular_location=dedupe(locations), subunit=tuple(t for t in texts["subunit"] if t),
        pathway=tuple(t for t in texts["pathway"] if t), keywords=dedupe(k for k in keywords if k),
        go=dedupe(go), domains=dedupe(domains), features=tuple(features),
        mass=int(mass) if mass and mass.isdigit() else None, source="uniprot_xml", extra=tuple(extra))


def _parse_feature(f: ET.Element) -> Feature:
    loc = _child(f, "location")
    start = end = None
    if loc is not None and not loc.get("sequence"):
        pos = _child(loc, "position")
        if pos is not None:
            start = end = _int(pos)
        else:
            start, end = _int(_child(loc, "begin")), _int(_child(loc, "end"))
    note = f.get("description", "")
    kind = f.get("type", "")
    # Same feature keys as the flat file (CHAIN, TRANSMEM, ...) so downstream code sees one vocabulary.
    return Feature(XML_FEATURE_KEYS.get(kind, kind.upper().replace(" ", "_")), start, end,
                   clean_text(note).rstrip("."))


def _int(el: ET.Element | None) -> int | None:
    if el is None or el.get("status") == "unknown":
        return None
    p = el.get("position", "")
    return int(p) if p.isdigit() else None
