"""The full 2014 set's converter (sepit.data.readers.metastudent): BLAST-dump lines → the 2014 table.

Real dump lines (the first proteins of each ontology of Debian's metastudent-data 2.0.1-8, sequences shortened) stand
in for blastdbcmd, which CI does not install; `python -m benchmarks.bench_data --only full` runs the real package.
"""

from __future__ import annotations

import gzip
import lzma
import shutil

import pytest

from sepit.cli import main
from sepit.data.build import default_config, default_data_dir
from sepit.data.config import DataConfig
from sepit.data.readers import SkipLog, read_proteins
from sepit.data.readers.metastudent import convert_metastudent, parse_dump_line
from sepit.errors import InputError

MF = ["B0RED7|GO:0046933,GO:0046933\tMGSASRASLDSARRVLAELGG\n", "C6DJ78|GO:0000166,GO:0005524\tMSENQQINQKQQYNLNK\n"]
BP = ["C6DJ78|GO:0006810\tMSENQQINQKQQYNLNK\n", "Q9XYZ1|GO:0008150\tMKVLAAGIVALLLA\n", "bad line without tab\n"]
CC = ["B0RED7|GO:0005886\tMGSASRASLDSARRVLAELGG\n", "Q9XYZ2|GO:0005634\tMK!K\n",
      "C6DJ78|GO:0005737\tMSENQQINQKQQYNLNKX\n"]  # "!": bad sequence; C6DJ78's sequence differs from MF/BP


def test_parse_dump_line() -> None:
    assert parse_dump_line(MF[0]) == ("B0RED7", ["GO:0046933", "GO:0046933"], "MGSASRASLDSARRVLAELGG")
    assert parse_dump_line("X|GO:12ab\tMK\n") is None and parse_dump_line("X|GO:1\t\n") is None


def test_convert_merges_ontologies_marks_eval_and_is_deterministic(tmp_path) -> None:
    eval_from = tmp_path / "eval.tsv"
    with lzma.open(default_data_dir() / "proteins.tsv.xz", "rt") as f:
        header = f.readline()
    eval_from.write_text(header + "B0RED7\t21\teval\t1\t\t\t\t\t\t\t\tMGSASRASLDSARRVLAELGG\n")
    skips = SkipLog()
    out = tmp_path / "full.tsv.gz"
    c = convert_metastudent(out, tmp_path, eval_from=eval_from, skips=skips,
                            lines={"MFO": iter(MF), "BPO": iter(BP), "CCO": iter(CC)})
    assert c["proteins"] == 2 and c["eval"] == 1  # B0RED7, Q9XYZ1; C6DJ78 dropped (sequence differs)
    assert skips.as_dict() == {"malformed BLAST title": 1, "bad sequence": 1,
                               "sequence differs between ontologies": 1}
    rows = gzip.decompress(out.read_bytes()).decode().splitlines()
    assert rows[0].split("\t")[0] == "accession" and [r.split("\t")[0] for r in rows[1:]] == ["B0RED7", "Q9XYZ1"]
    entries = {e.accession: e for e in read_proteins(out)}
    b = entries["B0RED7"]
    assert b.split_hint == "eval" and b.length == 21
    assert [(t.id, t.aspect) for t in b.go] == [("GO:0046933", "MF"), ("GO:0005886", "CC")]  # duplicates merged
    assert [(t.id, t.aspect) for t in entries["Q9XYZ1"].go] == [("GO:0008150", "BP")]
    first = out.read_bytes()
    convert_metastudent(out, tmp_path, eval_from=eval_from,
                        lines={"MFO": iter(MF), "BPO": iter(BP), "CCO": iter(CC)})
    assert out.read_bytes() == first  # byte-for-byte (gzip without a timestamp)


def test_missing_package_is_a_clear_error(tmp_path, capsys, monkeypatch) -> None:
    with pytest.raises(InputError, match="apt-get install metastudent-data"):
        convert_metastudent(tmp_path / "x.tsv", tmp_path / "nope")
    (tmp_path / "MFO").mkdir()
    if shutil.which("blastdbcmd"):
        with pytest.raises(InputError, match="not a BLAST protein database"):
            convert_metastudent(tmp_path / "x.tsv", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["data", "import-metastudent", "-o", str(tmp_path / "x.tsv"), "--dir", str(tmp_path)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "blastdbcmd" in err[0]
    assert not (tmp_path / "x.tsv").exists()


def test_default_marks_and_default_go_table(tmp_path) -> None:
    with lzma.open(default_data_dir() / "sprot2014_marks.tsv.xz", "rt") as f:
        marks = [ln.split("\t") for ln in f.read().splitlines()[1:]]
    assert sum(m[1] == "eval" for m in marks) == 3269 and sum(m[2] == "1" for m in marks) == 447
    acc = next(m[0] for m in marks if m[1] == "eval")
    out = tmp_path / "t.tsv"
    c = convert_metastudent(out, lines={"MFO": iter([f"{acc}|GO:0005524\tMKVLA\n"]), "BPO": iter([]), "CCO": iter([])})
    assert c["eval"] == 1 and next(iter(read_proteins(out))).split_hint == "eval"
    cfg = default_config(DataConfig(sources=[str(out)]))  # a 2014 table: GO names from the vendored full table
    assert cfg.go_terms and cfg.go_terms.endswith("go_terms_all.tsv.xz") and cfg.human.endswith("human_all.tsv.xz")
    (e,) = read_proteins(out, go_terms=cfg.go_terms)
    assert e.go[0].name == "ATP binding"
