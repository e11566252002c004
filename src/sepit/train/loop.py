"""The one training loop for every stage.

A stage (``TrainConfig``) declares its data, the parameter groups that train and their learning rates, and its
losses; this loop does the rest: trainable set (logged), AdamW, warm-up + cosine schedule, gradient accumulation,
data parallelism under torchrun (DDP arithmetic, or FSDP sharding: ``distributed.strategy``), NaN guard, metrics
log, progress bar, atomic checkpoints (one format whatever the strategy) and exact resume.

    result = train(load_config("src/sepit/configs/train/stage1_tiny.yaml", TrainConfig), resume=True)
"""

from __future__ import annotations

import errno
import json
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sepit._io import atomic_dir, atomic_write, write_json
from sepit.config import to_dict
from sepit.errors import CheckpointError, SepitError
from sepit.log import get_logger, progress
from sepit.model.checkpoint import save_model
from sepit.train import distributed as dist
from sepit.train import fsdp
from sepit.train.batching import Item, epoch_batches, shard, steps_per_epoch
from sepit.train.config import TrainConfig
from sepit.train.schedule import lr_factor
from sepit.train.stages import StageRunner, make_runner
from sepit.train.state import load_trainer_state, save_trainer_state

log = get_logger(__name__)


class TrainingError(SepitError):
    """Training cannot go on (NaN loss, disk full, ...); the message names the last good checkpoint."""


@dataclass
class TrainResult:
    out_dir: Path
    final_dir: Path
    steps: int
    losses: list[float]
    metrics_file: Path


# ---- trainable set --------------------------------------------------------------------------------------------------
def set_trainable(model: nn.Module, lrs: dict[str, float]) -> list[dict[str, Any]]:
    """Freeze everything, then unfreeze the groups in ``lrs``; returns AdamW parameter groups (+ names)."""
    groups = model.param_groups()
    for p in model.parameters():
        p.requires_grad_(False)
    out = []
    for name, lr in lrs.items():
        params = groups.get(name, [])
        if not params:
            raise SepitError(f"stage trains parameter group {name!r}, but this model has none "
                             f"({'is the LLM upcycled to MoE?' if name in ('experts', 'router') else 'empty group'})")
        for _, p in params:
            p.requires_grad_(True)
        out.append({"params": [p for _, p in params], "lr": lr, "base_lr": lr, "group": name,
                    "names": [n for n, _ in params]})
    return out


def describe_trainable(model: nn.Module, opt_groups: list[dict[str, Any]]) -> str:
    """A table of groups: tensors, parameters, learning rate (frozen groups shown as such)."""
    lrs = {g["group"]: g["lr"] for g in opt_groups}
    lines = [f"{'group':<10} {'tensors':>7} {'params':>13}  lr"]
    total = trainable = 0
    for name, params in model.param_groups().items():
        n = sum(p.numel() for _, p in params)
        total += n
        trainable += n if name in lrs else 0
        lines.append(f"{name:<10} {len(params):>7} {n:>13,}  {lrs[name]:.1e}" if name in lrs
                     else f"{name:<10} {len(params):>7} {n:>13,}  frozen")
    lines.append(f"trainable {trainable:,} of {total:,} parameters")
    return "\n".join(lines)


def make_optimizer(opt_groups: list[dict[str, Any]], weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused where torch supports it for these parameters (CPU and CUDA float tensors): on a 2-core CPU the
    fused step is ~7x faster than the per-tensor loop (0.9 s vs 6.5 s per 100M parameters, measured)."""
    groups = [{k: v for k, v in g.items() if k != "names"} for g in opt_groups]
    try:
        return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(groups, weight_decay=weight_decay)


# ---- checkpoints ----------------------------------------------------------------------------------------------------
def latest_checkpoint(out_dir: Path) -> Path | None:
    ptr = out_dir / "checkpoints" / "latest"
    if not ptr.is_file():
        return None
    path = out_dir / "checkpoints" / ptr.read_text().strip()
    return path if (path / "trainer_state.json").is_file() else None


def _save_checkpoint(model, opt, out_dir: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write ``checkpoints/step-N`` on rank 0 and point ``latest`` at it; returns its path (on every rank).
    A sharded model is gathered first, which every rank takes part in."""
    sharded = fsdp.is_sharded(model)
    weights = fsdp.full_model_state(model) if sharded else None
    opt_state = fsdp.full_optimizer_state(opt) if sharded else opt
    ckpt_root = out_dir / "checkpoints"
    name = f"step-{step:07d}"
    if not dist.is_main():
        return ckpt_root / name  # rank 0 writes it (a barrier follows); every rank can name it in errors
    try:
        with atomic_dir(ckpt_root / name) as tmp:
            save_model(model, tmp / "model", weights)
            save_trainer_state(tmp, opt_state, state)
        with atomic_write(ckpt_root / "latest") as f:
            f.write(name + "\n")
    except OSError as e:
        last = latest_checkpoint(out_dir)
        why = "disk full" if e.errno == errno.ENOSPC else str(e)
        raise TrainingError(f"could not write checkpoint {ckpt_root / name} ({why}); last good checkpoint: "
                            f"{last or 'none'}") from None
    old = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir() and p.name != name)
    for p in old[:max(0, len(old) - (keep - 1))]:
        shutil.rmtree(p, ignore_errors=True)
    return ckpt_root / name


def _load_weights(model: nn.Module, start: Path) -> None:
    """Load a checkpoint's weights into the (unsharded) model; tied weights are stored under one name."""
    from safetensors.torch import load_file

    weights = load_file(str(start / "model" / "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    sd = model.state_dict()
    loaded_ptrs = {sd[k].data_ptr() for k in weights if k in sd}
    missing = [m for m in missing if sd[m].data_ptr() not in loaded_ptrs]  # tied weights are stored once
    if unexpected or missing:
        raise CheckpointError(f"{start}: model weights do not match this run's model "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")


# ---- precision ------------------------------------------------------------------------------------------------------
def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware has it (CUDA with bf16), fp32 otherwise; never fp16."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


# ---- the loop -------------------------------------------------------------------------------------------------------
def train(cfg: TrainConfig, *, resume: bool = False, dry_run: bool = False,
          items: list[Item] | None = None, model: nn.Module | None = None) -> TrainResult | dict[str, Any]:
    """Run one stage. ``items``/``model`` may be given directly (tests); otherwise they come from the config.

    Returns a TrainResult, or the plan (a dict) when ``dry_run``.
    """
    rank, world = dist.init_distributed()
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    out_dir = Path(cfg.out_dir)
    torch.manual_seed(cfg.seed)
    runner: StageRunner = make_runner(cfg, model=model, device=device)
    model = runner.model
    if items is None:
        items = runner.load_items()
    opt_groups = set_trainable(model, cfg.lr)
    strategy = dist.resolve_strategy(cfg.distributed.strategy, world)
    global_batch = cfg.batch_size * cfg.grad_accum * world
    per_epoch = steps_per_epoch(len(items), global_batch)
    total_steps = cfg.max_steps or cfg.epochs * per_epoch
    plan = {"stage": cfg.stage, "items": len(items), "global_batch": global_batch, "steps_per_epoch": per_epoch,
            "total_steps": total_steps, "world_size": world, "strategy": strategy, "device": str(device),
            "precision": str(autocast_dtype(cfg.precision, device) or torch.float32),
            "tasks": runner.task_counts(items),
            "memory_estimate_gb": round(runner.memory_estimate_gb(shards=world if strategy == "fsdp" else 1), 2)}
    if dist.is_main():
        log.info(f"stage {cfg.stage}: {len(items)} items, {total_steps} steps of global batch {global_batch} "
                 f"({world} process{'es' if world > 1 else ''}, strategy {strategy}, {device}, {plan['precision']})")
        if strategy == "single" and cfg.distributed.strategy == "fsdp":
            log.info("distributed.strategy=fsdp: one process has nothing to shard, so the model stays whole")
        log.info("trainable parameters:\n" + describe_trainable(model, opt_groups))
    if dry_run:
        plan["trainable"] = describe_trainable(model, opt_groups)
        return plan
    if not items:
        raise SepitError(f"stage {cfg.stage}: no training items (data.dir={cfg.data.dir!r}, kinds={cfg.data.kinds})")

    model.to(device)
    model.train()
    runner.prepare(items)
    warmup = int(cfg.warmup_ratio * total_steps)
    amp = autocast_dtype(cfg.precision, device)

    step, losses, start = 0, [], None
    if resume:
        start = latest_checkpoint(out_dir)
        if start is None:
            log.info(f"--resume: no checkpoint in {out_dir}, starting from scratch")
        else:
            _load_weights(model, start)  # before sharding: each rank then keeps its shard of these weights
    elif latest_checkpoint(out_dir) is not None:
        raise SepitError(f"{out_dir} already has checkpoints: pass --resume to continue, or use another out_dir")
    if strategy == "fsdp":
        fsdp.shard_model(model, device, mp_dtype=amp, reshard_after_forward=cfg.distributed.reshard_after_forward,
                         replicate_encoder=runner.use_cache)
        opt_groups = set_trainable(model, cfg.lr)  # the same set, now the sharded parameters that replaced them
    opt = make_optimizer(opt_groups, cfg.weight_decay)
    load_optimizer = partial(fsdp.load_full_optimizer_state, opt) if strategy == "fsdp" else None
    saved_step = None  # the step whose checkpoint holds the current weights, if any
    if start is not None:
        state = load_trainer_state(start, opt, load_optimizer)
        if state.get("config_hash") != _config_hash(cfg):
            log.warning(f"resuming from {start} whose config differs from this run's")
        step, losses = state["step"], state["losses"]
        saved_step = step
        log.info(f"resumed from {start} at step {step}")

    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_file = out_dir / "metrics.jsonl"
    if dist.is_main():
        write_json(out_dir / "train_config.json", to_dict(cfg))
    writer = _tensorboard(out_dir) if dist.is_main() else None
    bar = progress(total=total_steps, initial=step, desc=f"stage {cfg.stage}", unit="step",
                   disable=not dist.is_main())
    t_last, tokens_since = time.time(), 0
    last_ckpt = latest_checkpoint(out_dir)
    while step < total_steps:
        epoch, pos = divmod(step, per_epoch)
        batches = epoch_batches(items, global_batch, cfg.seed, epoch, cfg.length_grouping)
        batch_idx = batches[pos % len(batches)]
        micro = shard(batch_idx, rank, world, cfg.batch_size, cfg.grad_accum)
        factor = lr_factor(step, total_steps, warmup)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * factor
        collated = [runner.collate([items[i] for i in m], step=step) for m in micro]
        denom = runner.normaliser(collated)
        logs: dict[str, float] = {}
        for k, b in enumerate(collated):
            b = model.to_device(b)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss, parts = runner.loss(model, b, denom, n_micro=len(collated))
            if dist.any_rank(not bool(torch.isfinite(loss)), loss.device):  # every rank stops, none hangs
                raise TrainingError(f"stage {cfg.stage}: loss is {loss.item()} at step {step + 1}"
                                    f"{' on some process' if world > 1 else ''}; stopped without applying it. "
                                    f"Last good checkpoint: {last_ckpt or 'none'}")
            loss.backward()
            for name, v in parts.items():
                logs[name] = logs.get(name, 0.0) + v
        trainable = [p for g in opt.param_groups for p in g["params"]]
        # DDP: average every gradient; FSDP reduce-scattered its shards in backward, only the few whole ones are left
        dist.average_gradients(fsdp.unsharded(trainable) if strategy == "fsdp" else trainable)
        dist.drop_zero_gradients(trainable)  # "unused" = zero gradient over the global batch, whatever the strategy
        grad_norm = fsdp.scalar(torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm))
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        loss_value = float(dist.all_reduce_mean(torch.tensor(logs.get("loss", 0.0))).item())
        losses.append(loss_value)
        tokens_since += sum(int(b.get("num_tokens_processed", 0)) for b in collated)
        if dist.is_main():
            now = time.time()
            rec = {"step": step, "epoch": epoch, "lr": opt.param_groups[0]["lr"], "grad_norm": grad_norm,
                   **{k: round(v, 6) for k, v in logs.items()}, "loss": loss_value,
                   "tokens_per_s": round(tokens_since * world / max(now - t_last, 1e-9), 1)}
            with open(metrics_file, "a") as f:
                f.write(json.dumps(rec) + "\n")
            if writer is not None:
                for k, v in rec.items():
                    if isinstance(v, (int, float)) and k != "step":
                        writer.add_scalar(f"stage{cfg.stage}/{k}", v, step)
            bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=rec["tokens_per_s"], refresh=False)
            if step % cfg.log_every == 0 or step == total_steps:
                log.debug(json.dumps(rec))
            t_last, tokens_since = now, 0
        bar.update(1)
        if step % cfg.save_every == 0 or step == total_steps:
            state = {"step": step, "losses": losses, "config_hash": _config_hash(cfg), "total_steps": total_steps}
            last_ckpt = _save_checkpoint(model, opt, out_dir, step, state, cfg.keep_checkpoints)
            saved_step = step
            dist.barrier()
    bar.close()
    final = out_dir / "final"
    valid_loss = runner.validation_loss()  # on every rank: a sharded model's forward is collective
    weights = fsdp.full_model_state(model) if fsdp.is_sharded(model) and saved_step != step else None
    if dist.is_main():
        if saved_step == step:
            _link_tree(out_dir / "checkpoints" / f"step-{step:07d}" / "model", final)  # already holds these weights
        else:
            save_model(model, final, weights)
        summary = {"steps": step, "first_loss": losses[0] if losses else None,
                   "last_loss": losses[-1] if losses else None, "items": len(items),
                   "valid_loss": valid_loss, "final": str(final)}
        write_json(out_dir / "summary.json", summary)
        log.info(f"stage {cfg.stage} done: {step} steps, loss {summary['first_loss']} → {summary['last_loss']}; "
                 f"model in {final}")
    if writer is not None:
        writer.close()
    dist.barrier()
    return TrainResult(out_dir, final, step, losses, metrics_file)


def _link_tree(src: Path, dst: Path) -> None:
    """``dst`` = the files of ``src`` as hard links (copies across file systems), swapped in atomically."""
    import os

    with atomic_dir(dst) as tmp:
        for f in src.rglob("*"):
            if f.is_file():
                target = tmp / f.relative_to(src)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(f, target)
                except OSError:
                    shutil.copy2(f, target)


def _config_hash(cfg: TrainConfig) -> str:
    import hashlib

    d = to_dict(cfg)
    # "distributed": a run may resume under another strategy (the checkpoint format is the same)
    for k in ("max_steps", "save_every", "log_every", "keep_checkpoints", "distributed"):
        d.pop(k, None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - TensorBoard is optional
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))

