"""A long split's progress on disk, so that a build interrupted after hours resumes where it stopped.

The full 2014 Swiss-Prot set spends hours in its split (MMseqs2 clustering, then leak-search rounds of ~100,000
held-out proteins at ``-s 7.5``; docs/benchmarks.md, 4a). One folder per threshold holds, as they are done:
``clusters.json`` (member → representative), each leak-search round's hits (``round<N>.m8``, saved in parts of
20,000 held-out proteins while the round runs) followed by ``progress.json`` (the split after that round), and
``result.json`` (the finished :class:`SplitResult`). Every file is
written atomically. The folder is named by :func:`split_key`, a digest of everything the split depends on, so a
changed input or option starts afresh instead of resuming from a stale state.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sepit._io import atomic_write
from sepit.errors import InputError
from sepit.log import get_logger

log = get_logger(__name__)


def split_key(sequences: Mapping[str, str], eval_ids: Iterable[str], options: Mapping[str, Any]) -> str:
    """Hex digest of the proteins, the eval accessions and the split options (threshold, seed, search settings)."""
    h = hashlib.sha256(json.dumps(dict(sorted(options.items())), sort_keys=True, default=str).encode())
    for a in sorted(sequences):
        h.update(f"{a}\t{sequences[a]}\n".encode())
    h.update(("eval:" + ",".join(sorted(eval_ids))).encode())
    return h.hexdigest()


@dataclass(frozen=True)
class SplitState:
    """The progress folder of one threshold's split (see the module docstring)."""

    root: Path

    def _load(self, name: str) -> Any | None:
        p = self.root / name
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(p, f"unreadable split progress ({e}); delete {self.root} to split afresh") from None

    def _save(self, name: str, data: Any) -> None:
        with atomic_write(self.root / name) as f:  # compact: the split of 500,000 proteins is tens of MB
            json.dump(data, f, separators=(",", ":"))

    def clusters(self) -> dict[str, str] | None:
        return self._load("clusters.json")

    def save_clusters(self, reps: Mapping[str, str]) -> None:
        self._save("clusters.json", dict(reps))

    def round_file(self, n: int) -> Path:
        """Round ``n``'s hits, oriented held-out → training."""
        return self.root / f"round{n}.m8"

    def chunk_file(self, n: int, i: int) -> Path:
        """Part ``i`` of round ``n``'s hits (a chunk of its held-out proteins), until the round is done."""
        return self.root / f"round{n}.part{i}.m8"

    def partial(self, final: Path) -> Path:
        """Where ``final`` is written before :meth:`commit` renames it into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        return final.with_name(final.name + ".partial")

    def commit(self, partial: Path) -> Path:
        final = partial.with_name(partial.name.removesuffix(".partial"))
        os.replace(partial, final)
        return final

    def progress(self) -> dict[str, Any] | None:
        """``{"rounds", "split", "dropped", "moved", "targets"}`` after the last finished round, or None."""
        return self._load("progress.json")

    def save_progress(self, rounds: int, split: Mapping[str, str], dropped: Mapping[str, str], moved: int,
                      targets: list[str]) -> None:
        self._save("progress.json", {"rounds": rounds, "split": dict(split), "dropped": dict(dropped),
                                     "moved": moved, "targets": targets})

    def result(self) -> dict[str, Any] | None:
        """The finished split's fields (:class:`sepit.data.split.SplitResult`), or None."""
        return self._load("result.json")

    def save_result(self, result: Any) -> None:
        self._save("result.json", asdict(result))
