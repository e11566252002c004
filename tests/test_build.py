"""The dataset builder end to end (sepit.data.build / dataset / cli.data) on real proteins of the embedded default.

Fast tests stand in a small k-mer homology search for MMseqs2; the slow ones run the real ``mmseqs`` through the
CLI, including a byte-for-byte determinism check across processes with different hash seeds.
"""

from __future__ import annotations

import gzip
import json
import lzma
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from sepit.cli import main
from sepit.data.build import build_dataset, default_data_dir
from sepit.data.config import DataConfig, SplitConfig
from sepit.data.dataset import InstructionDataset
from sepit.errors import InputError
from sepit.tools.mmseqs import Hit, write_hits


class KmerSearch:
    """A stand-in homology search: identity ≈ shared 3-mer fraction, full coverage. Deterministic."""

    def search(self, query_fasta: Path, target_fasta: Path, min_qcov: float) -> dict[str, list[Hit]]:
        def read(p: Path) -> dict[str, str]:
            lines = p.read_text().split()
            return dict(zip((x[1:] for x in lines[::2]), lines[1::2]))

        q, t = read(query_fasta), read(target_fasta)
        kt = {a: {s[i:i + 3] for i in range(len(s) - 2)} for a, s in t.items()}
        out: dict[str, list[Hit]] = {}
        for a, s in q.items():
            ka = {s[i:i + 3] for i in range(len(s) - 2)}
            for b, kb in kt.items():
                j = len(ka & kb) / max(1, len(ka | kb))
                if j > 0.2:
                    out.setdefault(a, []).append(Hit(a, b, j, len(s), 1.0, 1.0, 1e-10, 100 * j))
        return out

    def leak_search(self, query_fasta: Path, target_fasta: Path, out: Path, min_qcov: float,
                    max_hits: int | None = None, identity: float | None = None) -> Path:
        write_hits(out, (h for lst in self.search(query_fasta, target_fasta, min_qcov).values() for h in lst))
        return out


def _table_rows(n: int, with_structure: int = 0) -> tuple[str, list[str]]:
    """The header and rows of the embedded table: the first ``n`` rows plus ``with_structure`` rows that have one."""
    with lzma.open(default_data_dir() / "proteins.tsv.xz", "rt") as f:
        header = f.readline()
        rows = f.readlines()
    extra = [r for r in rows[n:] if r.split("\t")[3] == "1"][:with_structure]
    return header, rows[:n] + extra


@pytest.fixture(scope="module")
def small_table(tmp_path_factory) -> Path:
    header, rows = _table_rows(90, with_structure=30)
    p = tmp_path_factory.mktemp("src") / "table.tsv"
    p.write_text(header + "".join(rows))
    return p


def _cfg(table: Path, **kw) -> DataConfig:
    d = default_data_dir()
    base = DataConfig(sources=[str(table)], go_terms=str(d / "go_terms.tsv.xz"), human=str(d / "human.tsv.xz"),
                      structure_store=str(d / "structures.npz"),
                      split=SplitConfig(valid_fraction=0.1, test_fraction=0.1))
    return replace(base, **kw)


@pytest.fixture(scope="module")
def built(tmp_path_factory, small_table):
    out = tmp_path_factory.mktemp("ds") / "default"
    manifest = build_dataset(_cfg(small_table), out, tool=KmerSearch())
    return out, manifest


def test_layout_and_manifest_match_the_files(built) -> None:
    out, m = built
    assert sorted(p.name for p in out.iterdir()) == ["fasta", "index", "manifest.json", "proteins.jsonl",
                                                      "records", "structures.npz"]
    assert m["files"]["index"] == "index" and (out / "index" / "index.json").is_file()  # the training split's
    assert json.loads((out / "manifest.json").read_text()) == m
    assert m["format"] == "sepit-instructions" and m["seed"] == 0 and m["identity_thresholds"] == [0.3, 0.5]
    assert {s["role"] for s in m["sources"]} >= {"proteins", "go_terms", "human", "structure_store"}
    assert all(len(s["sha256"]) == 64 for s in m["sources"])
    assert set(m["versions"]) >= {"sepit", "python", "numpy", "mmseqs"}
    proteins = [json.loads(x) for x in (out / "proteins.jsonl").read_text().splitlines()]
    assert len(proteins) == sum(m["counts"]["proteins"].values())
    for sp in ("train", "valid", "test"):
        fasta_ids = [x[1:] for x in (out / "fasta" / f"{sp}.fasta").read_text().split() if x.startswith(">")]
        assert fasta_ids == [p["id"] for p in proteins if p["split"] == sp]
        lines = [ln for f in m["files"]["records"][sp] for ln in (out / f).read_text().splitlines()]
        assert len(lines) == m["counts"]["records"][sp]
        recs = [json.loads(ln) for ln in lines]
        assert all(r["split"] == sp for r in recs)
        n_by_task = sum(v[sp] for kinds in m["counts"]["by_task"].values() for v in kinds.values())
        assert n_by_task == len(recs)
    for task, ans in m["counts"]["yesno_answers"].items():
        assert ans["yes"] == ans["no"], task
    held = [p for p in proteins if p["split"] != "train"]
    assert held and all(p["max_identity_to_train"] <= 0.3 for p in held)
    assert all(p["max_identity_to_train"] is None for p in proteins if p["split"] == "train")
    assert all(set(p["splits"]) == {"0.5"} for p in proteins)


def test_instruction_dataset_reads_proteins_structures_and_records(built) -> None:
    out, m = built
    ds = InstructionDataset(out)
    assert ds.manifest == m and len(ds) == sum(m["counts"]["records"].values())
    with_structure = [pid for pid in ds.protein_ids() if ds.protein_info(pid)["has_structure"]]
    assert with_structure and m["counts"]["structures"] == len(with_structure)
    p = ds.protein(with_structure[0])
    assert p.coords.shape == (len(p.sequence), 3) and p.coords.dtype == np.float32 and p.mask.dtype == bool
    assert p.mask.any() and np.abs(p.coords[p.mask]).sum() > 0
    no = next(pid for pid in ds.protein_ids() if not ds.protein_info(pid)["has_structure"])
    assert ds.protein(no).coords is None and not ds.protein(no).has_structure
    test_go = list(ds.records(split="test", tasks=["go_mf"], kinds=["yesno"]))
    assert test_go and all(r.task == "go_mf" and r.kind == "yesno" and r.split == "test" for r in test_go)
    rec = ds.record(0)
    assert rec.messages[0]["content"].startswith("<protein>\n") and rec.protein_ids[0] in ds.protein_ids()
    assert any(r.task == "secondary_structure" for r in ds.records())
    with pytest.raises(IndexError):
        ds.record(10**9)


def test_same_seed_same_bytes_other_seed_differs(built, small_table, tmp_path) -> None:
    out, _ = built
    again = tmp_path / "again"
    build_dataset(_cfg(small_table), again, tool=KmerSearch())
    for f in sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file()):
        assert (out / f).read_bytes() == (again / f).read_bytes(), f
    other = tmp_path / "other"
    build_dataset(_cfg(small_table, seed=1), other, tool=KmerSearch())
    first = Path("records") / "train-00000.jsonl"
    assert (out / first).read_bytes() != (other / first).read_bytes()


def test_sharding(small_table, tmp_path) -> None:
    m = build_dataset(_cfg(small_table, max_proteins=40, shard_size=100), tmp_path / "s", tool=KmerSearch())
    files = m["files"]["records"]["train"]
    assert len(files) > 1 and files[0] == "records/train-00000.jsonl" and files[1] == "records/train-00001.jsonl"
    assert all(len((tmp_path / "s" / f).read_text().splitlines()) <= 100 for f in files)


def test_bad_inputs_are_skipped_with_reasons_or_one_line_errors(tmp_path) -> None:
    header, rows = _table_rows(30)
    bad = tmp_path / "table.tsv"
    broken = rows[3].split("\t")
    broken[-1] = "MKV1*&\n"  # not a sequence
    short = rows[4].split("\t")[:5]  # too few fields
    bad.write_text(header + "".join(rows[:3]) + "\t".join(broken) + "\t".join(short) + "\n" + "".join(rows[5:])
                   + rows[0])  # the last row repeats an accession
    m = build_dataset(DataConfig(sources=[str(bad)]), tmp_path / "out", tool=KmerSearch())
    assert m["skipped"]["bad sequence"] == 1 and m["skipped"]["malformed row"] == 1
    assert m["skipped"]["duplicate accession"] == 1
    assert sum(m["counts"]["proteins"].values()) == 28
    # a gzip cut short keeps the complete rows before the break
    gz = tmp_path / "cut.tsv.gz"
    data = gzip.compress((header + "".join(rows)).encode())
    gz.write_bytes(data[: len(data) * 2 // 3])
    m = build_dataset(DataConfig(sources=[str(gz)]), tmp_path / "cut", tool=KmerSearch())
    assert m["skipped"].get("truncated input") == 1 and 0 < sum(m["counts"]["proteins"].values()) < 30
    # unusable inputs: one-line errors, and an existing dataset is left as it was
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\nworld\n")
    before = (tmp_path / "out" / "manifest.json").read_bytes()
    for src, msg in ((empty, "empty file"), (junk, "unrecognised protein file"),
                     (tmp_path / "missing.tsv", "no such file")):
        with pytest.raises(InputError, match=msg) as e:
            build_dataset(DataConfig(sources=[str(src)]), tmp_path / "out", tool=KmerSearch())
        assert "\n" not in str(e.value)
    assert (tmp_path / "out" / "manifest.json").read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp dirs left behind


def test_cli_errors_are_one_line(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.fasta"
    empty.write_text("")
    assert main(["data", "build", "-o", str(tmp_path / "x"), "--source", str(empty)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sepit: error:") and "empty" in err[0]
    assert main(["data", "stats", str(tmp_path)]) == 1
    assert "not a sepit dataset" in capsys.readouterr().err


def test_cli_stats_and_show(built, capsys) -> None:
    out, m = built
    assert main(["data", "stats", str(out)]) == 0
    text = capsys.readouterr().out
    assert "go_mf" in text and "length histogram" in text and str(m["counts"]["records"]["train"]) in text
    assert main(["data", "show", str(out), "2", "--task", "ec", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(json.loads(x)["task"] == "ec" for x in lines)


def _need_mmseqs() -> None:
    if shutil.which("mmseqs") is None:
        pytest.fail("mmseqs is not installed: apt-get install mmseqs2 (scripts/setup.sh does it)")


@pytest.mark.slow
@pytest.mark.parametrize("method", ["all_vs_all", "clustered"])
def test_cli_build_with_real_mmseqs_is_deterministic_across_processes(tmp_path, method) -> None:
    _need_mmseqs()
    outs = []
    for hashseed in ("1", "2"):
        out = tmp_path / f"ds{hashseed}"
        env = {**os.environ, "PYTHONHASHSEED": hashseed, "SEPIT_NO_PROGRESS": "1"}
        r = subprocess.run([sys.executable, "-m", "sepit.cli", "data", "build", "-o", str(out), "--max-proteins",
                            "250", "--seed", "7", f"split.method={method}"], capture_output=True, text=True, env=env,
                           timeout=600, check=False)
        assert r.returncode == 0, r.stderr[-2000:]
        assert "wrote" in r.stdout
        outs.append(out)
    a, b = outs
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for f in files:
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    ds = InstructionDataset(a)
    assert ds.manifest["versions"]["mmseqs"] != "unavailable"
    assert {s["method"] for s in ds.manifest["splits"].values()} == {method}
    held = [ds.protein_info(p) for p in ds.protein_ids() if ds.protein_info(p)["split"] != "train"]
    assert held and max(p["max_identity_to_train"] for p in held) <= 0.3


def test_build_from_flat_files_fasta_and_real_structure_files(repo_root, tmp_path) -> None:
    """UniProt flat files + a FASTA as sources, structures parsed from real PDB/mmCIF files through a mapping TSV."""
    sdir = repo_root / "tests" / "data" / "structures"
    rows = [ln.split("\t") for ln in (sdir / "sequences.tsv").read_text().splitlines()[1:] if ln.strip()]
    fasta = tmp_path / "structured.fasta"
    fasta.write_text("".join(f">sp|{acc}|X_HUMAN protein\n{seq}\n" for acc, seq in rows))
    flat = sorted(str(p) for p in (repo_root / "tests" / "data" / "uniprot").glob("*.txt"))
    cfg = DataConfig(sources=[*flat, str(fasta)], structures=str(sdir), structure_map=str(sdir / "chains.tsv"),
                     split=SplitConfig(valid_fraction=0.2, test_fraction=0.2))
    m = build_dataset(cfg, tmp_path / "ds", tool=KmerSearch())
    ds = InstructionDataset(tmp_path / "ds")
    assert {s["role"] for s in m["sources"]} >= {"proteins", "structure_map", "structure_files"}
    assert m["counts"]["structures"] >= 3
    structured = [p for p in ds.protein_ids() if ds.protein_info(p)["has_structure"]]
    for pid in structured:
        p = ds.protein(pid)
        assert p.coords.shape == (len(p.sequence), 3) and 0 < p.mask.mean() <= 1
    tasks = {r.task for r in ds.records()}
    assert {"function", "location", "keywords", "secondary_structure", "caption"} <= tasks
    captions = [r.answer for r in ds.records(kinds=["caption"]) if r.protein_ids[0] in structured]
    assert any("An experimental structure is available (PDB" in c for c in captions)


class KmerClusters(KmerSearch):
    """:class:`KmerSearch` that also clusters (connected components of its hits); it can die in its Nth leak
    search, as a build killed after hours would."""

    def __init__(self, die_in: int | None = None) -> None:
        self.die_in, self.clusterings, self.searches = die_in, 0, 0

    def cluster(self, fasta: Path, identity: float, coverage: float) -> dict[str, str]:
        from sepit.data.split import clusters_from_hits

        self.clusterings += 1
        hits = self.search(fasta, fasta, coverage)
        ids = [ln[1:] for ln in fasta.read_text().split() if ln.startswith(">")]
        return clusters_from_hits(ids, hits, identity, coverage)

    def leak_search(self, query_fasta: Path, target_fasta: Path, out: Path, min_qcov: float,
                    max_hits: int | None = None, identity: float | None = None) -> Path:
        self.searches += 1
        if self.searches == self.die_in:
            raise KeyboardInterrupt
        return super().leak_search(query_fasta, target_fasta, out, min_qcov, max_hits, identity)


def test_interrupted_clustered_build_resumes_its_split_and_cleans_up(small_table, tmp_path) -> None:
    """Killed in the second threshold's leak search, a rebuild of the same output reuses the first threshold's
    split and the second's clusters (saved beside the output), writes the same dataset as an uninterrupted build,
    and removes the saved progress."""
    from sepit.data.build import split_state_dir

    cfg = _cfg(small_table, split=SplitConfig(valid_fraction=0.2, test_fraction=0.2, method="clustered"))
    ref_tool = KmerClusters()
    build_dataset(cfg, tmp_path / "ref", tool=ref_tool)
    assert ref_tool.clusterings == 2 and ref_tool.searches >= 2  # one clustering per threshold (0.3, 0.5)
    out = tmp_path / "ds"
    dying = KmerClusters(die_in=ref_tool.searches)  # the last leak search, in the 0.5 split
    with pytest.raises(KeyboardInterrupt):
        build_dataset(cfg, out, tool=dying)
    state = split_state_dir(out)
    assert not out.exists() and len(list(state.glob("0.3-*/result.json"))) == 1
    assert list(state.glob("0.5-*/clusters.json")) and not list(state.glob("0.5-*/result.json"))
    resumed = KmerClusters()
    build_dataset(cfg, out, tool=resumed)
    assert resumed.clusterings == 0 and resumed.searches == 1  # only the interrupted search is done again
    assert not state.exists()
    for f in sorted(p.relative_to(tmp_path / "ref") for p in (tmp_path / "ref").rglob("*") if p.is_file()):
        assert (out / f).read_bytes() == (tmp_path / "ref" / f).read_bytes(), f
