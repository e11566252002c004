"""Regenerate the embedded default data (src/sepit/resources/default_data/) from the shared real data.

Run:  .venv/bin/python scripts/make_embedded_data.py [--shared /work/shared/data] [--others 2600] [--eval 300]

The one script allowed to read the shared data folder. It keeps every protein of the 2014 Swiss-Prot GO table that
has a structure (447), plus ``--eval`` proteins marked ``eval`` and random other proteins (``--others`` in all,
seeded), the GO terms and human-table rows they use, and the Cα coordinates of their structures (parsed from the
real PDB/mmCIF files and aligned to the protein sequences) in one structure store. Output is deterministic.
"""

from __future__ import annotations

import argparse
import lzma
import random
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from sepit.data.build_structures import read_structure_map, structures_from_files  # noqa: E402 - after the sys.path line
from sepit.data.readers import SkipLog  # noqa: E402 - after the sys.path line
from sepit.data.readers._text import clean_sequence  # noqa: E402 - after the sys.path line

OUT = REPO / "src" / "sepit" / "resources" / "default_data"


def _rows(path: Path) -> tuple[str, list[str]]:
    with lzma.open(path, "rt", encoding="utf-8") as f:
        header = f.readline()
        return header, [ln for ln in f if ln.strip()]


def _write_xz(path: Path, header: str, rows: list[str]) -> None:
    with lzma.open(path, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as f:
        f.write(header)
        f.writelines(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--others", type=int, default=2600, help="proteins besides those with a structure")
    ap.add_argument("--eval", type=int, default=300, help="of --others, how many marked eval")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sp = args.shared / "swissprot2014"
    header, rows = _rows(sp / "sprot2014_go_50k.tsv.xz")
    cols = header.rstrip("\n").split("\t")
    ci = {c: i for i, c in enumerate(cols)}
    parsed = [r.rstrip("\n").split("\t") for r in rows]
    with_structure = [i for i, f in enumerate(parsed) if f[ci["has_structure"]] == "1"]
    rng = random.Random(args.seed)
    rest = [i for i, f in enumerate(parsed) if f[ci["has_structure"]] != "1"]
    ev = [i for i in rest if parsed[i][ci["split"]] == "eval"]
    tr = [i for i in rest if parsed[i][ci["split"]] != "eval"]
    pick = set(with_structure) | set(rng.sample(ev, args.eval)) | set(rng.sample(tr, args.others - args.eval))
    keep = sorted(pick)  # the table's own order
    OUT.mkdir(parents=True, exist_ok=True)
    _write_xz(OUT / "proteins.tsv.xz", header, [rows[i] for i in keep])
    accs = {parsed[i][ci["accession"]] for i in keep}
    go_ids = {g for i in keep for c in ("GO_MF", "GO_BP", "GO_CC") for g in parsed[i][ci[c]].split(";") if g}
    gh, grows = _rows(sp / "go_terms.tsv.xz")
    _write_xz(OUT / "go_terms.tsv.xz", gh, [r for r in grows if r.split("\t", 1)[0] in go_ids])
    hh, hrows = _rows(sp / "human_uniprot_orghs2022.tsv.xz")
    _write_xz(OUT / "human.tsv.xz", hh, [r for r in hrows if r.split("\t", 1)[0] in accs])
    print(f"proteins {len(keep)} ({len(with_structure)} with a structure), GO terms {len(go_ids)}")
    # for the full 516k set (sepit data import-metastudent / build): every GO term and human row, and the marks
    _write_xz(OUT / "go_terms_all.tsv.xz", gh, grows)
    _write_xz(OUT / "human_all.tsv.xz", hh, hrows)
    marks = [f"{f[ci['accession']]}\t{f[ci['split']]}\t{f[ci['has_structure']]}\n" for f in parsed
             if f[ci["split"]] == "eval" or f[ci["has_structure"]] == "1"]
    _write_xz(OUT / "sprot2014_marks.tsv.xz", "accession\tsplit\thas_structure\n", marks)
    print(f"full-set tables: GO terms {len(grows)}, human rows {len(hrows)}, marks {len(marks)}")

    seqs = {parsed[i][ci["accession"]]: clean_sequence(parsed[i][ci["sequence"]]) or "" for i in with_structure}
    skips = SkipLog()
    with tempfile.TemporaryDirectory(prefix="sepit-structures-") as tmp:
        with tarfile.open(args.shared / "structures" / "structures_real_pdb.tar.xz") as tar:
            tar.extractall(tmp, filter="data")
        map_rows = read_structure_map(args.shared / "structures" / "structure_chains_to_sprot2014.tsv.xz", skips)
        store, headers, used = structures_from_files(seqs, map_rows, tmp, skips)
    store.save(OUT / "structures.npz")
    with open(OUT / "structure_headers.tsv", "w", encoding="utf-8") as f:
        f.write("accession\tpdb_id\tchain\ttitle\n")
        for acc in store.ids:
            h = headers[acc]
            f.write(f"{acc}\t{h.pdb_id}\t{h.chain}\t{h.title}\n")
    print(f"structures: {len(store)} of {len(seqs)} proteins from {len(used)} files; {skips.summary()}")
    for p in sorted(OUT.iterdir()):
        print(f"  {p.name}: {p.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
