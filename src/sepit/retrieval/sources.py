"""``sepit index build``: a retrieval index from protein sources (any format the dataset builder reads: UniProt
flat / XML / TSV, the 2014 Swiss-Prot table, ...), optionally extending an existing index."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sepit.errors import InputError
from sepit.log import get_logger
from sepit.proteins import read_fasta_file
from sepit.retrieval.index import FASTA, RetrievalIndex, build_index

log = get_logger(__name__)


def index_from_sources(sources: list[str], out_dir: str | Path, *, go_terms: str | None = None,
                       include: list[str] | None = None, max_proteins: int | None = None) -> dict[str, Any]:
    """Read ``sources`` (+ the proteins of the ``include`` indexes, which come first and win on a shared id), derive
    each protein's annotation per task, and write the index to ``out_dir`` (atomically). Returns its manifest."""
    from sepit.data.build import default_config, read_inputs
    from sepit.data.config import DataConfig
    from sepit.data.instructions.catalog import Catalog
    from sepit.retrieval.facts import entry_facts

    rows: dict[str, tuple[str, str, dict[str, str]]] = {}
    used: list[dict[str, Any]] = []
    for d in include or []:
        old = RetrievalIndex.load(d)
        for p in read_fasta_file(old.path / FASTA):
            rows[p.id] = (p.id, p.sequence, old.facts(p.id))
        used.append({"role": "index", "path": str(d), "proteins": len(old)})
        log.info("included %s: %d proteins", d, len(old))
    if sources:
        cfg = default_config(DataConfig(sources=list(sources), go_terms=go_terms, max_proteins=max_proteins,
                                        min_length=1, max_length=100_000))
        inputs = read_inputs(cfg)
        catalog = Catalog.build(inputs.entries, inputs.go)
        new = 0
        for e in inputs.entries:
            if e.accession not in rows:
                rows[e.accession] = (e.accession, e.sequence, entry_facts(e, catalog))
                new += 1
        used += inputs.sources
        log.info("read %d proteins (%d new); %s", len(inputs.entries), new, inputs.skips.summary())
    if not rows:
        raise InputError(None, "nothing to index: give protein sources and/or --include INDEX")
    with_facts = sum(1 for r in rows.values() if r[2])
    build_index(out_dir, rows.values(), sources=used)
    log.info("wrote %s: %d proteins (%d with annotations)", out_dir, len(rows), with_facts)
    return RetrievalIndex.load(out_dir).manifest
