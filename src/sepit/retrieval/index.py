"""A retrieval index: reference proteins (an MMseqs2 database) and their annotations per task, in one folder.

    DIR/index.json     format, version, protein count, tasks, sources (what it was made from)
    DIR/proteins.fasta the reference sequences
    DIR/facts.jsonl    one line per protein: {"id", "facts": {task: annotation text, "caption": ...,
                       "answer:<task>": the task's whole open answer where the prompt's text is shorter}}
    DIR/db/            the MMseqs2 target database (``mmseqs createdb``)

``sepit data build`` writes one for the training split of every dataset (``DATASET/index``); training copies it into
the model directory (``MODEL/retrieval``), so a model answers with its own index; ``sepit index build`` makes a
bigger one from any protein source (``--index DIR`` at inference).

    idx = RetrievalIndex.load("data/default/index")
    hits = idx.search({"q1": "MKT..."}, evalue=1e-3)     # {"q1": [Hit, ...]} best first
    idx.facts("P69905")["location"]
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sepit._io import atomic_dir, write_json
from sepit.errors import InputError
from sepit.log import get_logger
from sepit.tools.mmseqs import Hit

log = get_logger(__name__)

FORMAT = "sepit-retrieval-index"
FORMAT_VERSION = 1
MANIFEST = "index.json"
FASTA = "proteins.fasta"
FACTS = "facts.jsonl"
DB = "db/targets"
FILES = (MANIFEST, FASTA, FACTS)


def write_index(folder: str | Path, proteins: Iterable[tuple[str, str, Mapping[str, str]]], *,
                sources: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Write an index of ``(id, sequence, facts)`` triples into ``folder`` (created; not atomic — see
    :func:`build_index`). Returns its manifest."""
    from sepit.tools import mmseqs

    folder = Path(folder)
    (folder / "db").mkdir(parents=True, exist_ok=True)
    n = 0
    tasks: set[str] = set()
    with open(folder / FASTA, "w", encoding="utf-8") as fa, open(folder / FACTS, "w", encoding="utf-8") as ff:
        for pid, seq, facts in proteins:
            if not pid or any(c.isspace() for c in pid):
                raise InputError(None, f"retrieval index: protein id {pid!r} is empty or has spaces")
            fa.write(f">{pid}\n{seq}\n")
            ff.write(json.dumps({"id": pid, "facts": dict(facts)}, ensure_ascii=False, separators=(",", ":"))
                     + "\n")
            tasks.update(t for t in facts if not t.startswith(answer_key("")))
            n += 1
    if n == 0:
        raise InputError(None, "retrieval index: no proteins to index")
    mmseqs.createdb(folder / FASTA, folder / DB)
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "proteins": n, "tasks": sorted(tasks),
                "mmseqs": mmseqs.version(), "sources": sources or []}
    write_json(folder / MANIFEST, manifest)
    return manifest


def build_index(out_dir: str | Path, proteins: Iterable[tuple[str, str, Mapping[str, str]]], *,
                sources: list[dict[str, Any]] | None = None) -> Path:
    """:func:`write_index` into ``out_dir``, replaced atomically (a reader never sees half an index)."""
    with atomic_dir(out_dir) as tmp:
        write_index(tmp, proteins, sources=sources)
    return Path(out_dir)


def copy_index(src: str | Path, dst: str | Path) -> Path:
    """Copy an index folder to ``dst`` (not existing), hard-linking files where the file system allows (an index
    copied into every checkpoint costs no space)."""
    src, dst = Path(src), Path(dst)

    def link_or_copy(a: str, b: str) -> None:
        try:
            import os

            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dst, copy_function=link_or_copy)
    return dst


def answer_key(task: str) -> str:
    """The facts key of ``task``'s whole open answer (``answer:function``), held where it differs from the task's
    compact prompt text (:func:`sepit.retrieval.facts.entry_facts`)."""
    return "answer:" + task


class RetrievalIndex:
    """A loaded index folder (facts are read on first use)."""

    def __init__(self, path: str | Path, manifest: dict[str, Any]) -> None:
        self.path = Path(path)
        self.manifest = manifest
        self._facts: dict[str, dict[str, str]] | None = None
        self._common: dict[str, str] | None = None

    @classmethod
    def load(cls, path: str | Path) -> RetrievalIndex:
        p = Path(path)
        if not p.is_dir():
            raise InputError(p, "no such retrieval index folder (make one with `sepit index build`)")
        missing = [f for f in (*FILES, DB) if not (p / f).is_file()]
        if missing:
            raise InputError(p, f"not a complete retrieval index (missing {', '.join(missing)})")
        try:
            manifest = json.loads((p / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(p / MANIFEST, f"unreadable ({type(e).__name__})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise InputError(p / MANIFEST, f"not a sepit retrieval index (format is not {FORMAT!r})")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise InputError(p / MANIFEST, f"index format version {manifest.get('format_version')} is not "
                                           f"supported (this sepit reads {FORMAT_VERSION})")
        return cls(p, manifest)

    def __len__(self) -> int:
        return int(self.manifest.get("proteins", 0))

    def _all_facts(self) -> dict[str, dict[str, str]]:
        if self._facts is None:
            out: dict[str, dict[str, str]] = {}
            path = self.path / FACTS
            with open(path, encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        d = json.loads(line)
                        out[str(d["id"])] = {str(k): str(v) for k, v in d["facts"].items()}
                    except (ValueError, KeyError, TypeError, AttributeError):
                        raise InputError(path, f"line {n}: not an index entry") from None
            self._facts = out
        return self._facts

    def facts(self, protein_id: str) -> dict[str, str]:
        """Task → annotation text of a reference protein ({} for an id the index does not hold)."""
        return self._all_facts().get(protein_id, {})

    def most_common_answer(self, task: str) -> str:
        """The open answer of ``task`` that most reference proteins share (each protein's whole answer where the
        index holds one, else its annotation; "" when none has one; ties: the alphabetically first): the index's
        answer for a protein no homolog speaks for."""
        if self._common is None:
            counts: dict[str, Counter[str]] = {}
            for f in self._all_facts().values():
                for t, text in f.items():
                    if not t.startswith(answer_key("")):
                        counts.setdefault(t, Counter())[f.get(answer_key(t)) or text] += 1
            self._common = {t: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for t, c in counts.items()}
        return self._common.get(task, "")

    def search(self, queries: Mapping[str, str], *, evalue: float = 1e-3, min_identity: float = 0.0,
               min_coverage: float = 0.0, sensitivity: float | None = None, max_seqs: int = 100
               ) -> dict[str, list[Hit]]:
        """All queries (id → sequence) in one MMseqs2 search of the index: id → hits, best (bit score) first;
        queries without a hit are absent. ``min_coverage``: fraction of the query the alignment covers."""
        from sepit.tools import mmseqs

        queries = {k: v for k, v in queries.items() if v}
        if not queries:
            return {}
        with tempfile.TemporaryDirectory(prefix="sepit-retrieval-") as tmp:
            q = Path(tmp) / "queries.fasta"
            mmseqs.write_fasta(queries.items(), q)
            return mmseqs.search(q, self.path / DB, evalue=evalue, min_identity=min_identity,
                                 min_qcov=min_coverage, sensitivity=sensitivity, max_seqs=max_seqs, tmp_dir=tmp)
