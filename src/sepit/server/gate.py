"""Admission control for generations: a fixed number run, a bounded number wait, the rest get 429."""

from __future__ import annotations

import asyncio


class QueueFull(Exception):
    """All generation slots are busy and the waiting queue is full."""


class GenerationGate:
    """At most ``max_concurrent`` generations run at once and ``max_queue`` more wait for a slot.

    Usage (inside the event loop; the counters are only touched from it, so no lock is needed)::

        ticket = gate.admit()          # raises QueueFull → 429
        try:
            async with ticket:         # waits for a running slot
                ...
        finally:
            ticket.release()           # idempotent; also releases an admitted ticket that never ran
    """

    def __init__(self, max_concurrent: int, max_queue: int) -> None:
        self.max_concurrent = max_concurrent
        self.max_queue = max_queue
        self._sem: asyncio.Semaphore | None = None
        self.admitted = 0  # running + waiting
        self.running = 0

    def admit(self) -> _Ticket:
        if self.admitted >= self.max_concurrent + self.max_queue:
            raise QueueFull(f"server busy: {self.running} generations running and {self.admitted - self.running} "
                            f"queued (limit {self.max_concurrent} + {self.max_queue}); retry later")
        self.admitted += 1
        return _Ticket(self)

    def _semaphore(self) -> asyncio.Semaphore:
        if self._sem is None:  # created on first use so it belongs to the serving loop
            self._sem = asyncio.Semaphore(self.max_concurrent)
        return self._sem


class _Ticket:
    def __init__(self, gate: GenerationGate) -> None:
        self._gate = gate
        self._holding = False
        self._released = False

    async def __aenter__(self) -> _Ticket:
        await self._gate._semaphore().acquire()
        self._holding = True
        self._gate.running += 1
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._free_slot()

    def _free_slot(self) -> None:
        if self._holding:
            self._holding = False
            self._gate.running -= 1
            self._gate._semaphore().release()

    def release(self) -> None:
        self._free_slot()
        if not self._released:
            self._released = True
            self._gate.admitted -= 1
