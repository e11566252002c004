"""Count what a reader skipped, by reason, so a build can report it (manifest) instead of crashing or hiding it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from sepit.log import get_logger

log = get_logger(__name__)


@dataclass
class SkipLog:
    """Reasons → counts, with the first few details per reason kept as examples.

    Pass one SkipLog to every reader of a build; ``counts`` goes into the manifest and ``summary()`` into the log.
    ``callback`` (optional) is called with ``(reason, detail)`` for every skip.
    """

    max_examples: int = 3
    callback: Callable[[str, str], None] | None = None
    counts: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, detail: str = "") -> None:
        """Record one skipped item (a record, a line, a chain) and why."""
        self.counts[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < self.max_examples and detail:
            ex.append(detail)
        if self.counts[reason] == 1:
            log.warning("skipped: %s%s", reason, f" ({detail})" if detail else "")
        else:
            log.debug("skipped: %s (%s)", reason, detail)
        if self.callback is not None:
            self.callback(reason, detail)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:  # an empty log is falsy, like a Counter
        return self.total > 0

    def as_dict(self) -> dict[str, int]:
        """Counts sorted by reason (what the manifest stores)."""
        return dict(sorted(self.counts.items()))

    def summary(self) -> str:
        """One line: ``3 skipped: bad sequence 2, truncated input 1`` (or ``nothing skipped``)."""
        if not self:
            return "nothing skipped"
        parts = ", ".join(f"{r} {n}" for r, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])))
        return f"{self.total} skipped: {parts}"
