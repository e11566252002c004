"""Predictions written as they are made (JSONL), so an interrupted evaluation resumes where it stopped.

File layout: the first line is ``{"_header": FINGERPRINT}`` (checkpoint, dataset, split, decoding settings...);
every other line is one :class:`~sepit.eval.items.Prediction`. A rerun with the same fingerprint skips the ids
already there; a different fingerprint is refused (mixing predictions of two settings would be silently wrong).
A line cut short by a crash is dropped (and truncated away) on open.

    log = PredictionLog(out / "predictions" / "model.jsonl", fingerprint={"checkpoint": ..., "max_new_tokens": 128})
    for batch in batches(log.pending(items), 8):
        log.append(predict(batch))
    preds = log.load()
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sepit.errors import InputError
from sepit.eval.items import EvalItem, Prediction
from sepit.log import get_logger

log = get_logger(__name__)


class PredictionLog:
    """Append-only JSONL of predictions keyed by item id, guarded by a settings fingerprint."""

    def __init__(self, path: str | Path, fingerprint: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.fingerprint = json.loads(json.dumps(dict(fingerprint or {}), sort_keys=True, default=str))
        self._preds: dict[str, Prediction] = {}
        if self.path.exists():
            self._read_existing()
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("w", encoding="utf-8") as f:
                f.write(json.dumps({"_header": self.fingerprint}, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())

    def _read_existing(self) -> None:
        raw = self.path.read_bytes()
        good_end = raw.rfind(b"\n") + 1  # anything after the last newline is a half-written line
        if good_end < len(raw):
            log.warning("%s: dropping a half-written last line", self.path)
            with self.path.open("r+b") as f:
                f.truncate(good_end)
        lines = raw[:good_end].decode("utf-8").splitlines()
        if not lines:
            raise InputError(self.path, "prediction log has no header line; delete it to start again")
        try:
            header = json.loads(lines[0])["_header"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError(self.path, "first line is not a prediction-log header; delete the file to start "
                                        "again") from None
        if header != self.fingerprint:
            changed = sorted(k for k in set(header) | set(self.fingerprint)
                             if header.get(k) != self.fingerprint.get(k))
            raise InputError(self.path, f"made with other settings ({', '.join(changed)} differ); use another "
                                        "output folder or delete this file")
        for n, line in enumerate(lines[1:], 2):
            if not line.strip():
                continue
            try:
                p = Prediction.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise InputError(self.path, f"line {n}: not a prediction record") from None
            self._preds[p.id] = p

    def __len__(self) -> int:
        return len(self._preds)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._preds

    def done_ids(self) -> set[str]:
        return set(self._preds)

    def pending(self, items: Sequence[EvalItem]) -> list[EvalItem]:
        """The items without a prediction yet, in their order."""
        return [it for it in items if it.id not in self._preds]

    def append(self, predictions: Iterable[Prediction]) -> None:
        """Write predictions (one line each) and fsync, so a crash loses at most the batch in flight."""
        new = [p for p in predictions]
        if not new:
            return
        with self.path.open("a", encoding="utf-8") as f:
            for p in new:
                f.write(json.dumps(p.to_dict(), ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for p in new:
            self._preds[p.id] = p

    def load(self) -> dict[str, Prediction]:
        """All predictions so far, by item id (a later line for the same id wins)."""
        return dict(self._preds)
