"""FSDP for models that do not fit on one device: torch's own FSDP2 engine (``fully_shard``), CPU/gloo or GPU/nccl.

Sharding units: each ESM layer and each LLM decoder layer (the transformer blocks), plus the root ``SepitModel``,
which holds the rest (embeddings, LM head, structure module, projector, heads). Parameters, gradients and AdamW
moments then live 1/N on each of N processes; a block's weights are gathered only while it runs.

- Gradients are reduce-scattered as averages after every micro-batch: the same arithmetic as DDP (the loss is
  scaled for it), while memory stays sharded during gradient accumulation.
- A trainable parameter that a micro-batch does not use on some rank (an MoE expert that got no token, the
  denoising head on a batch without structure) contributes a zero gradient there, as DDP's would (one that no
  rank used is then left alone by the optimizer: ``distributed.drop_zero_gradients``).
- bf16: the blocks gather and compute in bf16 and reduce gradients in fp32 (``MixedPrecisionPolicy``); the root
  keeps fp32 weights under autocast, as the unsharded run does, so coordinates and the structure basis stay fp32.
- Some parameters stay whole on every rank (``ignored_params``): 0-d ones, which FSDP cannot shard (the
  contrastive logit scale; its gradient is averaged as in DDP, see :func:`unsharded`), and a frozen encoder whose
  outputs stage 2 caches: the cache is filled per rank, at different times, which must not involve collectives.

Checkpoints stay the one-process format: the full model and optimizer states are gathered to rank 0's CPU
(:func:`full_model_state`, :func:`full_optimizer_state`), so FSDP and unsharded runs resume from each other.
No rank ever holds the whole model during set-up: the model is built on the meta device, sharded, and each rank
allocates and fills its own shards (:mod:`sepit.train.fsdp_init`); on resume each rank reads the rows of its shards
of the weights and of the optimizer state from the checkpoint's files (:func:`load_trainer_state_shards`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

#: SepitModel methods that run the model outside ``forward`` (stage 0); FSDP must gather the root around them.
FORWARD_METHODS = ("stage0_losses",)


def transformer_blocks(model: nn.Module, *, encoder: bool = True) -> list[nn.Module]:
    """The sharding units below the root: ESM layers (unless ``encoder`` is False) and LLM decoder layers."""
    from sepit.model.moe import decoder_layers

    blocks = list(model.encoder.esm.encoder.layer) if encoder else []
    return blocks + list(decoder_layers(model.llm))


def shard_model(model: nn.Module, device: torch.device, *, mp_dtype: torch.dtype | None,
                reshard_after_forward: bool = True, replicate_encoder: bool = False) -> nn.Module:
    """Shard ``model`` in place over all processes of the default group (call after freezing, before building the
    optimizer: the module's parameters are replaced by sharded DTensors). Returns the model."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    blocks_mp = MixedPrecisionPolicy(param_dtype=mp_dtype, reduce_dtype=torch.float32) if mp_dtype \
        else MixedPrecisionPolicy()
    for block in transformer_blocks(model, encoder=not replicate_encoder):
        fully_shard(block, mesh=mesh, mp_policy=blocks_mp, reshard_after_forward=reshard_after_forward)
    ignored = {p for p in model.parameters() if p.dim() == 0}
    if replicate_encoder:
        ignored |= set(model.encoder.parameters())
    # the root is gathered for the whole forward anyway: resharding it after forward would only gather it again
    fully_shard(model, mesh=mesh, mp_policy=MixedPrecisionPolicy(reduce_dtype=torch.float32),
                reshard_after_forward=False, ignored_params=ignored)
    model.set_reduce_scatter_unused_params(True)
    for name in FORWARD_METHODS:
        register_fsdp_forward_method(model, name)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def reset_after_error(model: nn.Module) -> None:
    """After an error that ended a step between its forward and its optimizer step (every rank stopping together):
    wait for FSDP's in-flight collectives (prefetched all-gathers on GPU) and reshard the parameters, so that no
    communication is left pending (``reset_iter_state``; a torch without it has nothing to call)."""
    reset = getattr(model, "reset_iter_state", None)
    if is_sharded(model) and reset is not None:
        reset()


def unsharded(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """The parameters FSDP left whole (their gradients are not reduced by it)."""
    from torch.distributed.tensor import DTensor

    return [p for p in params if not isinstance(p, DTensor)]


def scalar(t: torch.Tensor) -> float:
    """A replicated DTensor (e.g. ``clip_grad_norm_`` of sharded gradients) or a plain tensor → float."""
    return float(t.full_tensor() if hasattr(t, "full_tensor") else t)


def local_rows(p: torch.Tensor) -> tuple[int, int]:
    """The rows ``start, stop`` of the whole tensor that this rank's shard of the sharded parameter ``p`` (a DTensor
    sharded on dim 0 over a 1-D mesh, as ``fully_shard`` shards) holds: ``torch.chunk``'s split, which FSDP uses,
    checked against the local shard."""
    from torch.distributed.tensor import Shard

    placements = tuple(p.placements)
    if len(placements) != 1 or not isinstance(placements[0], Shard) or placements[0].dim != 0:
        raise ValueError(f"expected a parameter sharded on dim 0 over one mesh dimension, got {placements}")
    mesh = p.device_mesh
    rank, world = mesh.get_local_rank(), mesh.size()
    sizes = [c.shape[0] for c in torch.chunk(torch.empty(p.shape[0], device="meta"), world)] if p.dim() else []
    start = sum(sizes[:rank])
    stop = start + (sizes[rank] if rank < len(sizes) else 0)
    if p.to_local().shape[0] != stop - start:
        raise RuntimeError(f"FSDP's shard has {p.to_local().shape[0]} rows, torch.chunk's {stop - start}")
    return start, stop


def _options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every weight unsharded on rank 0's CPU ({} on other ranks). Collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_options())


def full_optimizer_state(opt: torch.optim.Optimizer) -> dict[str, Any]:
    """``opt.state_dict()`` with every sharded tensor gathered whole, on rank 0's CPU ({} on other ranks): what an
    unsharded run's optimizer holds, under the same integer ids. Collective: every rank must call it."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor

    main = dist.get_rank() == 0
    sd = opt.state_dict()
    state: dict[int, dict[str, Any]] = {}
    for pid in sorted(sd["state"]):  # the same order on every rank: each gather is a collective
        st = {}
        for k, v in sd["state"][pid].items():
            v = v.full_tensor() if isinstance(v, DTensor) else v
            st[k] = v.cpu() if main and torch.is_tensor(v) else v
        state[pid] = st
    return {"state": state, "param_groups": sd["param_groups"]} if main else {}


def load_trainer_state_shards(path: Path, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """:func:`sepit.train.state.load_trainer_state` for a sharded model's optimizer (the checkpoint's files already
    verified), the inverse of :func:`full_optimizer_state`: each rank reads from ``optimizer.safetensors`` only the
    rows of its shards (whole: the state of parameters FSDP left whole, and scalars), so none holds the whole
    optimizer state. Restores the RNG states too; returns the JSON state (step, losses ...).

    The state is loaded as saved, with ``load_state_dict`` (``set_optimizer_state_dict`` of
    ``torch.distributed.checkpoint`` would first give every parameter a state with a zero-gradient step, which
    parameters without one in the checkpoint then keep, so a resumed run would differ from an uninterrupted one)."""
    from torch.distributed.tensor import DTensor

    from sepit.errors import CheckpointError
    from sepit.model.checkpoint import stored_tensors
    from sepit.train.state import OPTIM_FILE, optimizer_from_flat, read_state, set_rng_state

    state = read_state(path)
    params = [p for g in opt.param_groups for p in g["params"]]
    opt_t: dict[str, torch.Tensor] = {}
    rng_t: dict[str, torch.Tensor] = {}
    for key, stored in stored_tensors(path / OPTIM_FILE).items():
        if key.startswith("rng."):
            rng_t[key] = stored.read()
        elif key.startswith("state."):
            pid = int(key.split(".")[1])
            if pid >= len(params):
                continue  # a surplus id fails in load_state_dict's own group-size check
            p = params[pid]
            if isinstance(p, DTensor) and stored.shape == tuple(p.shape):
                rows = stored.read(*local_rows(p)).to(p.to_local().device)
                opt_t[key] = DTensor.from_local(rows, p.device_mesh, p.placements, run_check=False, shape=p.shape,
                                                stride=p.stride())
            else:  # whole parameters, and per-parameter scalars such as AdamW's step
                opt_t[key] = stored.read()
    try:
        opt.load_state_dict(optimizer_from_flat(opt_t, state["optimizer"]))
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{path}: optimizer state does not match this run's trainable parameters ({e})") from None
    set_rng_state(rng_t, state["rng"])
    return state
