"""Captions: a few sentences about a protein composed from the annotations it has (stage 0/1 text).

FUNCTION text where the source has it; otherwise GO molecular functions and processes with short definitions. Then
names, catalytic activity/EC, location, pathway, cofactors, subunit, family/domains and the structure header, each
only when present. Deterministic: no sampling here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from sepit.data.records import ProteinEntry

from . import facts
from .facts import GoName, join_list

MAX_TERMS = 4
DEFINED_TERMS = 2  # GO terms per aspect that get a short definition
DEF_CHARS = 110
_SENT_SPLIT = re.compile(r"(?<=[a-z0-9\)])\.\s+(?=[A-Z])")


def short_definition(definition: str, max_chars: int = DEF_CHARS) -> str:
    """First sentence of a GO definition, lower-cased start, cut at a word boundary to ``max_chars``."""
    d = _SENT_SPLIT.split(definition.strip(), maxsplit=1)[0].rstrip(".").strip()
    if len(d) > max_chars:
        d = d[:max_chars].rsplit(" ", 1)[0].rstrip(",;:") + " ..."
    if d[:1].isupper() and not d[1:2].isupper():
        d = d[0].lower() + d[1:]
    return d


def _terms_with_definitions(ids: tuple[str, ...], names: Mapping[str, GoName]) -> list[str]:
    out = []
    for i, gid in enumerate(g for g in ids if g in names):
        if i >= MAX_TERMS:
            break
        n = names[gid]
        out.append(f"{n.name} ({short_definition(n.definition)})" if i < DEFINED_TERMS and n.definition else n.name)
    rest = sum(1 for g in ids if g in names) - len(out)
    if rest > 0:
        out.append(f"{rest} more")
    return out


def _sentences(text: str, n: int) -> str:
    parts = _SENT_SPLIT.split(text.strip())
    out = " ".join(p if p.endswith(".") else p + "." for p in parts[:n])
    return out


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" or re.match(r"(8|11|18)\d*\b", word) else "a"


def structure_note(pdb_id: str, chain: str = "", title: str = "") -> str:
    """``PDB 1A4W, chain H: crystal structures of thrombin ...`` (PDB titles are upper case: tamed)."""
    if title and title.isupper():
        title = " ".join(w if any(c.isdigit() for c in w) else w.lower() for w in title.split())
    where = f"PDB {pdb_id}" + (f", chain {chain}" if chain else "")
    return f"{where}: {title.rstrip('.')}" if title else where


def compose_caption(entry: ProteinEntry, names: Mapping[str, GoName], structure: str = "") -> str:
    """The caption of one protein. ``names`` maps its GO ids to names/definitions; ``structure`` is a
    :func:`structure_note` (empty without a structure)."""
    s: list[str] = []
    length = f"{entry.length}-residue"
    subject = entry.name or "This"
    gene = f" (gene {entry.gene})" if entry.gene else ""
    org = f" from {entry.organism}" if entry.organism else ""
    s.append(f"{subject}{gene} is {_article(length)} {length} protein{org}.")
    texts = facts.function_texts(entry)
    if texts:
        s.append(_sentences(" ".join(texts), 3))
    mf = _terms_with_definitions(facts.go_values(entry, "MF"), names) if not texts else []
    bp = _terms_with_definitions(facts.go_values(entry, "BP"), names) if not texts else []
    if mf:
        s.append(f"Its molecular functions include {join_list(mf)}.")
    if bp:
        s.append(f"It is involved in {join_list(bp)}.")
    reactions = facts.catalytic_values(entry)
    if reactions:
        s.append(f"It catalyzes the reaction {reactions[0]}.")
    ecs = facts.ec_values(entry)
    if ecs:
        s.append(f"It is an enzyme of class EC {join_list(ecs)}.")
    cof = facts.cofactor_values(entry)
    if cof:
        s.append(f"It requires {join_list(cof, MAX_TERMS)} as cofactor.")
    paths = facts.pathway_values(entry)
    if paths:
        s.append(f"It takes part in the pathway {paths[0]}.")
    locs = facts.location_values(entry)
    cc = [names[g].name for g in facts.go_values(entry, "CC") if g in names]
    if locs:
        s.append(f"It is located in: {join_list(locs, MAX_TERMS)}.")
    elif cc:
        s.append(f"It is found in {join_list(cc, MAX_TERMS)}.")
    if entry.subunit:
        s.append(_sentences(entry.subunit[0], 1))
    fams = facts.family_values(entry)
    if fams:
        s.append(f"It belongs to {join_list(['the ' + f for f in fams], MAX_TERMS)}.")
    doms = facts.domain_values(entry)
    if doms:
        s.append(f"It contains {join_list(doms, MAX_TERMS)}.")
    if structure:
        s.append(f"An experimental structure is available ({structure}).")
    return " ".join(x for x in s if x)
