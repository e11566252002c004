"""Typed records that flow through the data pipeline (readers → filters → instructions → shards).

Readers of every source format (UniProt flat file, XML, TSV, FASTA, the shared 2014 GO table) yield
:class:`ProteinEntry`; fields a source lacks stay empty. Records are frozen: stages return new records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

GoAspect = Literal["MF", "BP", "CC"]


@dataclass(frozen=True)
class GoTerm:
    """A GO annotation: ``GO:0005524``, aspect, and its name where known."""

    id: str
    aspect: GoAspect
    name: str = ""
    evidence: str = ""


@dataclass(frozen=True)
class DomainRef:
    """A cross-reference to a family/domain database (Pfam, InterPro, PROSITE, ...)."""

    db: str
    id: str
    name: str = ""


@dataclass(frozen=True)
class Feature:
    """A sequence feature (UniProt FT line / XML feature), 1-based inclusive positions; None when unknown."""

    kind: str
    start: int | None
    end: int | None
    note: str = ""


@dataclass(frozen=True)
class ProteinEntry:
    """One protein with whatever annotations its source carries.

    ``split_hint`` is ``"eval"`` when the source reserves the protein for evaluation (never trained on).
    """

    accession: str
    sequence: str
    name: str = ""
    gene: str = ""
    organism: str = ""
    function: tuple[str, ...] = ()
    catalytic_activity: tuple[str, ...] = ()
    ec: tuple[str, ...] = ()
    cofactors: tuple[str, ...] = ()
    subcellular_location: tuple[str, ...] = ()
    subunit: tuple[str, ...] = ()
    pathway: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    go: tuple[GoTerm, ...] = ()
    domains: tuple[DomainRef, ...] = ()
    features: tuple[Feature, ...] = ()
    mass: int | None = None
    split_hint: str = ""
    source: str = ""
    extra: tuple[tuple[str, str], ...] = field(default=())

    @property
    def length(self) -> int:
        return len(self.sequence)

    def go_by_aspect(self, aspect: GoAspect) -> tuple[GoTerm, ...]:
        return tuple(t for t in self.go if t.aspect == aspect)

    def domains_in(self, db: str) -> tuple[DomainRef, ...]:
        return tuple(d for d in self.domains if d.db.lower() == db.lower())
