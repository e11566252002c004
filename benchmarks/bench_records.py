"""Streaming training records: the training loader's memory and first-step latency against the number of records.

    python -m benchmarks records            # 100k, 500k and 2M synthetic records (writes ~1 GB under /tmp)
    python -m benchmarks records --quick    # 20k and 100k

For each size a dataset is synthesised with the builder's own shard writer (so it carries the record index that
`sepit data build` writes): open-question records about a fixed pool of 2,000 proteins (50–500 residues), ~500
bytes per JSONL line, as the full 2014 set's 10.3M records look. Each size is then measured in a fresh process
(torch and sepit imported, the tiny model built first, so the RSS rise is the loader's): the stage-1 runner's
``load_items()`` (the training split's items, streamed), the epoch order (its first window) and the first global
batch of 32 read and collated. Reported: the RSS rise over all of that (peak, sampled), and its wall time — the
latency before the first step can start. Sepit streams; the reference (the loader before streaming: every record as
Python objects, ``StageRunner._items``) is measured at the smallest size only, since at 2M records it needs GBs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import Result, say

PROTEINS = 2000
GLOBAL_BATCH = 32
AA = "ACDEFGHIKLMNPQRSTVWY"
TASKS = ("function", "go_mf", "go_bp", "go_cc", "location", "family", "ec")


def synthesise(root: Path, n_records: int, seed: int = 0) -> None:
    """A minimal dataset of ``n_records`` training records (manifest, proteins, empty structure store, shards and
    their record index) in ``root``."""
    from sepit.data.build import _ShardWriter
    from sepit.data.dataset import FORMAT
    from sepit.data.instructions.record import Instruction, protein_turn
    from sepit.data.structures import StructureStore

    rng = random.Random(seed)
    root.mkdir(parents=True)
    (root / "records").mkdir()
    seqs = {f"P{i:05d}": "".join(rng.choices(AA, k=rng.randint(50, 500))) for i in range(PROTEINS)}
    with open(root / "proteins.jsonl", "w", encoding="utf-8") as f:
        for pid, s in seqs.items():
            f.write(json.dumps({"id": pid, "sequence": s, "length": len(s), "split": "train",
                                "has_structure": False}) + "\n")
    StructureStore().save(root / "structures.npz")
    w = _ShardWriter(root, "train", 100_000)
    ids = list(seqs)
    for n in range(n_records):
        pid, task = ids[n % PROTEINS], TASKS[n % len(TASKS)]
        answer = " ".join(rng.choices(("kinase", "binding", "membrane", "transport", "activity", "ATP",
                                       "nucleus", "regulation", "protein", "cytoplasm"), k=rng.randint(5, 30)))
        rec = Instruction(id=f"r{n}", protein_ids=(pid,), task=task, kind="open", split="train",
                          messages=({"role": "user", "content": protein_turn(f"What is the {task} of this protein?")},
                                    {"role": "assistant", "content": answer}), answer=answer)
        w.write(rec, len(seqs[pid]), False)
    w.close()
    w.save_index()
    manifest = {"format": FORMAT, "counts": {"records": {"train": n_records, "valid": 0, "test": 0}},
                "files": {"records": {"train": w.files, "valid": [], "test": []}}}
    (root / "manifest.json").write_text(json.dumps(manifest))


def _status_mb() -> dict[str, float]:
    """RssAnon (this process's own memory) and RssFile (mapped file pages: the page cache, shared between the
    ranks of a node and reclaimable) in MiB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("RssAnon", "RssFile"):
                out[k] = int(v.split()[0]) / 1024
    return out


def measure(data: str, upfront: bool) -> dict[str, float]:
    """In this process: RSS rise and wall time of loading the items, the epoch order and the first batch."""
    import time

    import torch

    from benchmarks import PeakMemory
    from sepit.model import build_model, tiny
    from sepit.train.batching import epoch_batches
    from sepit.train.config import DataSection, TrainConfig
    from sepit.train.item_source import item_lengths
    from sepit.train.stages import ChatRunner

    torch.set_num_threads(1)
    cfg = TrainConfig(stage=1, out_dir="unused", lr={"projector": 1e-3}, batch_size=GLOBAL_BATCH,
                      data=DataSection(dir=data, kinds=["open"], eval_records=0, max_protein_len=256))
    runner = ChatRunner(cfg, build_model(tiny()), torch.device("cpu"))
    before = _status_mb()
    with PeakMemory() as pm:
        t0 = time.perf_counter()
        items = runner._items(runner._dataset(), "train", 0) if upfront else runner.load_items()
        order = epoch_batches(item_lengths(items), GLOBAL_BATCH, seed=0, epoch=0)
        batch = runner.collate([items[i] for i in order[0]], step=0)
        wall = time.perf_counter() - t0
    assert batch["input_ids"].shape[0] == GLOBAL_BATCH
    after = _status_mb()
    return {"items": len(items), "rss_mb": pm.delta_mb, "first_batch_s": wall,
            "anon_mb": after["RssAnon"] - before["RssAnon"], "file_mb": after["RssFile"] - before["RssFile"]}


def _child(data: str, upfront: bool) -> dict[str, float]:
    cmd = [sys.executable, "-m", "benchmarks.bench_records", "--measure", data] + (["--upfront"] if upfront else [])
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1],
                       env={**os.environ, "SEPIT_NO_PROGRESS": "1"})
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} exited {r.returncode}: {r.stderr.strip()[-800:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(quick: bool = False, sizes: tuple[int, ...] | None = None) -> Result:
    import time

    sizes = sizes or ((20_000, 100_000) if quick else (100_000, 500_000, 2_000_000))
    rows = []
    with tempfile.TemporaryDirectory(prefix="sepit-bench-records-") as tmp:
        for n in sizes:
            data = Path(tmp) / f"n{n}"
            t0 = time.perf_counter()
            synthesise(data, n)
            say(f"records: {n:,} synthesised in {time.perf_counter() - t0:.0f} s "
                f"({sum(f.stat().st_size for f in (data / 'records').iterdir()) / 2**20:.0f} MiB)")
            for upfront in ((False, True) if n == sizes[0] else (False,)):
                m = _child(str(data), upfront)
                rows.append(["up front (reference)" if upfront else "sepit (streamed)", f"{n:,}",
                             round(m["rss_mb"], 1), round(m["rss_mb"] * 2**20 / n, 1), round(m["anon_mb"], 1),
                             round(m["file_mb"], 1), round(m["first_batch_s"], 2)])
                say(f"records: {rows[-1]}")
            for f in (data / "records").glob("*.jsonl"):
                f.unlink()  # keep /tmp small between sizes
    streamed = [r for r in rows if r[0].startswith("sepit")]
    ref = next(r for r in rows if r[0].startswith("up front"))
    return Result(
        name="records", title="Streaming training records: loader memory and first-batch latency vs records",
        columns=["loader", "records", "peak RSS rise MiB", "bytes / record", "own memory after MiB",
                 "mapped file pages after MiB", "first batch s"], rows=rows,
        ratio=ref[2] / max(streamed[0][2], 1e-9),
        summary={"RSS rise, largest / smallest size": round(streamed[-1][2] / max(streamed[0][2], 1e-9), 2),
                 "first batch s, largest / smallest size": round(streamed[-1][6] / max(streamed[0][6], 1e-9), 2)},
        notes=["ratio: the reference's RSS rise ÷ sepit's at the smallest size",
               "own memory = RssAnon (private to the process); mapped file pages = RssFile (the memory-mapped record "
               "index, 22 bytes per record: page cache shared by the ranks of a node, reclaimable)",
               f"{PROTEINS} proteins, global batch {GLOBAL_BATCH}, stage-1 runner of the tiny model, 1 torch thread; "
               "each row a fresh process"],
        params={"sizes": list(sizes)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--measure", metavar="DATASET", help=argparse.SUPPRESS)
    ap.add_argument("--upfront", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.upfront)))
        return
    print(run(quick=args.quick).table())


if __name__ == "__main__":
    main()
