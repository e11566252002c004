"""Homology-aware train/valid/test splits: clusters go wholly to one split; no held-out protein keeps a training
protein above the identity threshold.

Per threshold ``t`` (e.g. 0.3) and coverage ``c`` (0.8):

1. Clusters: single linkage over pairs with identity ≥ ``t`` covering ≥ ``c`` of *both* sequences. Up to
   ``split.clustered_above`` proteins they are the connected components of one MMseqs2 all-vs-all search
   (``mmseqs easy-search``, serving every threshold); above it, ``mmseqs cluster --cluster-mode 1 --cov-mode 0``.
2. A cluster holding a protein marked ``eval`` in its source goes to ``test`` (eval proteins are never trained on).
   Every other cluster goes to valid/test/train by a hash of (seed, cluster representative) against the fractions.
3. A held-out (valid/test) protein with a training hit of identity > ``t`` covering ≥ ``c`` of the held-out protein
   is a leak (clusters ask for ``c`` of both sequences, so a fragment of a training protein gets here): its whole
   cluster moves to train. A cluster holding an eval protein cannot move: its training homologs are dropped instead.
   Leaks are looked for in the all-vs-all hits, then by searching the held-out proteins against the training
   proteins at a higher sensitivity (``split.leak_sensitivity``, MMseqs2 ``-s 7.5``, and ``split.leak_max_hits``,
   1,000 hits per protein; for large sets DIAMOND ``--very-sensitive``, ``split.leak_tool``, its hits near the
   threshold realigned by MMseqs2: :func:`sepit.tools.diamond.search_realigned`),
   then the remaining held-out proteins against each round's newly moved proteins, until a round finds none
   (:func:`search_leaks`). A round with few moved proteins searches them against the held-out ones
   instead (the same search from the other side, a fraction of the time: :data:`TURN_MAX_TARGETS`). Large splits
   save their progress as they go and resume after an interruption (:mod:`sepit.data.split_state`).

Each held-out protein's ``max_identity_to_train`` is its highest identity to a training protein over the alignments
found covering ≥ ``c`` of it (0.0 without one), so ``max_identity_to_train <= t`` for every held-out protein.
Identity = identical positions / alignment length (MMseqs2 ``fident``). Coverage is filtered on the reported
alignment, not by MMseqs2's ``-c`` in searches (see :func:`sepit.tools.mmseqs.search_to_file`).

The guarantee is as strong as the search: MMseqs2 is a heuristic, so a more sensitive search can still find a few
pairs (``benchmarks/bench_data.py --check`` measures how many on a sample)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from itertools import chain
from pathlib import Path
from typing import Protocol

from sepit.data.split_state import SplitState
from sepit.log import get_logger
from sepit.tools import diamond, mmseqs
from sepit.tools.mmseqs import Hit

log = get_logger(__name__)
SPLITS = ("train", "valid", "test")
MAX_ROUNDS = 100
# A leak-search round with at most this many new training proteins, and 20× as many held-out ones, is searched
# turned round: at -s 7.5 a query's cost is mostly its own similar k-mers, whatever the targets, so many held-out
# queries against few targets is the slow way round (measured in docs/benchmarks.md, 4a). Turned round, each training
# protein keeps every hit.
TURN_MAX_TARGETS = 1000
CHUNK_QUERIES = 20_000  # held-out proteins per saved part of a resumable leak search (its cost: docs/benchmarks.md 4a)


class LeakSearch(Protocol):
    """The search that decides leaks: held-out proteins against training proteins (or, turned round, a few training
    proteins against the held-out ones), hits written to ``out`` (MMseqs2 tab format,
    :func:`sepit.tools.mmseqs.read_hits`), those covering ≥ ``min_qcov`` of the query; ``max_hits`` per query
    (None: the tool's own depth); ``identity``: the leak threshold (a tool that aligns unlike MMseqs2 may check the
    pairs near it again)."""

    def leak_search(self, query_fasta: Path, target_fasta: Path, out: Path, min_qcov: float,
                    max_hits: int | None = None, identity: float | None = None) -> Path: ...


class HomologyTool(LeakSearch, Protocol):
    """What the splitter needs from a homology search (MMseqs2 by default; tests may pass their own)."""

    def search(self, query_fasta: Path, target_fasta: Path, min_qcov: float) -> dict[str, list[Hit]]: ...


@dataclass(frozen=True)
class MMseqsTool:
    """:class:`HomologyTool` running ``mmseqs easy-search`` (leak searches: MMseqs2 or DIAMOND, ``leak_tool``)."""

    threads: int | None = None
    sensitivity: float | None = None  # -s of the clustering (all-vs-all search or mmseqs cluster); None: default
    leak_sensitivity: float | None = 7.5  # -s of the held-out vs training searches (MMseqs2's most sensitive preset)
    tmp_dir: str | None = None
    max_hits: int = 300  # hits kept per query (MMseqs2 --max-seqs) of `search`: fewer = faster alignment
    leak_max_hits: int = 1000  # the same for `leak_search` (300 missed a quarter of the leaks on the full 2014 set)
    leak_tool: str = "mmseqs"  # or "diamond": `leak_search` by diamond.search_realigned (DIAMOND, then MMseqs2)

    def search(self, query_fasta: Path, target_fasta: Path, min_qcov: float) -> dict[str, list[Hit]]:
        return mmseqs.search(query_fasta, target_fasta, min_qcov=min_qcov, sensitivity=self.sensitivity,
                             max_seqs=self.max_hits, threads=self.threads, tmp_dir=self.tmp_dir)

    def cluster(self, fasta: Path, identity: float, coverage: float) -> dict[str, str]:
        """member → representative: connected components of pairs ≥ ``identity`` covering ≥ ``coverage`` of both."""
        return mmseqs.cluster(fasta, identity, coverage=coverage, cov_mode=0, cluster_mode=1,
                              sensitivity=self.sensitivity, threads=self.threads, tmp_dir=self.tmp_dir)

    def leak_search(self, query_fasta: Path, target_fasta: Path, out: Path, min_qcov: float,
                    max_hits: int | None = None, identity: float | None = None) -> Path:
        if self.leak_tool == "diamond":
            opts = {"min_qcov": min_qcov, "max_seqs": max_hits or self.leak_max_hits, "threads": self.threads,
                    "tmp_dir": self.tmp_dir}
            if identity is None:
                return diamond.search_to_file(query_fasta, target_fasta, out, **opts)
            return diamond.search_realigned(query_fasta, target_fasta, out, identity=identity, **opts)
        return mmseqs.search_to_file(query_fasta, target_fasta, out, min_qcov=min_qcov,
                                     sensitivity=self.leak_sensitivity, max_seqs=max_hits or self.leak_max_hits,
                                     threads=self.threads, tmp_dir=self.tmp_dir)


@dataclass
class SplitResult:
    """The split at one identity threshold. Dropped proteins are in ``dropped`` (with the reason), not ``split``."""

    identity: float
    coverage: float
    split: dict[str, str]
    max_identity: dict[str, float]
    cluster_of: dict[str, str]
    dropped: dict[str, str] = field(default_factory=dict)
    moved: int = 0  # held-out proteins moved to train because of a training homolog
    method: str = "all_vs_all"  # or "clustered" (clustered_split)

    @property
    def n_clusters(self) -> int:
        return len(set(self.cluster_of.values()))

    def counts(self) -> dict[str, int]:
        return split_counts(self.split)


def all_vs_all(sequences: Mapping[str, str], coverage: float, tool: HomologyTool | None = None,
               work_dir: str | Path | None = None) -> dict[str, list[Hit]]:
    """Every protein searched against all (self hits removed): query → hits covering ≥ ``coverage`` of it."""
    tool = tool or MMseqsTool()
    with tempfile.TemporaryDirectory(prefix="sepit-split-", dir=work_dir) as tmp:
        fa = Path(tmp) / "all.fasta"
        mmseqs.write_fasta(((a, sequences[a]) for a in sorted(sequences)), fa)
        log.info("searching %d proteins all against all for homology-aware splits", len(sequences))
        hits = tool.search(fa, fa, coverage)
    return {q: [h for h in lst if h.target != q and h.qcov >= coverage] for q, lst in hits.items()}


def clusters_from_hits(ids: Iterable[str], hits: Mapping[str, list[Hit]], identity: float,
                       coverage: float) -> dict[str, str]:
    """Single-linkage clusters (accession → representative = the cluster's smallest accession) over hits with
    identity ≥ ``identity`` covering ≥ ``coverage`` of both sequences, between proteins of ``ids``."""
    parent = {a: a for a in ids}

    def find(a: str) -> str:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for q, lst in hits.items():
        if q not in parent:
            continue
        for h in lst:
            if h.target in parent and h.identity >= identity and h.qcov >= coverage and h.tcov >= coverage:
                a, b = find(q), find(h.target)
                if a != b:
                    parent[max(a, b)] = min(a, b)  # smallest accession is the root: order-independent
    return {a: find(a) for a in parent}


def _unit(seed: int, key: str) -> float:
    """A deterministic number in [0, 1) for (seed, key)."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


def assign_clusters(cluster_of: Mapping[str, str], eval_ids: set[str] | frozenset[str], *, valid_fraction: float,
                    test_fraction: float, seed: int) -> dict[str, str]:
    """Accession → split: clusters with an eval protein → test; others by a seeded hash of the representative."""
    if valid_fraction < 0 or test_fraction < 0 or valid_fraction + test_fraction >= 1:
        raise ValueError("valid_fraction and test_fraction must be ≥ 0 and sum to < 1")
    has_eval = {cluster_of[a] for a in eval_ids if a in cluster_of}
    out: dict[str, str] = {}
    for acc, rep in cluster_of.items():
        if rep in has_eval:
            out[acc] = "test"
            continue
        u = _unit(seed, rep)
        out[acc] = "valid" if u < valid_fraction else "test" if u < valid_fraction + test_fraction else "train"
    return out


def find_leaks(split: Mapping[str, str], hits: Mapping[str, list[Hit]], identity: float,
               coverage: float) -> dict[str, list[str]]:
    """Held-out protein → its training hits with identity > ``identity`` covering ≥ ``coverage`` of it."""
    out: dict[str, list[str]] = {}
    for acc, s in split.items():
        if s == "train":
            continue
        leaks = [h.target for h in hits.get(acc, ()) if h.identity > identity and h.qcov >= coverage
                 and split.get(h.target) == "train"]
        if leaks:
            out[acc] = leaks
    return out


def _turn(h: Hit) -> Hit:
    """The same alignment seen from the target's side."""
    return Hit(h.target, h.query, h.identity, h.aln_len, h.tcov, h.qcov, h.evalue, h.bits)


def _reverse(hits: Mapping[str, list[Hit]]) -> dict[str, list[Hit]]:
    """Hits seen from the target's side (a search is not symmetric: A→B may be found when B→A is not)."""
    out: dict[str, list[Hit]] = {}
    for lst in hits.values():
        for h in lst:
            out.setdefault(h.target, []).append(_turn(h))
    return out


def _both(hits: Mapping[str, list[Hit]], keep: set[str]) -> dict[str, list[Hit]]:
    """``hits`` and their reverse, between proteins of ``keep``."""
    both: dict[str, list[Hit]] = {}
    for source in (hits, _reverse(hits)):
        for q, lst in source.items():
            if q in keep:
                both.setdefault(q, []).extend(h for h in lst if h.target in keep)
    return both


def resolve_leaks(split: dict[str, str], cluster_of: Mapping[str, str], eval_ids: set[str] | frozenset[str],
                  hits: Mapping[str, list[Hit]], identity: float,
                  coverage: float) -> tuple[dict[str, str], dict[str, str], int]:
    """Step 3 of the module docstring, in place on ``split``: → (split, dropped accession → reason, moved count).
    ``hits`` must hold every held-out protein's hits above ``identity`` (others are ignored)."""
    locked = frozenset(cluster_of[a] for a in eval_ids if a in cluster_of)
    dropped: dict[str, str] = {}
    moved = 0
    for _ in range(MAX_ROUNDS):
        leaks = find_leaks(split, hits, identity, coverage)
        if not leaks:
            break
        moving = {cluster_of[a] for a in leaks if cluster_of[a] not in locked}
        for acc in sorted(leaks):
            if cluster_of[acc] in locked:
                for t in leaks[acc]:
                    if split.pop(t, None) is not None:
                        dropped[t] = f"training homolog of an eval protein above {identity:g} identity"
        for a, s in split.items():
            if s != "train" and cluster_of[a] in moving:
                split[a] = "train"
                moved += 1
    else:  # pathological: whoever still leaks is dropped
        for acc in find_leaks(split, hits, identity, coverage):
            split.pop(acc)
            dropped[acc] = f"held-out protein with a training homolog above {identity:g} identity"
    return split, dropped, moved


def make_split(ids: Iterable[str], eval_ids: set[str] | frozenset[str], hits: Mapping[str, list[Hit]],
               identity: float, *, coverage: float = 0.8, valid_fraction: float = 0.05, test_fraction: float = 0.05,
               seed: int = 0) -> SplitResult:
    """Split the proteins ``ids`` at one threshold from all-vs-all ``hits`` (see the module docstring)."""
    ids = sorted(ids)
    both = _both(hits, set(ids))
    cluster_of = clusters_from_hits(ids, both, identity, coverage)
    split = assign_clusters(cluster_of, eval_ids, valid_fraction=valid_fraction, test_fraction=test_fraction,
                            seed=seed)
    split, dropped, moved = resolve_leaks(split, cluster_of, eval_ids, both, identity, coverage)
    max_id = {a: max((h.identity for h in both.get(a, ()) if h.qcov >= coverage and split.get(h.target) == "train"),
                     default=0.0) for a, s in split.items() if s != "train"}
    log.info("identity %.2f: %d clusters; %s; %d held-out proteins moved to train, %d training homologs of eval "
             "proteins dropped", identity, len(set(cluster_of.values())), split_counts(split), moved, len(dropped))
    return SplitResult(identity=identity, coverage=coverage, split=split, max_identity=max_id,
                       cluster_of=cluster_of, dropped=dropped, moved=moved)


class LargeHomologyTool(LeakSearch, Protocol):
    """What :func:`clustered_split` needs (:class:`MMseqsTool` has it)."""

    def cluster(self, fasta: Path, identity: float, coverage: float) -> dict[str, str]: ...


def clustered_split(sequences: Mapping[str, str], eval_ids: set[str] | frozenset[str], identity: float, *,
                    coverage: float = 0.8, valid_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0,
                    tool: LargeHomologyTool | None = None, work_dir: str | Path | None = None,
                    state: SplitState | None = None) -> SplitResult:
    """Split ``sequences`` at one threshold without an all-vs-all search (see the module docstring): MMseqs2
    clusters → :func:`assign_clusters` → :func:`search_leaks`. Memory stays at the proteins plus the hits above
    ``identity``; the searches' hits stream from temp files. With ``state``, the clusters and each leak-search round
    are saved there as they finish, and a call after an interruption resumes from them
    (:mod:`sepit.data.split_state`)."""
    tool = tool or MMseqsTool()
    if state is not None and (done := state.result()) is not None:
        log.info("identity %.2f: split done before, read from %s", identity, state.root)
        return SplitResult(**done)
    ids = sorted(sequences)
    reps = None
    if state is not None and (reps := state.clusters()) is not None:
        log.info("identity %.2f: clusters from %s (an earlier, interrupted build)", identity, state.root)
    if reps is None:
        with tempfile.TemporaryDirectory(prefix="sepit-split-", dir=work_dir) as tmp:
            fa = Path(tmp) / "all.fasta"
            mmseqs.write_fasta(((a, sequences[a]) for a in ids), fa)
            log.info("clustering %d proteins at %.2f identity, %.2f coverage (MMseqs2)", len(ids), identity,
                     coverage)
            reps = tool.cluster(fa, identity, coverage)
        if state is not None:
            state.save_clusters(reps)
    members: dict[str, list[str]] = {}
    for a in ids:  # a protein the tool left out is a cluster of its own
        members.setdefault(reps.get(a, a), []).append(a)
    cluster_of = {a: min(group) for group in members.values() for a in group}  # smallest accession: stable
    split = assign_clusters(cluster_of, eval_ids, valid_fraction=valid_fraction, test_fraction=test_fraction,
                            seed=seed)
    log.info("identity %.2f: %d clusters; %s before the leak search", identity, len(members), split_counts(split))
    res = SplitResult(identity=identity, coverage=coverage, split=split, max_identity={}, cluster_of=cluster_of,
                      method="clustered")
    return search_leaks(res, sequences, eval_ids, tool, work_dir=work_dir, state=state)


def search_leaks(res: SplitResult, sequences: Mapping[str, str], eval_ids: set[str] | frozenset[str],
                 tool: LeakSearch, *, hits: Mapping[str, list[Hit]] | None = None,
                 work_dir: str | Path | None = None, state: SplitState | None = None) -> SplitResult:
    """Step 3 of the module docstring by search: held-out proteins searched against the training proteins
    (``tool.leak_search``, more sensitive than the clustering), leaks resolved, then the remaining held-out proteins
    searched against each round's newly moved proteins, until a round finds none. ``hits`` (e.g. the all-vs-all
    search that made the clusters) count too. → a new result; ``max_identity`` from every search. With ``state``,
    each round's hits and the split after it are saved there, and a call after an interruption goes on from the
    last finished round (the result is the same)."""
    t, c = res.identity, res.coverage
    split, dropped, moved = dict(res.split), dict(res.dropped), res.moved
    known = _both(hits or {}, set(split))
    strong = {q: [h for h in lst if h.identity > t and h.qcov >= c] for q, lst in known.items()}
    ids = sorted(split)
    targets = [a for a in ids if split[a] == "train"]
    files: list[Path] = []
    if state is not None and (saved := state.progress()) is not None:
        split, dropped, moved, targets = saved["split"], saved["dropped"], saved["moved"], saved["targets"]
        files = [state.round_file(n) for n in range(saved["rounds"])]
        log.info("identity %.2f: %d leak-search rounds done before, read from %s", t, len(files), state.root)
        for f in files:
            _add_leak_hits(strong, f, t, c)
    queries = [a for a in ids if split.get(a, "train") != "train"]
    with tempfile.TemporaryDirectory(prefix="sepit-split-", dir=work_dir) as tmp:
        # Held-out proteins are searched against training proteins only, so that a large held-out cluster cannot
        # fill a query's hit list with its own members and hide a training homolog.
        while queries and targets:
            n = len(files)
            log.info("identity %.2f, leak search %d: %d held-out proteins against %d training proteins", t, n + 1,
                     len(queries), len(targets))
            files.append(_search_round(tool, n, queries, targets, sequences, t, c, Path(tmp), state))
            _add_leak_hits(strong, files[-1], t, c)
            before = dict(split)
            split, more_dropped, more_moved = resolve_leaks(split, res.cluster_of, eval_ids, strong, t, c)
            dropped.update(more_dropped)
            moved += more_moved
            targets = [a for a in ids if split.get(a) == "train" and before[a] != "train"]
            queries = [a for a in ids if split.get(a, "train") != "train"]
            if state is not None:
                state.save_progress(len(files), split, dropped, moved, targets)
        max_id = {a: 0.0 for a, s in split.items() if s != "train"}
        for h in chain((h for lst in known.values() for h in lst), *(mmseqs.read_hits(f) for f in files)):
            if h.query in max_id and h.qcov >= c and split.get(h.target) == "train":
                max_id[h.query] = max(max_id[h.query], h.identity)
    log.info("identity %.2f: %s; %d held-out proteins moved to train, %d training homologs of eval proteins "
             "dropped", t, split_counts(split), moved, len(dropped))
    out = replace(res, split=split, max_identity=max_id, dropped=dropped, moved=moved)
    if state is not None:
        state.save_result(out)
    return out


def _add_leak_hits(strong: dict[str, list[Hit]], hits_file: Path, identity: float, coverage: float) -> None:
    """Add the hits of ``hits_file`` above ``identity`` covering ≥ ``coverage`` of the query to ``strong``."""
    for h in mmseqs.read_hits(hits_file):
        if h.query != h.target and h.qcov >= coverage and h.identity > identity:
            strong.setdefault(h.query, []).append(h)


def _search_round(tool: LeakSearch, n: int, queries: list[str], targets: list[str], sequences: Mapping[str, str],
                  identity: float, coverage: float, tmp: Path, state: SplitState | None) -> Path:
    """Leak-search round ``n`` at threshold ``identity``: ``queries`` (held out) against ``targets`` (training) →
    the hits file, oriented held-out → training, covering ≥ ``coverage`` of the held-out protein. Few targets are
    searched turned round (:data:`TURN_MAX_TARGETS`). With a ``state``, the queries go in chunks of
    :data:`CHUNK_QUERIES`, each saved as it finishes, so that an interrupted round resumes from its last chunk; every
    file is searched into a ``.partial`` first, never read half-written."""
    ta = tmp / f"train{n}.fasta"
    mmseqs.write_fasta(((a, sequences[a]) for a in targets), ta)
    out = state.partial(state.round_file(n)) if state is not None else tmp / f"round{n}.m8"
    if len(targets) <= TURN_MAX_TARGETS and 20 * len(targets) <= len(queries):
        log.info("leak search %d turned round: the %d training proteins against the held-out ones", n + 1,
                 len(targets))
        qa = tmp / f"held{n}.fasta"
        mmseqs.write_fasta(((a, sequences[a]) for a in queries), qa)
        turned = tool.leak_search(ta, qa, tmp / f"turned{n}.m8", 0.0, max_hits=len(queries), identity=identity)
        mmseqs.write_hits(out, (h for h in map(_turn, mmseqs.read_hits(turned)) if h.qcov >= coverage))
        return state.commit(out) if state is not None else out
    if state is None:
        qa = tmp / f"held{n}.fasta"
        mmseqs.write_fasta(((a, sequences[a]) for a in queries), qa)
        return tool.leak_search(qa, ta, out, coverage, identity=identity)
    chunks = [queries[i:i + CHUNK_QUERIES] for i in range(0, len(queries), CHUNK_QUERIES)]
    parts = [state.chunk_file(n, i) for i in range(len(chunks))]
    for i, (chunk, part) in enumerate(zip(chunks, parts)):
        if part.is_file():
            log.info("leak search %d, part %d of %d: done before, read from %s", n + 1, i + 1, len(chunks), part)
            continue
        if len(chunks) > 1:
            log.info("leak search %d, part %d of %d: %d held-out proteins", n + 1, i + 1, len(chunks), len(chunk))
        qa = tmp / f"held{n}.{i}.fasta"
        mmseqs.write_fasta(((a, sequences[a]) for a in chunk), qa)
        state.commit(tool.leak_search(qa, ta, state.partial(part), coverage, identity=identity))
    with open(out, "w", encoding="utf-8") as dst:  # the chunks become the round's one file
        for part in parts:
            with open(part, encoding="utf-8") as src:
                shutil.copyfileobj(src, dst)
    done = state.commit(out)
    for part in parts:
        part.unlink()
    return done


def split_counts(split: Mapping[str, str]) -> dict[str, int]:
    out = {s: 0 for s in SPLITS}
    for s in split.values():
        out[s] += 1
    return out
