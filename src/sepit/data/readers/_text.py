"""Small text helpers shared by the UniProt readers: sequence checks and evidence-tag cleaning."""

from __future__ import annotations

import re

_SEQ_OK = re.compile(r"[A-Z]+")
_DROP = str.maketrans("", "", "0123456789 \t\r\n")
# "{ECO:0000269|PubMed:123, ECO:0000250}" evidence blocks, and bare "ECO:..." fragments left by line wrapping.
_EVIDENCE = re.compile(r"\s*\{ECO:[^}]*\}")
_PUBMED = re.compile(r"\s*\((?:PubMed|Ref\.)[:. ][^)]*\)")
# Pre-2010 flat files flag evidence in words instead of ECO codes.
_OLD_EVIDENCE = re.compile(r"\s*\((?:By similarity|Probable|Potential)\)")
_SPACES = re.compile(r"\s+")


def clean_sequence(seq: str) -> str | None:
    """Upper-case one-letter sequence without spaces/digits, or None if it holds anything else (or is empty).

    A trailing ``*`` (stop) is dropped; lower case is accepted (some FASTA exports mask regions in lower case).
    """
    s = seq.translate(_DROP).upper().rstrip("*")  # flat-file SQ blocks may carry spaces and position numbers
    return s if s and _SEQ_OK.fullmatch(s) else None


def clean_text(text: str) -> str:
    """Drop ``{ECO:...}`` evidence tags and ``(PubMed:...)`` citations, collapse whitespace, tidy punctuation."""
    t = _EVIDENCE.sub("", text)
    t = _PUBMED.sub("", t)
    t = _OLD_EVIDENCE.sub("", t)
    t = _SPACES.sub(" ", t).strip()
    t = re.sub(r"\s+([.,;:])", r"\1", t)
    t = re.sub(r"\.{2,}$", ".", t)
    return t


def split_list(value: str, sep: str = ";") -> tuple[str, ...]:
    """``"a; b;;c "`` → ``("a", "b", "c")``."""
    return tuple(p.strip() for p in value.split(sep) if p.strip())


def dedupe(items) -> tuple:  # type: ignore[no-untyped-def]
    """Keep first occurrences, in order."""
    return tuple(dict.fromkeys(items))


def join_wrapped(lines: list[str]) -> str:
    """Join wrapped flat-file lines: UniProt breaks after a hyphen without a space (``oxygen-`` / ``evolving``)."""
    out = ""
    for ln in lines:
        ln = ln.strip()
        if not ln:
            continue
        if out and not out.endswith("-"):
            out += " "
        out += ln
    return out
