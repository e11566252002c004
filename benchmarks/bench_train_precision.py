"""Training precision: stage-1 and stage-2 training steps in fp32 vs bf16 autocast (and fp32 with LoRA on the LLM),
interleaved on the same batches: time per step and how far the losses drift apart.

    python -m benchmarks train_precision --threads 1            # default models, ~5 minutes on 2 CPU cores
    python -m benchmarks.bench_train_precision --threads 1 --steps 12   # longer: steadier medians and loss curves
    python -m benchmarks.bench_train_precision --stages 1 --lora-rank 0   # stage 1 only, fp32 vs bf16 only
    python -m benchmarks.bench_train_precision --lora-stages 1 2          # LoRA in stage 2 too (~4 GB more memory)
    python -m benchmarks.bench_train_precision --quick

Each variant is its own copy of one model (the same initial weights; in stage 2 one upcycled MoE, copied) with
its own AdamW, set up by the training loop's own pieces (``make_runner``, ``TrainConfig.trainable``,
``set_trainable``, ``make_optimizer``): ``fp32`` (no autocast: what ``precision: auto`` picks on a CPU),
``bf16 autocast`` (``precision: bf16``: fp32 master weights and optimizer, matmuls in bf16) and, when peft is
installed, ``fp32 + LoRA`` (``lora.rank``: the LLM frozen, adapters on its attention projections; stage 1 only by
default, as three copies of the 4-expert stage-2 model with their AdamW states need about 16 GB). A step = the
loop's collate + normaliser + loss (under autocast for bf16) + backward + clip + AdamW step, on the stage's
learning-rate groups (src/sepit/configs/train/stage{1,2}_default.yaml). The variants alternate step by step
(ABC → CBA), step k of every variant trains on batch k with the same step number (so structure dropout drops the
same proteins); each variant's time is its median step (``--warmup``: one untimed forward + backward per variant
first, changing no weight; off by default, as on a CPU without native bf16 one bf16 step takes over a minute).
Batches: real Swiss-Prot proteins at the midpoints of length-quantile bins, cut to ``max_len`` residues, with a
caption conversation (stage 1) or an open GO question (stage 2). Stage 2's frozen encoder is cached (as in
training) before timing. The LoRA variant's losses differ from fp32's by design (other weights train); its
|Δ loss| is shown for scale only.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import tempfile
from typing import Any

if __package__ in (None, ""):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import (
    Result,
    caption,
    crop,
    interleave,
    model_or_default,
    pick_device,
    quantile_sample,
    real_proteins,
    say,
)

STAGE_LR = {  # configs/train/stage{1,2}_default.yaml
    1: {"plm": 1.0e-5, "structure": 1.0e-5, "projector": 1.0e-3, "llm": 3.0e-5},
    2: {"projector": 3.0e-4, "llm": 1.0e-4, "experts": 1.0e-4, "router": 1.0e-4},
}
QUESTION = "<protein>\nDescribe this protein: its function, the processes it takes part in and where it is found."


def stage_items(proteins: list[Any], stage: int) -> list[Any]:
    """One training Item per protein: a caption conversation (stage 1) or an open GO question (stage 2)."""
    from benchmarks.bench_stage2_cache import qa_items
    from sepit.model import Protein
    from sepit.train.batching import Item

    if stage == 2:
        return qa_items(proteins)
    return [Item(p.accession, (Protein(p.sequence, p.coords, p.coord_mask),),
                 messages=({"role": "user", "content": QUESTION}, {"role": "assistant", "content": caption(p)}),
                 task="caption", length=len(p.sequence), protein_ids=(p.accession,)) for p in proteins]


def variant_names(lora_rank: int) -> list[str]:
    return ["fp32", "bf16 autocast"] + ([f"fp32 + LoRA r{lora_rank}"] if lora_rank else [])


def make_variant(base: Any, stage: int, name: str, lora_rank: int, batch_size: int, device: Any, out_dir: str,
                 seed: int = 0, take: bool = False) -> dict[str, Any]:
    """A copy of ``base`` (``base`` itself when ``take``) set up for one variant as the training loop sets up a
    stage: runner, trainable set, optimizer, autocast dtype."""
    import torch

    from sepit.train.config import LoraSection, TrainConfig
    from sepit.train.loop import make_optimizer, set_trainable
    from sepit.train.stages import make_runner

    model = base if take else copy.deepcopy(base)
    lr = {g: v for g, v in STAGE_LR[stage].items() if g == "llm" or model.param_groups().get(g)}
    cfg = TrainConfig(stage=stage, out_dir=out_dir, model="default", lr=lr, batch_size=batch_size,
                      upcycle_experts=model.config.moe.num_experts if stage == 2 else 0,
                      precision="bf16" if name.startswith("bf16") else "fp32",
                      lora=LoraSection(rank=lora_rank) if "LoRA" in name else LoraSection(), seed=seed)
    torch.manual_seed(seed)  # LoRA's A matrices
    runner = make_runner(cfg, model=model, device=device)
    model.to(device).train()
    opt_groups = set_trainable(model, cfg.trainable())
    return {"model": model, "runner": runner, "opt": make_optimizer(opt_groups, cfg.weight_decay),
            "params": [p for g in opt_groups for p in g["params"]],
            "trainable": sum(p.numel() for g in opt_groups for p in g["params"]),
            "amp": torch.bfloat16 if cfg.precision == "bf16" else None, "max_grad_norm": cfg.max_grad_norm}


def train_step(v: dict[str, Any], items: list[Any], step: int, device: Any, update: bool = True) -> float:
    """One step of the training loop for variant ``v`` on ``items`` (collate, loss under autocast, backward, clip,
    AdamW); ``update=False``: forward and backward only (warm-up, weights unchanged)."""
    import torch

    model, runner, opt = v["model"], v["runner"], v["opt"]
    col = [runner.collate(items, step=step)]
    denom = runner.normaliser(col)
    batch = model.to_device(col[0])
    with torch.autocast(device.type, dtype=v["amp"], enabled=v["amp"] is not None):
        loss, _ = runner.loss(model, batch, denom, 1)
    loss.backward()
    if update:
        torch.nn.utils.clip_grad_norm_(v["params"], v["max_grad_norm"])
        opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())


def run_stage(base: Any, stage: int, proteins: list[Any], *, steps: int, batch_size: int, lora_rank: int,
              device: Any, take_base: bool = False, warmup: bool = False) -> dict[str, Any]:
    """Interleaved steps of every variant of one stage → {"timings": {variant: Timing}, "trainable": {variant:
    parameters}}. ``take_base``: the last variant trains ``base`` itself (one copy less in memory)."""
    import torch

    items = stage_items(proteins, stage)
    batches = [items[k * batch_size:(k + 1) * batch_size] for k in range(steps)]
    names = variant_names(lora_rank)
    with tempfile.TemporaryDirectory() as tmp:
        variants = {n: make_variant(base, stage, n, lora_rank, batch_size, device, tmp,
                                    take=take_base and n == names[-1]) for n in names}
    for v in variants.values():
        v["runner"].prepare(items)
        if v["runner"].use_cache:  # stage 2: encode the frozen encoder's features once, untimed (as in training)
            v["model"].encoder.eval()
            for k, b in enumerate(batches):
                v["runner"].collate(b, step=k)

    def step_of(v: dict[str, Any]):
        def step(r: int) -> float:
            if r < 0:  # warm-up: kernels and buffers, no weight changes
                return train_step(v, batches[0], 0, device, update=False)
            torch.manual_seed(1000 + r)  # the same random stream for every variant at step r
            return train_step(v, batches[r], r, device)
        return step

    say(f"train_precision: stage {stage}, {steps} steps of batch {batch_size} "
        f"(lengths {[len(p.sequence) for p in proteins[:steps * batch_size]]})")
    t = interleave({n: step_of(v) for n, v in variants.items()}, steps, warmup=int(warmup), device=device,
                   progress=f"train_precision stage {stage}")
    out = {"timings": t, "trainable": {n: v["trainable"] for n, v in variants.items()}}
    del variants
    return out


def loss_stats(ref: list[float], other: list[float]) -> dict[str, float]:
    diffs = [abs(a - b) for a, b in zip(ref, other)]
    return {"first": diffs[0], "mean": statistics.mean(diffs), "max": max(diffs)}


def run(model: Any = None, *, quick: bool = False, steps: int | None = None, batch_size: int | None = None,
        max_len: int | None = None, lora_rank: int | None = None, stages: tuple[int, ...] = (1, 2),
        lora_stages: tuple[int, ...] = (1,), experts: int | None = None, proteins: list[Any] | None = None,
        device: Any = None, warmup: bool = False) -> Result:
    """Both stages' variants, interleaved → Result (headline ratio = Σ fp32 median step times ÷ Σ bf16 ones over
    the stages; > 1 means bf16 autocast trains faster)."""
    import torch

    from sepit.model.precision import autocast_dtype, cpu_has_native_bf16

    device = pick_device(device)
    steps = steps or (2 if quick else 3)
    batch_size = batch_size or 1
    max_len = max_len or (32 if quick else 64)
    if lora_rank is None:
        lora_rank = 8 if _peft_available() else 0
    model = model_or_default(model, "train_precision")
    table = proteins if proteins is not None else real_proteins()
    sample = [crop(p, max_len) for p in quantile_sample(table, steps * batch_size, max_len=max_len)]

    results: dict[int, dict[str, Any]] = {}
    for stage in stages:
        base = model
        if stage == 2:
            import dataclasses

            base = copy.deepcopy(model)
            if experts:
                base.config = dataclasses.replace(base.config, moe=dataclasses.replace(base.config.moe,
                                                                                       num_experts=experts))
            torch.manual_seed(0)  # the router's initial weights: one upcycled model, copied for every variant
            base.upcycle()
        results[stage] = run_stage(base, stage, sample, steps=steps, batch_size=batch_size,
                                   lora_rank=lora_rank if stage in lora_stages else 0, device=device,
                                   take_base=base is not model, warmup=warmup)
        del base
        gc.collect()

    rows, summary, ratios = [], {}, {}
    for stage, res in results.items():
        t, fp32 = res["timings"], res["timings"]["fp32"]
        for name, tm in t.items():
            d = loss_stats(fp32.values, tm.values)
            rows.append([stage, name, res["trainable"][name], tm.median, min(tm.seconds), fp32.median / tm.median,
                         tm.peak_mb, tm.values[0], tm.values[-1], d["mean"] if name != "fp32" else "—"])
        bf = t["bf16 autocast"]
        ratios[stage] = fp32.median / bf.median
        d = loss_stats(fp32.values, bf.values)
        summary[f"stage {stage}: bf16 autocast speed-up (fp32 median ÷ bf16 median step time)"] = ratios[stage]
        summary[f"stage {stage}: |loss bf16 − fp32| at step 1 (same weights) / mean / max over "
                f"{len(fp32.values)} steps"] = f"{d['first']:.2e} / {d['mean']:.2e} / {d['max']:.2e}"
        summary[f"stage {stage}: final loss fp32 / bf16"] = f"{fp32.values[-1]:.4f} / {bf.values[-1]:.4f}"
        lora = next((n for n in t if "LoRA" in n), None)
        if lora:
            summary[f"stage {stage}: LoRA speed-up vs fp32 full fine-tuning"] = fp32.median / t[lora].median
    total = (sum(statistics.median(r["timings"]["fp32"].seconds) for r in results.values())
             / sum(statistics.median(r["timings"]["bf16 autocast"].seconds) for r in results.values()))
    native = cpu_has_native_bf16() if device.type == "cpu" else None
    summary["bf16 in hardware"] = (f"{'yes' if native else 'no'} (CPU: AMX or AVX512-BF16)" if native is not None
                                   else f"{device.type}: see torch.cuda.is_bf16_supported()")
    summary["precision: auto trains in"] = str(autocast_dtype("auto", device) or torch.float32).replace("torch.", "")
    return Result(
        name="train_precision", title="6. Training precision: fp32 vs bf16 autocast (and LoRA), stages 1 and 2",
        columns=["stage", "variant", "trainable params", "median step s", "min step s", "speed-up vs fp32",
                 "peak mem +MiB", "loss step 1", "final loss", "mean |Δloss| vs fp32"],
        rows=rows, ratio=total, summary=summary,
        notes=["ratio = Σ over the stages of fp32 median step time ÷ Σ of bf16 autocast median step time "
               "(> 1: bf16 autocast is faster)",
               "the variants alternate step by step on the same batches from the same initial weights; step 1's "
               "|Δloss| is numerics alone, later steps add the drift of the weights",
               f"device {device}, {len(next(iter(results.values()))['timings']['fp32'].seconds)} steps of batch "
               f"{batch_size}, proteins cut to {max_len} residues, lengths {[len(p.sequence) for p in sample]}"
               + (f", stage 2: {experts or model.config.moe.num_experts} experts" if 2 in results else "")],
        params={"warmup": warmup, "steps": steps, "batch_size": batch_size, "max_len": max_len, "lora_rank": lora_rank,
                "stages": list(stages), "lora_stages": list(lora_stages), "device": str(device),
                "lengths": [len(p.sequence) for p in sample]})


def _peft_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("peft") is not None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 steps, proteins cut to 32 residues")
    ap.add_argument("--steps", type=int, help="steps per variant and stage (default 3; quick 2)")
    ap.add_argument("--batch-size", type=int, help="proteins per step (default 1)")
    ap.add_argument("--max-len", type=int, help="cut proteins to this many residues (default 64; quick 32)")
    ap.add_argument("--warmup", action="store_true", help="one untimed forward + backward per variant first")
    ap.add_argument("--lora-rank", type=int, help="rank of the LoRA variant; 0 = none (default 8 with peft)")
    ap.add_argument("--stages", type=int, nargs="+", choices=(1, 2), default=[1, 2])
    ap.add_argument("--lora-stages", type=int, nargs="+", choices=(1, 2), default=[1],
                    help="stages with a LoRA variant (default 1; 2 needs ~4 GB more)")
    ap.add_argument("--experts", type=int, help="stage 2's experts (default: the model's, 4)")
    ap.add_argument("--device")
    ap.add_argument("--threads", type=int, help="torch intra-op threads (1 is steadier on a busy machine)")
    a = ap.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    print(run(quick=a.quick, steps=a.steps, batch_size=a.batch_size, max_len=a.max_len, lora_rank=a.lora_rank,
              stages=tuple(a.stages), lora_stages=tuple(a.lora_stages), experts=a.experts, device=a.device,
              warmup=a.warmup).table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
