"""Two-process (gloo) training in tests, set up the way ``torchrun`` sets it up.

The pytest process hosts the rendezvous store, as torchrun's agent does (``TORCHELASTIC_USE_AGENT_STORE``), and
the workers only connect to it. When rank 0 hosted it instead, rank 0 could exit while rank 1 was still connected,
and rank 0 then died with SIGABRT ("terminate called without an active exception") in about one full-suite run out
of several: a flaky test about a race that torchrun never has.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.multiprocessing as mp
from torch.distributed import TCPStore

WORLD = 2


@contextmanager
def agent_store() -> Iterator[int]:
    """Host the rendezvous store in this process on a free port; yields the port."""
    store = TCPStore("127.0.0.1", 0, None, True, wait_for_workers=False)
    try:
        yield store.port
    finally:
        del store


def join(rank: int, port: int) -> None:
    """In a worker: the environment torchrun gives rank ``rank`` of two (the group is joined by ``train``)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank), TORCHELASTIC_USE_AGENT_STORE="True")
    torch.set_num_threads(1)


def leave() -> None:
    from sepit.train.distributed import cleanup

    cleanup()


def spawn(fn: Callable, *args, timeout: float = 300.0) -> None:
    """Run ``fn(rank, port, *args)`` in two processes; fails the test if either dies (an abort at exit included:
    torch raises ProcessExitedException for a non-zero exit or a signal) or both are not done within ``timeout``
    seconds (a hang is a failure here, not a stuck CI job)."""
    with agent_store() as port:
        ctx = mp.start_processes(fn, args=(port, *args), nprocs=WORLD, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout
        while not ctx.join(timeout=5):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                pytest.fail(f"{fn.__name__}: the processes did not finish within {timeout:.0f} s (a hang)")
