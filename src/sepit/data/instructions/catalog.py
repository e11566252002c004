"""The catalog: every annotation value seen in the build, how often, and which proteins carry it.

Hard negatives are drawn from it (:mod:`.negatives`), so a false answer is always a real annotation of some other
protein in the same build. Everything is kept in first-seen order (never set order) so a build is deterministic
whatever ``PYTHONHASHSEED`` is.
"""

from __future__ import annotations

import bisect
import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sepit.data.records import ProteinEntry

from . import facts
from .facts import GoName

_TOKEN = re.compile(r"[a-z0-9]+(?:\([0-9+\-]+\))?")


def tokens(text: str) -> tuple[str, ...]:
    """Lower-case word tokens (``Mg(2+)`` stays one token)."""
    return tuple(_TOKEN.findall(text.lower()))


@dataclass
class ValueIndex:
    """One annotation field across proteins: value → count, value → protein indices, protein → values."""

    counts: dict[str, int] = field(default_factory=dict)
    postings: dict[str, list[int]] = field(default_factory=dict)
    by_protein: list[tuple[str, ...]] = field(default_factory=list)
    _canon: dict[str, str] = field(default_factory=dict)
    _cum: list[int] | None = None
    _values: list[str] | None = None

    def add(self, values: tuple[str, ...]) -> None:
        """Add the next protein's values (call once per protein, even with no values, to keep indices aligned)."""
        i = len(self.by_protein)
        canon = []
        for v in values:
            if v not in self.counts:
                self.counts[v] = 0
                self.postings[v] = []
                self._canon[v] = v
            v = self._canon[v]  # one string object per value, shared by all proteins (memory)
            self.counts[v] += 1
            self.postings[v].append(i)
            canon.append(v)
        self.by_protein.append(tuple(canon))
        self._cum = None

    def sample(self, rng: random.Random) -> str | None:
        """A value drawn with probability ∝ its count (O(log n) after the first call)."""
        if not self.counts:
            return None
        if self._cum is None:
            self._values = list(self.counts)
            total, cum = 0, []
            for v in self._values:
                total += self.counts[v]
                cum.append(total)
            self._cum = cum
        assert self._values is not None
        x = rng.random() * self._cum[-1]
        return self._values[min(bisect.bisect_right(self._cum, x), len(self._values) - 1)]


FIELDS: dict[str, object] = {
    "go": lambda e: tuple(t.id for t in e.go),
    "location": facts.location_values,
    "ec": facts.ec_values,
    "catalytic_activity": facts.catalytic_values,
    "family": facts.family_values,
    "domains": facts.domain_values,
    "cofactor": facts.cofactor_values,
    "pathway": facts.pathway_values,
    "keywords": facts.keyword_values,
    "name": facts.name_values,
}


@dataclass
class Catalog:
    """Annotation values of all proteins of a build, plus GO names and per-protein function summaries.

    ``index[accession]`` is the protein's position in every :class:`ValueIndex`.
    """

    fields: dict[str, ValueIndex]
    go: dict[str, GoName]
    index: dict[str, int]
    summaries: list[str]
    _name_tokens: dict[str, tuple[str, ...]] = field(default_factory=dict)
    _name_words: dict[str, frozenset[str]] = field(default_factory=dict)
    _by_head: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    _by_token: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    _groups: dict[tuple[str, object], dict[str, list[str]]] = field(default_factory=dict)
    _ranked: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def build(cls, entries: Iterable[ProteinEntry], go_info: Mapping[str, object] | None = None) -> Catalog:
        """Index ``entries`` (any iterable; consumed once)."""
        idx = {name: ValueIndex() for name in FIELDS}
        go: dict[str, GoName] = {}
        index: dict[str, int] = {}
        summaries: list[str] = []
        for e in entries:
            names = facts.go_names(e, go_info)
            for gid, gn in names.items():
                go.setdefault(gid, gn)
            index[e.accession] = len(summaries)
            for name, fn in FIELDS.items():
                vals = fn(e)  # type: ignore[operator]
                if name == "go":
                    vals = tuple(v for v in dict.fromkeys(vals) if v in names)
                idx[name].add(vals)
            summaries.append(facts.function_summary(e, names))
        cat = cls(fields=idx, go=go, index=index, summaries=summaries)
        cat._index_names()
        return cat

    def _index_names(self) -> None:
        """Word indexes of GO names (per aspect) and locations, to find name-similar siblings quickly."""
        groups: list[tuple[str, str, str]] = [(g.aspect, gid, g.name) for gid, g in self.go.items()]
        groups += [("location", v, v) for v in self.fields["location"].counts]
        for group, key, name in groups:
            toks = tokens(name)
            if not toks:
                continue
            self._name_tokens[key] = toks
            self._name_words[key] = frozenset(toks)
            self._by_head.setdefault((group, toks[-1]), []).append(key)
            for t in dict.fromkeys(toks[:-1]):
                self._by_token.setdefault((group, t), []).append(key)

    def name_tokens(self, key: str) -> tuple[str, ...]:
        """Tokens of a GO term's name (by id) or of a location."""
        if key in self._name_tokens:
            return self._name_tokens[key]
        return tokens(self.go[key].name if key in self.go else key)

    def name_words(self, key: str) -> frozenset[str]:
        """:meth:`name_tokens` as a set (cached for indexed names)."""
        words = self._name_words.get(key)
        return words if words is not None else frozenset(self.name_tokens(key))

    def same_head(self, group: str, key: str) -> list[str]:
        """Names of ``group`` (``MF``/``BP``/``CC``/``location``) ending in the same word as ``key``'s."""
        toks = self.name_tokens(key)
        return self._by_head.get((group, toks[-1]), []) if toks else []

    def sharing_words(self, group: str, key: str, cap: int = 300) -> list[str]:
        """Names of ``group`` with the same head word that share another word with ``key`` (first ``cap`` per word)."""
        toks = self.name_tokens(key)
        if not toks:
            return []
        head = toks[-1]
        out: dict[str, None] = {}
        for t in dict.fromkeys(toks[:-1]):
            for other in self._by_token.get((group, t), [])[:cap]:
                if other != key and self.name_tokens(other)[-1] == head:
                    out[other] = None
        return list(out)

    def grouped(self, field_name: str, key: Callable[[str], str]) -> dict[str, list[str]]:
        """Values of a field grouped by ``key(value)`` (cached per field and key function; empty keys left out)."""
        cache_key = (field_name, key)
        if cache_key not in self._groups:
            groups: dict[str, list[str]] = {}
            for v in self.fields[field_name].counts:
                k = key(v)
                if k:
                    groups.setdefault(k, []).append(v)
            self._groups[cache_key] = groups
        return self._groups[cache_key]

    def ranked_siblings(self, group: str, key: str, limit: int = 40) -> tuple[str, ...]:
        """:meth:`sharing_words` ranked by word overlap (Jaccard), then frequency; cached per name."""
        ck = (group, key)
        if ck not in self._ranked:
            pt = self.name_words(key)
            counts = self.fields["location" if group == "location" else "go"].counts
            scored = []
            for i, c in enumerate(self.sharing_words(group, key)):
                ct = self.name_words(c)
                scored.append((-len(pt & ct) / len(pt | ct), -counts.get(c, 0), i, c))
            scored.sort()
            self._ranked[ck] = tuple(c for *_, c in scored[:limit])
        return self._ranked[ck]

    def go_name(self, gid: str) -> str:
        return self.go[gid].name if gid in self.go else gid

    def values_of(self, field_name: str, accession: str) -> tuple[str, ...]:
        i = self.index.get(accession)
        return self.fields[field_name].by_protein[i] if i is not None else ()

    def __len__(self) -> int:
        return len(self.summaries)
