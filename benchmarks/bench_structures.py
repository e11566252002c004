"""Structures/s parsing real PDB/mmCIF files: sepit's ``parse_structure`` (gemmi) vs Biopython's
``PDBParser``/``MMCIFParser`` on the same files, each producing per-chain Cα traces.

    python -m benchmarks.bench_structures                 # the vendored files (tests/data/structures, tests/data/model)
    python -m benchmarks.bench_structures --dir DIR       # also every structure file under DIR (e.g. the shared 630)

Needs Biopython for the reference (``pip install biopython``; not a sepit dependency): without it the benchmark
says so and reports sepit's figures alone. Both sides read the file (gunzip included), parse the first model and
collect the Cα coordinates of every protein chain; each round parses every file once with each parser, the order
alternating between rounds. Identical files (same bytes) are counted once.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import REPO, Result, interleave, say

SUFFIXES = (".pdb", ".cif", ".ent", ".mmcif")
SKIP_DIRS = {".git", ".venv", "node_modules", "runs", "__pycache__", ".pytest_cache"}


def structure_files(extra_dirs: list[str | Path] = ()) -> list[Path]:
    """Structure files vendored in the repo (``*.pdb``, ``*.cif``, ``*.ent``, optionally ``.gz``) plus those under
    ``extra_dirs``; one file per distinct content."""
    found: list[Path] = []
    roots = [REPO / "tests", REPO / "src", REPO / "benchmarks", REPO / "docs", *map(Path, extra_dirs)]
    for root in roots:
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            if any(part in SKIP_DIRS for part in p.parts) or not p.is_file():
                continue
            name = p.name.lower().removesuffix(".gz")
            if name.endswith(SUFFIXES):
                found.append(p)
    seen, out = set(), []
    for p in found:
        h = hashlib.sha256(_bytes(p)).hexdigest()
        if h not in seen:
            seen.add(h)
            out.append(p)
    return out


def _bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _is_cif(path: Path) -> bool:
    return path.name.lower().removesuffix(".gz").endswith((".cif", ".mmcif"))


def sepit_traces(path: Path) -> int:
    """sepit: every protein chain's Cα trace → number of Cα atoms found."""
    from sepit.data.structures import parse_structure

    return sum(int(t.mask.sum()) for t in parse_structure(path))


def biopython_traces(path: Path) -> int:
    """Biopython: parse (first model), Cα coordinates of amino-acid residues per chain → number of Cα atoms."""
    import numpy as np
    from Bio.PDB import MMCIFParser, PDBParser
    from Bio.PDB.Polypeptide import is_aa

    text = io.StringIO(_bytes(path).decode("utf-8", errors="replace"))
    parser = MMCIFParser(QUIET=True) if _is_cif(path) else PDBParser(QUIET=True)
    st = parser.get_structure(path.name.split(".")[0], text)
    n = 0
    model = next(iter(st))
    for chain in model:
        ca = [res["CA"].coord for res in chain if is_aa(res, standard=False) and "CA" in res]
        if ca:
            n += len(np.asarray(ca, dtype=np.float32))
    return n


def biopython_available() -> bool:
    try:
        import Bio.PDB  # noqa: F401
    except ImportError:
        return False
    return True


def run(*, quick: bool = False, rounds: int | None = None, files: list[Path] | None = None,
        extra_dirs: list[str | Path] = ()) -> Result:
    """Interleaved rounds over all files → Result (ratio = Biopython time ÷ sepit time)."""
    rounds = rounds or (5 if quick else 20)
    files = files if files is not None else structure_files(extra_dirs)
    if not files:
        raise ValueError("no structure files found")
    have_bio = biopython_available()
    counts: dict[str, list[int]] = {}

    def over_all(fn):
        def go(_r: int) -> int:
            got = [fn(p) for p in files]
            counts.setdefault(fn.__name__, got)
            return sum(got)
        return go

    approaches = {"sepit parse_structure (gemmi)": over_all(sepit_traces)}
    if have_bio:
        approaches = {"Biopython PDBParser/MMCIFParser": over_all(biopython_traces), **approaches}
    say(f"structures: {len(files)} files, {rounds} round(s), biopython {'yes' if have_bio else 'MISSING'}")
    t = interleave(approaches, rounds, warmup=1, progress="structures")
    rows = [[n, len(files) / tm.median, tm.median, tm.peak_mb] for n, tm in t.items()]
    notes = [f"{len(files)} files: " + ", ".join(p.name for p in files),
             "structures/s = files ÷ median round time; peak mem = RSS rise during a round"]
    summary: dict[str, Any] = {}
    ratio = None
    if have_bio:
        bio, sep = t["Biopython PDBParser/MMCIFParser"], t["sepit parse_structure (gemmi)"]
        ratio = bio.median / sep.median
        a, b = counts["sepit_traces"], counts["biopython_traces"]
        summary["Cα atoms found, sepit / Biopython"] = f"{sum(a):,} / {sum(b):,}"
        diff = [p.name for p, x, y in zip(files, a, b) if x != y]
        if diff:
            notes.append("files where the Cα counts differ (altloc/micro-heterogeneity and non-standard residue "
                         "rules differ between the parsers): " + ", ".join(diff))
    else:
        notes.insert(0, "Biopython is NOT installed, so there is no reference: `pip install biopython` "
                        "(benchmark-only dependency) and re-run")
    return Result(name="structures", title="4b. Parsing structure files: structures/s",
                  columns=["approach", "structures/s", "median round s", "peak mem +MiB"], rows=rows, ratio=ratio,
                  summary=summary, notes=notes,
                  params={"rounds": rounds, "files": [str(p.relative_to(REPO)) if p.is_relative_to(REPO) else str(p)
                                                      for p in files], "biopython": have_bio})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--dir", action="append", default=[], help="also parse the structure files under DIR")
    a = ap.parse_args(argv)
    print(run(quick=a.quick, rounds=a.rounds, extra_dirs=a.dir).table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
