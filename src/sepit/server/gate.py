"""Admission control: a fixed number of jobs run, a bounded number wait, the rest get 429.

The app keeps two gates: one for generations (with a *heavy* lane) and one for parsing structure uploads. A heavy
job (a long prompt, a bulk annotation) holds at most ``max_heavy`` of the running slots, so a short question never
waits behind heavy ones alone; otherwise slots go to waiting jobs first come, first served.
"""

from __future__ import annotations

import asyncio
from collections import deque


class QueueFull(Exception):
    """All slots are busy and the waiting queue is full."""


class GenerationGate:
    """At most ``max_concurrent`` jobs run at once (at most ``max_heavy`` of them heavy) and ``max_queue`` more
    wait for a slot.

    Usage (inside the event loop; the counters are only touched from it, so no lock is needed)::

        ticket = gate.admit(heavy=False)   # raises QueueFull → 429
        try:
            async with ticket:             # waits for a running slot (cancellable: the wait is then given up)
                ...
        finally:
            ticket.release()               # idempotent; also releases an admitted ticket that never ran
    """

    def __init__(self, max_concurrent: int, max_queue: int, *, max_heavy: int | None = None,
                 what: str = "generations") -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self.max_heavy = max_concurrent if max_heavy is None else max(1, min(max_heavy, max_concurrent))
        self.what = what
        self.admitted = 0  # running + waiting
        self.running = 0
        self.running_heavy = 0
        self._waiting: deque[_Ticket] = deque()  # first come, first served (among those that fit)

    def admit(self, heavy: bool = False) -> _Ticket:
        if self.admitted >= self.max_concurrent + self.max_queue:
            raise QueueFull(f"server busy: {self.running} {self.what} running and {self.admitted - self.running} "
                            f"queued (limit {self.max_concurrent} + {self.max_queue}); retry later")
        self.admitted += 1
        return _Ticket(self, heavy)

    def _fits(self, heavy: bool) -> bool:
        return self.running < self.max_concurrent and not (heavy and self.running_heavy >= self.max_heavy)

    def _start(self, t: _Ticket) -> None:
        t.holding = True
        self.running += 1
        self.running_heavy += t.heavy

    def _stop(self, t: _Ticket) -> None:
        if t.holding:
            t.holding = False
            self.running -= 1
            self.running_heavy -= t.heavy
            self._dispatch()

    def _dispatch(self) -> None:
        """Hand free slots to the oldest waiting tickets that fit (a heavy one over the heavy cap is passed by)."""
        for t in list(self._waiting):
            if self.running >= self.max_concurrent:
                break
            if self._fits(t.heavy) and t.wake is not None and not t.wake.done():
                self._waiting.remove(t)
                self._start(t)
                t.wake.set_result(None)


class _Ticket:
    def __init__(self, gate: GenerationGate, heavy: bool) -> None:
        self._gate = gate
        self.heavy = bool(heavy)
        self.holding = False
        self.wake: asyncio.Future[None] | None = None
        self._released = False

    async def __aenter__(self) -> _Ticket:
        g = self._gate
        if g._fits(self.heavy):  # waiting tickets that fit were dispatched when a slot freed: no one is passed
            g._start(self)
            return self
        self.wake = asyncio.get_running_loop().create_future()
        g._waiting.append(self)
        try:
            await self.wake
        except asyncio.CancelledError:  # the client went away while waiting (or was handed a slot just then)
            if self in g._waiting:
                g._waiting.remove(self)
            g._stop(self)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._gate._stop(self)

    def release(self) -> None:
        g = self._gate
        if self in g._waiting:
            g._waiting.remove(self)
        g._stop(self)
        if not self._released:
            self._released = True
            g.admitted -= 1
