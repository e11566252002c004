"""What a protein's annotations say, per task: normalised values (for answers, yes/no positives and the catalog).

Each ``*_values`` function returns a tuple of distinct strings in the entry's own order; a task with no values is
not asked about that protein. GO values are GO ids (names come from the catalog); every other value is display
text.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from sepit.data.records import ProteinEntry

_OLIGOMERS = ("monomer", "homodimer", "homotrimer", "homotetramer", "homopentamer", "homohexamer", "homooctamer",
              "heterodimer", "heterotrimer", "heterotetramer")
_OLIGOMER_RE = re.compile(r"\b(" + "|".join(_OLIGOMERS) + r")s?\b", re.IGNORECASE)
_BELONGS = re.compile(r"^Belongs to the (.+?)\.?$")
_CONTAINS = re.compile(r"^Contains (?:\d+|an?|one|two|three|four|five|several) (.+?)\.?$")
_DOMAIN_FEATURES = ("DOMAIN", "MOTIF", "ZN_FING", "REPEAT", "domain", "short sequence motif", "zinc finger region",
                    "repeat")
_SENTENCE_END = re.compile(r"(?<=[a-z0-9\)])\.\s+(?=[A-Z])")


def _uniq(items) -> tuple[str, ...]:  # type: ignore[no-untyped-def]
    out: list[str] = []
    seen: set[str] = set()
    for it in items:
        it = " ".join(str(it).split()).strip()
        if it and it.lower() not in seen:
            seen.add(it.lower())
            out.append(it)
    return tuple(out)


def first_sentence(text: str) -> str:
    """The first sentence of a free-text comment, with its full stop."""
    head = _SENTENCE_END.split(text.strip(), maxsplit=1)[0].strip()
    return head if head.endswith(".") else head + "."


def go_values(entry: ProteinEntry, aspect: str) -> tuple[str, ...]:
    return _uniq(t.id for t in entry.go if t.aspect == aspect)


def location_values(entry: ProteinEntry) -> tuple[str, ...]:
    return _uniq(entry.subcellular_location)


def ec_values(entry: ProteinEntry) -> tuple[str, ...]:
    return _uniq(e.removeprefix("EC ").strip() for e in entry.ec)


def _extra_all(entry: ProteinEntry, key: str) -> list[str]:
    return [v for k, v in entry.extra if k == key and v]


def family_values(entry: ProteinEntry) -> tuple[str, ...]:
    """"Belongs to the X family" statements, then Pfam families (``Pfam family PF00069 (Pkinase)``)."""
    fams = []
    for text in _extra_all(entry, "similarity"):
        for part in re.split(r"(?<=\.)\s+", text):
            m = _BELONGS.match(part.strip())
            if m:
                fams.append(m.group(1))
    fams += [f"Pfam family {d.id} ({d.name})" if d.name else f"Pfam family {d.id}" for d in entry.domains_in("Pfam")]
    return _uniq(fams)


def domain_values(entry: ProteinEntry) -> tuple[str, ...]:
    """Domains/motifs from DOMAIN/MOTIF/ZN_FING/REPEAT features and "Contains 1 X domain" statements."""
    out = []
    for f in entry.features:
        if f.kind in _DOMAIN_FEATURES and f.note:
            note = re.sub(r"\s+\d+$", "", f.note)  # "EGF-like 2" → "EGF-like": one value per domain type
            kind = {"MOTIF": "motif", "ZN_FING": "zinc finger", "REPEAT": "repeat"}.get(f.kind, "domain")
            out.append(note if kind.split()[-1] in note.lower() else f"{note} {kind}")
    for text in _extra_all(entry, "similarity"):
        for part in re.split(r"(?<=\.)\s+", text):
            m = _CONTAINS.match(part.strip())
            if m:
                out.append(re.sub(r"s$", "", m.group(1)) if m.group(1).endswith("domains") else m.group(1))
    return _uniq(out)


def cofactor_values(entry: ProteinEntry) -> tuple[str, ...]:
    return _uniq(entry.cofactors)


def pathway_values(entry: ProteinEntry) -> tuple[str, ...]:
    """Pathways without the trailing ``step n/m`` detail (shared by the enzymes of one pathway)."""
    out = []
    for p in entry.pathway:
        parts = [x.strip() for x in p.rstrip(".").split(";") if x.strip() and not x.strip().startswith("step ")]
        if parts:
            out.append("; ".join(parts))
    return _uniq(out)


def subunit_states(entry: ProteinEntry) -> tuple[str, ...]:
    """Oligomeric states named in the SUBUNIT text (``homodimer``, ``monomer`` …)."""
    return _uniq(m.group(1).lower() for t in entry.subunit for m in _OLIGOMER_RE.finditer(t))


def keyword_values(entry: ProteinEntry) -> tuple[str, ...]:
    # "Complete proteome"/"Reference proteome" say nothing about the protein itself.
    return _uniq(k for k in entry.keywords if k not in ("Complete proteome", "Reference proteome"))


def name_values(entry: ProteinEntry) -> tuple[str, ...]:
    return _uniq([entry.name]) if entry.name else ()


def function_texts(entry: ProteinEntry) -> tuple[str, ...]:
    return _uniq(entry.function)


def catalytic_values(entry: ProteinEntry) -> tuple[str, ...]:
    return _uniq(r.rstrip(".") for r in entry.catalytic_activity)


OLIGOMER_STATES: tuple[str, ...] = _OLIGOMERS


@dataclass(frozen=True)
class GoName:
    """Name/definition/aspect of a GO id as the builder uses it."""

    name: str
    definition: str = ""
    aspect: str = ""


def go_names(entry: ProteinEntry, go_info: Mapping[str, object] | None) -> dict[str, GoName]:
    """GO id → :class:`GoName` for the entry's terms: the reader's name, else the GO dictionary's."""
    out: dict[str, GoName] = {}
    for t in entry.go:
        info = go_info.get(t.id) if go_info else None
        name = t.name or (getattr(info, "name", "") if info is not None else "")
        if name:
            out[t.id] = GoName(name, getattr(info, "definition", "") if info is not None else "", t.aspect)
    return out


def join_list(items: list[str] | tuple[str, ...], limit: int | None = None, more: bool = True) -> str:
    """``["a", "b", "c"]`` → ``"a, b and c"``; beyond ``limit`` items: ``"a, b and 3 more"`` (or just cut)."""
    items = list(items)
    if limit is not None and len(items) > limit:
        rest = len(items) - limit
        items = items[:limit] + ([f"{rest} more"] if more else [])
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def go_summary(entry: ProteinEntry, names: Mapping[str, GoName], max_terms: int, more: bool = True) -> str:
    """A function statement composed from GO names, for sources without FUNCTION text (the 2014 table)."""
    mf = [names[g].name for g in go_values(entry, "MF") if g in names]
    bp = [names[g].name for g in go_values(entry, "BP") if g in names]
    parts = []
    if mf:
        parts.append(f"Its molecular functions are {join_list(mf, max_terms, more)}")
    if bp:
        parts.append(f"it is involved in {join_list(bp, max_terms, more)}")
    text = "; ".join(parts)
    return text[0].upper() + text[1:] + "." if text else ""


def function_summary(entry: ProteinEntry, names: Mapping[str, GoName]) -> str:
    """One sentence about what the protein does: FUNCTION's first sentence, else a short GO summary."""
    texts = function_texts(entry)
    return first_sentence(texts[0]) if texts else go_summary(entry, names, max_terms=2, more=False)


def function_answer(entry: ProteinEntry, names: Mapping[str, GoName], max_terms: int = 6) -> str:
    """The open answer of the ``function`` task: all FUNCTION text, else a GO summary."""
    texts = function_texts(entry)
    return " ".join(t if t.endswith(".") else t + "." for t in texts) if texts else go_summary(entry, names, max_terms)
