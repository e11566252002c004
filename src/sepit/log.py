"""One logger for the project and progress bars for long work.

Use ``get_logger(__name__)`` in modules and ``progress(iterable, desc=...)`` around long loops. Progress bars go to
stderr and switch themselves off when ``SEPIT_NO_PROGRESS=1`` or stderr is not a terminal and ``SEPIT_PROGRESS`` is
unset (CI logs stay readable: a line every ~10% instead).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")
_ROOT = "sepit"


def setup_logging(verbose: bool = False) -> None:
    """Configure the ``sepit`` logger once: ``2026-11-28 15:55:02 [sepit.data.split] message`` lines on stderr (the
    time, so that a log of a long build or training run says when each phase began)."""
    root = logging.getLogger(_ROOT)
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s [%(name)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def get_logger(name: str) -> logging.Logger:
    """The project logger for a module (names are shortened to ``sepit.<sub>``)."""
    if not name.startswith(_ROOT):
        name = f"{_ROOT}.{name}"
    return logging.getLogger(name)


def _progress_enabled() -> bool:
    if os.environ.get("SEPIT_NO_PROGRESS") == "1":
        return False
    if os.environ.get("SEPIT_PROGRESS") == "1":
        return True
    return sys.stderr.isatty()


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it", **kwargs: Any) -> Iterator[T] | Any:
    """A tqdm bar on stderr; on non-terminals it prints a plain line roughly every 10% instead."""
    if _progress_enabled():
        return tqdm(iterable, desc=desc, total=total, unit=unit, dynamic_ncols=True, file=sys.stderr, **kwargs)
    return tqdm(iterable, desc=desc, total=total, unit=unit, file=sys.stderr, mininterval=30.0,
                ncols=100, ascii=True, **kwargs)
