"""DIAMOND from Python: a fast protein search for the split's leak rounds (held-out proteins against training ones).

At MMseqs2's ``-s 7.5`` a query's cost is mostly its own similar k-mers; DIAMOND indexes the seeds of both sides and
joins them, so a large query set costs much less per query (measured against MMseqs2 ``-s 7.5`` on the full 2014
set in docs/benchmarks.md, 4a).
Hits come out in the format of :func:`sepit.tools.mmseqs.search_to_file` (identity and coverages as fractions), so
:func:`sepit.tools.mmseqs.read_hits` reads them.

    search_to_file("held.fasta", "train.fasta", "hits.m8", min_qcov=0.8)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sepit.log import get_logger
from sepit.tools import find_binary, mmseqs, run_tool
from sepit.tools.mmseqs import _check_fasta, default_threads

log = get_logger(__name__)

INSTALL_HINT = "install DIAMOND (Debian/Ubuntu: apt-get install diamond-aligner; conda: conda install -c bioconda " \
               "diamond) or point SEPIT_DIAMOND at the binary"
# search_realigned: pairs within this much identity below the leak threshold are aligned again by MMseqs2, if
# DIAMOND's alignment covers at least the coverage threshold minus REALIGN_COV_MARGIN of the query
REALIGN_MARGIN = 0.05
REALIGN_COV_MARGIN = 0.3
# BLAST's tabular fields in the order of sepit.tools.mmseqs.SEARCH_COLUMNS (pident, qcovhsp, scovhsp are percents)
FIELDS = ("qseqid", "sseqid", "pident", "length", "qcovhsp", "scovhsp", "evalue", "bitscore")


def diamond_binary() -> str:
    """Path of the ``diamond`` program (``$SEPIT_DIAMOND`` or the PATH); ToolError if there is none."""
    return find_binary("diamond", "SEPIT_DIAMOND", INSTALL_HINT)


def version() -> str:
    """``diamond version`` output (e.g. ``diamond version 2.1.3``)."""
    return _run([diamond_binary(), "version"]).strip()


def _run(cmd: list[str]) -> str:
    return run_tool("diamond", cmd, INSTALL_HINT)


def search_to_file(query_fasta: str | Path, target_fasta: str | Path, out: str | Path, *, min_qcov: float = 0.0,
                   evalue: float = 1e-3, max_seqs: int = 300, mode: str = "very-sensitive",
                   threads: int | None = None, tmp_dir: str | Path | None = None) -> Path:
    """Search every query against the targets (``diamond blastp``), writing hits covering ≥ ``min_qcov`` of the
    query to ``out`` in :func:`sepit.tools.mmseqs.read_hits`'s format; ``max_seqs`` targets per query; ``mode``
    one of DIAMOND's sensitivity flags without its dashes.

    Composition-based statistics and masking are off: with them DIAMOND trims alignments short of what MMseqs2
    aligns (A4QYM6 vs Q6CEB8: 50% over 65% of A4QYM6, where MMseqs2 finds 46% over 81%), and a leak is judged on
    identity over ≥ 80% of the held-out protein."""
    exe = diamond_binary()
    query_fasta, target_fasta = _check_fasta(query_fasta), _check_fasta(target_fasta)
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="sepit-diamond-", dir=tmp_dir) as tmp:
        db, raw = Path(tmp) / "targets.dmnd", Path(tmp) / "hits.tsv"
        n = str(threads or default_threads())
        _run([exe, "makedb", "--in", str(target_fasta), "-d", str(db), "--threads", n, "--quiet"])
        _run([exe, "blastp", "-q", str(query_fasta), "-d", str(db), "-o", str(raw), f"--{mode}",
              "--comp-based-stats", "0", "--masking", "none", "-k", str(max_seqs), "-e", str(evalue),
              "--threads", n, "--tmpdir", tmp, "--quiet", "--outfmt", "6", *FIELDS])
        with open(raw, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
            for line in src:
                q, t, pid, alen, qcov, tcov, ev, bits = line.rstrip("\n").split("\t")
                if float(qcov) / 100 >= min_qcov:
                    dst.write(f"{q}\t{t}\t{float(pid) / 100:.3f}\t{alen}\t{float(qcov) / 100:.3f}\t"
                              f"{float(tcov) / 100:.3f}\t{ev}\t{bits}\n")
    return out


def search_realigned(query_fasta: str | Path, target_fasta: str | Path, out: str | Path, *, identity: float,
                     min_qcov: float = 0.0, margin: float = REALIGN_MARGIN, cov_margin: float = REALIGN_COV_MARGIN,
                     evalue: float = 1e-3, max_seqs: int = 300, threads: int | None = None,
                     tmp_dir: str | Path | None = None) -> Path:
    """:func:`search_to_file`, then the hits near the threshold realigned by MMseqs2: a leak found by either aligner
    counts. → ``out``: DIAMOND's hits covering ≥ ``min_qcov``, and after them each realigned pair whose MMseqs2
    alignment covers ≥ ``min_qcov`` with a higher identity than DIAMOND's.

    Near the threshold the two aligners end alignments differently (P04551 / P70218: 30.2% over 93% of P04551 by
    MMseqs2, 32.7% over 70% by DIAMOND); of 15 held-out proteins of a DIAMOND-split full 2014 set with a training
    homolog above 30% by MMseqs2, realigning finds 14 (docs/benchmarks.md, 4a). So a pair within ``margin`` of
    ``identity`` covering ≥ ``min_qcov − cov_margin`` is aligned again (:func:`sepit.tools.mmseqs.align_pairs`): a
    few pairs per query, not a second search. With ``min_qcov`` 0 (the coverage that counts is the target's, e.g. a
    search turned round) every pair above ``identity − margin`` is."""
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="sepit-diamond-", dir=tmp_dir) as tmp:
        raw = search_to_file(query_fasta, target_fasta, Path(tmp) / "raw.m8", evalue=evalue, max_seqs=max_seqs,
                             min_qcov=max(0.0, min_qcov - cov_margin), threads=threads, tmp_dir=tmp)
        near: dict[tuple[str, str], float] = {}  # pair → DIAMOND's identity if its hit covers ≥ min_qcov, else -1
        with open(raw, encoding="utf-8") as src, open(out, "w", encoding="utf-8") as dst:
            for line in src:
                p = line.split("\t", 5)
                ident, qcov = float(p[2]), float(p[4])
                if qcov >= min_qcov:
                    dst.write(line)
                if ident > identity - margin and not (min_qcov > 0 and ident > identity and qcov >= min_qcov):
                    near[(p[0], p[1])] = ident if qcov >= min_qcov else -1.0
            realigned = mmseqs.align_pairs(query_fasta, target_fasta, near, Path(tmp) / "realigned.m8",
                                           evalue=evalue, threads=threads, tmp_dir=tmp)
            changed = [h for h in mmseqs.read_hits(realigned)
                       if h.qcov >= min_qcov and h.identity > near[(h.query, h.target)]]
            mmseqs.write_hits_to(dst, changed)
    log.info("DIAMOND hits near %.2f identity realigned by MMseqs2: %d pairs, %d changed", identity, len(near),
             len(changed))
    return out
