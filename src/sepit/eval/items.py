"""What is evaluated (``EvalItem``) and what a system answered (``Prediction``), built from instruction records.

Records follow the dataset contract (docs/architecture.md): dicts with ``id``, ``protein_ids``, ``task``, ``kind``,
``split``, ``messages`` and ``answer``. Identity to the training set is a percentage (0–100).

    items = with_local_identity(items_from_records(test_records, proteins_rows), hits)   # + best hit at any coverage
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sepit.data.instructions.record import PROTEIN_MARKER
from sepit.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sepit.tools.mmseqs import Hit

KINDS = ("caption", "open", "yesno")


@dataclass(frozen=True)
class EvalItem:
    """One test question.

    ``protein_id`` is the first of ``protein_ids`` (the one whose identity and structure the breakdowns use).
    ``identity``: max sequence identity (%) of that protein to any training protein over alignments covering ≥80%
    of it (the dataset's ``max_identity_to_train``); None = unknown / no hit.
    ``local_identity``: its best hit (%) to the training set at any coverage, so a shared domain counts too (see
    :func:`with_local_identity`); None = no hit, or not searched.
    """

    id: str
    task: str
    kind: str
    question: str
    reference: str
    protein_id: str = ""
    identity: float | None = None
    has_structure: bool = False
    protein_ids: tuple[str, ...] = ()
    local_identity: float | None = None

    @property
    def all_protein_ids(self) -> tuple[str, ...]:
        """Every protein of the question, in ``<protein>`` marker order."""
        return self.protein_ids or ((self.protein_id,) if self.protein_id else ())


@dataclass(frozen=True)
class Prediction:
    """One system's answer to one item.

    ``p_yes``: for yes/no items scored by likelihood, ``P(yes) / (P(yes) + P(no))`` of the next answer token;
    None when the system gives no probability (text is then the only signal).
    """

    id: str
    text: str
    p_yes: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "text": self.text}
        if self.p_yes is not None:
            out["p_yes"] = self.p_yes
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Prediction:
        p = d.get("p_yes")
        return cls(id=str(d["id"]), text=str(d.get("text", "")), p_yes=None if p is None else float(p))


def record_dict(record: Any) -> Mapping[str, Any]:
    """An instruction record as a mapping: dicts pass through; record objects (``sepit.data`` ``Instruction``)
    go through their ``to_json()``."""
    if isinstance(record, Mapping):
        return record
    if hasattr(record, "to_json"):
        return record.to_json()
    raise TypeError(f"not an instruction record: {type(record).__name__}")


def percent(identity: float | None) -> float | None:
    """An identity fraction (0–1, as hits and ``proteins.jsonl`` store it) as the percentage the report's bins use;
    None (no training hit) stays None."""
    if identity is None:
        return None
    x = float(identity)
    if math.isnan(x) or not 0.0 <= x <= 1.0:
        raise ValueError(f"an identity is a fraction in [0, 1], got {identity!r}")
    return 100.0 * x


def question_text(record: Mapping[str, Any]) -> str:
    """The last user turn of a record (the question the answer responds to)."""
    users = [m.get("content", "") for m in record.get("messages", []) if m.get("role") == "user"]
    return str(users[-1]) if users else ""


def normalize_question(text: str) -> str:
    """Question text for matching across proteins: protein markers dropped, lower-cased, whitespace collapsed."""
    return re.sub(r"\s+", " ", text.replace(PROTEIN_MARKER, " ")).strip().lower()


def reference_answer(record: Mapping[str, Any]) -> str:
    """The reference answer: the record's ``answer``, else its last assistant turn."""
    if record.get("answer") is not None:
        return str(record["answer"])
    turns = [m.get("content", "") for m in record.get("messages", []) if m.get("role") == "assistant"]
    return str(turns[-1]) if turns else ""


def items_from_records(records: Iterable[Any],
                       proteins: Mapping[str, Mapping[str, Any]] | None = None,
                       *, source: str | None = None) -> list[EvalItem]:
    """Turn instruction records (dicts or ``Instruction`` objects) into eval items.

    ``proteins`` maps protein id → its ``proteins.jsonl`` row; ``max_identity_to_train`` and ``has_structure`` are
    read from it when present. A record missing ``id``/``task``/``kind`` is an InputError naming ``source``.
    """
    items = []
    for rec in map(record_dict, records):
        missing = [k for k in ("id", "task", "kind") if not rec.get(k)]
        if missing:
            raise InputError(source, f"record {rec.get('id', '?')!r} lacks {', '.join(missing)}")
        pids = list(rec.get("protein_ids") or [])
        pid = str(pids[0]) if pids else ""
        prow = (proteins or {}).get(pid, {})
        items.append(EvalItem(
            id=str(rec["id"]), task=str(rec["task"]), kind=str(rec["kind"]), question=question_text(rec),
            reference=reference_answer(rec), protein_id=pid,
            identity=percent(prow.get("max_identity_to_train")),
            has_structure=bool(prow.get("has_structure", False)), protein_ids=tuple(str(x) for x in pids),
        ))
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(source, f"duplicate record id {dup!r}")
    return items


def with_local_identity(items: Iterable[EvalItem], hits: Mapping[str, Sequence[Hit]]) -> list[EvalItem]:
    """Items with ``local_identity`` set from ``hits`` (test protein id → its training hits at any coverage):
    the highest identity (%) over the hits of the item's ``protein_id``, a hit to the protein itself excluded;
    None when it has none."""
    items = list(items)
    best: dict[str, float | None] = {}
    for it in items:
        pid = it.protein_id
        if pid not in best:
            idents = [h.identity for h in hits.get(pid, ()) if h.target != pid]
            best[pid] = percent(max(idents)) if idents else None
    return [dataclasses.replace(it, local_identity=best[it.protein_id]) for it in items]
