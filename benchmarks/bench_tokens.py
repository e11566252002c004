"""Protein tokens in the LLM: stage-1 training throughput (useful tokens/s), sepit's unpadded protein tokens vs the
research code's scheme (every protein padded to 1024 ESM positions and all 1024 projected positions fed to the LLM).

    python -m benchmarks.bench_tokens                     # default models (`sepit models fetch` first)
    python -m benchmarks.bench_tokens --quick             # one batch, one pass
    python -m benchmarks.bench_tokens --peak-tflops 989   # also report MFU against that peak (e.g. H100 bf16)

Both approaches train the same model (stage-1 groups plm, structure, projector, llm; AdamW) on the same batches of
real Swiss-Prot proteins: 4 batches of 2 (the research code's stage-1 batch per GPU), each batch two neighbours in
the length-sorted vendored 2014 table (as sepit's length-grouped sampler pairs them in a large dataset) anchored at
the midpoints of 4 length-quantile bins (so the batches follow the table's length distribution), each protein with
a caption conversation built from its GO terms. A step = collate + forward + backward + clip + AdamW step; the two
approaches alternate step by step, over 2 passes (the second in reverse order), and each batch's time is the median
of its passes. "Useful tokens" are the conversation's
real tokens (text + one slot per residue), the same for both; the reference's padded slots are not useful.
The reference is implemented here, minimally: the sepit batch is re-expanded to 1024 ``<protein>`` slots per
protein, the protein inputs are padded to 1024 ESM positions (padding masked inside ESM, as the research code's
tokenizer does), and the penultimate states of all 1024 positions go through the projector into the LLM. Everything
else (loss only on the answer, logits only where the loss needs them) is sepit's in both, so the ratio isolates the
protein-token scheme. Proteins are given without structure here (the O(L²) structure cost is bench_scaling's).
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/bench_tokens.py`
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (
    Result,
    caption,
    crop,
    interleave,
    mean_length,
    mfu,
    pick_device,
    real_proteins,
    say,
    transformer_train_flops,
)

STAGE1_LR = {"plm": 1e-5, "structure": 1e-5, "projector": 1e-4, "llm": 1e-5}  # configs/train/stage1_paper.yaml
QUESTION = "<protein>\nDescribe this protein: its function, the processes it takes part in and where it is found."


def conversations(proteins: list[Any]) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": QUESTION}, {"role": "assistant", "content": caption(p)}] for p in proteins]


def length_grouped_batches(table: list[Any], batches: int, batch_size: int, max_len: int) -> list[list[Any]]:
    """``batches`` batches of ``batch_size`` proteins of about the same length (neighbours in the length-sorted
    table, as sepit's length-grouped sampler forms them from a large dataset), anchored at the midpoints of
    ``batches`` length-quantile bins so that the batches follow the table's length distribution."""
    pool = sorted(table, key=lambda p: (min(len(p.sequence), max_len), p.accession))
    out = []
    for k in range(batches):
        i = min(len(pool) - batch_size, int((k + 0.5) / batches * len(pool)))
        out.append(pool[max(0, i):max(0, i) + batch_size])
    return out


def reference_batch(model: Any, convs: list[list[dict[str, str]]], proteins: list[str], pad_to: int
                    ) -> dict[str, Any]:
    """The research code's batch: every ``<protein>`` marker expanded to ``pad_to`` slots, protein inputs padded to
    ``pad_to`` ESM positions (``<cls>`` residues ``<eos>`` ``<pad>``…, padding masked in ESM)."""
    import torch

    proc = model.processor
    examples = []
    for conv, seq in zip(convs, proteins):
        ex = proc.encode_chat(conv, [seq])
        ids, labels, out_ids, out_labels, i = ex.input_ids, ex.labels, [], [], 0
        while i < len(ids):
            if ids[i] == proc.protein_token_id:  # a run of n slots → pad_to slots
                j = i
                while j < len(ids) and ids[j] == proc.protein_token_id:
                    j += 1
                out_ids += [proc.protein_token_id] * pad_to
                out_labels += [-100] * pad_to
                i = j
                continue
            out_ids.append(ids[i])
            out_labels.append(labels[i])
            i += 1
        ex.input_ids, ex.labels = out_ids, out_labels
        examples.append(ex)
    batch = proc.collate(examples)
    width = batch["protein_input_ids"].shape[1]
    if width > pad_to:
        raise ValueError(f"a protein needs {width} ESM positions, more than pad_to={pad_to}")
    extra = pad_to - width
    if extra:
        pad = proc.protein_tokenizer.pad_token_id
        p = batch["protein_input_ids"].shape[0]
        batch["protein_input_ids"] = torch.cat([batch["protein_input_ids"],
                                                torch.full((p, extra), pad, dtype=torch.long)], 1)
        for k in ("protein_attention_mask", "protein_residue_mask", "coord_mask"):
            batch[k] = torch.cat([batch[k], torch.zeros((p, extra), dtype=torch.bool)], 1)
        batch["coords"] = torch.cat([batch["coords"], torch.zeros((p, extra, 3))], 1)
    return batch


def reference_loss(model: Any, batch: dict[str, Any]):
    """Forward of the research scheme: the penultimate ESM states of ALL ``pad_to`` positions (special tokens and
    padding included) become LLM inputs; sepit's forward does the rest."""
    enc = model.encode(batch)
    feats = enc.penultimate.reshape(-1, enc.penultimate.shape[-1])  # (P·pad_to, D_plm)
    return model({**batch, "protein_features": feats}).loss


def run(model: Any = None, *, quick: bool = False, batches: int | None = None, batch_size: int | None = None,
        rounds: int | None = None, pad_to: int = 1024, proteins: list[Any] | None = None, device: Any = None,
        peak_tflops: float | None = None, warmup: bool = True) -> Result:
    """Interleaved stage-1 steps of both schemes over ``batches`` length-grouped batches of ``batch_size`` real
    proteins → Result (headline ratio = sepit's useful tokens/s ÷ the reference's over all batches)."""
    import torch

    from sepit.train.loop import set_trainable

    device = pick_device(device)
    batches = batches or (1 if quick else 4)
    batch_size = batch_size or 2
    if model is None:
        from sepit.model import build_model, default

        say("tokens: loading the default model")
        model = build_model(default())
    model.to(device).train()
    rounds = rounds or (1 if quick else 2)
    max_len = min(model.config.max_residues, pad_to - 2)
    table = proteins if proteins is not None else real_proteins(with_structures=False)
    groups = [[crop(p, max_len) for p in g] for g in length_grouped_batches(table, batches, batch_size, max_len)]
    sample = [p for g in groups for p in g]

    opt_groups = set_trainable(model, {k: v for k, v in STAGE1_LR.items() if model.param_groups().get(k)})
    params = [p for g in opt_groups for p in g["params"]]
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "names"} for g in opt_groups])
    proc = model.processor

    def step(loss_fn) -> float:
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    info: dict[str, list[Any]] = {"useful": [], "sepit_positions": [], "ref_positions": []}
    for g in groups:
        b = proc(conversations(g), [[p.sequence] for p in g])
        info["useful"].append(int(b["attention_mask"].sum()))
        info["sepit_positions"].append(int(b["input_ids"].numel()))
        rb = reference_batch(model, conversations(g), [p.sequence for p in g], pad_to)
        info["ref_positions"].append(int(rb["input_ids"].numel()))

    def batch_of(r: int) -> int:  # pass 1 forwards, pass 2 backwards: each batch runs once in each order
        k = r % (2 * batches)
        return k if k < batches else 2 * batches - 1 - k

    def sepit_step(r: int) -> float:
        g = groups[batch_of(r)] if r >= 0 else groups[0][:1]
        return step(lambda: model(model.to_device(proc(conversations(g), [[p.sequence] for p in g]))).loss)

    def reference_step(r: int) -> float:
        g = groups[batch_of(r)] if r >= 0 else groups[0][:1]
        return step(lambda: reference_loss(model, model.to_device(
            reference_batch(model, conversations(g), [p.sequence for p in g], pad_to))))

    say(f"tokens: {batches} batch(es) of {batch_size} proteins (lengths {[len(p.sequence) for p in sample]}), "
        f"reference pads to {pad_to}")
    ref_name = f"reference (pad to {pad_to})"
    t = interleave({ref_name: reference_step, "sepit (unpadded)": sepit_step}, batches * rounds,
                   warmup=1 if warmup else 0, device=device, progress="tokens")
    # per batch: the median over its rounds; totals over the batches
    med = {n: [statistics.median(tm.seconds[r] for r in range(batches * rounds) if batch_of(r) == k)
               for k in range(batches)] for n, tm in t.items()}
    ref, sep = t[ref_name], t["sepit (unpadded)"]
    ref_total, sep_total = sum(med[ref_name]), sum(med["sepit (unpadded)"])
    useful = sum(info["useful"])
    ratio = ref_total / sep_total
    per_batch = [a / b for a, b in zip(med[ref_name], med["sepit (unpadded)"])]

    llm_cfg = model.llm.config
    n_llm = sum(p.numel() for p in model.llm.parameters())
    n_esm = sum(p.numel() for p in model.encoder.parameters())

    def useful_flops(k: int) -> float:  # model FLOPs of the useful work of batch k (same for both schemes)
        g = groups[k]
        residues = sum(len(p.sequence) for p in g)
        seq = info["useful"][k] / len(g)
        return (transformer_train_flops(n_llm, llm_cfg.num_hidden_layers, llm_cfg.hidden_size, int(seq),
                                        info["useful"][k]) + 6.0 * n_esm * residues)

    flops = sum(useful_flops(k) for k in range(batches))
    rows = []
    for name, tm, total, pos in ((ref_name, ref, ref_total, info["ref_positions"]),
                                 ("sepit (unpadded)", sep, sep_total, info["sepit_positions"])):
        row = [name, statistics.mean(pos), useful / batches, total / batches, useful / total,
               flops / total / 1e9, tm.peak_mb]
        if peak_tflops:
            row.append(100 * mfu(flops, total, peak_tflops))
        rows.append(row)
    columns = ["approach", "LLM positions/step", "useful tokens/step", "mean step s", "useful tokens/s",
               "useful GFLOP/s", "peak mem +MiB"] + (["MFU %"] if peak_tflops else [])
    res = Result(
        name="tokens", title="1. Protein tokens in the LLM: stage-1 training throughput (useful tokens/s)",
        columns=columns, rows=rows, ratio=ratio, target=2.5,
        summary={"per-batch ratios (short → long)": ", ".join(f"{x:.2f}" for x in per_batch),
                 "median per-batch ratio": statistics.median(per_batch),
                 "sample mean length (table mean)": f"{mean_length(sample, max_len):.0f} "
                                                    f"({mean_length(table, max_len):.0f})",
                 "LLM positions ref ÷ sepit": sum(info["ref_positions"]) / sum(info["sepit_positions"])},
        notes=[("ratio = Σ reference step time ÷ Σ sepit step time over the same batches (each batch: median of "
                f"{rounds} round(s)) = ratio of useful tokens/s"),
               "useful GFLOP/s: 6·N + attention per useful token (LLM) + 6·N per residue (ESM)"
               + ("" if peak_tflops else "; MFU: pass --peak-tflops (GPU figures pending)"),
               f"device {device}, batch {batch_size}, lengths {[len(p.sequence) for p in sample]}"],
        params={"batches": batches, "batch_size": batch_size, "rounds": rounds, "pad_to": pad_to,
                "device": str(device),
                "lengths": [len(p.sequence) for p in sample]})
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--batches", type=int)
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--rounds", type=int, help="passes over the batches (default 2; quick 1)")
    ap.add_argument("--device")
    ap.add_argument("--peak-tflops", type=float, help="hardware peak for MFU (e.g. 989 for H100 SXM bf16)")
    a = ap.parse_args(argv)
    print(run(quick=a.quick, batches=a.batches, batch_size=a.batch_size, rounds=a.rounds, device=a.device,
              peak_tflops=a.peak_tflops).table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
