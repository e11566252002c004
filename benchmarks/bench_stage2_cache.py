"""Stage 2 with the frozen-encoder cache vs recomputing the encoder every step: ratio of training step time.

    python -m benchmarks.bench_stage2_cache           # default models upcycled to a 4-expert MoE
    python -m benchmarks.bench_stage2_cache --quick

Two ``ChatRunner`` s of sepit's training loop (stage 2: projector, LLM, experts and router train; ESM and the
structure module are frozen) share one model: ``cache_encoder=True`` encodes every protein once up front (with and
without its structure, as structure dropout may pick either) and feeds cached features; ``cache_encoder=False``
runs the structure-aware encoder inside every step. A step = the loop's own collate + normaliser + loss + backward +
clip + AdamW step, on the same batch with the same step number (so structure dropout drops the same proteins).
The batch: real Swiss-Prot proteins that have a vendored structure, of about the table's median length, with an
open-ended GO question each. Before timing, the two losses are compared on one batch (the cache is exact).
"""

from __future__ import annotations

import argparse
import tempfile
from typing import Any

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import Result, crop, interleave, mean_length, model_or_default, pick_device, real_proteins, say, timed

STAGE2_LR = {"projector": 1e-4, "llm": 1e-5, "experts": 1e-5, "router": 1e-5}  # configs/train/stage2_paper.yaml


def qa_items(proteins: list[Any]) -> list[Any]:
    """One open-ended GO molecular-function question per protein, as training Items."""
    from sepit.model import Protein
    from sepit.train.batching import Item

    items = []
    for p in proteins:
        mf = ", ".join(p.go.get("MF", ())[:4]) or "no annotated molecular function"
        msgs = ({"role": "user", "content": "<protein>\nWhat molecular functions does this protein have?"},
                {"role": "assistant", "content": f"It has {mf}."})
        prot = Protein(p.sequence, p.coords, p.coord_mask)
        items.append(Item(p.accession, (prot,), messages=msgs, task="go_mf", length=len(p.sequence),
                          protein_ids=(p.accession,)))
    return items


def pick_batch(table: list[Any], n: int, max_len: int) -> list[Any]:
    """``n`` proteins with a structure, the closest in length to the whole table's median."""
    lengths = sorted(min(len(p.sequence), max_len) for p in table)
    med = lengths[len(lengths) // 2]
    pool = [p for p in table if p.has_structure] or list(table)
    pool.sort(key=lambda p: (abs(min(len(p.sequence), max_len) - med), p.accession))
    return [crop(p, max_len) for p in pool[:n]]


def run(model: Any = None, *, quick: bool = False, batch_size: int | None = None, rounds: int | None = None,
        proteins: list[Any] | None = None, device: Any = None, warmup: bool = True) -> Result:
    """Interleaved stage-2 steps with and without the frozen-encoder cache → Result (ratio = step time without
    the cache ÷ with it)."""
    import torch

    from sepit.train.config import TrainConfig
    from sepit.train.loop import set_trainable
    from sepit.train.stages import ChatRunner

    device = pick_device(device)
    batch_size = batch_size or (1 if quick else 2)
    rounds = rounds or (1 if quick else 3)
    model = model_or_default(model, "stage2_cache")
    if not model.is_moe:
        model.upcycle()
    model.to(device).train()
    table = proteins if proteins is not None else real_proteins()
    batch = pick_batch(table, batch_size, model.config.max_residues)
    items = qa_items(batch)
    lrs = {k: v for k, v in STAGE2_LR.items() if model.param_groups().get(k)}
    with tempfile.TemporaryDirectory() as tmp:
        runners = {name: ChatRunner(TrainConfig(stage=2, out_dir=tmp, lr=lrs, cache_encoder=cache,
                                                 batch_size=batch_size, upcycle_experts=model.config.moe.num_experts),
                                     model, device)
                   for name, cache in (("recompute encoder", False), ("sepit (encoder cache)", True))}
    opt_groups = set_trainable(model, lrs)
    params = [p for g in opt_groups for p in g["params"]]
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in opt_groups])

    for r in runners.values():
        r.prepare(items)  # the cache runner caches lazily, as proteins are first seen
    model.train()
    model.encoder.eval()  # frozen encoder (the cache encodes in eval mode; ESM-2 has no dropout either way)
    cached = runners["sepit (encoder cache)"]
    # first sight: encode what the timed steps will need (steps 0..rounds-1 decide structure dropout), untimed
    # in the step times below but reported: it is one encoder pass per protein variant, paid once per run
    fill_s, _, _ = timed(lambda: [cached.collate(items, step=k) for k in range(rounds)], device)
    warm_s, _, _ = timed(lambda: [cached.collate(items, step=k) for k in range(rounds)], device)
    cache_bytes = cached.cache.bytes
    cache_rows = sum(t.shape[0] for t in cached.cache.values())
    frac = sum(p.has_structure for p in table) / len(table)
    mean_len = mean_length(table, model.config.max_residues)

    # exactness: the same batch, the same step → the same loss with cached features as with the encoder
    with torch.no_grad():
        losses = {}
        for name, r in runners.items():
            col = [r.collate(items, step=0)]
            losses[name] = float(r.loss(model, model.to_device(col[0]), r.normaliser(col), 1)[0])
    diff = abs(losses["recompute encoder"] - losses["sepit (encoder cache)"])

    def make_step(r: Any):
        def step(k: int) -> float:
            col = [r.collate(items, step=max(k, 0))]
            loss, _ = r.loss(model, model.to_device(col[0]), r.normaliser(col), 1)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())
        return step

    say(f"stage2_cache: batch of {batch_size} (lengths {[len(p.sequence) for p in batch]}, structures "
        f"{sum(p.has_structure for p in batch)}), {rounds} round(s)")
    t = interleave({n: make_step(r) for n, r in runners.items()}, rounds, warmup=1 if warmup else 0,
                   device=device, progress="stage2_cache")
    rec, cac = t["recompute encoder"], t["sepit (encoder cache)"]
    ratio = rec.median / cac.median
    rows = [[n, tm.median, min(tm.seconds), tm.peak_mb] for n, tm in t.items()]
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    n_llm = sum(p.numel() for p in model.llm.parameters())
    return Result(
        name="stage2_cache", title="2. Stage 2: frozen-encoder cache vs recomputing the encoder every step",
        columns=["approach", "median step s", "min step s", "peak mem +MiB"], rows=rows, ratio=ratio,
        summary={"first sight of the batch's proteins (encoding into the cache) s": max(0.0, fill_s - warm_s),
                 "cache entries / MiB / bytes per residue": (f"{len(cached.cache)} / {cache_bytes / 2**20:.1f} / "
                                                             f"{cache_bytes / max(cache_rows, 1):,.0f}"),
                 f"ESTIMATE cache for 50k proteins of mean length {mean_len:.0f} ({100 * frac:.0f}% with a "
                 "structure, cached with and without it)": (
                     f"{50_000 * (1 + frac) * mean_len * cache_bytes / max(cache_rows, 1) / 2**30:.1f} GiB"),
                 "loss with cache − without (exactness)": f"{diff:.2e}",
                 "encoder params / LLM params": f"{n_enc:,} / {n_llm:,}"},
        notes=[("ratio = median step time without the cache ÷ with it; the saving is the encoder's share of a "
                "step, so it grows with the encoder (ESM-2 650M at paper scale vs 8M here)"),
               f"device {device}, batch {batch_size}, {rounds} round(s), lengths {[len(p.sequence) for p in batch]}"],
        params={"batch_size": batch_size, "rounds": rounds, "device": str(device),
                "lengths": [len(p.sequence) for p in batch]})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--device")
    a = ap.parse_args(argv)
    print(run(quick=a.quick, batch_size=a.batch_size, rounds=a.rounds, device=a.device).table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
