"""Readers on real UniProt samples (tests/data/uniprot, see its README) and on broken inputs."""

from __future__ import annotations

import bz2
import gzip
import lzma
import re
import shutil
import tracemalloc
from pathlib import Path

import pytest

from sepit.data.readers import (
    SkipLog,
    open_text,
    parse_fasta_header,
    read_fasta,
    read_go_terms,
    read_human_table,
    read_proteins,
    read_sprot2014,
    read_uniprot_flat,
    read_uniprot_tsv,
    read_uniprot_xml,
    sniff_format,
)
from sepit.errors import InputError

DATA = Path(__file__).parent / "data" / "uniprot"
MULTI_ACCS = ["P00750", "P56540", "Q51858", "Q51481", "Q8NE62", "P00981", "P28799", "Q01436"]


def _raw_entry(path: Path, acc: str) -> str:
    """The raw text of one flat-file entry, for checks independent of the parser."""
    for block in path.read_text().split("//\n"):
        if f"AC   {acc};" in block:
            return block + "//\n"
    raise AssertionError(acc)


# ---------------------------------------------------------------- compression sniffing and truncation


@pytest.mark.parametrize("opener", [gzip.open, lzma.open, bz2.open])
def test_open_text_sniffs_compression_not_extension(tmp_path: Path, opener) -> None:
    src = (DATA / "P60137.txt").read_bytes()
    p = tmp_path / "renamed.txt"  # a compressed file with a plain-text name
    with opener(p, "wb") as f:
        f.write(src)
    with open_text(p) as f:
        assert f.read() == src.decode()


def test_truncated_gzip_at_start_is_an_input_error(tmp_path: Path) -> None:
    p = tmp_path / "cut.dat.gz"
    p.write_bytes(gzip.compress((DATA / "multi_ex.txt").read_bytes())[:15])
    with pytest.raises(InputError, match="cut.dat.gz"):
        list(read_uniprot_flat(p))


def test_truncated_gzip_mid_file_keeps_complete_entries(tmp_path: Path) -> None:
    data = gzip.compress((DATA / "multi_ex.txt").read_bytes())
    p = tmp_path / "cut.dat.gz"
    p.write_bytes(data[: len(data) * 2 // 3])
    skips = SkipLog()
    got = [e.accession for e in read_uniprot_flat(p, skips)]
    assert 0 < len(got) < len(MULTI_ACCS)
    assert got == MULTI_ACCS[: len(got)]
    assert skips.counts["truncated input"] == 1
    assert skips.counts["entry cut by truncated input"] == 1
    full = {e.accession: e for e in read_uniprot_flat(DATA / "multi_ex.txt")}
    assert all(full[a].sequence == e.sequence for a, e in zip(got, read_uniprot_flat(p), strict=True))


@pytest.mark.parametrize("reader", [read_uniprot_flat, read_uniprot_xml, read_fasta, read_uniprot_tsv, read_proteins])
def test_empty_file_is_an_input_error(tmp_path: Path, reader) -> None:
    p = tmp_path / "empty.dat"
    p.write_text("")
    with pytest.raises(InputError, match="empty.dat"):
        list(reader(p))


@pytest.mark.parametrize("reader", [read_uniprot_flat, read_uniprot_xml, read_fasta, read_uniprot_tsv, read_proteins])
def test_wrong_format_is_an_input_error(tmp_path: Path, reader) -> None:
    p = tmp_path / "wrong.txt"
    p.write_text("hello\tworld\nthis is not a protein file\n")
    with pytest.raises(InputError, match="wrong.txt"):
        list(reader(p))


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        list(read_proteins(tmp_path / "nope.dat"))


# ---------------------------------------------------------------- the shared 2014 GO table


def test_sprot2014_sample_rows_and_eval_split() -> None:
    go = read_go_terms(DATA / "go_terms_sample.tsv.xz")
    entries = list(read_sprot2014(DATA / "sprot2014_sample.tsv.xz", go, DATA / "human_sample.tsv.xz"))
    with lzma.open(DATA / "sprot2014_sample.tsv.xz", "rt") as f:
        rows = [ln.rstrip("\n").split("\t") for ln in f][1:]
    assert [e.accession for e in entries] == [r[0] for r in rows]
    for e, r in zip(entries, rows, strict=True):
        assert e.sequence == r[11] and e.length == int(r[1])
        assert (e.split_hint == "eval") == (r[2] == "eval")
        assert dict(e.extra)["has_structure"] == r[3]
        assert [t.id for t in e.go_by_aspect("MF")] == [g for g in r[8].split(";") if g]
        assert [t.id for t in e.go_by_aspect("CC")] == [g for g in r[10].split(";") if g]
        assert all(t.name for t in e.go), "every GO id in the sample has a name in go_terms"
        assert [d.id for d in e.domains_in("Pfam")] == [p for p in r[7].split(";") if p]
        assert e.gene == r[4] and e.name == r[5]
        assert (e.organism == "Homo sapiens") == bool(r[4] or "entrez_id" in dict(e.extra))
    assert sum(e.split_hint == "eval" for e in entries) >= 8


def test_go_terms_names_status_and_pseudo_terms() -> None:
    go = read_go_terms(DATA / "go_terms_sample.tsv.xz")
    with lzma.open(DATA / "go_terms_sample.tsv.xz", "rt") as f:
        rows = {r[0]: r for r in (ln.rstrip("\n").split("\t") for ln in f)}
    assert "all" not in go and "go_id" not in go
    obsolete = [g for g in go.values() if g.status == "obsolete"]
    absent = [g for g in go.values() if g.status == "absent"]
    assert obsolete and absent
    for g in obsolete:  # the 2014 name, not "obsolete ..."
        assert g.obsolete and g.name == rows[g.id][3] and not g.name.startswith("obsolete")
        assert not g.definition.startswith("OBSOLETE")
    for g in absent:
        assert g.obsolete and g.ontology == "" and g.name == rows[g.id][3]
    current = [g for g in go.values() if g.status == "current"]
    assert all(g.name == rows[g.id][2] and g.ontology in ("MF", "BP", "CC") for g in current)


def test_human_table_fills_what_the_row_lacks(tmp_path: Path) -> None:
    human = read_human_table(DATA / "human_sample.tsv.xz")
    assert human
    acc, info = next(iter(human.items()))
    with lzma.open(DATA / "sprot2014_sample.tsv.xz", "rt") as f:
        lines = f.read().splitlines()
    row = next(ln.split("\t") for ln in lines if ln.startswith(acc + "\t"))
    row[4] = row[5] = row[6] = row[7] = ""  # blank the human columns: the human table must fill them back
    p = tmp_path / "t.tsv"
    p.write_text(lines[0] + "\n" + "\t".join(row) + "\n")
    (e,) = read_sprot2014(p, human=human)
    assert e.gene == info.gene_symbol and e.name == info.gene_name
    assert [d.id for d in e.domains] == list(info.pfam) and e.ec == info.ec


def test_sprot2014_bad_rows_are_skipped_with_reasons(tmp_path: Path) -> None:
    with lzma.open(DATA / "sprot2014_sample.tsv.xz", "rt") as f:
        lines = f.read().splitlines()
    head, good = lines[0], lines[1:6]
    bad_len = good[0].split("\t")
    bad_len[1] = str(int(bad_len[1]) + 1)
    bad_seq = good[1].split("\t")
    bad_seq[11] = bad_seq[11][:10] + "12#" + bad_seq[11][10:]
    bad_go = good[2].split("\t")
    bad_go[9] = "GO:12;notgo"
    p = tmp_path / "t.tsv.gz"
    with gzip.open(p, "wt") as f:
        f.write("\n".join([head, "\t".join(bad_len), "\t".join(bad_seq), "\t".join(bad_go), good[3], good[3],
                           "too\tfew\tfields", good[4]]) + "\n")
    skips = SkipLog()
    got = [e.accession for e in read_sprot2014(p, skips=skips)]
    assert got == [good[3].split("\t")[0], good[4].split("\t")[0]]
    assert skips.as_dict() == {"bad GO id": 1, "bad sequence": 1, "duplicate accession": 1, "length mismatch": 1,
                               "malformed row": 1}
    assert "5 skipped" in skips.summary()


def test_sprot2014_missing_columns_is_an_input_error(tmp_path: Path) -> None:
    p = tmp_path / "t.tsv"
    p.write_text("accession\tsequence\nP1\tMKV\n")
    with pytest.raises(InputError, match="missing column"):
        list(read_sprot2014(p))


# ---------------------------------------------------------------- UniProt flat file


def test_flat_multi_entry_file() -> None:
    entries = {e.accession: e for e in read_uniprot_flat(DATA / "multi_ex.txt")}
    assert list(entries) == MULTI_ACCS
    tpa = entries["P00750"]
    raw = _raw_entry(DATA / "multi_ex.txt", "P00750")
    assert tpa.name == "Tissue-type plasminogen activator" and tpa.gene == "PLAT"
    assert tpa.organism == "Homo sapiens (Human)" and tpa.ec == ("3.4.21.68",)
    assert tpa.length == 562 and tpa.mass == 62917
    assert tpa.subcellular_location == ("Secreted, extracellular space",)
    assert tpa.function[0].startswith("Converts the abundant, but inactive, zymogen plasminogen")
    assert len(tpa.go) == raw.count("DR   GO;")
    assert tpa.domains_in("Pfam") and len(tpa.domains_in("Pfam")) == raw.count("DR   Pfam;")
    assert tpa.keywords[0] == raw.split("KW   ")[1].split(";")[0]
    # old-style FT columns: "FT   CHAIN        36    562       Tissue-type plasminogen activator."
    chains = [f for f in tpa.features if f.kind == "CHAIN"]
    assert (chains[0].start, chains[0].end, chains[0].note) == (36, 562, "Tissue-type plasminogen activator")
    assert chains[1].note == "Tissue-type plasminogen activator chain A"  # wrapped over two FT lines
    chdh = entries["Q8NE62"]
    assert chdh.cofactors == ("FAD",) and chdh.ec == ("1.1.99.1",)
    assert chdh.catalytic_activity == ("Choline + acceptor = betaine aldehyde + reduced acceptor",)
    assert chdh.pathway[0].startswith("Amine and polyamine biosynthesis; betaine biosynthesis")
    transit = next(f for f in chdh.features if f.kind == "TRANSIT")
    assert transit.start == 1 and transit.end is None  # "?" position


def test_flat_new_format_features_and_evidence_cleaning() -> None:
    (e,) = read_uniprot_flat(DATA / "P60137.txt")
    assert e.name == "Photosystem II reaction center protein L" and e.gene == "psbL"
    assert [(f.kind, f.start, f.end, f.note) for f in e.features] == [
        ("CHAIN", 1, 38, "Photosystem II reaction center protein L"), ("TRANSMEM", 17, 37, "Helical")]
    assert e.subcellular_location == ("Plastid, chloroplast thylakoid membrane",)
    assert dict(e.extra)["membrane_topology"] == "Single-pass membrane protein"
    assert e.function[0].endswith("required for correct PSII assembly and/or dimerization.")
    (c,) = read_uniprot_flat(DATA / "O95832.txt")
    texts = [*c.function, *c.subunit, *c.subcellular_location, *(f.note for f in c.features)]
    assert texts and not any("ECO:" in t or "{" in t or "(PubMed" in t for t in texts)
    assert c.subcellular_location == ("Cell junction, tight junction", "Cell membrane", "Basolateral cell membrane")
    assert len(c.go) == 41  # every "DR   GO;" line of the entry
    assert ("GO:0005923", "CC", "bicellular tight junction", "IDA") in {(t.id, t.aspect, t.name, t.evidence)
                                                                      for t in c.go}
    assert all(t.evidence and t.aspect in ("MF", "BP", "CC") for t in c.go)


def test_flat_old_format_features() -> None:
    (e,) = read_uniprot_flat(DATA / "Q13639.txt")
    tm = [f for f in e.features if f.kind == "TRANSMEM"]
    assert len(tm) == 7 and (tm[0].start, tm[0].end) == (20, 40)
    assert all("By similarity" not in f.note for f in e.features)


def test_flat_malformed_entries_are_skipped(tmp_path: Path) -> None:
    good = _raw_entry(DATA / "multi_ex.txt", "P56540")
    wrong_len = re.sub(r"SEQUENCE +74 AA", "SEQUENCE   75 AA", good)
    assert wrong_len != good
    no_ac = "\n".join(ln for ln in good.splitlines() if not ln.startswith("AC   ")) + "\n"
    no_end = good.replace("//\n", "")
    p = tmp_path / "bad.dat"
    p.write_text(wrong_len + no_ac + no_end + _raw_entry(DATA / "multi_ex.txt", "Q01436"))
    skips = SkipLog()
    assert [e.accession for e in read_uniprot_flat(p, skips)] == ["Q01436"]
    assert skips.as_dict() == {"length mismatch": 1, "missing accession": 1, "unterminated entry": 1}


def test_flat_gz_streams_lazily_in_bounded_memory(tmp_path: Path) -> None:
    template = _raw_entry(DATA / "multi_ex.txt", "Q01436")  # a small entry: tracemalloc slows every allocation
    p = tmp_path / "big.dat.gz"
    n = 3000
    with gzip.open(p, "wt") as f:
        for i in range(n):
            f.write(template.replace("AC   Q01436;", f"AC   X{i:05d};", 1))
    raw_size = len(template) * n
    tracemalloc.start()
    it = read_uniprot_flat(p)
    first = [next(it) for _ in range(5)]
    _, peak_first = tracemalloc.get_traced_memory()
    count = 5
    for e in it:
        count += 1
        last = e.accession
    _, peak_all = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert [e.accession for e in first] == ["X00000", "X00001", "X00002", "X00003", "X00004"]
    assert count == n and last == f"X{n - 1:05d}"
    assert peak_first < raw_size / 20, "the first entries must arrive before the file is read"
    assert peak_all < raw_size / 10, f"peak {peak_all} bytes for a {raw_size}-byte file: not streaming"


# ---------------------------------------------------------------- XML, FASTA, TSV agree with the flat file


def _core(e) -> tuple:
    return (e.accession, e.sequence, e.gene, e.mass, tuple(sorted(t.id for t in e.go)), len(e.features))


@pytest.mark.parametrize("stem", ["multi_ex", "Q13639"])
def test_xml_matches_flat_file(stem: str) -> None:
    flat = {e.accession: e for e in read_uniprot_flat(DATA / f"{stem}.txt")}
    xml = {e.accession: e for e in read_uniprot_xml(DATA / f"{stem}.xml")}
    assert list(xml) == list(flat)
    for acc, x in xml.items():
        f = flat[acc]
        assert _core(x) == _core(f)
        assert x.name == f.name and sorted(x.keywords) == sorted(f.keywords) and x.function == f.function
        assert [(a.kind, a.start, a.end) for a in x.features] == [(a.kind, a.start, a.end) for a in f.features]
        assert sorted(x.ec) == sorted(f.ec) and x.cofactors == f.cofactors
        assert {d.id for d in x.domains_in("Pfam")} == {d.id for d in f.domains_in("Pfam")}


def test_xml_truncated_keeps_entries(tmp_path: Path) -> None:
    text = (DATA / "multi_ex.xml").read_text()
    cut = text[: text.index("<accession>Q8NE62</accession>") + 200]
    p = tmp_path / "cut.xml.gz"
    p.write_bytes(gzip.compress(cut.encode()))
    skips = SkipLog()
    assert [e.accession for e in read_uniprot_xml(p, skips)] == MULTI_ACCS[:4]
    assert skips.counts["truncated input"] == 1


def test_fasta_uniprot_headers_match_flat_file() -> None:
    flat = {e.accession: e for e in read_uniprot_flat(DATA / "multi_ex.txt")}
    fasta = list(read_fasta(DATA / "multi_ex.fasta"))
    assert [e.accession for e in fasta] == MULTI_ACCS
    for e in fasta:
        assert e.sequence == flat[e.accession].sequence
        assert e.gene == flat[e.accession].gene
        assert flat[e.accession].organism.startswith(e.organism)
        assert e.name and dict(e.extra)["entry_name"] == dict(flat[e.accession].extra)["entry_name"]
    h = parse_fasta_header("sp|P69905|HBA_HUMAN Hemoglobin subunit alpha OS=Homo sapiens OX=9606 GN=HBA1 PE=1 SV=2")
    assert h == {"accession": "P69905", "entry_name": "HBA_HUMAN", "reviewed": "1", "name": "Hemoglobin subunit alpha",
                 "organism": "Homo sapiens", "taxid": "9606", "gene": "HBA1"}
    assert parse_fasta_header("my_protein some description") == {"accession": "my_protein",
                                                                  "name": "some description"}


def test_fasta_bad_records_skipped(tmp_path: Path) -> None:
    p = tmp_path / "x.fa"
    p.write_text(">a plain header\nMKV\nLLA\n>empty\n>bad\nMK1V#\n>b\nmkvl*\n")
    skips = SkipLog()
    got = [(e.accession, e.sequence, e.name) for e in read_fasta(p, skips)]
    assert got == [("a", "MKVLLA", "plain header"), ("b", "MKVL", "")]
    assert skips.as_dict() == {"bad sequence": 1, "missing sequence": 1}


def test_tsv_export_matches_flat_file() -> None:
    flat = {e.accession: e for name in ("multi_ex.txt", "P60137.txt", "O95832.txt")
            for e in read_uniprot_flat(DATA / name)}
    tsv = list(read_uniprot_tsv(DATA / "uniprot_export.tsv"))
    assert [e.accession for e in tsv] == list(flat)
    for t in tsv:
        f = flat[t.accession]
        assert (t.sequence, t.gene, t.mass, t.name) == (f.sequence, f.gene, f.mass, f.name)
        assert t.function == f.function and t.subunit == f.subunit and t.pathway == f.pathway
        assert t.subcellular_location == f.subcellular_location
        assert t.cofactors == f.cofactors and t.catalytic_activity == f.catalytic_activity
        assert sorted((g.id, g.aspect) for g in t.go) == sorted((g.id, g.aspect) for g in f.go)
        assert [d.id for d in t.domains_in("Pfam")] == [d.id for d in f.domains_in("Pfam")]
        assert t.keywords == f.keywords


def test_read_proteins_sniffs_every_format(tmp_path: Path) -> None:
    cases = {"multi_ex.txt": "uniprot_flat", "multi_ex.xml": "uniprot_xml", "multi_ex.fasta": "fasta",
             "uniprot_export.tsv": "uniprot_tsv", "sprot2014_sample.tsv.xz": "sprot2014"}
    for name, fmt in cases.items():
        renamed = tmp_path / f"{name}.data"  # content decides, not the extension
        shutil.copy(DATA / name, renamed)
        assert sniff_format(renamed) == fmt
        assert next(iter(read_proteins(renamed))).sequence
    for name in ("multi_ex.txt", "multi_ex.xml", "multi_ex.fasta"):
        assert [e.accession for e in read_proteins(DATA / name)] == MULTI_ACCS


def test_skiplog_callback_sees_every_skip(tmp_path: Path) -> None:
    seen: list[tuple[str, str]] = []
    skips = SkipLog(callback=lambda r, d: seen.append((r, d)))
    p = tmp_path / "x.fa"
    p.write_text(">a\n\n>b\n12\n>c\nMK\n")
    assert [e.accession for e in read_fasta(p, skips)] == ["c"]
    assert [r for r, _ in seen] == ["missing sequence", "bad sequence"]
    assert skips.total == 2 and bool(skips)
