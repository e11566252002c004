"""Homology-aware splits (sepit.data.split) and the MMseqs2 wrapper (sepit.tools.mmseqs).

Fast tests feed hand-made alignment hits; the slow ones run the real ``mmseqs`` on real proteins from the embedded
default and check, with an independent search, that no held-out protein exceeds the threshold against train.
"""

from __future__ import annotations

import shutil
from itertools import islice
from pathlib import Path

import pytest

from sepit.data.build import default_data_dir
from sepit.data.readers import read_proteins
from sepit.data.split import (
    MMseqsTool,
    SplitResult,
    all_vs_all,
    assign_clusters,
    clustered_split,
    clusters_from_hits,
    find_leaks,
    make_split,
    search_leaks,
)
from sepit.tools import ToolError, mmseqs
from sepit.tools.mmseqs import Hit


def hit(q: str, t: str, ident: float, qcov: float = 1.0, tcov: float = 1.0) -> Hit:
    return Hit(q, t, ident, 100, qcov, tcov, 1e-20, 200.0)


def test_clusters_are_single_linkage_over_both_coverages() -> None:
    hits = {"A": [hit("A", "B", 0.4)], "B": [hit("B", "C", 0.35)], "D": [hit("D", "A", 0.9, tcov=0.5)],
            "E": [hit("E", "F", 0.2)]}
    c = clusters_from_hits("ABCDEF", hits, identity=0.3, coverage=0.8)
    assert c["A"] == c["B"] == c["C"] == "A"  # chained A-B-C, the smallest id represents
    assert c["D"] == "D" and c["E"] == "E" and c["F"] == "F"  # low coverage / low identity: no link


def test_eval_clusters_go_to_test_and_assignment_is_seeded() -> None:
    cluster_of = {f"P{i}": f"P{i - i % 3}" for i in range(300)}
    a = assign_clusters(cluster_of, {"P4"}, valid_fraction=0.1, test_fraction=0.1, seed=0)
    assert a["P3"] == a["P4"] == a["P5"] == "test"
    for i in range(0, 300, 3):  # clusters stay whole
        assert a[f"P{i}"] == a[f"P{i + 1}"] == a[f"P{i + 2}"]
    assert a == assign_clusters(cluster_of, {"P4"}, valid_fraction=0.1, test_fraction=0.1, seed=0)
    assert a != assign_clusters(cluster_of, {"P4"}, valid_fraction=0.1, test_fraction=0.1, seed=1)
    counts = {s: list(a.values()).count(s) for s in ("train", "valid", "test")}
    assert 180 <= counts["train"] <= 270 and counts["valid"] > 0
    with pytest.raises(ValueError):
        assign_clusters(cluster_of, set(), valid_fraction=0.6, test_fraction=0.5, seed=0)


def test_leaks_move_whole_clusters_to_train_or_drop_homologs_of_eval_proteins() -> None:
    ids = [f"P{i:03d}" for i in range(200)]
    # P000 is a fragment of P001 (covers all of P000, 30% of P001): not one cluster, but a leak if they split.
    # E is an eval protein with a training-side homolog T (fragment-like too).
    hits = {"P000": [hit("P000", "P001", 0.95, qcov=1.0, tcov=0.3)], "E": [hit("E", "T", 0.6, qcov=0.9, tcov=0.4)]}
    dropped_t = moved = 0
    for seed in range(40):
        res = make_split([*ids, "E", "T"], {"E"}, hits, 0.3, valid_fraction=0.2, test_fraction=0.2, seed=seed)
        assert res.split["E"] == "test"
        assert ("T" in res.dropped) == ("T" not in res.split)  # T never stays in train beside its eval homolog
        assert res.split.get("T", "dropped") != "train"
        dropped_t += "T" in res.dropped
        moved += res.moved
        assert not find_leaks(res.split, {**hits, "P001": [hit("P001", "P000", 0.95, qcov=0.3, tcov=1.0)]}, 0.3,
                              0.8)
        if res.split["P000"] != "train":
            assert res.split["P001"] != "train"
        for acc, s in res.split.items():
            if s != "train":
                assert res.max_identity[acc] <= 0.3
    assert res.cluster_of["P000"] != res.cluster_of["P001"]
    assert dropped_t > 0 and moved > 0  # both remedies were exercised


def test_missing_mmseqs_is_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SEPIT_MMSEQS", str(tmp_path / "nope"))
    with pytest.raises(ToolError, match="apt-get install mmseqs2"):
        mmseqs.mmseqs_binary()
    monkeypatch.delenv("SEPIT_MMSEQS")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolError, match="mmseqs not found on PATH"):
        mmseqs.cluster(tmp_path / "x.fasta", 0.3)


def _real_proteins(n: int):
    d = default_data_dir()
    return list(islice(read_proteins(d / "proteins.tsv.xz", human=d / "human.tsv.xz"), n))


def _need_mmseqs() -> None:
    if shutil.which("mmseqs") is None:
        pytest.fail("mmseqs is not installed: apt-get install mmseqs2 (scripts/setup.sh does it)")


def _real_split_inputs(n: int) -> tuple[dict[str, str], set[str]]:
    """Sequences and eval accessions of the first ``n`` embedded proteins (MMseqs2 must be installed)."""
    _need_mmseqs()
    entries = _real_proteins(n)
    eval_ids = {e.accession for e in entries if e.split_hint == "eval"}
    assert eval_ids, "the subset should hold eval proteins"
    return {e.accession: e.sequence for e in entries}, eval_ids


@pytest.mark.slow
def test_real_mmseqs_split_has_no_test_protein_above_threshold_against_train(tmp_path) -> None:
    seqs, eval_ids = _real_split_inputs(700)
    hits = all_vs_all(seqs, 0.8)
    for identity in (0.3, 0.5):  # as the builder does: clusters from all-vs-all hits, then the leak search
        res = make_split(seqs, eval_ids, hits, identity, valid_fraction=0.1, test_fraction=0.1, seed=0)
        res = search_leaks(res, seqs, eval_ids, MMseqsTool(), hits=hits)
        _check_split_independently(tmp_path / f"t{identity}", seqs, eval_ids, res)


@pytest.mark.slow
def test_real_mmseqs_search_keeps_a_hit_covering_the_query_through_an_insertion(tmp_path) -> None:
    """P34313 (147 aa) aligns over 97% of its length to the shorter Q6PGH1 (103 aa): MMseqs2's own ``-c 0.8
    --cov-mode 2`` loses this hit (it skips targets shorter than 0.8 × the query); sepit's coverage filter keeps it."""
    _need_mmseqs()
    pair = Path(__file__).parent / "data" / "uniprot" / "insertion_pair.fasta"
    seqs = dict(zip(*[iter(w.lstrip(">") for w in pair.read_text().split())] * 2))
    q, t = tmp_path / "q.fasta", tmp_path / "t.fasta"
    mmseqs.write_fasta([("P34313", seqs["P34313"])], q)
    mmseqs.write_fasta([("Q6PGH1", seqs["Q6PGH1"])], t)
    found = mmseqs.search(q, t, min_qcov=0.8)["P34313"]
    assert [h.target for h in found] == ["Q6PGH1"] and found[0].qcov >= 0.95 and found[0].identity > 0.4
    assert not mmseqs.search(q, t, min_qcov=0.99)  # the filter does filter
    # and the split sees it: with the two in different clusters, P34313 held out is a leak
    res = SplitResult(identity=0.3, coverage=0.8, split={"P34313": "test", "Q6PGH1": "train"}, max_identity={},
                      cluster_of={"P34313": "P34313", "Q6PGH1": "Q6PGH1"})
    out = search_leaks(res, seqs, set(), MMseqsTool())
    assert out.moved == 1 and out.split == {"P34313": "train", "Q6PGH1": "train"}


def test_search_leaks_finds_what_the_clustering_search_missed() -> None:
    """All-vs-all hits make the clusters; the (more sensitive) leak search finds a homolog they missed, and the
    remaining held-out proteins are searched again against the cluster that moved."""
    ids = [f"P{i:03d}" for i in range(60)]
    seqs = {a: "MKV" for a in ids}
    known = {"P000": [hit("P000", "P001", 0.9)]}  # P000 + P001 one cluster
    missed = [hit(f"P{i:03d}", f"P{i + 1:03d}", 0.5, qcov=1.0, tcov=0.4) for i in range(10, 20)]  # a fragment chain
    missed.append(hit("P030", "P031", 0.25))  # below the threshold: recorded, not a leak
    seen = 0
    for seed in range(40):
        base = make_split(ids, set(), known, 0.3, valid_fraction=0.3, test_fraction=0.3, seed=seed)
        assert base.moved == 0
        tool = FakeClusterTool({}, missed)
        res = search_leaks(base, seqs, set(), tool, hits=known)
        assert res.cluster_of == base.cluster_of and res.method == base.method
        first_q, first_t, _ = tool.calls[0]
        assert first_q == {a for a, s in base.split.items() if s != "train"}
        assert first_t == {a for a, s in base.split.items() if s == "train"}
        assert not find_leaks(res.split, {h.query: [h] for h in missed}, 0.3, 0.8)
        held = {a for a, s in res.split.items() if s != "train"}
        assert set(res.max_identity) == held and all(v <= 0.3 for v in res.max_identity.values())
        if res.split["P030"] != "train" and res.split["P031"] == "train":
            assert res.max_identity["P030"] == 0.25
        seen += res.moved > 0 and len(tool.calls) > 1
    assert seen  # leaks were found by the search alone and needed more than one round


def _check_split_independently(tmp, seqs, eval_ids, res) -> None:
    """Eval proteins in test, both sides non-empty, and a fresh exhaustive search (no prefilter) of held-out vs train
    finds no alignment above the threshold covering ≥ 80% of the held-out protein."""
    held = {a for a, s in res.split.items() if s != "train"}
    train = {a for a, s in res.split.items() if s == "train"}
    assert eval_ids <= {a for a, s in res.split.items() if s == "test"} and held and train
    tmp.mkdir()
    q, t = tmp / "held.fasta", tmp / "train.fasta"
    mmseqs.write_fasta(((a, seqs[a]) for a in sorted(held)), q)
    mmseqs.write_fasta(((a, seqs[a]) for a in sorted(train)), t)
    check = mmseqs.search(q, t, exhaustive=True)
    worst = max((h.identity for lst in check.values() for h in lst if h.qcov >= 0.8), default=0.0)
    assert worst <= res.identity, f"held-out protein at {worst:.2f} identity to train (threshold {res.identity})"
    assert set(res.max_identity) == held and max(res.max_identity.values()) <= res.identity


@pytest.mark.slow
def test_real_mmseqs_cluster_and_search_wrappers(tmp_path) -> None:
    _need_mmseqs()
    entries = _real_proteins(60)
    fa = tmp_path / "x.fasta"
    assert mmseqs.write_fasta(((e.accession, e.sequence) for e in entries), fa) == 60
    reps = mmseqs.cluster(fa, 0.5, cluster_mode=1)
    assert set(reps) == {e.accession for e in entries} and set(reps.values()) <= set(reps)
    hits = mmseqs.search(fa, fa)
    top = mmseqs.top_hits(hits)
    for e in entries:  # every protein finds itself, identical
        assert any(h.target == e.accession and h.identity == 1.0 for h in hits[e.accession])
    assert all(0.0 <= h.identity <= 1.0 for h in top.values())
    assert mmseqs.version()
    empty = tmp_path / "empty.fasta"
    empty.write_text("")
    with pytest.raises(ToolError, match="empty FASTA"):
        mmseqs.search(empty, fa)


class FakeClusterTool:
    """Stands in for MMseqs2 in :func:`clustered_split`: fixed clusters and hits, written as MMseqs2 would."""

    def __init__(self, clusters: dict[str, str], hits: list[Hit]) -> None:
        self.clusters, self.hits, self.calls = clusters, hits, []

    def cluster(self, fasta, identity, coverage):
        return dict(self.clusters)

    def leak_search(self, query_fasta, target_fasta, out, min_qcov, max_hits=None, identity=None):
        q, t = _fasta_ids(query_fasta), _fasta_ids(target_fasta)
        self.calls.append((q, t, max_hits))
        both = [*self.hits, *(Hit(h.target, h.query, h.identity, h.aln_len, h.tcov, h.qcov, h.evalue, h.bits)
                              for h in self.hits)]  # found from either side, as MMseqs2 would
        mmseqs.write_hits(out, (h for h in both if h.query in q and h.target in t))
        return out


def _fasta_ids(path) -> set[str]:
    return {ln[1:].strip() for ln in Path(path).read_text().splitlines() if ln.startswith(">")}


def test_clustered_split_searches_held_out_against_train_until_nothing_leaks() -> None:
    ids = [f"P{i:03d}" for i in range(200)] + ["E", "T"]
    seqs = {a: "MKV" for a in ids}
    clusters = {a: a for a in ids}
    clusters.update({"P011": "P010", "P012": "P010"})  # one cluster of three (the tool's representative: P010)
    hits = [hit("P000", "P001", 0.95, qcov=1.0, tcov=0.3), hit("P001", "P000", 0.95, qcov=0.3, tcov=1.0),
            hit("E", "T", 0.6, qcov=0.9, tcov=0.4), hit("P050", "P051", 0.25), hit("P051", "P050", 0.25)]
    # a chain of fragments: P100 ⊂ P101 ⊂ ... ⊂ P109; moving one to train can make the next one leak
    hits += [hit(f"P{i}", f"P{i + 1}", 0.9, qcov=1.0, tcov=0.5) for i in range(100, 109)]
    dropped_t = moved = rounds = turned = 0
    for seed in range(60):
        tool = FakeClusterTool(clusters, hits)
        res = clustered_split(seqs, {"E"}, 0.3, valid_fraction=0.3, test_fraction=0.3, seed=seed, tool=tool)
        assert res.method == "clustered"
        initial = assign_clusters(res.cluster_of, {"E"}, valid_fraction=0.3, test_fraction=0.3, seed=seed)
        first_q, first_t, depth = tool.calls[0]
        assert first_q == {a for a, s in initial.items() if s != "train"}  # held-out candidates ...
        assert first_t == {a for a, s in initial.items() if s == "train"}  # ... against training proteins only
        assert depth is None  # the tool's own depth
        for q, t, depth in tool.calls[1:]:  # later rounds: only the newly moved proteins, ...
            new = q if depth is not None else t  # ... few of them searched turned round, keeping every hit
            assert new and not new & first_t and all(res.split.get(a) == "train" for a in new)
            if depth is not None:
                assert depth == len(t) and 20 * len(q) <= len(t)
                turned += 1
        rounds = max(rounds, len(tool.calls))
        held = {a for a, s in res.split.items() if s != "train"}
        for h in hits:  # brute force: no held-out protein keeps a training homolog above the threshold
            assert not (h.query in held and res.split.get(h.target) == "train" and h.identity > 0.3
                        and h.qcov >= 0.8), (seed, h)
        assert res.split["E"] == "test" and res.split.get("T", "dropped") != "train"
        assert len({res.split[a] for a in ("P010", "P011", "P012")}) == 1  # clusters stay whole
        assert res.cluster_of["P011"] == "P010"
        if res.split["P050"] != "train" and res.split["P051"] == "train":
            assert res.max_identity["P050"] == 0.25  # identity to train is recorded below the threshold too
        assert all(v <= 0.3 for v in res.max_identity.values())
        dropped_t += "T" in res.dropped
        moved += res.moved
    assert dropped_t > 0 and moved > 0 and rounds >= 3 and turned > 0  # every path was exercised


@pytest.mark.slow
def test_real_mmseqs_clustered_split_has_no_test_protein_above_threshold(tmp_path) -> None:
    seqs, eval_ids = _real_split_inputs(700)
    res = clustered_split(seqs, eval_ids, 0.3, valid_fraction=0.1, test_fraction=0.1, seed=0)
    _check_split_independently(tmp_path / "clustered", seqs, eval_ids, res)


def test_leak_search_depth_is_its_own_option_from_config_to_mmseqs(monkeypatch, tmp_path) -> None:
    """``split.leak_max_hits`` (1,000 by default) reaches MMseqs2's ``--max-seqs`` of the leak searches, and
    ``split.max_hits`` that of the all-vs-all search: on the full 2014 set 300 leak hits missed 4 of 16 leaks."""
    from sepit.config import from_dict
    from sepit.data.build import build_dataset
    from sepit.data.config import DataConfig
    from sepit.errors import ConfigError

    calls: list[tuple[str, int]] = []

    def fake_search_to_file(query, target, out, **kw):  # no hits: every protein its own cluster
        calls.append((Path(query).name, kw["max_seqs"]))
        Path(out).write_text("")
        return Path(out)

    monkeypatch.setattr(mmseqs, "search_to_file", fake_search_to_file)
    assert DataConfig().split.leak_max_hits == 1000 and MMseqsTool().leak_max_hits == 1000
    cfg = from_dict(DataConfig, {}, ["max_proteins=60", "split.max_hits=5", "split.leak_max_hits=7",
                                     "split.extra_identities=[]"])
    build_dataset(cfg, tmp_path / "ds")
    assert calls[0] == ("all.fasta", 5)  # the all-vs-all search that makes the clusters
    assert calls[1:] and all(depth == 7 for name, depth in calls[1:])  # held-out vs training rounds
    with pytest.raises(ConfigError, match="leak_max_hits"):
        from_dict(DataConfig, {}, ["split.leak_max_hits=0"])


class Interrupted(Exception):
    pass


def test_interrupted_clustered_split_resumes_from_its_saved_clusters_and_rounds(tmp_path) -> None:
    """A split killed during its second leak search goes on from the saved clusters and first round (neither redone,
    the half-written second round never read) and ends with the result of an uninterrupted split."""
    from sepit.data.split_state import SplitState

    ids = [f"P{i:03d}" for i in range(120)] + ["E", "T"]
    seqs = {a: "MKV" for a in ids}
    clusters = {a: a for a in ids}
    hits = [hit("E", "T", 0.6, qcov=0.9, tcov=0.4)]
    hits += [hit(f"P{i}", f"P{i + 1}", 0.9, qcov=1.0, tcov=0.5) for i in range(100, 109)]  # fragment chain: rounds
    kw = {"valid_fraction": 0.3, "test_fraction": 0.3}
    for seed in range(100):  # a seed whose split takes three rounds or more
        ref_tool = FakeClusterTool(clusters, hits)
        reference = clustered_split(seqs, {"E"}, 0.3, seed=seed, tool=ref_tool, **kw)
        if len(ref_tool.calls) >= 3:
            break
    assert len(ref_tool.calls) >= 3

    class DiesInRound2(FakeClusterTool):
        def leak_search(self, query_fasta, target_fasta, out, min_qcov, max_hits=None, identity=None):
            if len(self.calls) == 1:
                Path(out).write_text("P100\tP101\t0.9\t100\t1.0\t0.5\t1e-20\t200.0\n")  # half a round
                raise Interrupted
            return super().leak_search(query_fasta, target_fasta, out, min_qcov, max_hits, identity)

    state = SplitState(tmp_path / "state")
    with pytest.raises(Interrupted):
        clustered_split(seqs, {"E"}, 0.3, seed=seed, tool=DiesInRound2(clusters, hits), state=state, **kw)
    assert state.clusters() == clusters and state.progress()["rounds"] == 1
    assert state.round_file(0).is_file() and not state.round_file(1).exists() and state.result() is None

    class NoClustering(FakeClusterTool):
        def cluster(self, fasta, identity, coverage):
            raise AssertionError("the clusters were saved: not clustered again")

    resumed_tool = NoClustering(clusters, hits)
    resumed = clustered_split(seqs, {"E"}, 0.3, seed=seed, tool=resumed_tool, state=state, **kw)
    assert resumed_tool.calls == ref_tool.calls[1:]  # round 1 not searched again
    assert resumed == reference
    done_tool = NoClustering(clusters, hits)
    assert clustered_split(seqs, {"E"}, 0.3, seed=seed, tool=done_tool, state=state, **kw) == reference
    assert done_tool.calls == []  # a finished split is read back whole


def test_interrupted_leak_search_resumes_from_its_last_saved_part(tmp_path, monkeypatch) -> None:
    """With a state, a round's held-out proteins are searched in parts, each saved: killed in the third part, the
    split searches only the parts not done, and the round's hits are the same as one search's."""
    from sepit.data import split as split_mod
    from sepit.data.split_state import SplitState

    monkeypatch.setattr(split_mod, "CHUNK_QUERIES", 20)
    ids = [f"P{i:03d}" for i in range(150)]
    seqs = {a: "MKV" for a in ids}
    hits = [hit(f"P{i:03d}", f"P{i + 1:03d}", 0.9, qcov=1.0, tcov=0.5) for i in range(0, 148, 2)]
    kw = {"valid_fraction": 0.3, "test_fraction": 0.3, "seed": 3}
    ref_tool = FakeClusterTool({}, hits)
    reference = clustered_split(seqs, set(), 0.3, tool=ref_tool, **kw)
    n_held = len(ref_tool.calls[0][0])
    assert n_held > 40 and reference.moved > 0  # three parts or more in the first round, and leaks found

    class DiesInPart3(FakeClusterTool):
        def leak_search(self, query_fasta, target_fasta, out, min_qcov, max_hits=None, identity=None):
            if len(self.calls) == 2:
                raise Interrupted
            return super().leak_search(query_fasta, target_fasta, out, min_qcov, max_hits, identity)

    state = SplitState(tmp_path / "state")
    dying = DiesInPart3({}, hits)
    with pytest.raises(Interrupted):
        clustered_split(seqs, set(), 0.3, tool=dying, state=state, **kw)
    assert [len(q) for q, _, _ in dying.calls] == [20, 20]
    assert state.chunk_file(0, 0).is_file() and state.chunk_file(0, 1).is_file()
    assert not state.chunk_file(0, 2).exists() and state.progress() is None
    resumed_tool = FakeClusterTool({}, hits)
    resumed = clustered_split(seqs, set(), 0.3, tool=resumed_tool, state=state, **kw)
    first_round = [q for q, t, _ in resumed_tool.calls if t == ref_tool.calls[0][1]]
    assert sum(map(len, first_round)) == n_held - 40  # the two saved parts were not searched again
    assert resumed == reference
    assert not list(state.root.glob("round*.part*"))  # the parts became whole rounds
