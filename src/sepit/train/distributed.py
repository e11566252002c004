"""Data-parallel plumbing for ``torchrun`` / ``accelerate launch`` (gloo on CPU, nccl on GPU). Under the ``ddp``
strategy gradients are averaged over processes after each optimizer step's micro-batches, exactly as DDP averages
them; the ``fsdp`` strategy shards the model instead (``sepit.train.fsdp``).

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


def _all_reduce(t: torch.Tensor, op: dist.ReduceOp) -> None:
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


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over processes, as DDP does, in flat buckets; a parameter unused on one rank counts with
    a zero gradient there. Works for any forward (stage 0 does not go through ``forward``), so no wrapper is needed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    world = dist.get_world_size()
    bucket: list[torch.Tensor] = []
    size = 0

    def flush() -> None:
        nonlocal bucket, size
        if not bucket:
            return
        flat = _flatten_dense_tensors(bucket)
        _all_reduce(flat, dist.ReduceOp.SUM)
        flat /= world
        for g, new in zip(bucket, _unflatten_dense_tensors(flat, bucket)):
            g.copy_(new)
        bucket, size = [], 0

    for p in params:
        bucket.append(p.grad)
        size += p.grad.numel()
        if size >= 25_000_000:
            flush()
    flush()


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
