"""The split's optional DIAMOND leak search (``split.leak_tool=diamond``): wrapper, config path, real splits."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_split import _check_split_independently, _real_split_inputs

from sepit.config import from_dict
from sepit.data.build import build_dataset, leak_tool_of
from sepit.data.config import DataConfig
from sepit.data.split import MMseqsTool, SplitResult, clustered_split, search_leaks
from sepit.errors import ConfigError
from sepit.tools import ToolError, diamond, mmseqs


def _need_diamond() -> None:
    if shutil.which("diamond") is None:
        pytest.fail("diamond is not installed: apt-get install diamond-aligner (scripts/setup.sh does it)")


def test_missing_diamond_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SEPIT_DIAMOND", str(tmp_path / "nope"))
    with pytest.raises(ToolError, match="apt-get install diamond-aligner"):
        diamond.diamond_binary()
    monkeypatch.delenv("SEPIT_DIAMOND")
    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "q.fasta").write_text(">a\nMKV\n")
    with pytest.raises(ToolError, match="diamond not found on PATH"):
        diamond.search_to_file(tmp_path / "q.fasta", tmp_path / "q.fasta", tmp_path / "out.m8")


def test_leak_tool_option_reaches_diamond_and_keys_the_saved_state(monkeypatch, tmp_path) -> None:
    """``split.leak_tool=diamond`` sends every leak round (not the clustering search) to DIAMOND with
    ``split.leak_max_hits``, the manifest names DIAMOND's version, and an unknown tool is a config error."""
    calls: list[tuple[str, int]] = []

    def fake_mmseqs(query, target, out, **kw):  # the all-vs-all search: no hits, every protein its own cluster
        calls.append(("mmseqs", kw["max_seqs"]))
        Path(out).write_text("")
        return Path(out)

    def fake_diamond(query, target, out, **kw):
        calls.append(("diamond", kw["max_seqs"]))
        Path(out).write_text("")
        return Path(out)

    monkeypatch.setattr(mmseqs, "search_to_file", fake_mmseqs)
    monkeypatch.setattr(diamond, "search_to_file", fake_diamond)
    monkeypatch.setattr(diamond, "version", lambda: "diamond version 9.9.9")
    assert DataConfig().split.leak_tool == "auto"
    cfg = from_dict(DataConfig, {}, ["max_proteins=60", "split.leak_max_hits=7", "split.extra_identities=[]",
                                     "split.leak_tool=diamond"])
    manifest = build_dataset(cfg, tmp_path / "ds")
    assert calls[0][0] == "mmseqs" and calls[1:] and all(c == ("diamond", 7) for c in calls[1:])
    assert manifest["versions"]["diamond"] == "9.9.9" and manifest["splits"]["0.3"]["leak_search"] == "diamond"
    assert manifest["splits"]["0.3"]["leak_realign_margin"] == diamond.REALIGN_MARGIN
    assert json.loads((tmp_path / "ds" / "manifest.json").read_text())["versions"]["diamond"] == "9.9.9"
    # auto: MMseqs2 for an all-vs-all split, DIAMOND once the set is large enough to be clustered
    calls.clear()
    small = build_dataset(from_dict(DataConfig, {}, ["max_proteins=60", "split.extra_identities=[]",
                                                     "split.leak_tool=auto"]), tmp_path / "auto-small")
    assert calls and all(c[0] == "mmseqs" for c in calls) and "diamond" not in small["versions"]
    assert small["splits"]["0.3"]["leak_search"] == "mmseqs" and "leak_realign_margin" not in small["splits"]["0.3"]
    auto = from_dict(DataConfig, {}, ["split.leak_tool=auto"])
    assert leak_tool_of(auto, "clustered") == "diamond" and leak_tool_of(auto, "all_vs_all") == "mmseqs"
    assert leak_tool_of(DataConfig(), "clustered") == "diamond"
    assert leak_tool_of(from_dict(DataConfig, {}, ["split.leak_tool=mmseqs"]), "clustered") == "mmseqs"
    with pytest.raises(ConfigError, match="leak_tool"):
        from_dict(DataConfig, {}, ["split.leak_tool=blast"])


@pytest.mark.slow
def test_real_diamond_search_keeps_a_hit_covering_the_query_through_an_insertion(tmp_path) -> None:
    """The P34313 / Q6PGH1 pair (49% over 97% of P34313, the shorter Q6PGH1 as target): DIAMOND's hit comes out
    as a fraction identity and coverage, and the split moves P34313 held out against Q6PGH1 in train."""
    _need_diamond()
    pair = Path(__file__).parent / "data" / "uniprot" / "insertion_pair.fasta"
    seqs = dict(zip(*[iter(w.lstrip(">") for w in pair.read_text().split())] * 2))
    q, t = tmp_path / "q.fasta", tmp_path / "t.fasta"
    mmseqs.write_fasta([("P34313", seqs["P34313"])], q)
    mmseqs.write_fasta([("Q6PGH1", seqs["Q6PGH1"])], t)
    found = list(mmseqs.read_hits(diamond.search_to_file(q, t, tmp_path / "hits.m8", min_qcov=0.8)))
    assert [h.target for h in found] == ["Q6PGH1"] and found[0].qcov >= 0.9 and 0.4 < found[0].identity < 0.6
    assert not list(mmseqs.read_hits(diamond.search_to_file(q, t, tmp_path / "none.m8", min_qcov=0.99)))
    res = SplitResult(identity=0.3, coverage=0.8, split={"P34313": "test", "Q6PGH1": "train"}, max_identity={},
                      cluster_of={"P34313": "P34313", "Q6PGH1": "Q6PGH1"})
    out = search_leaks(res, seqs, set(), MMseqsTool(leak_tool="diamond"))
    assert out.moved == 1 and out.split == {"P34313": "train", "Q6PGH1": "train"}


@pytest.mark.slow
def test_real_diamond_clustered_split_has_no_test_protein_above_threshold(tmp_path) -> None:
    """700 real proteins, MMseqs2 clusters + DIAMOND leak rounds; checked by MMseqs2's exhaustive search."""
    _need_diamond()
    seqs, eval_ids = _real_split_inputs(700)
    res = clustered_split(seqs, eval_ids, 0.3, valid_fraction=0.1, test_fraction=0.1, seed=0,
                          tool=MMseqsTool(leak_tool="diamond"))
    assert res.moved > 0
    _check_split_independently(tmp_path / "clustered", seqs, eval_ids, res)


def _threshold_pairs(tmp_path: Path) -> tuple[dict[str, str], Path, Path]:
    """P04551 / P70218 and P46425 / O65857 (tests/data/uniprot/README.md): held-out FASTA, training FASTA."""
    path = Path(__file__).parent / "data" / "uniprot" / "threshold_pairs.fasta"
    seqs = dict(mmseqs._records(path, {"P04551", "P70218", "P46425", "O65857"}))
    q, t = tmp_path / "held.fasta", tmp_path / "train.fasta"
    mmseqs.write_fasta([(a, seqs[a]) for a in ("P04551", "P46425")], q)
    mmseqs.write_fasta([(a, seqs[a]) for a in ("P70218", "O65857")], t)
    return seqs, q, t


def test_align_pairs_gives_the_alignments_mmseqs_search_gives(tmp_path) -> None:
    _, q, t = _threshold_pairs(tmp_path)
    searched = {(h.query, h.target): h for h in
                mmseqs.read_hits(mmseqs.search_to_file(q, t, tmp_path / "s.m8", sensitivity=7.5))}
    pairs = [("P04551", "P70218"), ("P46425", "O65857"), ("P46425", "P70218")]
    aligned = {(h.query, h.target): h for h in mmseqs.read_hits(mmseqs.align_pairs(q, t, pairs, tmp_path / "a.m8"))}
    assert set(aligned) <= set(pairs) and {("P04551", "P70218"), ("P46425", "O65857")} <= set(aligned)
    for k, h in aligned.items():
        s = searched[k]
        assert (h.identity, h.aln_len, h.qcov, h.tcov) == (s.identity, s.aln_len, s.qcov, s.tcov)
    assert mmseqs.align_pairs(q, t, [], tmp_path / "none.m8").read_text() == ""
    with pytest.raises(ToolError, match="1 of the ids to align are not in this FASTA"):
        mmseqs.align_pairs(q, t, [("P04551", "Q00000")], tmp_path / "x.m8")


def test_diamond_leak_search_realigns_pairs_near_the_threshold_with_mmseqs(tmp_path) -> None:
    """Both pairs are above 30% over ≥ 80% of the held-out protein by MMseqs2; DIAMOND alone aligns one short of 80%
    coverage and the other below 30%. Realigned, both are leaks, and the split moves both held-out proteins."""
    _need_diamond()
    seqs, q, t = _threshold_pairs(tmp_path)
    alone = list(mmseqs.read_hits(diamond.search_to_file(q, t, tmp_path / "d.m8", min_qcov=0.8)))
    assert not [h for h in alone if h.identity > 0.3]
    both = diamond.search_realigned(q, t, tmp_path / "r.m8", identity=0.3, min_qcov=0.8)
    leaks = {(h.query, h.target) for h in mmseqs.read_hits(both) if h.identity > 0.3 and h.qcov >= 0.8}
    assert leaks == {("P04551", "P70218"), ("P46425", "O65857")}
    assert diamond.search_realigned(q, t, tmp_path / "far.m8", identity=0.5, min_qcov=0.8).read_text() == \
        (tmp_path / "d.m8").read_text()  # nothing within 0.05 of 50%: DIAMOND's hits as they are
    split = {"P04551": "test", "P46425": "valid", "P70218": "train", "O65857": "train"}
    res = SplitResult(identity=0.3, coverage=0.8, split=split, max_identity={}, cluster_of={a: a for a in split})
    out = search_leaks(res, seqs, set(), MMseqsTool(leak_tool="diamond"))
    assert out.moved == 2 and set(out.split.values()) == {"train"}
