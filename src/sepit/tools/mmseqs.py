"""MMseqs2 from Python: cluster proteins at an identity, search queries against targets (FASTA in, hits out).

Used by the dataset builder (homology-aware splits, each test protein's identity to the training set) and by the
evaluation's nearest-homolog baseline. Identities are fractions (0–1) of identical positions over the alignment
length — MMseqs2's ``fident``, the same measure ``--min-seq-id`` uses for clustering.

    reps = cluster("all.fasta", identity=0.3)                 # {member: representative}
    hits = search("test.fasta", "train.fasta")                # {query: [Hit, ...] best first}
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TextIO

from sepit.tools import ToolError, find_binary, run_tool

INSTALL_HINT = "install MMseqs2 (Debian/Ubuntu: apt-get install mmseqs2; conda: conda install -c bioconda mmseqs2) " \
               "or point SEPIT_MMSEQS at the binary"
SEARCH_COLUMNS = ("query", "target", "fident", "alnlen", "qcov", "tcov", "evalue", "bits")


@dataclass(frozen=True)
class Hit:
    """One alignment of a query to a target, the one hit record of sepit (splits, baselines, hit files).

    Identity and coverages are fractions in [0, 1]. MMseqs2 searches fill every field; a BLAST-tab file read by
    :func:`sepit.eval.baselines.read_m8` has no coverages (None), and may lack e-value and bit score.
    """

    query: str
    target: str
    identity: float
    aln_len: int | None = None
    qcov: float | None = None
    tcov: float | None = None
    evalue: float | None = None
    bits: float | None = None


def mmseqs_binary() -> str:
    """Path of the ``mmseqs`` program (``$SEPIT_MMSEQS`` or the PATH); ToolError if there is none."""
    return find_binary("mmseqs", "SEPIT_MMSEQS", INSTALL_HINT)


def version() -> str:
    """``mmseqs version`` output (e.g. ``14-7e284+ds-1+b2``)."""
    return _run([mmseqs_binary(), "version"]).strip()


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _run(cmd: list[str], cwd: str | Path | None = None) -> str:
    return run_tool("mmseqs", cmd, INSTALL_HINT, cwd)


def write_fasta(records: Iterable[tuple[str, str]], path: str | Path, width: int = 0) -> int:
    """Write ``(id, sequence)`` pairs as FASTA (one sequence line unless ``width``); returns the count."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for pid, seq in records:
            if width:
                body = "\n".join(seq[i:i + width] for i in range(0, len(seq), width))
            else:
                body = seq
            f.write(f">{pid}\n{body}\n")
            n += 1
    return n


def createdb(fasta: str | Path, db: str | Path) -> Path:
    """``mmseqs createdb``: a target database of ``fasta`` at ``db`` (a path prefix; its folder must exist), searched
    without re-reading the FASTA each time."""
    _run([mmseqs_binary(), "createdb", str(_check_fasta(fasta)), str(db), "-v", "1"])
    return Path(db)


def _check_fasta(path: str | Path) -> Path:
    p = Path(path)
    if not p.is_file():
        raise ToolError(f"{p}: no such FASTA file")
    if p.stat().st_size == 0:
        raise ToolError(f"{p}: empty FASTA file")
    return p


def cluster(fasta: str | Path, identity: float, *, coverage: float = 0.8, cov_mode: int = 0,
            cluster_mode: int = 0, sensitivity: float | None = None, threads: int | None = None,
            tmp_dir: str | Path | None = None) -> dict[str, str]:
    """Cluster the sequences of ``fasta`` (``mmseqs easy-cluster``): member id → representative id.

    ``identity``: minimum fraction of identical aligned positions to a cluster's representative (``--min-seq-id``);
    ``coverage``/``cov_mode``: MMseqs2's ``-c``/``--cov-mode`` (default: both sequences ≥ 80% covered);
    ``cluster_mode``: 0 greedy set cover (MMseqs2's default), 1 connected components (single linkage: no pair
    passing the thresholds is split across clusters), 2 greedy by length (CD-HIT-like).
    """
    if not 0.0 <= identity <= 1.0:
        raise ValueError(f"identity must be a fraction in [0, 1], got {identity}")
    exe = mmseqs_binary()
    src = _check_fasta(fasta).resolve()
    with tempfile.TemporaryDirectory(prefix="sepit-mmseqs-", dir=tmp_dir) as tmp:
        cmd = [exe, "easy-cluster", str(src), f"{tmp}/res", f"{tmp}/work", "--min-seq-id", str(identity),
               "-c", str(coverage), "--cov-mode", str(cov_mode), "--cluster-mode", str(cluster_mode),
               "--threads", str(threads or default_threads()), "-v", "1"]
        if sensitivity is not None:
            cmd += ["-s", str(sensitivity)]
        _run(cmd)
        out: dict[str, str] = {}
        with open(f"{tmp}/res_cluster.tsv", encoding="utf-8") as f:
            for line in f:
                rep, member = line.rstrip("\n").split("\t")[:2]
                out[member] = rep
    return out


def search_to_file(query_fasta: str | Path, target_fasta: str | Path, out: str | Path, *, min_identity: float = 0.0,
                   min_qcov: float = 0.0, evalue: float = 1e-3, max_seqs: int = 300, sensitivity: float | None = None,
                   exhaustive: bool = False, threads: int | None = None, tmp_dir: str | Path | None = None) -> Path:
    """Search every query against the targets (``mmseqs easy-search``), writing the hits to ``out`` (tab-separated,
    :data:`SEARCH_COLUMNS`; read them with :func:`read_hits`). For large searches whose hits should not all sit in
    memory. Options as :func:`search`."""
    exe = mmseqs_binary()
    q = _check_fasta(query_fasta).resolve()
    t = _check_fasta(target_fasta).resolve()
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="sepit-mmseqs-", dir=tmp_dir) as tmp:
        opts = ["--format-output", ",".join(SEARCH_COLUMNS), "-e", str(evalue), "--max-seqs", str(max_seqs),
                "--min-seq-id", str(min_identity), "--threads", str(threads or default_threads()), "-v", "1"]
        if sensitivity is not None:
            opts += ["-s", str(sensitivity)]
        if exhaustive:
            opts += ["--exhaustive-search", "1"]
        # Query coverage is filtered here, not with MMseqs2's ``-c --cov-mode 2``: that option also drops, before
        # aligning, every target shorter than c × the query, although an alignment can cover more of the query than
        # the target's length (an insertion in the query). Measured: P34313 (147 aa) vs Q6PGH1 (103 aa), 49%
        # identity over 97% of P34313, is lost with -c 0.8 (tests/test_split.py).
        raw = Path(tmp) / "all.m8" if min_qcov > 0 else out
        _run([exe, "easy-search", str(q), str(t), str(raw), f"{tmp}/work", *opts])
        if min_qcov > 0:
            with open(raw, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
                for line in src:
                    p = line.split("\t", 5)
                    if len(p) > 4 and float(p[4]) >= min_qcov:
                        dst.write(line)
    return out


def align_pairs(query_fasta: str | Path, target_fasta: str | Path, pairs: Iterable[tuple[str, str]],
                out: str | Path, *, evalue: float = 1e-3, threads: int | None = None,
                tmp_dir: str | Path | None = None) -> Path:
    """Align each ``(query id, target id)`` pair as :func:`search_to_file` would (MMseqs2's aligner and scores, its
    prefilter skipped: ``mmseqs align`` over the pairs), writing the alignments within ``evalue`` to ``out`` in
    :func:`read_hits`'s format. Ids absent from their FASTA are a ToolError."""
    exe = mmseqs_binary()
    want: dict[str, set[str]] = {}
    for q, t in pairs:
        want.setdefault(q, set()).add(t)
    out = Path(out).resolve()
    if not want:
        out.write_text("")
        return out
    targets = set().union(*want.values())
    with tempfile.TemporaryDirectory(prefix="sepit-mmseqs-", dir=tmp_dir) as tmp:
        keys = {}
        for side, fasta, ids in (("q", query_fasta, set(want)), ("t", target_fasta, targets)):
            n = write_fasta(_records(_check_fasta(fasta), ids), f"{tmp}/{side}.fasta")
            if n < len(ids):
                raise ToolError(f"{fasta}: {len(ids) - n} of the ids to align are not in this FASTA file")
            _run([exe, "createdb", f"{tmp}/{side}.fasta", f"{tmp}/{side}", "-v", "1"])
            with open(f"{tmp}/{side}.lookup", encoding="utf-8") as f:
                keys[side] = {p[1]: int(p[0]) for p in (ln.split("\t") for ln in f)}
        qk, tk = keys["q"], keys["t"]
        # a prefilter result (query key → "target key, score, diagonal" lines) that lists just the pairs
        with open(f"{tmp}/pairs.tsv", "w", encoding="utf-8") as f:
            for q in sorted(want, key=qk.__getitem__):
                f.writelines(f"{qk[q]}\t{k}\t0\t0\n" for k in sorted(tk[t] for t in want[q]))
        _run([exe, "tsv2db", f"{tmp}/pairs.tsv", f"{tmp}/pref", "--output-dbtype", "7", "-v", "1"])
        _run([exe, "align", f"{tmp}/q", f"{tmp}/t", f"{tmp}/pref", f"{tmp}/aln", "--alignment-mode", "3",
              "-e", str(evalue), "--threads", str(threads or default_threads()), "-v", "1"])
        _run([exe, "convertalis", f"{tmp}/q", f"{tmp}/t", f"{tmp}/aln", str(out), "--format-output",
              ",".join(SEARCH_COLUMNS), "-v", "1"])
    return out


def _records(fasta: Path, ids: set[str]) -> Iterator[tuple[str, str]]:
    """The ``(id, sequence)`` records of ``fasta`` whose id (the header's first word) is in ``ids``."""
    pid, parts = None, []
    with open(fasta, encoding="utf-8") as f:
        for line in chain(f, [">"]):
            if line.startswith(">"):
                if pid in ids:
                    yield pid, "".join(parts)
                pid, parts = (line[1:].split() or [None])[0], []
            else:
                parts.append(line.strip())


def read_hits(path: str | Path) -> Iterator[Hit]:
    """The hits of a :func:`search_to_file` result, in file order (grouped by query)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) < len(SEARCH_COLUMNS):
                continue
            yield Hit(p[0], p[1], float(p[2]), int(p[3]), float(p[4]), float(p[5]), float(p[6]), float(p[7]))


def write_hits(path: str | Path, hits: Iterable[Hit]) -> Path:
    """Write hits in the tab format of :func:`search_to_file` (what :func:`read_hits` reads); returns the path."""
    with open(path, "w", encoding="utf-8") as f:
        write_hits_to(f, hits)
    return Path(path)


def write_hits_to(f: TextIO, hits: Iterable[Hit]) -> None:
    """:func:`write_hits` to an open text file."""
    f.writelines(f"{h.query}\t{h.target}\t{h.identity}\t{h.aln_len}\t{h.qcov}\t{h.tcov}\t{h.evalue}\t{h.bits}\n"
                 for h in hits)


def search(query_fasta: str | Path, target_fasta: str | Path, *, min_identity: float = 0.0, min_qcov: float = 0.0,
           evalue: float = 1e-3, max_seqs: int = 300, sensitivity: float | None = None,
           exhaustive: bool = False, threads: int | None = None,
           tmp_dir: str | Path | None = None) -> dict[str, list[Hit]]:
    """Search every query against the targets (``mmseqs easy-search``): query id → hits, best (highest bit score)
    first. Queries without a hit are absent. ``min_identity``/``min_qcov``: report only alignments at least that
    identical / covering at least that fraction of the query; ``exhaustive`` skips the prefilter (slow)."""
    with tempfile.TemporaryDirectory(prefix="sepit-mmseqs-", dir=tmp_dir) as tmp:
        out = search_to_file(query_fasta, target_fasta, f"{tmp}/hits.m8", min_identity=min_identity,
                             min_qcov=min_qcov, evalue=evalue, max_seqs=max_seqs, sensitivity=sensitivity,
                             exhaustive=exhaustive, threads=threads, tmp_dir=tmp)
        hits: dict[str, list[Hit]] = {}
        for h in read_hits(out):
            hits.setdefault(h.query, []).append(h)
    for lst in hits.values():
        lst.sort(key=lambda h: (-h.bits, -h.identity, h.target))
    return hits


def top_hits(hits: dict[str, list[Hit]]) -> dict[str, Hit]:
    """The best hit (highest bit score) of each query."""
    return {q: lst[0] for q, lst in hits.items() if lst}


def max_identity(hits: dict[str, list[Hit]], min_qcov: float = 0.0) -> dict[str, float]:
    """Each query's highest identity over its hits with query coverage ≥ ``min_qcov``."""
    out: dict[str, float] = {}
    for q, lst in hits.items():
        ids = [h.identity for h in lst if h.qcov >= min_qcov]
        if ids:
            out[q] = max(ids)
    return out
