"""Data-parallel plumbing for ``torchrun`` / ``accelerate launch`` (gloo on CPU, nccl on GPU).

The engines do the gradient arithmetic: ``ddp`` wraps the stage's objective in torch's
:class:`~torch.nn.parallel.DistributedDataParallel` (:func:`wrap_ddp`: bucketed all-reduce overlapped with backward),
``fsdp`` shards the model with FSDP2 (``sepit.train.fsdp``). What is left here are the few scalar collectives of the
loop (the loss normaliser, the logged loss, the stop-together flags) and the group's set-up. Every one of them goes
through :func:`_all_reduce`, which places its tensor on the backend's device (:func:`comm_device`): NCCL refuses CPU
tensors, and the loop's scalars are made on the CPU.

One process (the usual case) needs none of this: ``world() == (0, 1)`` and every helper is a no-op.
"""

from __future__ import annotations

import os
import time

import torch
import torch.distributed as dist


def init_distributed() -> tuple[int, int]:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return world_info()


def resolve_strategy(requested: str, world: int) -> str:
    """The strategy a run uses: ``single`` for one process (whatever was asked: nothing to share), else ``ddp``
    (``auto``, ``ddp``) or ``fsdp``."""
    if world == 1:
        return "single"
    return "fsdp" if requested == "fsdp" else "ddp"


def is_initialized() -> bool:
    """Whether this process is in a process group (joined by :func:`init_distributed` or by its caller)."""
    return dist.is_available() and dist.is_initialized()


def world_info() -> tuple[int, int]:
    if is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world_info()[0] == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def comm_device(backend: str | None = None) -> torch.device:
    """The device a collective's tensors must be on for ``backend`` (default: the group's): NCCL's is this
    process's CUDA device (it refuses CPU tensors), gloo's the CPU (where its collectives are implemented for every
    operation used here)."""
    if backend is None:
        backend = str(dist.get_backend()) if is_initialized() else "gloo"
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(t: torch.Tensor, op: dist.ReduceOp) -> None:
    """``dist.all_reduce`` of ``t`` in place, on the backend's device (:func:`comm_device`: a CPU tensor is copied
    to the GPU for NCCL and the result copied back)."""
    dev = comm_device()
    if t.device == dev:
        _all_reduce_here(t, op)
    else:
        work = t.to(dev)
        _all_reduce_here(work, op)
        t.copy_(work)


def _all_reduce_here(t: torch.Tensor, op: dist.ReduceOp) -> None:
    """``dist.all_reduce`` in place, returning once the communication thread has let go of ``t``.

    Gloo runs each collective on a thread of its own, which drops its reference to the tensors a moment after the
    caller has been told the result. If the caller's reference went first, that thread frees the tensor's Python
    object, for which it takes the GIL; should the process be exiting by then (a stop agreed by :func:`any_rank`
    is followed by an exit), taking the GIL ends the thread inside a C++ destructor and the process aborts
    ("terminate called without an active exception"). Waiting here keeps the last reference with the caller.
    A barrier or leaving the group does not settle it: FSDP's device mesh keeps the backend, and its threads,
    alive until the process exits."""
    before = t._use_count()
    dist.all_reduce(t, op=op)
    deadline = time.monotonic() + 1.0  # a bound, not a timing: the thread lets go within microseconds
    while t.device.type == "cpu" and t._use_count() > before and time.monotonic() < deadline:
        time.sleep(1e-5)  # releases the GIL, which that thread may need


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """Mean of a tensor over processes (in place where distributed)."""
    if is_initialized():
        _all_reduce(t, dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return t


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True on every process when ``flag`` is true on any (so all ranks stop together instead of leaving the others
    waiting in the next collective)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    _all_reduce(t, dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


def stop_together(leave: bool) -> None:
    """Called by every process once all have agreed to stop (:func:`any_rank`): wait at a barrier until all are
    here, so that none exits while another still has a collective in flight to it, then leave the group if
    ``leave`` (a group the caller joined is the caller's to leave)."""
    barrier()
    if leave:
        cleanup()


def wrap_ddp(module: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``module`` in torch's DistributedDataParallel: gradients are averaged over processes in buckets while backward
    runs. ``find_unused_parameters``: a trainable parameter may be idle in a micro-batch (an MoE expert that got no
    token, the structure module or denoising head on a batch without structure); DDP then reduces a zero for it
    instead of waiting for it."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None,
                                   find_unused_parameters=True, broadcast_buffers=False)


def average_whole(params: list[torch.Tensor]) -> None:
    """Average the gradients of the few parameters FSDP leaves whole (0-d ones such as the contrastive logit scale,
    see ``fsdp.shard_model``): one flat all-reduce, a zero gradient standing in where a rank did not use one."""
    if not params or not is_initialized() or dist.get_world_size() == 1:
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _flatten_dense_tensors(grads)
    _all_reduce(flat, dist.ReduceOp.SUM)
    flat /= dist.get_world_size()
    for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
        p.grad = g.clone()


def drop_zero_gradients(params: list[torch.Tensor]) -> None:
    """Unset the gradients that are exactly zero over the whole global batch, so that the optimizer leaves those
    parameters alone (no momentum step, no weight decay) whatever the strategy. Without this, "unused" would
    depend on it: one process gives a parameter outside the graph no gradient, DDP and FSDP give it zeros (their
    collectives must match across ranks), and an MoE expert reached only by padding tokens gets zeros in one
    batch layout and none in another. Sharded (FSDP) gradients are checked on every shard."""
    if not params:
        return
    from torch.distributed.tensor import DTensor

    none = torch.zeros((), dtype=torch.bool, device=params[0].device)
    nonzero = torch.stack([none if p.grad is None else
                           (p.grad.to_local() if isinstance(p.grad, DTensor) else p.grad).ne(0).any()
                           for p in params]).to(torch.int32)
    if any(isinstance(p, DTensor) for p in params) and world_info()[1] > 1:
        _all_reduce(nonzero, dist.ReduceOp.MAX)  # each rank saw only its shards
    for p, nz in zip(params, nonzero.tolist()):
        if not nz:
            p.grad = None
