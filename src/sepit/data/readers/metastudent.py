"""The full 2014 Swiss-Prot GO set (516,371 proteins) from the Debian package ``metastudent-data`` → the 2014 table.

The package (``apt-get install metastudent-data``; 225 MB, GPL-2+/Artistic-2.0 packaging of UniProt/GO data, CC BY
4.0) holds one BLAST database per GO ontology under ``/usr/share/metastudent-data/dataset_201401/{MFO,BPO,CCO}``.
``blastdbcmd -db <ONT>/goasp.fasta -entry all -outfmt "%t\\t%s"`` (Debian ``ncbi-blast+``) dumps each protein as
``ACC|GO:a,GO:b<TAB>SEQUENCE``. :func:`convert_metastudent` merges the three dumps into the tab-separated table that
:func:`~sepit.data.readers.sprot2014.read_sprot2014` reads (``sprot2014_go_50k.tsv.xz`` is a 50k subset of it)::

    sepit data import-metastudent -o sprot2014_full.tsv.gz
    sepit data build -o data/full --source sprot2014_full.tsv.gz    # GO names: the vendored full GO table

``eval_from``: a table with ``accession`` and ``split`` columns (and optionally ``has_structure``), e.g. a 2014 table,
whose ``eval`` rows are carried over so that the proteins reserved for evaluation stay out of training in the full
set too. Default: the vendored marks of the shared 50k table (``resources/default_data/sprot2014_marks.tsv.xz``:
its 3,269 eval proteins and 447 with a structure).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sepit._io import atomic_write
from sepit.errors import InputError
from sepit.log import get_logger, progress

from ._text import clean_sequence
from .skiplog import SkipLog
from .sprot2014 import SPROT2014_COLUMNS, _rows

log = get_logger(__name__)
DEFAULT_DIR = Path("/usr/share/metastudent-data/dataset_201401")
ONTOLOGIES = (("MFO", "GO_MF"), ("BPO", "GO_BP"), ("CCO", "GO_CC"))
INSTALL_HINT = "Debian/Ubuntu: apt-get install metastudent-data ncbi-blast+"


@dataclass
class _Protein:
    sequence: str
    go: dict[str, list[str]] = field(default_factory=lambda: {c: [] for _, c in ONTOLOGIES})


def blastdbcmd_binary() -> str:
    found = os.environ.get("SEPIT_BLASTDBCMD") or shutil.which("blastdbcmd")
    if not found:
        raise InputError(None, f"blastdbcmd not found (it dumps the BLAST databases); {INSTALL_HINT}")
    return found


def check_database(db: Path) -> Path:
    if not Path(f"{db}.psq").is_file():
        raise InputError(db, f"not a BLAST protein database (no {db.name}.psq); {INSTALL_HINT}")
    return db


def dump_ontology(db: Path, exe: str | None = None) -> Iterator[str]:
    """Lines ``ACC|GO:..,GO:..<TAB>SEQ`` of one ontology's BLAST database (``db`` = ``.../goasp.fasta``)."""
    cmd = [exe or blastdbcmd_binary(), "-db", str(check_database(db)), "-entry", "all", "-outfmt", "%t\t%s"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        assert p.stdout is not None
        yield from p.stdout
        err = p.stderr.read() if p.stderr else ""
    if p.returncode != 0:
        last = err.strip().splitlines()[-1] if err.strip() else "no message"
        raise InputError(db, f"blastdbcmd failed (exit {p.returncode}): {last}")


def parse_dump_line(line: str) -> tuple[str, list[str], str] | None:
    """``ACC|GO:a,GO:b<TAB>SEQ`` → (accession, GO ids in order, sequence); None when malformed."""
    title, _, seq = line.rstrip("\n").partition("\t")
    acc, _, terms = title.partition("|")
    acc = acc.strip()
    if not acc or not seq:
        return None
    ids = [t.strip() for t in terms.split(",") if t.strip()]
    if any(not (t.startswith("GO:") and t[3:].isdigit()) for t in ids):
        return None
    return acc, ids, seq.strip()


def default_marks() -> Path:
    from sepit.paths import resources_dir

    return resources_dir() / "default_data" / "sprot2014_marks.tsv.xz"


def _eval_marks(path: str | Path, skips: SkipLog) -> dict[str, tuple[str, str]]:
    """accession → (split, has_structure) of a table with ``accession`` and ``split`` columns."""
    return {r["accession"].strip(): (r["split"].strip(), r.get("has_structure", "0").strip())
            for r in _rows(path, ("accession", "split"), skips)}


def convert_metastudent(out: str | Path, dataset_dir: str | Path = DEFAULT_DIR, *,
                        eval_from: str | Path | None = None,
                        skips: SkipLog | None = None, lines: dict[str, Iterator[str]] | None = None) -> dict[str, int]:
    """Write the merged 2014 table to ``out`` (gzip when it ends in ``.gz``; written atomically, rows sorted by
    accession, so the file is the same on every run). Returns counts. ``eval_from`` None: the vendored marks.
    ``lines`` (tests) replaces the blastdbcmd dumps: ontology (``MFO``/``BPO``/``CCO``) → its lines."""
    skips = skips if skips is not None else SkipLog()
    dataset_dir = Path(dataset_dir)
    if lines is None and not dataset_dir.is_dir():
        what = "is a file, expected the metastudent data directory" if dataset_dir.exists() else \
            "no such directory: install the metastudent data"
        raise InputError(dataset_dir, f"{what} ({INSTALL_HINT})")
    exe = None
    if lines is None:  # fail before any work: the program and all three databases must be there
        exe = blastdbcmd_binary()
        for ont, _ in ONTOLOGIES:
            check_database(dataset_dir / ont / "goasp.fasta")
    eval_from = eval_from or default_marks()
    marks = _eval_marks(eval_from, skips)
    proteins: dict[str, _Protein] = {}
    bad: set[str] = set()
    counts = {"annotations": 0}
    for ont, col in ONTOLOGIES:
        src = lines[ont] if lines is not None else dump_ontology(dataset_dir / ont / "goasp.fasta", exe)
        n = 0
        for line in progress(src, desc=f"dumping {ont}", unit="protein"):
            parsed = parse_dump_line(line)
            if parsed is None:
                skips.add("malformed BLAST title", f"{ont}: {line[:60]!r}")
                continue
            acc, ids, raw = parsed
            seq = clean_sequence(raw)
            if seq is None:
                skips.add("bad sequence", f"{ont}: {acc}")
                bad.add(acc)
                continue
            p = proteins.get(acc)
            if p is None:
                p = proteins[acc] = _Protein(seq)
            elif p.sequence != seq:
                skips.add("sequence differs between ontologies", f"{ont}: {acc}")
                bad.add(acc)
                continue
            for t in ids:
                if t not in p.go[col]:
                    p.go[col].append(t)
            n += 1
        counts[ont] = n
        counts["annotations"] += n
    for acc in bad:
        proteins.pop(acc, None)
    if not proteins:
        raise InputError(dataset_dir, "no proteins in the metastudent databases")
    counts["proteins"] = len(proteins)
    counts["eval"] = 0
    with atomic_write(out, "wb") as raw_f:
        f = gzip.GzipFile(fileobj=raw_f, mode="wb", mtime=0) if str(out).endswith(".gz") else raw_f
        f.write(("\t".join(SPROT2014_COLUMNS) + "\n").encode())
        for acc in sorted(proteins):
            p = proteins[acc]
            split, has_structure = marks.get(acc, ("train", "0"))
            counts["eval"] += split == "eval"
            row = [acc, str(len(p.sequence)), split or "train", has_structure or "0", "", "", "", "",
                   ";".join(p.go["GO_MF"]), ";".join(p.go["GO_BP"]), ";".join(p.go["GO_CC"]), p.sequence]
            f.write(("\t".join(row) + "\n").encode())
        if f is not raw_f:
            f.close()
    missing = sum(1 for a in marks if a not in proteins)
    if missing:
        log.warning("%d proteins of %s are not in the metastudent databases", missing, eval_from)
    log.info("wrote %s: %d proteins (%d marked eval); %s", out, counts["proteins"], counts["eval"], skips.summary())
    return counts
