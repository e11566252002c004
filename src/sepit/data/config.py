"""``DataConfig``: options of ``sepit data build`` (``kind: data`` YAML files in ``configs/data/``).

An empty ``sources`` list builds the embedded default (``resources/default_data``: its table, GO terms, human table
and structure store). Paths may be relative to the working directory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sepit.config import config_kind


@dataclass
class SplitConfig:
    """Homology-aware splits (MMseqs2). ``identity`` is the active split; ``extra_identities`` are recorded too."""

    identity: float = 0.3
    extra_identities: list[float] = field(default_factory=lambda: [0.5])
    coverage: float = 0.8  # alignment coverage for clustering (both sequences) and for leaks (the held-out protein)
    valid_fraction: float = 0.05
    test_fraction: float = 0.05  # of the clusters without an eval protein (those all go to test)
    method: Literal["auto", "all_vs_all", "clustered"] = "auto"  # auto: clustered above `clustered_above` proteins
    clustered_above: int = 100_000  # all-vs-all hits grow ~ n × 300: beyond this, cluster first (see data/split.py)
    sensitivity: float | None = None  # MMseqs2 -s of the clustering (None: its default, 5.7 search / 4 cluster)
    leak_sensitivity: float | None = 7.5  # MMseqs2 -s of the held-out vs training searches that find leaks
    max_hits: int = 300  # hits per query (MMseqs2 --max-seqs) of the all-vs-all search; alignment time grows with it
    # hits per held-out protein in the leak searches: in big families (Ras GTPases, ABC transporters) the prefilter
    # ranks hundreds of remote members above a training homolog at 31-41% (docs/benchmarks.md, 4a)
    leak_max_hits: int = 1000
    # the program of the leak searches: mmseqs (-s leak_sensitivity), diamond (--very-sensitive, its hits near the
    # threshold realigned by MMseqs2; several times faster on large sets, docs/benchmarks.md 4a) or auto: diamond for
    # the clustered method (above clustered_above), else mmseqs
    leak_tool: Literal["auto", "mmseqs", "diamond"] = "auto"
    threads: int | None = None  # None: the CPUs this process may use


@dataclass
class InstructionConfig:
    """How many records per protein, and which tasks."""

    tasks: list[str] = field(default_factory=list)  # empty: every task in the templates
    captions: bool = True
    open_per_task: int = 1
    yesno_pairs_per_task: int = 1
    max_list: int = 12
    templates: str | None = None  # YAML of question templates (default: the shipped one)


@config_kind("data")
@dataclass
class DataConfig:
    """Everything ``sepit data build`` needs besides the output directory."""

    sources: list[str] = field(default_factory=list)  # protein files (UniProt .dat/.xml/.tsv, FASTA, 2014 table)
    go_terms: str | None = None  # GO id → name/definition table (for the 2014 table)
    human: str | None = None  # human UniProt table (for the 2014 table)
    structures: str | None = None  # directory of PDB/mmCIF files ...
    structure_map: str | None = None  # ... and the TSV mapping file/chain → accession
    structure_store: str | None = None  # or a ready structure store (.npz)
    seed: int = 0
    max_proteins: int | None = None  # keep the first N proteins after deduplication (quick builds)
    min_length: int = 10
    max_length: int = 5000
    shard_size: int = 100_000  # records per JSONL shard
    split: SplitConfig = field(default_factory=SplitConfig)
    instructions: InstructionConfig = field(default_factory=InstructionConfig)

    def __post_init__(self) -> None:
        ids = [self.split.identity, *self.split.extra_identities]
        if any(not 0.0 < t < 1.0 for t in ids):
            raise ValueError(f"identity thresholds must be fractions in (0, 1), got {ids}")
        if self.split.max_hits < 1 or self.split.leak_max_hits < 1:
            raise ValueError("split.max_hits and split.leak_max_hits must be ≥ 1")
        if self.shard_size < 1:
            raise ValueError("shard_size must be ≥ 1")
        if self.max_proteins is not None and self.max_proteins < 1:
            raise ValueError("max_proteins must be ≥ 1")
        if (self.structures is None) != (self.structure_map is None):
            raise ValueError("structures and structure_map go together (a directory and its mapping TSV)")
