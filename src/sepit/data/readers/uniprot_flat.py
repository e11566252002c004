"""Streaming reader of UniProtKB flat files (``uniprot_sprot.dat[.gz]``, single-entry ``.txt`` downloads).

One entry is held in memory at a time (its lines between ``ID`` and ``//``), so the full 570k-entry Swiss-Prot
streams in bounded memory. Parsed: ID/AC/DE/GN/OS/OX, CC topics (FUNCTION, CATALYTIC ACTIVITY, COFACTOR,
SUBCELLULAR LOCATION, SUBUNIT, PATHWAY, plus SIMILARITY/DOMAIN/TISSUE SPECIFICITY/PTM into ``extra``), DR
(GO, family/domain databases, BRENDA EC, PDB ids), KW, FT (both the pre-2019 column format and the current
``start..end`` + ``/note=`` format) and SQ (sequence, mass).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from sepit.errors import InputError

from ..records import DomainRef, Feature, GoAspect, GoTerm, ProteinEntry
from ._comments import parse_catalytic, parse_cofactor, parse_location, parse_text_topic
from ._open import LineSource
from ._text import clean_sequence, clean_text, dedupe, join_wrapped, split_list
from .skiplog import SkipLog

# Family/domain databases kept as DomainRef (DR lines of other databases are ignored).
DOMAIN_DBS = frozenset({"Pfam", "InterPro", "PROSITE", "SMART", "PANTHER", "PRINTS", "SUPFAM", "Gene3D", "CDD",
                        "TIGRFAMs", "HAMAP", "PIRSF", "NCBIfam", "FunFam", "SFLD", "PROSITE-ProRule"})
_GO_ASPECT: dict[str, GoAspect] = {"F": "MF", "P": "BP", "C": "CC"}
_EXTRA_TOPICS = {"SIMILARITY": "similarity", "DOMAIN": "domain", "TISSUE SPECIFICITY": "tissue_specificity",
                 "PTM": "ptm"}
_MAX_ENTRY_LINES = 2_000_000  # titin, the largest entry, has ~40k; anything bigger is a missing "//"
_DE_FIELD = re.compile(r"(RecName|SubName|AltName):\s*Full=([^;{]+)")
_DE_EC = re.compile(r"EC=(\d+\.[\dn\-]+\.[\dn\-]+\.[\dn\-]+)")
_OLD_DE_EC = re.compile(r"\(EC (\d+\.[\dn\-]+\.[\dn\-]+\.[\dn\-]+)\)")
# A GN value ends at "; Key=" or the line end; it may itself hold ";" ("HvPIP2;8") or "," (lists of synonyms).
_GN_FIELD = re.compile(r"(Name|OrderedLocusNames|ORFNames)=(.+?)\s*(?:\{[^}]*\})?;(?=\s+\w+=|\s*$|\s+and\b)")
_POS = re.compile(r"^[<>?]?(\d+)?[<>?]?$")
_OLD_EVIDENCE_WORDS = frozenset({"Potential", "Probable", "By similarity"})
_EC_ID = re.compile(r"^\d+\.[\dn\-]+\.[\dn\-]+\.[\dn\-]+$")


def read_uniprot_flat(path: str | Path, skips: SkipLog | None = None) -> Iterator[ProteinEntry]:
    """Stream entries of a UniProt flat file (plain/gz/xz). Malformed entries are skipped with a reason.

    Raises InputError when the file holds no ``ID`` line at all (empty or another format).
    """
    skips = skips if skips is not None else SkipLog()
    src = LineSource(path, skips)
    name = Path(path).name
    block: list[str] = []
    seen_id = False
    for line in src:
        if line.startswith("//"):
            if block:
                entry = _parse_entry(block, name, skips)
                if entry is not None:
                    yield entry
            block = []
            continue
        if line.startswith("ID   "):
            seen_id = True
            if block:
                skips.add("unterminated entry", f"{name}: {block[0][5:30].strip()} has no '//' before next ID")
                block = []
        elif not block:
            if line.strip():
                skips.add("text outside an entry", f"{name}: {line[:40].rstrip()!r}")
            continue
        block.append(line.rstrip("\n"))
        if len(block) > _MAX_ENTRY_LINES:
            skips.add("unterminated entry", f"{name}: entry longer than {_MAX_ENTRY_LINES} lines")
            block = []
    if block:
        reason = "entry cut by truncated input" if src.truncated else "unterminated entry"
        skips.add(reason, f"{name}: {block[0][5:30].strip()}")
    if not seen_id:
        raise InputError(path, "empty file" if src.lines == 0 else "not a UniProt flat file (no 'ID' line)")


def _parse_entry(block: list[str], source: str, skips: SkipLog) -> ProteinEntry | None:
    try:
        return _parse_lines(block, source, skips)
    except (ValueError, IndexError, KeyError) as e:  # the net under the per-field checks
        skips.add("malformed entry", f"{source}: {block[0][5:30].strip()} ({e})")
        return None


def _parse_lines(block: list[str], source: str, skips: SkipLog) -> ProteinEntry | None:
    by: dict[str, list[str]] = {}
    seq_lines: list[str] = []
    in_seq = False
    for ln in block:
        if in_seq:
            seq_lines.append(ln)
            continue
        code = ln[:2]
        if code == "SQ":
            in_seq = True
        by.setdefault(code, []).append(ln[5:])
    entry_name = by["ID"][0].split()[0] if by.get("ID") and by["ID"][0].split() else ""
    accs = [a for ln in by.get("AC", []) for a in split_list(ln)]
    if not accs:
        skips.add("missing accession", f"{source}: {entry_name}")
        return None
    acc = accs[0]
    if not seq_lines:
        skips.add("missing sequence", f"{source}: {acc}")
        return None
    seq = clean_sequence("".join(seq_lines))
    if seq is None:
        skips.add("bad sequence", f"{source}: {acc}")
        return None
    sq = by.get("SQ", [""])[0]
    m = re.search(r"(\d+)\s+AA;", sq)
    if m and int(m.group(1)) != len(seq):
        skips.add("length mismatch", f"{source}: {acc} SQ says {m.group(1)}, sequence has {len(seq)}")
        return None
    mass_m = re.search(r"(\d+)\s+MW;", sq)

    pname, ec = _parse_de(by.get("DE", []))
    comments = _parse_cc(by.get("CC", []))
    function, catalytic, cofactors, locations, subunit, pathway = [], [], [], [], [], []
    topologies: list[str] = []
    extra: list[tuple[str, str]] = [("entry_name", entry_name)] if entry_name else []
    if len(accs) > 1:
        extra.append(("secondary_accessions", ";".join(accs[1:])))
    for topic, text in comments:
        if topic == "FUNCTION":
            function.append(parse_text_topic(text))
        elif topic == "CATALYTIC ACTIVITY":
            rx, ecs = parse_catalytic(text)
            catalytic += rx
            ec += ecs
        elif topic == "COFACTOR":
            cofactors += parse_cofactor(text)
        elif topic == "SUBCELLULAR LOCATION":
            locs, topo = parse_location(text)
            locations += locs
            topologies += topo
        elif topic == "SUBUNIT":
            subunit.append(parse_text_topic(text))
        elif topic == "PATHWAY":
            pathway.append(parse_text_topic(text))
        elif topic in _EXTRA_TOPICS:
            extra.append((_EXTRA_TOPICS[topic], parse_text_topic(text)))
    if topologies:
        extra.append(("membrane_topology", ";".join(dedupe(topologies))))
    go, domains, pdb = _parse_dr(by.get("DR", []), ec)
    if pdb:
        extra.append(("pdb", ";".join(pdb)))
    ox = " ".join(by.get("OX", []))
    tax = re.search(r"NCBI_TaxID=(\d+)", ox)
    if tax:
        extra.append(("taxid", tax.group(1)))
    keywords = [clean_text(k).rstrip(".") for k in split_list(join_wrapped(by.get("KW", [])))]
    organism = clean_text(join_wrapped(by.get("OS", []))).rstrip(".")
    return ProteinEntry(
        accession=acc, sequence=seq, name=pname, gene=_parse_gn(by.get("GN", [])), organism=organism,
        function=tuple(t for t in function if t), catalytic_activity=dedupe(catalytic), ec=dedupe(ec),
        cofactors=dedupe(cofactors), subcellular_location=dedupe(locations),
        subunit=tuple(t for t in subunit if t), pathway=tuple(t for t in pathway if t),
        keywords=dedupe(k for k in keywords if k), go=dedupe(go), domains=dedupe(domains),
        features=tuple(_parse_ft(by.get("FT", []))), mass=int(mass_m.group(1)) if mass_m else None,
        source="uniprot_flat", extra=tuple(extra))


def _parse_de(lines: list[str]) -> tuple[str, list[str]]:
    """Recommended (else submitted, else first) full name, and EC numbers. Handles the pre-2008 one-line DE."""
    text = " ".join(ln.strip() for ln in lines)
    names = _DE_FIELD.findall(text)
    ec = _DE_EC.findall(text)
    if names:
        rec = [n for kind, n in names if kind == "RecName"] or [n for kind, n in names if kind == "SubName"]
        return clean_text((rec or [names[0][1]])[0]), ec
    # Old format: "Cytochrome c (EC 1.1.1.1) (Alt name) [Includes: ...]."
    ec = _OLD_DE_EC.findall(text)
    name = re.split(r"\s+[(\[]", text, maxsplit=1)[0].rstrip(". ")
    return clean_text(name), ec


def _parse_gn(lines: list[str]) -> str:
    """The first gene's Name= (else its ordered-locus / ORF name); old ``GN   CYCS.`` lines are taken as is."""
    text = " ".join(ln.strip() for ln in lines)
    fields = _GN_FIELD.findall(text)
    for wanted in ("Name", "OrderedLocusNames", "ORFNames"):
        for key, val in fields:
            val = val.split(",")[0].strip()  # OrderedLocusNames/ORFNames list several, comma-separated
            if key == wanted and val:
                return val
    if text and "=" not in text:
        return re.split(r"\s+(?:OR|AND|and|or)\s+|[;,]", text)[0].strip(" .")
    return ""


def _parse_cc(lines: list[str]) -> list[tuple[str, str]]:
    """CC lines → [(TOPIC, joined text)], stopping at the copyright block."""
    out: list[tuple[str, str]] = []
    topic = ""
    buf: list[str] = []
    for ln in lines:
        if ln.startswith("----"):
            break
        if ln.startswith("-!- "):
            if topic:
                out.append((topic, join_wrapped(buf)))
            head, _, rest = ln[4:].partition(":")
            topic, buf = head.strip(), [rest]
        elif topic:
            buf.append(ln)
    if topic:
        out.append((topic, join_wrapped(buf)))
    return out


def _parse_dr(lines: list[str], ec: list[str]) -> tuple[list[GoTerm], list[DomainRef], list[str]]:
    go: list[GoTerm] = []
    domains: list[DomainRef] = []
    pdb: list[str] = []
    for ln in lines:
        parts = [p.strip() for p in ln.rstrip(".").split(";")]
        if len(parts) < 2:
            continue
        db, ident = parts[0], parts[1]
        if db == "GO" and len(parts) >= 3 and ident.startswith("GO:"):
            aspect_name = parts[2]
            aspect = _GO_ASPECT.get(aspect_name[:1])
            if aspect is None:
                continue
            evidence = parts[3].split(":")[0] if len(parts) > 3 else ""
            go.append(GoTerm(ident, aspect, aspect_name[2:].strip(), evidence))
        elif db in DOMAIN_DBS:
            dname = parts[2] if len(parts) > 2 and parts[2] != "-" else ""
            domains.append(DomainRef(db, ident, dname))
        elif db == "BRENDA" and _EC_ID.match(ident):
            ec.append(ident)
        elif db == "PDB":
            pdb.append(ident)
    return go, domains, pdb


def _pos(token: str) -> int | None:
    """``"12"``, ``"<1"``, ``">50"``, ``"?47"`` (uncertain, as XML status="uncertain") → int; ``"?"`` → None."""
    m = _POS.match(token)
    if not m or m.group(1) is None:
        return None
    return int(m.group(1))


def _parse_ft(lines: list[str]) -> Iterator[Feature]:
    """FT lines (both formats) → Features. Features on another isoform (``P12345-2:1..10``) get no position."""
    kind = ""
    start: int | None = None
    end: int | None = None
    notes: list[str] = []
    new_format = False

    def done() -> Feature:
        text = join_wrapped(notes)
        if new_format:
            m = re.search(r'/note="(.*?)"?(?=\s*/\w+=|$)', text)
            text = m.group(1) if m else ""
        else:
            text = re.sub(r"/FTId=\S+", "", text)
        note = clean_text(text).rstrip(".")
        return Feature(kind, start, end, "" if note in _OLD_EVIDENCE_WORDS else note)

    for ln in lines:
        key = ln[:8].strip()
        if key:
            if kind:
                yield done()
            kind, notes = key, []
            rest = ln[8:].split()
            if len(rest) >= 2 and _POS.match(rest[0]) and _POS.match(rest[1]):  # old: "KEY  from  to  note"
                new_format = False
                start, end = _pos(rest[0]), _pos(rest[1])
                notes.append(ln[29:] if len(ln) > 29 else "")
            else:
                new_format = True
                loc = rest[0] if rest else "?"
                if ":" in loc:  # a position on another sequence
                    start = end = None
                else:
                    a, _, b = loc.partition("..")
                    start, end = _pos(a), _pos(b or a)
        elif kind:
            notes.append(ln)
    if kind:
        yield done()
