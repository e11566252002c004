"""Parse the text of UniProt comment topics (flat-file CC blocks and the same text in REST TSV columns).

Each parser takes the topic's text with the ``TOPIC:`` marker removed and returns clean strings: evidence tags
(``{ECO:...}``, ``(By similarity)``) and ``Note=`` remarks dropped, structured fields (``Name=``, ``Reaction=``,
``EC=``) pulled out.
"""

from __future__ import annotations

import re

from ._text import clean_text, dedupe

_NAME = re.compile(r"(?:^|;\s*|\s)Name=([^;]+);")
_REACTION = re.compile(r"Reaction=([^;]+);")
_EC = re.compile(r"EC=(\d+\.[\dn\-]+\.[\dn\-]+\.[\dn\-]+)")
_ISOFORM = re.compile(r"\[[^\]]*\]:\s*")
_NOTE = re.compile(r"\bNote=")


def parse_text_topic(text: str) -> str:
    """FUNCTION / SUBUNIT / PATHWAY / SIMILARITY …: the cleaned free text (``Note=`` kept as plain words)."""
    return clean_text(text.replace("Note=", ""))


def parse_catalytic(text: str) -> tuple[list[str], list[str]]:
    """CATALYTIC ACTIVITY → (reactions, EC numbers). Pre-2018 entries carry the reaction as plain text."""
    reactions = [clean_text(r) for r in _REACTION.findall(text)]
    ecs = _EC.findall(text)
    if not reactions and "Reaction=" not in text:
        plain = clean_text(text)
        if plain:
            reactions = [plain.rstrip(".")]
    return [r for r in reactions if r], ecs


def parse_cofactor(text: str) -> list[str]:
    """COFACTOR → cofactor names (``heme``, ``Mg(2+)``); old free-text entries give their sentence instead."""
    names = [clean_text(n) for n in _NAME.findall(" " + text)]
    if names:
        return [n for n in names if n]
    plain = clean_text(_NOTE.sub("", text))
    return [plain.rstrip(".")] if plain else []


def parse_location(text: str) -> tuple[list[str], list[str]]:
    """SUBCELLULAR LOCATION → (locations, topologies).

    ``"Cell membrane {ECO:..}; Multi-pass membrane protein. Secreted. Note=Some isoforms ..."`` →
    ``(["Cell membrane", "Secreted"], ["Multi-pass membrane protein"])``. Isoform prefixes (``[Isoform 2]:``) are
    dropped (the locations of every isoform are kept).
    """
    locs: list[str] = []
    topo: list[str] = []
    for segment in _ISOFORM.split(text):
        segment = _NOTE.split(segment, maxsplit=1)[0]
        segment = clean_text(segment)
        for statement in segment.split("."):
            parts = [p.strip() for p in statement.split(";") if p.strip()]
            if not parts:
                continue
            locs.append(parts[0])
            topo.extend(parts[1:])
    return list(dedupe(locs)), list(dedupe(topo))


def split_topics(text: str, topic: str) -> list[str]:
    """``"FUNCTION: a. FUNCTION: b."`` → ``["a.", "b."]`` (REST TSV columns repeat the topic marker)."""
    marker = f"{topic}:"
    parts = [p.strip() for p in text.split(marker)]
    return [p for p in parts if p]
