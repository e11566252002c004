"""``sepit data build``: protein sources → homology-aware splits → caption/QA records, written as one dataset dir.

Stages (each a plain function): read proteins (deduplicated, length-filtered; bad records counted) → attach
structures (a ready store, or files + a mapping TSV) → split per identity threshold (:mod:`sepit.data.split`) →
catalog of annotation values (hard negatives) → records per protein → write everything into a temp directory that
is renamed into place at the end (a failed build leaves no half-written dataset). Output layout: see
``docs/architecture.md`` ("Built dataset") and :mod:`sepit.data.dataset`.
"""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from sepit import __version__
from sepit._io import atomic_dir, sha256_file
from sepit.config import to_dict
from sepit.data.build_structures import Header, read_structure_map, structures_from_files
from sepit.data.config import DataConfig
from sepit.data.instructions import Catalog, QAOptions, load_templates, protein_instructions, structure_note
from sepit.data.instructions.record import Instruction
from sepit.data.instructions.templates import TASKS
from sepit.data.readers import SkipLog, read_go_terms, read_human_table, read_proteins
from sepit.data.record_index import RecordIndexWriter
from sepit.data.records import ProteinEntry
from sepit.data.split import (
    SPLITS,
    HomologyTool,
    MMseqsTool,
    SplitResult,
    all_vs_all,
    clustered_split,
    make_split,
    search_leaks,
)
from sepit.data.split_state import SplitState, split_key
from sepit.data.structures import StructureStore, ca_secondary_structure
from sepit.errors import InputError
from sepit.log import get_logger, progress
from sepit.paths import resources_dir
from sepit.retrieval.facts import entry_facts
from sepit.retrieval.index import write_index
from sepit.tools import diamond, mmseqs

log = get_logger(__name__)
FORMAT = "sepit-instructions"
FORMAT_VERSION = 1


def default_data_dir() -> Path:
    """The embedded default inputs (``resources/default_data``)."""
    return resources_dir() / "default_data"


def default_config(cfg: DataConfig | None = None) -> DataConfig:
    """``cfg`` with the embedded default's inputs filled in when it names no sources; with sources, the GO-term and
    human tables default to the vendored full ones (GO names and definitions, human gene names/EC/Pfam by
    accession: what the 2014 table needs)."""
    cfg = cfg or DataConfig()
    if cfg.sources:
        d = default_data_dir()
        go = cfg.go_terms or (str(d / "go_terms_all.tsv.xz") if (d / "go_terms_all.tsv.xz").is_file() else None)
        hum = cfg.human or (str(d / "human_all.tsv.xz") if (d / "human_all.tsv.xz").is_file() else None)
        return replace(cfg, go_terms=go, human=hum)
    d = default_data_dir()
    if not (d / "proteins.tsv.xz").is_file():
        raise InputError(d, "the embedded default data is missing (reinstall sepit or pass --source)")
    return replace(cfg, sources=[str(d / "proteins.tsv.xz")], go_terms=str(d / "go_terms.tsv.xz"),
                   human=str(d / "human.tsv.xz"), structure_store=str(d / "structures.npz"),
                   structures=None, structure_map=None)


@dataclass
class Inputs:
    """What the reading stage hands on."""

    entries: list[ProteinEntry]
    store: StructureStore
    headers: dict[str, Header]
    sources: list[dict[str, Any]]
    skips: SkipLog
    read_counts: dict[str, int] = field(default_factory=dict)
    go: dict[str, Any] | None = None  # GO id → GoInfo (names, definitions) when a GO table was given


def _source(path: str | Path, role: str) -> dict[str, Any]:
    p = Path(path)
    return {"role": role, "name": p.name, "path": str(path), "bytes": p.stat().st_size, "sha256": sha256_file(p)}


def read_inputs(cfg: DataConfig, skips: SkipLog | None = None) -> Inputs:
    """Read proteins, GO terms, human table and structures named by ``cfg`` (already defaulted)."""
    skips = skips if skips is not None else SkipLog()
    if not cfg.sources:
        raise InputError(None, "no protein sources given")
    sources = []
    go = hum = None
    if cfg.go_terms:
        go = read_go_terms(cfg.go_terms, skips)
        sources.append(_source(cfg.go_terms, "go_terms"))
    if cfg.human:
        hum = read_human_table(cfg.human, skips)
        sources.append(_source(cfg.human, "human"))
    entries: list[ProteinEntry] = []
    seen: set[str] = set()
    read_counts: dict[str, int] = {}
    for src in cfg.sources:
        if not Path(src).is_file():
            raise InputError(src, "no such file")
        n = 0
        stream = read_proteins(src, skips, go_terms=go, human=hum)  # raises here when the file is unusable
        bar = progress(desc=f"reading {Path(src).name}", unit="protein")
        try:
            for e in stream:
                bar.update(1)
                if e.accession in seen:
                    skips.add("duplicate accession", f"{Path(src).name}: {e.accession}")
                    continue
                if not cfg.min_length <= e.length <= cfg.max_length:
                    skips.add(f"length outside {cfg.min_length}-{cfg.max_length}", f"{e.accession}: {e.length}")
                    continue
                seen.add(e.accession)
                entries.append(e)
                n += 1
                if cfg.max_proteins and len(entries) >= cfg.max_proteins:
                    break
        finally:
            bar.close()
        read_counts[str(src)] = n
        sources.append(_source(src, "proteins"))
        if cfg.max_proteins and len(entries) >= cfg.max_proteins:
            break
    if not entries:
        raise InputError(cfg.sources[0] if len(cfg.sources) == 1 else None,
                         "no usable proteins in the sources" + (f" ({skips.summary()})" if skips else ""))
    seqs = {e.accession: e.sequence for e in entries}
    store = StructureStore()
    headers: dict[str, Header] = {}
    if cfg.structure_store:
        full = StructureStore.load(cfg.structure_store)
        sources.append(_source(cfg.structure_store, "structure_store"))
        for pid in full.ids:
            if pid not in seqs:
                continue
            coords, mask = full.get(pid)  # type: ignore[misc]
            if len(coords) != len(seqs[pid]):
                skips.add("structure length differs from sequence", f"{pid}: {len(coords)} vs {len(seqs[pid])}")
                continue
            info = full.info(pid)
            store.add(pid, coords, mask, coverage=info.coverage, identity=info.identity, source=info.source)
        hdr = Path(cfg.structure_store).with_name("structure_headers.tsv")
        if hdr.is_file():
            headers = _read_headers(hdr, store)
    if cfg.structures and cfg.structure_map:
        rows = read_structure_map(cfg.structure_map, skips)
        sources.append(_source(cfg.structure_map, "structure_map"))
        more, more_headers, used = structures_from_files(seqs, rows, cfg.structures, skips)
        for pid in more.ids:
            coords, mask = more.get(pid)  # type: ignore[misc]
            info = more.info(pid)
            store.add(pid, coords, mask, coverage=info.coverage, identity=info.identity, source=info.source)
        headers.update(more_headers)
        listing = "".join(f"{p.relative_to(cfg.structures)}\t{sha256_file(p)}\n" for p in used)
        sources.append({"role": "structure_files", "name": Path(cfg.structures).name, "path": cfg.structures,
                        "files": len(used), "sha256": hashlib.sha256(listing.encode()).hexdigest()})
    return Inputs(entries, store, headers, sources, skips, read_counts, go)


def _read_headers(path: Path, store: StructureStore) -> dict[str, Header]:
    out = {}
    with open(path, encoding="utf-8") as f:
        next(f, None)
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) >= 4 and p[0] in store:
                out[p[0]] = Header(p[1], p[2], p[3])
    return out


def split_method(cfg: DataConfig, n_proteins: int) -> str:
    """``all_vs_all`` or ``clustered`` (``auto``: clustered above ``split.clustered_above`` proteins)."""
    m = cfg.split.method
    if m == "auto":
        return "clustered" if n_proteins > cfg.split.clustered_above else "all_vs_all"
    return m


def leak_tool_of(cfg: DataConfig, method: str) -> str:
    """``mmseqs`` or ``diamond``: ``split.leak_tool``, with ``auto`` → DIAMOND for the ``clustered`` method."""
    t = cfg.split.leak_tool
    return t if t != "auto" else ("diamond" if method == "clustered" else "mmseqs")


def split_state_dir(out_dir: str | Path) -> Path:
    """Where a clustered split saves its progress while ``out_dir`` is built (removed once the build is done)."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.split-state"


def _split_all(inputs: Inputs, cfg: DataConfig, tool: HomologyTool,
               state_dir: Path) -> tuple[SplitResult, dict[float, SplitResult]]:
    """The active split over all proteins, the extra thresholds over those it kept: from one all-vs-all search, or
    (large sets) from MMseqs2 clusters plus a search of the held-out proteins, per threshold, saving their progress
    under ``state_dir`` so that an interrupted build resumes (:mod:`sepit.data.split_state`)."""
    seqs = {e.accession: e.sequence for e in inputs.entries}
    eval_ids = frozenset(e.accession for e in inputs.entries if e.split_hint == "eval")
    s = cfg.split
    kw = {"coverage": s.coverage, "valid_fraction": s.valid_fraction, "test_fraction": s.test_fraction,
          "seed": cfg.seed}
    method = split_method(cfg, len(seqs))
    leak_tool = leak_tool_of(cfg, method)
    if isinstance(tool, MMseqsTool):
        tool = replace(tool, leak_tool=leak_tool)
    log.info("split method: %s (%d proteins), leak searches by %s", method, len(seqs),
             "DIAMOND" if leak_tool == "diamond" else "MMseqs2")
    if method == "clustered":
        if not hasattr(tool, "cluster"):
            raise InputError(None, "split.method=clustered needs a homology tool that clusters (MMseqs2)")
        options = {**kw, **{k: getattr(s, k) for k in ("sensitivity", "leak_sensitivity", "leak_max_hits")}}
        if leak_tool != "mmseqs":  # (so that the states of earlier MMseqs2 splits keep their keys)
            options.update(leak_tool=leak_tool, leak_realign_margin=diamond.REALIGN_MARGIN)

        def state(t: float, proteins: dict[str, str]) -> SplitState:
            key = split_key(proteins, eval_ids, {**options, "identity": t})
            return SplitState(state_dir / f"{t:g}-{key[:16]}")

        active = clustered_split(seqs, eval_ids, s.identity, tool=tool,  # type: ignore[arg-type]
                                 state=state(s.identity, seqs), **kw)
        kept = {a: seqs[a] for a in active.split}
        extra = {t: clustered_split(kept, eval_ids, t, tool=tool,  # type: ignore[arg-type]
                                    state=state(t, kept), **kw)
                 for t in s.extra_identities if t != s.identity}
        return active, extra
    hits = all_vs_all(seqs, s.coverage, tool)
    active = search_leaks(make_split(seqs, eval_ids, hits, s.identity, **kw), seqs,  # type: ignore[arg-type]
                          eval_ids, tool, hits=hits)
    extra = {t: search_leaks(make_split(active.split, eval_ids, hits, t, **kw), seqs,  # type: ignore[arg-type]
                             eval_ids, tool, hits=hits)
             for t in s.extra_identities if t != s.identity}
    return active, extra


class _ShardWriter:
    """Records of one split into ``records/<split>-NNNNN.jsonl``, ``shard_size`` lines per file, and their
    :class:`~sepit.data.record_index.RecordIndex` (``records/<split>.index.*``: byte offsets, kinds, tasks, sizes)."""

    def __init__(self, root: Path, split: str, shard_size: int) -> None:
        self.root, self.split, self.shard_size = root, split, shard_size
        self.files: list[str] = []
        self.index = RecordIndexWriter()
        self._f: IO[bytes] | None = None
        self._n = 0
        self._offset = 0

    def write(self, rec: Instruction, residues: int, structured: bool) -> None:
        """Append ``rec`` (its proteins have ``residues`` residues in all; ``structured``: all have a structure)."""
        if self._f is None or self._n >= self.shard_size:
            self.close()
            name = f"records/{self.split}-{len(self.files):05d}.jsonl"
            self.files.append(name)
            self._f = open(self.root / name, "wb")  # noqa: SIM115 - closed by close()
            self._n = self._offset = 0
        data = (rec.to_line() + "\n").encode("utf-8")
        self.index.add(len(self.files) - 1, self._offset, rec, residues, structured)
        self._f.write(data)
        self._n += 1
        self._offset += len(data)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def save_index(self) -> None:
        self.index.save(self.root, self.split, self.files)


def _versions(leak_tool: str) -> dict[str, str]:
    v = {"sepit": __version__, "python": platform.python_version(), "numpy": np.__version__}
    try:
        v["mmseqs"] = mmseqs.version()
    except Exception:  # noqa: BLE001 - a custom homology tool may stand in for mmseqs
        v["mmseqs"] = "unavailable"
    if leak_tool == "diamond":
        try:
            v["diamond"] = diamond.version().removeprefix("diamond version ")
        except Exception:  # noqa: BLE001 - as above
            v["diamond"] = "unavailable"
    return v


def _protein_line(e: ProteinEntry, active: SplitResult, extra: dict[float, SplitResult],
                  store: StructureStore) -> str:
    info = store.info(e.accession)
    d: dict[str, Any] = {
        "id": e.accession, "sequence": e.sequence, "length": e.length, "split": active.split[e.accession],
        "max_identity_to_train": (None if active.split[e.accession] == "train"
                                  else round(active.max_identity.get(e.accession, 0.0), 4)),
        "cluster": active.cluster_of[e.accession],
        "has_structure": info is not None, "structure_coverage": round(info.coverage, 4) if info else 0.0,
        "split_hint": e.split_hint, "name": e.name, "gene": e.gene, "organism": e.organism, "source": e.source,
    }
    d["splits"] = {f"{t:g}": {"split": r.split.get(e.accession, "dropped"),
                              "max_identity_to_train": (round(r.max_identity[e.accession], 4)
                                                        if e.accession in r.max_identity else None)}
                   for t, r in sorted(extra.items())}
    return json.dumps(d, ensure_ascii=False, separators=(",", ":"))


#: What a build writes at the top of its folder; an earlier build holding only these may be replaced.
BUILD_OUTPUTS = frozenset({"records", "fasta", "proteins.jsonl", "structures.npz", "manifest.json", "index"})


def check_output_dir(out_dir: str | Path, *, overwrite: bool = False) -> None:
    """Refuse to build into ``out_dir`` when that would delete anything a build did not write: a file, or a folder
    with other content than an earlier sepit dataset (an InputError naming up to three foreign entries). New and
    empty folders are fine; ``overwrite`` allows replacing any folder."""
    p = Path(out_dir)
    if not p.exists():
        return
    if not p.is_dir():
        raise InputError(p, "the output exists and is not a folder")
    if overwrite:
        return
    entries = sorted(e.name for e in p.iterdir())
    if not entries:
        return
    foreign = [e for e in entries if e not in BUILD_OUTPUTS]
    if (p / "manifest.json").is_file() and not foreign:
        try:
            manifest = json.loads((p / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            manifest = None
        if isinstance(manifest, dict) and manifest.get("format") == FORMAT:
            return  # an earlier build of a dataset: replaced whole
        foreign = ["manifest.json (not a sepit dataset's)"]
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    raise InputError(p, f"the output folder holds files a dataset build did not write ({shown}); choose a new or "
                        "empty folder, or pass --overwrite to replace it with everything in it")


def build_dataset(cfg: DataConfig, out_dir: str | Path, *, tool: HomologyTool | None = None,
                  timings: dict[str, float] | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Build the dataset described by ``cfg`` into ``out_dir`` (replaced atomically); returns the manifest.

    ``out_dir`` must be new, empty or an earlier build (:func:`check_output_dir`; ``overwrite`` replaces any folder).
    ``timings`` (optional) receives the seconds spent reading, splitting and writing (kept out of the manifest so
    that a build is byte-for-byte reproducible)."""
    t0 = time.perf_counter()
    check_output_dir(out_dir, overwrite=overwrite)
    cfg = default_config(cfg)
    s = cfg.split
    tool = tool or MMseqsTool(threads=s.threads, sensitivity=s.sensitivity, leak_sensitivity=s.leak_sensitivity,
                              max_hits=s.max_hits, leak_max_hits=s.leak_max_hits)
    ic = cfg.instructions
    templates = load_templates(ic.templates)
    tasks = tuple(ic.tasks) if ic.tasks else tuple(t for t in TASKS if t in templates.tasks)
    unknown = [t for t in tasks if t not in templates.tasks]
    if unknown:
        raise InputError(templates.source, f"no templates for task(s) {', '.join(unknown)}")
    options = QAOptions(tasks=tasks, captions=ic.captions, open_per_task=ic.open_per_task,
                        yesno_pairs_per_task=ic.yesno_pairs_per_task, max_list=ic.max_list)

    inputs = read_inputs(cfg)
    log.info("read %d proteins (%d with a structure); %s", len(inputs.entries), len(inputs.store),
             inputs.skips.summary())
    t_read = time.perf_counter()
    state_dir = split_state_dir(out_dir)
    if state_dir.is_dir():
        log.info("found the split progress of an earlier, interrupted build of %s: %s", out_dir, state_dir)
    active, extra = _split_all(inputs, cfg, tool, state_dir)
    t_split = time.perf_counter()
    for acc, why in sorted(active.dropped.items()):
        inputs.skips.add(f"dropped from split: {why}", acc)
    kept = [e for e in inputs.entries if e.accession in active.split]
    catalog = Catalog.build(kept, inputs.go)

    by_task: dict[str, dict[str, dict[str, int]]] = {}
    answers: dict[str, Counter[str]] = {}
    no_negative: Counter[str] = Counter()
    records_per_split: Counter[str] = Counter()
    proteins_per_split: Counter[str] = Counter()
    index_rows: list[tuple[str, str, dict[str, str]]] = []  # the training split's retrieval index
    with atomic_dir(out_dir) as tmp:
        (tmp / "records").mkdir()
        (tmp / "fasta").mkdir()
        writers = {sp: _ShardWriter(tmp, sp, cfg.shard_size) for sp in SPLITS}
        fastas = {sp: open(tmp / "fasta" / f"{sp}.fasta", "w", encoding="utf-8") for sp in SPLITS}  # noqa: SIM115
        out_store = StructureStore()
        lengths = {e.accession: e.length for e in kept}  # residues per record, for the record index
        structured = {e.accession for e in kept if inputs.store.info(e.accession) is not None}
        try:
            with open(tmp / "proteins.jsonl", "w", encoding="utf-8") as pf:
                for e in progress(kept, desc="instructions", unit="protein"):
                    sp = active.split[e.accession]
                    proteins_per_split[sp] += 1
                    pf.write(_protein_line(e, active, extra, inputs.store) + "\n")
                    fastas[sp].write(f">{e.accession}\n{e.sequence}\n")
                    if sp == "train":
                        index_rows.append((e.accession, e.sequence, entry_facts(e, catalog, max_list=ic.max_list)))
                    got = inputs.store.get(e.accession)
                    ss = note = None
                    if got is not None:
                        info = inputs.store.info(e.accession)
                        out_store.add(e.accession, got[0], got[1], coverage=info.coverage,  # type: ignore[union-attr]
                                      identity=info.identity, source=info.source)  # type: ignore[union-attr]
                        ss = ca_secondary_structure(*got)
                        h = inputs.headers.get(e.accession)
                        note = structure_note(h.pdb_id, h.chain, h.title) if h and h.pdb_id else None
                    for r in protein_instructions(e, catalog, templates, split=sp, seed=cfg.seed, options=options,
                                                  ss_labels=ss, structure=note or "", stats=no_negative):
                        writers[sp].write(r, sum(lengths.get(p, 0) for p in r.protein_ids),
                                          all(p in structured for p in r.protein_ids))
                        records_per_split[sp] += 1
                        by_task.setdefault(r.task, {}).setdefault(r.kind, Counter())[sp] += 1  # type: ignore[index]
                        if r.kind == "yesno":
                            answers.setdefault(r.task, Counter())[r.answer] += 1
        finally:
            for w in writers.values():
                w.close()
            for f in fastas.values():
                f.close()
        for w in writers.values():
            w.save_index()
        out_store.save(tmp / "structures.npz")
        if index_rows:
            write_index(tmp / "index", index_rows, sources=inputs.sources)
        manifest = _manifest(cfg, inputs, active, extra, by_task, answers, no_negative, records_per_split,
                             proteins_per_split, writers, templates.source, len(out_store))
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                           encoding="utf-8")
    shutil.rmtree(state_dir, ignore_errors=True)  # the dataset is in place: its split's progress is not needed
    t_end = time.perf_counter()
    log.info("wrote %s: %s proteins, %s records (%.1fs: read %.1fs, split %.1fs, write %.1fs)", out_dir,
             dict(proteins_per_split), dict(records_per_split), t_end - t0, t_read - t0, t_split - t_read,
             t_end - t_split)
    log.info("%s", inputs.skips.summary())
    if timings is not None:
        timings.update(read=t_read - t0, split=t_split - t_read, write=t_end - t_split, total=t_end - t0)
    return manifest


def _manifest(cfg: DataConfig, inputs: Inputs, active: SplitResult, extra: dict[float, SplitResult],
              by_task: dict[str, dict[str, dict[str, int]]], answers: dict[str, Counter[str]],
              no_negative: Counter[str], records_per_split: Counter[str], proteins_per_split: Counter[str],
              writers: dict[str, _ShardWriter], templates_path: str, n_structures: int) -> dict[str, Any]:
    leak_tool = leak_tool_of(cfg, split_method(cfg, len(inputs.entries)))

    def split_summary(r: SplitResult) -> dict[str, Any]:
        held = list(r.max_identity.values())
        realign = {"leak_realign_margin": diamond.REALIGN_MARGIN} if leak_tool == "diamond" else {}
        return {"identity": r.identity, "coverage": r.coverage, "method": r.method, "leak_search": leak_tool,
                **realign, "clusters": r.n_clusters,
                "proteins": r.counts(), "dropped": len(r.dropped), "moved_to_train": r.moved,
                "max_identity_to_train": {"max": round(max(held, default=0.0), 4),
                                          "mean": round(float(np.mean(held)) if held else 0.0, 4)}}

    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "versions": _versions(leak_tool),
        "seed": cfg.seed,
        "config": to_dict(cfg),
        "sources": inputs.sources,
        "templates": {"path": templates_path, "sha256": sha256_file(templates_path)},
        "identity_thresholds": sorted({active.identity, *extra}),
        "active_identity": active.identity,
        "splits": {f"{active.identity:g}": split_summary(active),
                   **{f"{t:g}": split_summary(r) for t, r in sorted(extra.items())}},
        "counts": {
            "proteins": {sp: proteins_per_split.get(sp, 0) for sp in SPLITS},
            "records": {sp: records_per_split.get(sp, 0) for sp in SPLITS},
            "structures": n_structures,
            "by_task": {t: {k: {sp: v.get(sp, 0) for sp in SPLITS} for k, v in sorted(kinds.items())}
                        for t, kinds in sorted(by_task.items())},
            "yesno_answers": {t: dict(sorted(c.items())) for t, c in sorted(answers.items())},
            "yesno_pairs_without_negative": dict(sorted(no_negative.items())),
        },
        "skipped": inputs.skips.as_dict(),
        "skip_examples": {k: v for k, v in sorted(inputs.skips.examples.items())},
        "files": {"proteins": "proteins.jsonl", "structures": "structures.npz",
                  "records": {sp: w.files for sp, w in writers.items()},
                  "fasta": {sp: f"fasta/{sp}.fasta" for sp in SPLITS},
                  "index": "index"},
    }


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Objects of a JSONL file (blank lines ignored)."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
