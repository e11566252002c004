"""Small text helpers shared by the UniProt readers: the one amino-acid sequence cleaner (also behind
:mod:`sepit.proteins` for user input) and evidence-tag cleaning."""

from __future__ import annotations

import re
from typing import Literal, overload

from sepit.errors import InputError

STANDARD_AA = "ACDEFGHIKLMNPQRSTVWY"
USER_AA = STANDARD_AA + "BZXUO"
"""What user input may hold: the 20 standard letters, the ambiguous B (D/N), Z (E/Q), X (any) and the rare U
(selenocysteine), O (pyrrolysine)."""
_USER_OK = re.compile(f"[{USER_AA}]+")
_ANY_LETTER = re.compile(r"[A-Z]+")
_DROP = str.maketrans("", "", "0123456789 \t\r\n")
# "{ECO:0000269|PubMed:123, ECO:0000250}" evidence blocks, and bare "ECO:..." fragments left by line wrapping.
_EVIDENCE = re.compile(r"\s*\{ECO:[^}]*\}")
_PUBMED = re.compile(r"\s*\((?:PubMed|Ref\.)[:. ][^)]*\)")
# Pre-2010 flat files flag evidence in words instead of ECO codes.
_OLD_EVIDENCE = re.compile(r"\s*\((?:By similarity|Probable|Potential)\)")
_SPACES = re.compile(r"\s+")


@overload
def clean_sequence(seq: str, *, strict: Literal[False] = ..., where: str = ...) -> str | None: ...
@overload
def clean_sequence(seq: str, *, strict: Literal[True], where: str = ...) -> str: ...
def clean_sequence(seq: str, *, strict: bool = False, where: str = "sequence") -> str | None:
    """The one amino-acid sequence cleaner: upper-cased, whitespace and a trailing ``*`` (stop) removed.

    ``strict=False`` (the data readers): position numbers are dropped too (flat-file SQ blocks carry them), any
    letter A–Z is kept, and anything else — or nothing left — gives None, so the reader skips and counts the record.
    ``strict=True`` (user input): only :data:`USER_AA` letters; otherwise a one-line InputError naming ``where`` and
    the unexpected characters. Lower case is accepted either way (some FASTA exports mask regions in lower case).
    """
    if not strict:
        s = seq.translate(_DROP).upper().rstrip("*")
        return s if s and _ANY_LETTER.fullmatch(s) else None
    s = _SPACES.sub("", seq).rstrip("*").upper()
    if not s:
        raise InputError(None, f"{where}: empty sequence")
    if not _USER_OK.fullmatch(s):
        bad = sorted({c for c in s if c not in USER_AA})
        raise InputError(None, f"{where}: not an amino-acid sequence (unexpected characters {''.join(bad)!r})")
    return s


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
