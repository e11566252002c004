"""DIAMOND from Python: a fast protein search for the split's leak rounds (held-out proteins against training ones).

At MMseqs2's ``-s 7.5`` a query's cost is mostly its own similar k-mers; DIAMOND indexes the seeds of both sides and
joins them, so a large query set costs much less per query (20,000 held-out proteins of the full 2014 set against
428,593 training ones: 383 s on 2 cores, against about 25 min for MMseqs2 ``-s 7.5``; docs/benchmarks.md, 4a).
Hits come out in the format of :func:`sepit.tools.mmseqs.search_to_file` (identity and coverages as fractions), so
:func:`sepit.tools.mmseqs.read_hits` reads them.

    search_to_file("held.fasta", "train.fasta", "hits.m8", min_qcov=0.8)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sepit.tools import find_binary, run_tool
from sepit.tools.mmseqs import _check_fasta, default_threads

INSTALL_HINT = "install DIAMOND (Debian/Ubuntu: apt-get install diamond-aligner; conda: conda install -c bioconda " \
               "diamond) or point SEPIT_DIAMOND at the binary"
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
