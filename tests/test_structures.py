"""Structure parsing, alignment to sequences, Cα secondary structure and the store, on real files with quirks
(tests/data/structures, see its README)."""

from __future__ import annotations

import csv
import gzip
import zipfile
from pathlib import Path

import gemmi
import numpy as np
import pytest

from sepit.data.structures import (
    AlignedStructure,
    Rejection,
    StructureStore,
    align_to_sequence,
    ca_secondary_structure,
    parse_structure,
)
from sepit.errors import InputError

DATA = Path(__file__).parent / "data" / "structures"


def _rows() -> list[dict[str, str]]:
    with open(DATA / "chains.tsv") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _seqs() -> dict[str, str]:
    with open(DATA / "sequences.tsv") as f:
        return {r["accession"]: r["sequence"] for r in csv.DictReader(f, delimiter="\t")}


def _gemmi_ca(path: Path, chain: str) -> dict[tuple[int, str], list[gemmi.Atom]]:
    """Independent view of the file: all Cα atoms (every altloc) per residue of the first model."""
    st = gemmi.read_structure(str(path))
    out: dict[tuple[int, str], list[gemmi.Atom]] = {}
    for ch in st[0]:
        if ch.name != chain:
            continue
        for r in ch:
            cas = [a for a in r if a.name == "CA" and a.element.name == "C"]
            if cas:
                out.setdefault((r.seqid.num, r.seqid.icode.strip()), []).extend(cas)
    return out


# ---------------------------------------------------------------- parsing


def test_every_vendored_file_parses_with_its_mapped_chains() -> None:
    for row in _rows():
        (tr,) = parse_structure(DATA / row["file"], chain=row["chain"])
        assert tr.chain == row["chain"] and len(tr) > 0
        assert tr.coords.shape == (len(tr), 3) and tr.coords.dtype == np.float32
        assert tr.mask.shape == (len(tr),) and tr.mask.any()
        assert len(tr.icodes) == len(tr) == len(tr.resnums) == len(tr.bfactors) == len(tr.resnames)
        assert len(set(tr.residue_ids)) == len(tr), "residue ids (number + insertion code) are unique"


def test_coords_equal_highest_occupancy_altloc() -> None:
    path = DATA / "4lup_altloc.pdb.gz"
    (tr,) = parse_structure(path, chain="A")
    ref = _gemmi_ca(path, "A")
    n_alt = n_b_wins = 0
    for rid, num, icode, xyz in zip(tr.residue_ids, tr.resnums, tr.icodes, tr.coords, strict=True):
        cas = ref[(int(num), icode.strip())]
        best = max(cas, key=lambda a: a.occ)
        assert np.allclose(xyz, [best.pos.x, best.pos.y, best.pos.z], atol=1e-3), rid
        if len(cas) > 1:
            n_alt += 1
            n_b_wins += best.altloc != cas[0].altloc
    assert n_alt >= 5 and n_b_wins >= 1, "the file has altlocs where the later one has the higher occupancy"


def test_insertion_codes_and_domain_of_longer_protein() -> None:
    h, = parse_structure(DATA / "1a4w.pdb.gz", chain="H")
    assert {"60A", "60I", "186D"} <= set(h.residue_ids)
    i60 = h.residue_ids.index("60")
    assert h.residue_ids[i60 + 1:i60 + 4] == ["60A", "60B", "60C"]  # file order kept, not sorted by number
    seq = _seqs()["P00734"]  # prothrombin, 622 aa; the chain is part of it
    out = align_to_sequence(h, seq)
    assert isinstance(out, AlignedStructure)
    assert out.chain_coverage > 0.95 and out.identity > 0.95 and 0.3 < out.coverage < 0.5
    on = np.flatnonzero(out.mask)
    assert on.min() > 300, "the heavy chain sits in the C-terminal part of prothrombin"


def test_multi_model_first_by_default_and_dna_chains_excluded() -> None:
    path = DATA / "1lcd_nmr.pdb.gz"
    first = parse_structure(path)
    assert [t.chain for t in first] == ["A"]  # chains B and C are DNA
    second = parse_structure(path, model=1)
    assert first[0].sequence == second[0].sequence
    assert not np.allclose(first[0].coords, second[0].coords)
    st = gemmi.read_structure(str(path))
    ca = st[0]["A"][0]["CA"][0].pos
    assert np.allclose(first[0].coords[0], [ca.x, ca.y, ca.z], atol=1e-3)
    with pytest.raises(InputError, match="model index 5"):
        parse_structure(path, model=5)
    assert first[0].header.method == "SOLUTION NMR" and "LAC REPRESSOR" in first[0].header.title


def test_headers_mmcif_gz_and_headerless() -> None:
    (crn,) = parse_structure(DATA / "1crn.cif.gz")
    assert crn.header.pdb_id == "1CRN" and crn.header.resolution == pytest.approx(1.5)
    assert crn.header.keywords == "PLANT PROTEIN" and "CRAMBIN" in crn.header.title
    assert crn.sequence == "TTCCPSIVARSNFNVCRLPGTPEAICATYTGCIIIPGATCPGDYAN"
    (four,) = parse_structure(DATA / "1hh0_4char.cif.gz")
    assert four.chain == "ABCD"
    (bare,) = parse_structure(DATA / "1PPE_l_u.pdb")
    assert bare.header.pdb_id == "" and bare.header.title == "" and bare.chain == "B"


def test_nonstandard_residues_map_to_parent_or_x(tmp_path: Path) -> None:
    (tr,) = parse_structure(DATA / "3BP8_l_u.pdb.gz")
    mse = [i for i, r in enumerate(tr.resnames) if r == "MSE"]
    assert mse and all(tr.sequence[i] == "M" for i in mse) and all(tr.mask[i] for i in mse)
    # the same real residue renamed to a code gemmi does not know: still an amino acid (N, CA, C), unknown → X
    assert not gemmi.find_tabulated_residue("ZZZ").found()
    text = gzip.decompress((DATA / "3BP8_l_u.pdb.gz").read_bytes()).decode().replace("MSE", "ZZZ")
    p = tmp_path / "renamed.pdb"
    p.write_text(text)
    (tz,) = parse_structure(p)
    assert [tz.sequence[i] for i in mse] == ["X"] * len(mse) and len(tz) == len(tr)
    # 5pti_old has a lone unknown HETATM residue without a Cα in its own chain: not reported as a chain
    assert [t.chain for t in parse_structure(DATA / "5pti_old.pdb.gz")] == ["A"]


def test_alphafold_style_file_is_marked_predicted(tmp_path: Path) -> None:
    # Real coordinates with an AlphaFold title line (no real AlphaFold file is vendored): B-factors are pLDDT.
    text = (DATA / "1PPE_l_u.pdb").read_text()
    p = tmp_path / "AF-P01074-F1-model_v4.pdb.gz"
    title = "TITLE     ALPHAFOLD MONOMER V2.0 PREDICTION FOR TRYPSIN INHIBITOR\n"
    p.write_bytes(gzip.compress((title + text).encode()))
    (tr,) = parse_structure(p)
    assert tr.header.predicted
    first_ca = next(ln for ln in text.splitlines() if ln.startswith("ATOM") and ln[12:16] == " CA ")
    assert tr.bfactors[0] == pytest.approx(float(first_ca[60:66]))


def test_bad_structure_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pdb"
    empty.write_text("")
    garbage = tmp_path / "garbage.cif"
    garbage.write_text("this is not a structure\n")
    cut = tmp_path / "cut.pdb.gz"
    cut.write_bytes((DATA / "1lcd_nmr.pdb.gz").read_bytes()[:12])
    # only the DNA chains of a real file: no protein chain
    dna = tmp_path / "dna.pdb"
    text = gzip.decompress((DATA / "1lcd_nmr.pdb.gz").read_bytes()).decode()
    dna.write_text("\n".join(ln for ln in text.splitlines()
                             if not (ln.startswith(("ATOM", "HETATM")) and ln[21] == "A")) + "\n")
    for path, msg in [(empty, "empty"), (garbage, "not a PDB or mmCIF"), (cut, "corrupt or truncated"),
                      (dna, "no protein chain"), (tmp_path / "missing.pdb", "no such file")]:
        with pytest.raises(InputError, match=msg) as e:
            parse_structure(path)
        assert path.name in str(e.value)
    with pytest.raises(InputError, match="no protein chain 'Z'"):
        parse_structure(DATA / "1crn.cif.gz", chain="Z")


# ---------------------------------------------------------------- alignment


def test_every_confidently_mapped_chain_aligns_exactly() -> None:
    seqs = _seqs()
    for row in _rows():
        assert row["confident_map"] == "1"
        (tr,) = parse_structure(DATA / row["file"], chain=row["chain"])
        out = align_to_sequence(tr, seqs[row["accession"]])
        assert isinstance(out, AlignedStructure), f"{row['file']}:{row['chain']}: {out}"
        assert out.identity >= 0.9 and out.chain_coverage >= 0.8
        assert out.coords.shape == (len(seqs[row["accession"]]), 3) and out.mask.dtype == bool
        # every placed Cα is one of the chain's own Cα, in the same order
        placed = out.coords[out.mask]
        own = tr.coords[tr.mask]
        idx = [int(np.flatnonzero((own == p).all(1))[0]) for p in placed]
        assert idx == sorted(idx) and len(set(idx)) == len(idx)
        # neighbours in the protein that both have coordinates are neighbours in space
        both = out.mask[:-1] & out.mask[1:]
        gaps = np.linalg.norm(out.coords[1:] - out.coords[:-1], axis=1)[both]
        assert (gaps < 4.3).mean() > 0.97


def test_wrong_protein_is_rejected_not_misaligned() -> None:
    seqs = _seqs()
    (crn,) = parse_structure(DATA / "1crn.cif.gz")
    for acc, seq in seqs.items():
        if acc == "P01542":
            continue
        out = align_to_sequence(crn, seq)
        assert isinstance(out, Rejection), acc
        assert out.reason and out.chain == "A" and out.source == "1crn.cif.gz"


def test_mutated_or_partial_sequence_is_rejected() -> None:
    seq = _seqs()["P01542"]
    (crn,) = parse_structure(DATA / "1crn.cif.gz")
    start = seq.index(crn.sequence[:10])
    # 20% of the chain's residues substituted in the protein: identity drops below 0.9
    mutated = list(seq)
    for k in range(start, start + len(crn), 5):
        mutated[k] = "W" if seq[k] != "W" else "A"
    bad = align_to_sequence(crn, "".join(mutated))
    assert isinstance(bad, Rejection) and "identity" in bad.reason
    # the protein holds only half the chain: most of the chain cannot align
    half = seq[: start + len(crn) // 2]
    partial = align_to_sequence(crn, half)
    assert isinstance(partial, Rejection) and "of the chain aligns" in partial.reason
    (light,) = parse_structure(DATA / "1a4w.pdb.gz", chain="L")  # 26 residues of the 622-residue prothrombin
    assert isinstance(align_to_sequence(light, _seqs()["P00734"]), AlignedStructure)
    small = align_to_sequence(light, _seqs()["P00734"], min_coverage=0.2)
    assert isinstance(small, Rejection) and "of the protein" in small.reason


def test_missing_residues_become_masked_positions() -> None:
    seq = _seqs()["P00734"]
    (light,) = parse_structure(DATA / "1a4w.pdb.gz", chain="L")
    out = align_to_sequence(light, seq)
    assert isinstance(out, AlignedStructure)
    assert out.mask.sum() == light.mask.sum() and out.n_aligned == len(light)
    assert out.coverage == pytest.approx(out.mask.mean())
    assert np.all(out.coords[~out.mask] == 0)


# ---------------------------------------------------------------- secondary structure


@pytest.mark.parametrize("name,chain", [("1a4w.pdb.gz", "H"), ("1lcd_nmr.pdb.gz", "A"), ("1crn.cif.gz", "A")])
def test_ca_secondary_structure_agrees_with_header_records(name: str, chain: str) -> None:
    path = DATA / name
    (tr,) = parse_structure(path, chain=chain)
    st = gemmi.read_structure(str(path))
    ref = {}
    for h in st.helices:
        if h.start.chain_name == chain:
            for n in range(h.start.res_id.seqid.num, h.end.res_id.seqid.num + 1):
                ref[n] = "H"
    for sheet in st.sheets:
        for s in sheet.strands:
            if s.start.chain_name == chain:
                for n in range(s.start.res_id.seqid.num, s.end.res_id.seqid.num + 1):
                    ref[n] = "E"
    ss = ca_secondary_structure(tr.coords, tr.mask)
    assert len(ss) == len(tr) and set(ss) <= set("HEC-")
    want = [ref.get(n, "C") for n in tr.resnums.tolist()]
    agree = np.mean([a == b for a, b in zip(ss, want, strict=True)])
    # P-SEA vs author/DSSP records: 0.76 on average over 152 real chains, 25th percentile 0.72
    assert agree > 0.6, f"{name}:{chain} agrees {agree:.2f} with the file's HELIX/SHEET records"
    assert ("H" in ss) == ("H" in want) and ("E" in ss) == ("E" in want)


def test_ca_secondary_structure_masks_and_breaks() -> None:
    (tr,) = parse_structure(DATA / "1lcd_nmr.pdb.gz")
    ss = ca_secondary_structure(tr.coords, tr.mask)
    mask = tr.mask.copy()
    mask[20] = False
    ss2 = ca_secondary_structure(tr.coords, mask)
    assert ss2[20] == "-" and len(ss2) == len(ss)
    assert ss2[:15] == ss[:15] and ss2[26:] == ss[26:]  # only windows touching residue 20 change
    far = tr.coords.copy()
    far[30:] += 50.0  # a chain break between 29 and 30
    assert ca_secondary_structure(far, tr.mask)[:25] == ss[:25]
    assert ca_secondary_structure(np.zeros((0, 3)), np.zeros(0, bool)) == ""


# ---------------------------------------------------------------- store


def test_structure_store_round_trip(tmp_path: Path) -> None:
    seqs = _seqs()
    store = StructureStore()
    for row in _rows()[:6]:
        (tr,) = parse_structure(DATA / row["file"], chain=row["chain"])
        out = align_to_sequence(tr, seqs[row["accession"]])
        assert isinstance(out, AlignedStructure)
        store.add(row["accession"], out)  # a protein's second chain replaces its first
    path = tmp_path / "structures.npz"
    store.save(path)
    assert zipfile.is_zipfile(path)
    with np.load(path, allow_pickle=False) as z:
        assert z["coords"].dtype == np.float32 and z["mask"].dtype == bool
        assert z["offsets"][-1] == len(z["coords"]) == sum(len(seqs[i]) for i in z["ids"])
    back = StructureStore.load(path)
    assert back.ids == store.ids and len(back) == len(store)
    for pid in store.ids:
        c0, m0 = store.get(pid)
        c1, m1 = back.get(pid)
        assert np.array_equal(c0, c1) and np.array_equal(m0, m1) and len(c1) == len(seqs[pid])
        a, b = store.info(pid), back.info(pid)  # float32 on disk: coverage and identity round to it
        assert (b.length, b.source) == (a.length, a.source) and a.source
        assert (b.coverage, b.identity) == pytest.approx((a.coverage, a.identity), abs=1e-6)
    assert back.get("P99999") is None and "P99999" not in back


def test_structure_store_rejects_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="bad.npz"):
        StructureStore.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(InputError, match="not a sepit structure store"):
        StructureStore.load(other)
    store = StructureStore()
    with pytest.raises(ValueError, match="coords must be"):
        store.add("x", np.zeros((4, 2)))
