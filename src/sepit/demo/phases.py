"""A tiny phase runner: each phase has a key (hash of its inputs and config); a finished phase writes
``<run>/phases/<name>.json`` with that key, so a rerun with the same inputs skips it, and an interrupted run
continues from the last finished phase. ``fresh=True`` redoes everything.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepit._io import write_json
from sepit.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Phase:
    """``run(run_dir) -> dict`` does the work and returns a JSON-safe summary; ``key`` identifies its inputs."""

    name: str
    run: Callable[[Path], dict[str, Any]]
    key: dict[str, Any]
    estimate: str = ""


def phase_key(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_phases(run_dir: Path, phases: list[Phase], fresh: bool = False) -> dict[str, dict[str, Any]]:
    """Run phases in order, reusing finished ones whose key (and every earlier key) is unchanged."""
    done_dir = run_dir / "phases"
    done_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {}
    chain = ""
    for i, ph in enumerate(phases, 1):
        chain = phase_key({"prev": chain, "key": ph.key})  # a changed phase invalidates everything after it
        marker = done_dir / f"{ph.name}.json"
        if not fresh and marker.is_file():
            prev = json.loads(marker.read_text())
            if prev.get("key") == chain:
                log.info(f"[{i}/{len(phases)}] {ph.name}: done before ({prev.get('seconds', 0):.0f}s), reused")
                results[ph.name] = prev["summary"]
                continue
        log.info(f"[{i}/{len(phases)}] {ph.name}: starting" + (f" (about {ph.estimate})" if ph.estimate else ""))
        t0 = time.time()
        summary = ph.run(run_dir)
        seconds = time.time() - t0
        write_json(marker, {"key": chain, "seconds": seconds, "summary": summary})
        log.info(f"[{i}/{len(phases)}] {ph.name}: finished in {seconds:.0f}s")
        results[ph.name] = summary
    return results
