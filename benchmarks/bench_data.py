"""Benchmark the dataset builder: proteins/s and peak memory, for the embedded default and the shared 50k set.

Run:  .venv/bin/python benchmarks/bench_data.py [--only default|50k|full] [--threads 2] [--shared /work/shared/data]

The 50k run reads the shared 2014 Swiss-Prot table (50,000 proteins), its GO terms and human table, and all 630
real PDB/mmCIF files (the tar is extracted to a temp folder first, not timed). Each build runs in a fresh child
process so its peak RSS (and that of the MMseqs2 processes it starts) is measured on its own. Prints a table.

``--only full`` (not part of the default run: 2 h 16 min on 2 cores, both splits and checks, 2026-11-29) builds
the full 2014 set, 516,371 proteins: it needs Debian's ``metastudent-data`` and ``ncbi-blast+`` (``apt-get install
metastudent-data ncbi-blast+``), converts them with ``sepit data import-metastudent`` (eval rows carried over from
the shared 50k table; timed, in a child process too), then builds with the shared GO/human tables and the 630
structures. Above 100,000 proteins the split clusters first (``split.method: auto`` → ``clustered``, see
``sepit/data/split.py``). With ``--keep DIR`` an interrupted full run resumes: the same command run again continues
the split from the progress it saved beside
``DIR/sprot_full`` (the table's times then count the resumed run only; the build log has each run's phases).

After each build, ``--check N`` searches N sampled held-out proteins of every identity threshold's split (30% and
50% by default) again against that split's training proteins, deeper than the split did (MMseqs2 -s 7.5, 3,000
hits per protein against the split's 1,000), and counts those with a homolog above the threshold. ``--check-dir
DIR`` runs only that check on a dataset built before (``--keep`` keeps the benchmark's builds).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHECK_HITS = 3000  # hits per protein of the leak check: 3x the split's leak search (1,000 and 3,000 agreed, 4a)

CONVERT = r"""
import json, resource, sys, time
from sepit.data.readers.metastudent import convert_metastudent
from sepit.log import setup_logging
setup_logging()
out, eval_from = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
c = convert_metastudent(out, eval_from=eval_from)
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "counts": c,
                              "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

CHILD = r"""
import json, os, resource, sys, threading, time
from sepit.data.build import build_dataset
from sepit.data.config import DataConfig, SplitConfig
from sepit.log import setup_logging
setup_logging()
spec = json.loads(sys.argv[1])
split = SplitConfig(threads=spec.pop("threads"), **spec.pop("split"))
timings = {}
peak = {"mmseqs": 0.0}
def sample():  # the search tools' own RSS (MMseqs2, DIAMOND), summed over their processes (getrusage's children
    # figure counts forked Python pages)
    while True:
        total = 0
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/status") as f:
                    st = f.read()
            except OSError:
                continue
            if st.startswith(("Name:\tmmseqs", "Name:\tdiamond")):
                total += int(next((ln.split()[1] for ln in st.splitlines() if ln.startswith("VmRSS:")), 0))
        peak["mmseqs"] = max(peak["mmseqs"], total / 1024)
        time.sleep(0.5)
threading.Thread(target=sample, daemon=True).start()
m = build_dataset(DataConfig(split=split, **spec["cfg"]), spec["out"], timings=timings)
self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
child_rss = peak["mmseqs"]
print("RESULT " + json.dumps({"timings": timings, "counts": m["counts"], "splits": m["splits"],
                              "skipped": m["skipped"], "rss_mb": self_rss, "mmseqs_rss_mb": child_rss}))
"""


def _du(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def run(name: str, cfg: dict, threads: int, out: Path, split: dict | None = None) -> dict:
    """Build in a child process; its log goes to ``<out>.log`` (follow it with ``tail -f`` on long builds)."""
    spec = {"cfg": cfg, "out": str(out), "threads": threads, "split": split or {}}
    env = {**os.environ, "SEPIT_NO_PROGRESS": os.environ.get("SEPIT_NO_PROGRESS", "1")}
    log = out.with_name(out.name + ".log")
    t0 = time.perf_counter()
    with open(log, "w", encoding="utf-8") as err:
        r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], stdout=subprocess.PIPE, stderr=err,
                           text=True, env=env, cwd=REPO, check=False)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.stderr.write(log.read_text(encoding="utf-8")[-3000:])
        raise SystemExit(f"{name}: build failed (log: {log})")
    res = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])
    res.update(name=name, wall=wall, disk_mb=_du(out), out=str(out))
    return res


def convert(out: Path, eval_from: Path) -> dict:
    env = {**os.environ, "SEPIT_NO_PROGRESS": os.environ.get("SEPIT_NO_PROGRESS", "1")}
    r = subprocess.run([sys.executable, "-c", CONVERT, str(out), str(eval_from)], capture_output=True, text=True,
                       env=env, cwd=REPO, check=False)
    if r.returncode != 0:
        sys.stderr.write(r.stderr[-3000:])
        raise SystemExit("import-metastudent failed (apt-get install metastudent-data ncbi-blast+)")
    return json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("RESULT "))[7:])


def held_out_and_train(ds: Path) -> dict[float, tuple[list[tuple[str, str]], list[tuple[str, str]]]]:
    """Identity threshold → (held-out, training) (accession, sequence) pairs of that threshold's split, read from the
    dataset's ``proteins.jsonl`` (the active split and each extra threshold's, as ``sepit data build`` wrote them)."""
    from sepit.data.build import iter_jsonl

    manifest = json.loads((ds / "manifest.json").read_text(encoding="utf-8"))
    active = float(manifest["active_identity"])
    out: dict[float, tuple[list, list]] = {float(t): ([], []) for t in manifest["identity_thresholds"]}
    for p in iter_jsonl(ds / "proteins.jsonl"):
        pair = (p["id"], p["sequence"])
        for t, (held, train) in out.items():
            sp = p["split"] if t == active else p["splits"][f"{t:g}"]["split"]
            if sp == "train":
                train.append(pair)
            elif sp in ("valid", "test"):
                held.append(pair)
    return out


def leak_check(ds: Path, n: int, threads: int, coverage: float = 0.8) -> list[str]:
    """For each identity threshold of the dataset: a seeded sample of ``n`` held-out proteins searched again against
    that split's training proteins, with more hits per query (:data:`CHECK_HITS`) than the split's search: how many
    have an alignment above the threshold covering ≥ ``coverage`` of them. One line per threshold."""
    import random

    from sepit.tools import mmseqs

    lines = []
    for identity, (held, train) in sorted(held_out_and_train(ds).items()):
        random.Random(0).shuffle(held)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="sepit-check-") as tmp:
            q, db = Path(tmp) / "sample.fasta", Path(tmp) / "train.fasta"
            mmseqs.write_fasta(held[:n], q)
            mmseqs.write_fasta(train, db)
            hits = mmseqs.search(q, db, sensitivity=7.5, max_seqs=CHECK_HITS, threads=threads)
        best = {a: max((h.identity for h in lst if h.qcov >= coverage), default=0.0) for a, lst in hits.items()}
        over = sorted(v for v in best.values() if v > identity)
        lines.append(f"leak check at {identity:g} ({time.perf_counter() - t0:.0f} s): {min(n, len(held))} of "
                     f"{len(held)} held-out proteins vs {len(train)} training proteins, MMseqs2 -s 7.5, "
                     f"{CHECK_HITS} hits: "
                     f"{len(over)} above {identity:g} identity over ≥ {coverage:.0%} of the protein"
                     + (f" (max {over[-1]:.3f})" if over else ""))
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("default", "50k", "full"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shared", type=Path, default=Path("/work/shared/data"))
    ap.add_argument("--keep", type=Path, help="keep the built datasets under this folder")
    ap.add_argument("--split", default="{}",
                    help="split options of every build, as JSON, e.g. '{\"leak_tool\": \"diamond\"}'; default: the "
                         "builder's defaults")
    ap.add_argument("--full-split", default="{}",
                    help="split options of the full build, as JSON, e.g. '{\"sensitivity\": 4, \"max_hits\": 100, "
                         "\"extra_identities\": []}' (faster, less sensitive), over --split's")
    ap.add_argument("--check", type=int, default=2000, metavar="N",
                    help="leak check of each build: N sampled held-out proteins searched again against the training "
                         f"split (MMseqs2 -s 7.5, {CHECK_HITS} hits per query; 0: skip)")
    ap.add_argument("--check-dir", type=Path, metavar="DIR",
                    help="only run the leak check on a dataset built before (e.g. kept with --keep), then exit")
    args = ap.parse_args()
    if args.check_dir:
        for line in leak_check(args.check_dir, args.check or 2000, args.threads):
            print(line)
        return 0
    results = []
    split = json.loads(args.split)
    if split:
        print(f"split options: {split}")
    with tempfile.TemporaryDirectory(prefix="sepit-bench-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if args.only in (None, "default"):
            results.append(run("embedded default", {}, args.threads, root / "default", split))
        structures = Path(tmp) / "structures"
        if args.only in (None, "50k", "full"):
            with tarfile.open(args.shared / "structures" / "structures_real_pdb.tar.xz") as tar:
                tar.extractall(structures, filter="data")
        sp = args.shared / "swissprot2014"
        shared_cfg = {"go_terms": str(sp / "go_terms.tsv.xz"), "human": str(sp / "human_uniprot_orghs2022.tsv.xz"),
                      "structures": str(structures),
                      "structure_map": str(args.shared / "structures" / "structure_chains_to_sprot2014.tsv.xz")}
        if args.only in (None, "50k"):
            cfg = {"sources": [str(sp / "sprot2014_go_50k.tsv.xz")], **shared_cfg}
            results.append(run("shared 50k + 630 structures", cfg, args.threads, root / "sprot50k", split))
        if args.only == "full":
            table = root / "sprot2014_full.tsv.gz"
            conv = convert(table, sp / "sprot2014_go_50k.tsv.xz")
            print(f"import-metastudent: {conv['counts']['proteins']} proteins ({conv['counts']['eval']} eval) in "
                  f"{conv['seconds']:.1f} s, peak RSS {conv['rss_mb']:.0f} MB, {table.stat().st_size / 1e6:.0f} MB")
            cfg = {"sources": [str(table)], **shared_cfg}
            full = {**split, **json.loads(args.full_split)}
            print(f"full build split options: {full}")
            results.append(run("full 516k + 630 structures", cfg, args.threads, root / "sprot_full", full))
        if args.check:
            for r in results:
                r["check"] = leak_check(Path(r["out"]), args.check, args.threads)
    print(f"\nsepit data build benchmark ({args.threads} threads, {os.cpu_count()} CPUs visible)\n")
    head = ["dataset", "proteins", "structures", "records", "read s", "split s", "write s", "total s",
            "proteins/s", "peak RSS MB", "search RSS MB", "disk MB"]
    rows = []
    for r in results:
        n = sum(r["counts"]["proteins"].values())
        t = r["timings"]
        rows.append([r["name"], n, r["counts"]["structures"], sum(r["counts"]["records"].values()),
                     f"{t['read']:.1f}", f"{t['split']:.1f}", f"{t['write']:.1f}", f"{t['total']:.1f}",
                     f"{n / t['total']:.0f}", f"{r['rss_mb']:.0f}", f"{r['mmseqs_rss_mb']:.0f}", f"{r['disk_mb']:.0f}"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    for row in [head, ["-" * w for w in widths], *rows]:
        print("  ".join(str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(zip(row, widths))))
    for r in results:
        print(f"\n{r['name']}: records per task/kind")
        for task, kinds in r["counts"]["by_task"].items():
            print(f"  {task:20s} " + "  ".join(f"{k} {sum(v.values())}" for k, v in kinds.items()))
        print("  splits: " + "; ".join(f"{t}: {s['proteins']} ({s.get('method', 'all_vs_all')}: {s['clusters']} "
                                       f"clusters, {s['moved_to_train']} moved to train, {s['dropped']} dropped, "
                                       f"max identity to train {s['max_identity_to_train']['max']})"
                                       for t, s in r["splits"].items()))
        if r["skipped"]:
            print("  skipped: " + ", ".join(f"{k} {v}" for k, v in r["skipped"].items()))
        for line in r.get("check", []):
            print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
