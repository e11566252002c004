"""The one training loop for every stage.

A stage (``TrainConfig``) declares its data, the parameter groups that train and their learning rates, and its
losses; this loop does the rest: trainable set (logged), AdamW, warm-up + cosine schedule, gradient accumulation,
data parallelism under torchrun (DDP arithmetic, or FSDP sharding: ``distributed.strategy``), NaN guard, metrics
log, progress bar, atomic checkpoints (one format whatever the strategy) and exact resume. Under ``ddp`` the stage's
objective (``runner.objective(model)``) runs inside torch's DistributedDataParallel, which averages the gradients
while backward runs (``no_sync`` for all but the last micro-batch of a step); under ``fsdp`` FSDP2 reduce-scatters
them. With LoRA
(``lora.rank`` > 0, see :mod:`sepit.train.lora`) the adapters train and checkpoints hold the merged weights.

    result = train(load_config("src/sepit/configs/train/stage1_tiny.yaml", TrainConfig), resume=True)
"""

from __future__ import annotations

import errno
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from sepit.train import fsdp, fsdp_init, lora
from sepit.train.batching import EpochOrder, Item, epoch_batches, shard, steps_per_epoch
from sepit.train.config import TrainConfig
from sepit.train.item_source import item_lengths
from sepit.train.schedule import lr_factor
from sepit.train.stages import StageRunner, make_runner
from sepit.train.state import (
    latest_checkpoint,
    load_trainer_state,
    prune_checkpoints,
    save_trainer_state,
    verify_state_files,
)

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
        if name == "lora" and not params:
            continue  # no LoRA in this run
        n = sum(p.numel() for _, p in params)
        total += n
        trainable += n if name in lrs else 0
        lines.append(f"{name:<10} {len(params):>7} {n:>13,}  {lrs[name]:.1e}" if name in lrs
                     else f"{name:<10} {len(params):>7} {n:>13,}  frozen")
    lines.append(f"trainable {trainable:,} of {total:,} parameters")
    return "\n".join(lines)


def make_optimizer(opt_groups: list[dict[str, Any]], weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused where torch supports it for these parameters (CPU and CUDA float tensors): on a 2-core CPU the
    fused step is several times faster than the per-tensor loop."""
    groups = [{k: v for k, v in g.items() if k != "names"} for g in opt_groups]
    try:
        return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.AdamW(groups, weight_decay=weight_decay)


# ---- checkpoints ----------------------------------------------------------------------------------------------------
def _save_checkpoint(model, opt, out_dir: Path, step: int, state: dict[str, Any], keep: int,
                     device: torch.device) -> Path:
    """Write ``checkpoints/step-N`` on rank 0 and point ``latest`` at it; returns its path (on every rank).
    A sharded model is gathered first, which every rank takes part in. A write that fails raises TrainingError on
    every rank (they agree on it, as on a NaN loss), not on rank 0 alone while the others wait for it."""
    sharded = fsdp.is_sharded(model)
    weights = fsdp.full_model_state(model) if sharded else None
    opt_state = fsdp.full_optimizer_state(opt) if sharded else opt
    ckpt_root = out_dir / "checkpoints"
    name = f"step-{step:07d}"
    why = _write_checkpoint(model, weights, opt_state, state, ckpt_root, name, keep) if dist.is_main() else None
    if dist.any_rank(why is not None, device):
        raise TrainingError(f"could not write checkpoint {ckpt_root / name} ({why or 'on process 0'}); "
                            f"last good checkpoint: {latest_checkpoint(out_dir) or 'none'}")
    return ckpt_root / name  # every rank can name it in errors


def _write_checkpoint(model, weights, opt_state, state: dict[str, Any], ckpt_root: Path, name: str,
                      keep: int) -> str | None:
    """Rank 0: write checkpoint ``name`` atomically, point ``latest`` at it and drop the oldest beyond ``keep``
    (:func:`~sepit.train.state.prune_checkpoints`).
    Returns why the write failed (``disk full``, the OS error), or None."""
    try:
        with atomic_dir(ckpt_root / name) as tmp:
            with lora.merged(model):  # LoRA: a plain model with the adapters merged in
                save_model(model, tmp / "model", weights)
            lora.save_state(model, tmp)  # LoRA: its layers' own state, for an exact resume
            save_trainer_state(tmp, opt_state, state)
        with atomic_write(ckpt_root / "latest") as f:
            f.write(name + "\n")
    except OSError as e:
        return "disk full" if e.errno == errno.ENOSPC else str(e)
    prune_checkpoints(ckpt_root / name, keep)
    return None


def _load_weights(model: nn.Module, start: Path) -> None:
    """Load a checkpoint's weights into the (unsharded) model, strictly: one loader for every checkpoint, see
    :func:`sepit.model.checkpoint.load_weights`. With LoRA, the merged weights fill everything but the LoRA layers,
    whose own state (base weights, adapters) comes from the checkpoint's ``lora.safetensors``."""
    from sepit.model.checkpoint import WEIGHTS, load_weights, verify_files

    verify_files(start / "model")  # sha256 of the weights: a damaged file is a one-line error, not a crash
    with lora.merged(model):
        load_weights(model, start / "model" / WEIGHTS, against="this run's model")
    lora.load_state(model, start)


# ---- precision ------------------------------------------------------------------------------------------------------
def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where the hardware has it (CUDA with bf16; on CPUs only when asked for with ``bf16``), fp32
    (None) otherwise; never fp16. See :func:`sepit.model.precision.autocast_dtype`, which holds every precision rule
    (and the CPU measurement behind it)."""
    from sepit.model.precision import autocast_dtype as _autocast_dtype

    return _autocast_dtype(precision, device)


# ---- the loop -------------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    """One run between its set-up and its end: what every step reads, and what the steps advance."""

    cfg: TrainConfig
    runner: StageRunner
    model: nn.Module
    engine: nn.Module  # what the loss runs through: the objective, in DDP under ``ddp``
    opt: torch.optim.Optimizer
    items: Sequence[Item]  # a list, or an ItemSource reading them from disk
    device: torch.device
    amp: torch.dtype | None  # autocast dtype, None for fp32
    rank: int
    world: int
    strategy: str
    global_batch: int
    per_epoch: int
    total_steps: int
    warmup: int
    out_dir: Path
    metrics_file: Path
    writer: Any  # TensorBoard SummaryWriter on rank 0, when installed
    bar: Any  # progress bar (disabled off rank 0)
    step: int = 0
    losses: list[float] = field(default_factory=list)
    saved_step: int | None = None  # the step whose checkpoint holds the current weights, if any
    last_ckpt: Path | None = None  # named in errors: where a stopped run resumes from
    t_last: float = 0.0  # tokens/s: time and tokens since the last metrics record
    tokens_since: int = 0
    epoch_order: tuple[int, EpochOrder] | None = None  # (epoch, its global batches): computed once per epoch

    def batches(self, epoch: int) -> EpochOrder:
        """The global batches of ``epoch`` (item indices), computed on the epoch's first step only."""
        if self.epoch_order is None or self.epoch_order[0] != epoch:
            self.epoch_order = (epoch, epoch_batches(item_lengths(self.items), self.global_batch, self.cfg.seed,
                                                     epoch, self.cfg.length_grouping))
        return self.epoch_order[1]


def train(cfg: TrainConfig, *, resume: bool = False, dry_run: bool = False,
          items: list[Item] | None = None, model: nn.Module | None = None) -> TrainResult | dict[str, Any]:
    """Run one stage. ``items``/``model`` may be given directly (tests); otherwise they come from the config.

    Returns a TrainResult, or the plan (a dict) when ``dry_run``. Under torchrun every process runs this; a
    TrainingError (a NaN loss on any process, a checkpoint that could not be written) is raised on every process
    at the same step, after they have stopped together and (when ``train`` joined it) left the process group.
    """
    _check_out_dir(Path(cfg.out_dir))  # before any work
    callers_group = dist.is_initialized()  # a group the caller joined is the caller's to leave
    world = dist.init_distributed()[1]
    device = torch.device(f"cuda:{torch.cuda.current_device()}" if torch.cuda.is_available() else "cpu")
    strategy = dist.resolve_strategy(cfg.distributed.strategy, world)
    if cfg.lora.rank and strategy == "fsdp":
        raise SepitError("lora with distributed.strategy=fsdp is not supported (LoRA's trainable state is small): "
                         "use distributed.strategy=ddp")
    torch.manual_seed(cfg.seed)
    # FSDP: the model is built on the meta device; each process fills its own shards in _start, none holds it whole
    runner = make_runner(cfg, model=model, device=device, on_meta=model is None and strategy == "fsdp")
    torch.manual_seed(cfg.seed)  # the run's draws start from the seed, whatever building the model drew (or not)
    if items is None:
        items = runner.load_items()
    opt_groups = set_trainable(runner.model, cfg.trainable())
    plan = _plan(cfg, runner, items, world, strategy, device)
    if dist.is_main():
        _log_plan(cfg, plan, describe_trainable(runner.model, opt_groups))
    if dry_run:
        plan["trainable"] = describe_trainable(runner.model, opt_groups)
        return plan
    if not items:
        raise SepitError(f"stage {cfg.stage}: no training items (data.dir={cfg.data.dir!r}, kinds={cfg.data.kinds})")
    if world > 1 and len(items) < plan["global_batch"]:  # some ranks would get no micro-batch and wait forever
        raise SepitError(f"stage {cfg.stage}: {len(items)} training items is fewer than the global batch "
                         f"{plan['global_batch']} of {world} processes: use fewer processes or a smaller batch_size")

    run = _start(cfg, runner, items, opt_groups, plan, device, resume)
    try:
        while run.step < run.total_steps:
            _train_step(run)
            if run.step % cfg.save_every == 0 or run.step == run.total_steps:
                _checkpoint(run)
        return _finish(run)
    except TrainingError:
        # every rank raised it at the same step (the stop was agreed), so every rank is here: stop together
        fsdp.reset_after_error(run.model)
        dist.stop_together(leave=not callers_group)
        raise
    finally:
        _close_outputs(run)


def _check_out_dir(out_dir: Path) -> None:
    """One-line error when ``out_dir`` (or the nearest existing folder above it) is a file."""
    for p in (out_dir, *out_dir.parents):
        if p.exists():
            if not p.is_dir():
                where = "is a file" if p == out_dir else f"is inside {p}, which is a file"
                raise SepitError(f"out_dir {out_dir} {where}, not a folder: choose another out_dir")
            return


def _plan(cfg: TrainConfig, runner: StageRunner, items: list[Item], world: int, strategy: str,
          device: torch.device) -> dict[str, Any]:
    """What the run will do (``--dry-run`` prints it): items, batch and step counts, strategy, precision, memory."""
    global_batch = cfg.batch_size * cfg.grad_accum * world
    per_epoch = steps_per_epoch(len(items), global_batch)
    return {"stage": cfg.stage, "items": len(items), "global_batch": global_batch, "steps_per_epoch": per_epoch,
            "total_steps": cfg.max_steps or cfg.epochs * per_epoch, "world_size": world, "strategy": strategy,
            "device": str(device), "precision": str(autocast_dtype(cfg.precision, device) or torch.float32),
            "tasks": runner.task_counts(items),
            "memory_estimate_gb": round(runner.memory_estimate_gb(shards=world if strategy == "fsdp" else 1), 2)}


def _log_plan(cfg: TrainConfig, plan: dict[str, Any], trainable: str) -> None:
    world, strategy = plan["world_size"], plan["strategy"]
    log.info(f"stage {cfg.stage}: {plan['items']} items, {plan['total_steps']} steps of global batch "
             f"{plan['global_batch']} ({world} process{'es' if world > 1 else ''}, strategy {strategy}, "
             f"{plan['device']}, {plan['precision']})")
    if strategy == "single" and cfg.distributed.strategy == "fsdp":
        log.info("distributed.strategy=fsdp: one process has nothing to shard, so the model stays whole")
    log.info("trainable parameters:\n" + trainable)


def _start(cfg: TrainConfig, runner: StageRunner, items: list[Item], opt_groups: list[dict[str, Any]],
           plan: dict[str, Any], device: torch.device, resume: bool) -> _Run:
    """Set up the run: model on its device, resumed weights, sharding, optimizer (and its resumed state), outputs.
    Under FSDP no rank holds the whole model: a model built on the meta device (``runner.weights``) is sharded, then
    each rank allocates its shards and reads their rows (:mod:`sepit.train.fsdp_init`), as it does on resume."""
    model, out_dir = runner.model, Path(cfg.out_dir)
    fsdp_run = plan["strategy"] == "fsdp"
    if runner.weights is None:  # else built on the meta device: each rank allocates its shards once sharded
        model.to(device)
    model.train()
    runner.prepare(items)
    amp = autocast_dtype(cfg.precision, device)

    start = latest_checkpoint(out_dir)
    if start is None and list((out_dir / "checkpoints").glob("step-*")):
        raise CheckpointError(f"{out_dir / 'checkpoints'}: no readable checkpoint (its step-* folders are incomplete "
                              "or damaged); move that folder away to start over, or use another out_dir")
    if not resume and start is not None:
        raise SepitError(f"{out_dir} already has checkpoints: pass --resume to continue, or use another out_dir")
    if resume and start is None:
        log.info(f"--resume: no checkpoint in {out_dir}, starting from scratch")
    if start is not None:
        verify_state_files(start)  # optimizer (and LoRA) tensors: a damaged file is named before anything loads
        if not fsdp_run:
            _load_weights(model, start)
    if fsdp_run:
        fsdp.shard_model(model, device, mp_dtype=amp, reshard_after_forward=cfg.distributed.reshard_after_forward,
                         replicate_encoder=runner.use_cache)
        if runner.weights is not None:
            fsdp_init.materialise(model, device)
        # each rank reads the rows of its shards: of the resumed checkpoint, else of where the weights to start from are
        if start is not None:
            fsdp_init.fill(model, fsdp_init.checkpoint_weights(start / "model"), str(start / "model"))
        elif runner.weights is not None:
            fsdp_init.fill(model, runner.weights, cfg.init_from or f"model {cfg.model}")
        runner.weights = None  # what was drawn for the new modules is in the shards now
        opt_groups = set_trainable(model, cfg.trainable())  # the same set, now the sharded parameters
    opt = make_optimizer(opt_groups, cfg.weight_decay)
    step, losses = 0, []
    if start is not None:
        if fsdp_run:  # each rank reads the rows of its shards of the optimizer state
            state = fsdp.load_trainer_state_shards(start, opt)
        else:
            state = load_trainer_state(start, opt, verify=False)  # verified above
        if state.get("config_hash") != _config_hash(cfg):
            log.warning(f"resuming from {start} whose config differs from this run's")
        step, losses = state["step"], state["losses"]
        log.info(f"resumed from {start} at step {step}")

    out_dir.mkdir(parents=True, exist_ok=True)
    if dist.is_main():
        write_json(out_dir / "train_config.json", to_dict(cfg))
        _trim_metrics(out_dir / "metrics.jsonl", step)
    total_steps = plan["total_steps"]
    engine = runner.objective(model)
    if plan["strategy"] == "ddp":
        engine = dist.wrap_ddp(engine, device)
    return _Run(cfg=cfg, runner=runner, model=model, engine=engine, opt=opt, items=items, device=device, amp=amp,
                rank=dist.world_info()[0], world=plan["world_size"], strategy=plan["strategy"],
                global_batch=plan["global_batch"], per_epoch=plan["steps_per_epoch"], total_steps=total_steps,
                warmup=int(cfg.warmup_ratio * total_steps), out_dir=out_dir, metrics_file=out_dir / "metrics.jsonl",
                writer=_tensorboard(out_dir) if dist.is_main() else None,
                bar=progress(total=total_steps, initial=step, desc=f"stage {cfg.stage}", unit="step",
                             disable=not dist.is_main()),
                step=step, losses=losses, saved_step=step if start is not None else None,
                last_ckpt=start, t_last=time.time())


def _trim_metrics(path: Path, step: int) -> None:
    """Keep the lines of ``metrics.jsonl`` up to ``step`` (the checkpoint a run resumes from; 0 for a fresh start):
    the steps after it run again and log their lines again. Rewritten atomically, only when something goes."""
    if not path.is_file():
        return
    keep: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:  # a line cut short by a kill
            continue
        if line.endswith("\n") and isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= step:
            keep.append(line)
    if len(keep) < len(lines):
        with atomic_write(path) as f:
            f.writelines(keep)
        log.info(f"{path}: dropped {len(lines) - len(keep)} lines of steps after {step} (they run again now)")


def _train_step(run: _Run) -> None:
    """One optimizer step over this rank's micro-batches of the global batch; records its metrics.

    Raises TrainingError on every rank when the loss is not finite on any of them, before applying it."""
    cfg, model, opt, runner = run.cfg, run.model, run.opt, run.runner
    epoch, pos = divmod(run.step, run.per_epoch)
    batches = run.batches(epoch)
    micro = shard(batches[pos % len(batches)], run.rank, run.world, cfg.batch_size, cfg.grad_accum)
    factor = lr_factor(run.step, run.total_steps, run.warmup)
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * factor
    collated = [runner.collate([run.items[i] for i in m], step=run.step) for m in micro]
    denom = runner.normaliser(collated)
    logs: dict[str, float] = {}
    for n, b in enumerate(collated):
        b = model.to_device(b)
        last = n == len(collated) - 1
        # DDP reduces gradients in the last micro-batch's backward only: the others accumulate locally
        with _sync(run.engine, last), torch.autocast(run.device.type, dtype=run.amp, enabled=run.amp is not None):
            loss, parts = runner.loss(run.engine, b, denom, n_micro=len(collated))
            if dist.any_rank(not bool(torch.isfinite(loss)), loss.device):  # every rank stops, none hangs
                raise TrainingError(f"stage {cfg.stage}: loss is {loss.item()} at step {run.step + 1}"
                                    f"{' on some process' if run.world > 1 else ''}; stopped without applying it. "
                                    f"Last good checkpoint: {run.last_ckpt or 'none'}")
            loss.backward()
        for name, v in parts.items():
            logs[name] = logs.get(name, 0.0) + v
    trainable = [p for g in opt.param_groups for p in g["params"]]
    if run.strategy == "fsdp":  # FSDP reduce-scattered its shards in backward; the few whole parameters are left
        dist.average_whole(fsdp.unsharded(trainable))
    dist.drop_zero_gradients(trainable)  # "unused" = zero gradient over the global batch, whatever the strategy
    grad_norm = fsdp.scalar(torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm))
    opt.step()
    opt.zero_grad(set_to_none=True)
    run.step += 1
    loss_value = float(dist.all_reduce_mean(torch.tensor(logs.get("loss", 0.0))).item())
    run.losses.append(loss_value)
    run.tokens_since += sum(int(b.get("num_tokens_processed", 0)) for b in collated)
    if dist.is_main():
        _record(run, epoch, logs, loss_value, grad_norm)
    run.bar.update(1)


def _sync(engine: nn.Module, sync: bool):
    """DDP's ``no_sync()`` unless ``sync`` (a no-op context for any other engine)."""
    import contextlib

    from torch.nn.parallel import DistributedDataParallel

    return engine.no_sync() if isinstance(engine, DistributedDataParallel) and not sync else contextlib.nullcontext()


def _record(run: _Run, epoch: int, logs: dict[str, float], loss_value: float, grad_norm: float) -> None:
    """Rank 0: the step's line of metrics.jsonl (+ TensorBoard, progress bar, debug log)."""
    now = time.time()
    rec = {"step": run.step, "epoch": epoch, "lr": run.opt.param_groups[0]["lr"], "grad_norm": grad_norm,
           **{k: round(v, 6) for k, v in logs.items()}, "loss": loss_value,
           "tokens_per_s": round(run.tokens_since * run.world / max(now - run.t_last, 1e-9), 1)}
    with open(run.metrics_file, "a") as f:
        f.write(json.dumps(rec) + "\n")
    if run.writer is not None:
        for k, v in rec.items():
            if isinstance(v, (int, float)) and k != "step":
                run.writer.add_scalar(f"stage{run.cfg.stage}/{k}", v, run.step)
    run.bar.set_postfix(loss=f"{loss_value:.4f}", tok_s=rec["tokens_per_s"], refresh=False)
    if run.step % run.cfg.log_every == 0 or run.step == run.total_steps:
        log.debug(json.dumps(rec))
    run.t_last, run.tokens_since = now, 0


def _checkpoint(run: _Run) -> None:
    """Save the checkpoint of the current step (every rank takes part) and wait until it is written."""
    state = {"step": run.step, "losses": run.losses, "config_hash": _config_hash(run.cfg),
             "total_steps": run.total_steps}
    run.last_ckpt = _save_checkpoint(run.model, run.opt, run.out_dir, run.step, state, run.cfg.keep_checkpoints,
                                     run.device)
    run.saved_step = run.step
    dist.barrier()


def _finish(run: _Run) -> TrainResult:
    """After the last step: validation loss, ``final/`` model (the last checkpoint's files when it holds these
    weights), ``summary.json``."""
    cfg, model, step, losses = run.cfg, run.model, run.step, run.losses
    run.bar.close()
    final = run.out_dir / "final"
    valid_loss = run.runner.validation_loss()  # on every rank: a sharded model's forward is collective
    if run.runner.notes():
        log.info(run.runner.notes())
    weights = fsdp.full_model_state(model) if fsdp.is_sharded(model) and run.saved_step != step else None
    if dist.is_main():
        if run.saved_step == step:
            _link_tree(run.out_dir / "checkpoints" / f"step-{step:07d}" / "model", final)  # holds these weights
        else:
            with lora.merged(model):
                save_model(model, final, weights)
        summary = {"steps": step, "first_loss": losses[0] if losses else None,
                   "last_loss": losses[-1] if losses else None, "items": len(run.items),
                   "valid_loss": valid_loss, "final": str(final)}
        write_json(run.out_dir / "summary.json", summary)
        log.info(f"stage {cfg.stage} done: {step} steps, loss {summary['first_loss']} → {summary['last_loss']}; "
                 f"model in {final}")
    _close_outputs(run)
    dist.barrier()
    return TrainResult(run.out_dir, final, step, losses, run.metrics_file)


def _close_outputs(run: _Run) -> None:
    """Close the progress bar and the TensorBoard writer (at the end, or when an error ends the run)."""
    run.bar.close()
    if run.writer is not None:
        run.writer.close()
        run.writer = None


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
    if not cfg.lora.rank:
        d.pop("lora", None)  # runs without LoRA hash as before the section existed
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _tensorboard(out_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # noqa: BLE001 - TensorBoard is optional
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))

