"""Score one system's predictions and break the scores down per task, identity bin and structure availability.

``evaluate_system(items, predictions, scorer=...)`` returns a JSON-ready dict::

    {"n": 120, "metrics": [...], "overall": AGG, "by_task": {task: AGG}, "by_identity": {bin: AGG},
     "by_local_identity": {bin: AGG}, "by_structure": {"has structure": AGG, "no structure": AGG},
     "calibration": {...} | None, "items": [...]}

where ``AGG = {"n", "n_proteins", "n_text", "n_yesno", "bleu1", ..., "bertscore_f1", "yesno_acc", "closed_set"}``:
means over the group's open/caption items (text metrics) and yes/no items (``yesno_acc``, %), None where the group
has none; ``closed_set = {"n", "accuracy" (%), "auroc", "ece"}`` over yes/no items that carry ``p_yes``, else None.

``by_identity`` bins the test protein's identity to the training set over alignments covering ≥80% of it (a close
full-length homolog); ``by_local_identity`` bins its best hit at any coverage (``EvalItem.local_identity``), so a
protein that shares only a domain with a training protein shows up there, not in ``by_identity``. It is ``{}`` when
no item has a local identity (no search was given).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sepit.errors import SepitError
from sepit.eval.closed_set import calibration_curve, closed_set_scores
from sepit.eval.items import EvalItem, Prediction
from sepit.eval.metrics import TEXT_METRICS, TextScorer, mean, yes_no_correct
from sepit.eval.text import last_yes_no

DEFAULT_IDENTITY_EDGES: tuple[float, ...] = (30.0, 50.0, 90.0)
#: Bins of the best hit at any coverage: <30%, 30–50%, ≥50%, no hit.
DEFAULT_LOCAL_IDENTITY_EDGES: tuple[float, ...] = (30.0, 50.0)
NO_HIT = "no hit"
STRUCTURE_GROUPS = ("has structure", "no structure")


def _fmt_edge(x: float) -> str:
    return f"{x:g}%"


def identity_bin_labels(edges: Sequence[float] = DEFAULT_IDENTITY_EDGES) -> list[str]:
    """Bin names for identity edges (%), low to high, then ``no hit``: ``<30%, 30–50%, 50–90%, ≥90%, no hit``."""
    e = sorted(float(x) for x in edges)
    if not e:
        return ["all", NO_HIT]
    labels = [f"<{_fmt_edge(e[0])}"]
    labels += [f"{e[i]:g}–{_fmt_edge(e[i + 1])}" for i in range(len(e) - 1)]
    labels.append(f"≥{_fmt_edge(e[-1])}")
    return labels + [NO_HIT]


def identity_bin(identity: float | None, edges: Sequence[float] = DEFAULT_IDENTITY_EDGES) -> str:
    """The bin of an identity (%); None (no training hit) → ``no hit``. Bins are [lo, hi)."""
    labels = identity_bin_labels(edges)
    if identity is None:
        return NO_HIT
    e = sorted(float(x) for x in edges)
    for i, edge in enumerate(e):
        if identity < edge:
            return labels[i]
    return labels[len(e)]


def score_items(items: Sequence[EvalItem], predictions: Mapping[str, Prediction] | Sequence[Prediction],
                scorer: TextScorer | None, *, identity_edges: Sequence[float] = DEFAULT_IDENTITY_EDGES,
                local_identity_edges: Sequence[float] = DEFAULT_LOCAL_IDENTITY_EDGES) -> list[dict[str, Any]]:
    """Per-item rows: ids, groups, the prediction and its metrics. Every item needs a prediction.
    ``local_identity_bin`` is None on every row when no item has a ``local_identity``."""
    by_id = predictions if isinstance(predictions, Mapping) else {p.id: p for p in predictions}
    missing = [it.id for it in items if it.id not in by_id]
    if missing:
        raise SepitError(f"{len(missing)} of {len(items)} items have no prediction (first: {missing[0]!r})")
    local_known = any(it.local_identity is not None for it in items)  # else no search: no bin, not "no hit"
    rows = []
    for it in items:
        p = by_id[it.id]
        rows.append({"id": it.id, "task": it.task, "kind": it.kind, "protein_id": it.protein_id,
                     "identity": it.identity, "identity_bin": identity_bin(it.identity, identity_edges),
                     "local_identity": it.local_identity,
                     "local_identity_bin": (identity_bin(it.local_identity, local_identity_edges) if local_known
                                            else None),
                     "structure": STRUCTURE_GROUPS[0] if it.has_structure else STRUCTURE_GROUPS[1],
                     "prediction": p.text, "reference": it.reference, "p_yes": p.p_yes, "metrics": {}})
    text_idx = [i for i, it in enumerate(items) if it.kind not in ("yesno", "choice")]
    if text_idx:
        if scorer is None:
            raise SepitError("open-ended items need a TextScorer")
        scores = scorer.score([rows[i]["prediction"] for i in text_idx], [items[i].reference for i in text_idx])
        for i, s in zip(text_idx, scores):
            rows[i]["metrics"] = s
    for row, it in zip(rows, items):
        if it.kind == "yesno":
            row["metrics"] = {"yesno_acc": 100.0 * yes_no_correct(row["prediction"], it.reference)}
            row["label"] = int((last_yes_no(it.reference) or it.reference.strip().lower()) == "yes")
        elif it.kind == "choice":  # multiple choice: the chosen option is the reference option
            row["metrics"] = {"choice_acc": 100.0 * (row["prediction"].strip() == it.reference.strip())}
    return rows


def aggregate(rows: Sequence[Mapping[str, Any]], *, ece_bins: int = 10) -> dict[str, Any]:
    """Means of each metric over the rows that have it (see the module docstring for the shape)."""
    text = [r for r in rows if r["kind"] not in ("yesno", "choice")]
    yn = [r for r in rows if r["kind"] == "yesno"]
    choice = [r for r in rows if r["kind"] == "choice"]
    out: dict[str, Any] = {"n": len(rows), "n_proteins": len({r["protein_id"] for r in rows}),
                           "n_text": len(text), "n_yesno": len(yn)}
    for m in TEXT_METRICS:
        vals = [r["metrics"][m] for r in text if m in r["metrics"]]
        out[m] = mean(vals)
    out["yesno_acc"] = mean([r["metrics"]["yesno_acc"] for r in yn])
    if choice:
        out["n_choice"] = len(choice)
        out["choice_acc"] = mean([r["metrics"]["choice_acc"] for r in choice])
    scored = [r for r in yn if r.get("p_yes") is not None]
    if scored:
        cs = closed_set_scores([r["p_yes"] for r in scored], [r["label"] for r in scored], ece_bins)
        cs["accuracy"] = None if cs["accuracy"] is None else 100.0 * cs["accuracy"]
        out["closed_set"] = cs
    else:
        out["closed_set"] = None
    return out


def _grouped(rows: Sequence[Mapping[str, Any]], key: str, order: Sequence[str] | None, ece_bins: int
             ) -> dict[str, Any]:
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    names = [g for g in (order or sorted(groups)) if g in groups]
    return {g: aggregate(groups[g], ece_bins=ece_bins) for g in names}


def evaluate_system(items: Sequence[EvalItem], predictions: Mapping[str, Prediction] | Sequence[Prediction],
                    scorer: TextScorer | None, *, identity_edges: Sequence[float] = DEFAULT_IDENTITY_EDGES,
                    local_identity_edges: Sequence[float] = DEFAULT_LOCAL_IDENTITY_EDGES, ece_bins: int = 10,
                    stats: Mapping[str, int] | None = None) -> dict[str, Any]:
    """Score one system on ``items`` and return its JSON-ready summary (with per-item rows under ``items``)."""
    rows = score_items(items, predictions, scorer, identity_edges=identity_edges,
                       local_identity_edges=local_identity_edges)
    metrics = [m for m in TEXT_METRICS if any(m in r["metrics"] for r in rows)]
    if any(r["kind"] == "yesno" for r in rows):
        metrics.append("yesno_acc")
    if any(r["kind"] == "choice" for r in rows):
        metrics.append("choice_acc")
    scored = [r for r in rows if r["kind"] == "yesno" and r.get("p_yes") is not None]
    curve = calibration_curve([r["p_yes"] for r in scored], [r["label"] for r in scored], ece_bins) \
        if scored else None
    return {
        "n": len(rows),
        "metrics": metrics,
        "overall": aggregate(rows, ece_bins=ece_bins),
        "by_task": _grouped(rows, "task", None, ece_bins),
        "by_identity": _grouped(rows, "identity_bin", identity_bin_labels(identity_edges), ece_bins),
        "by_local_identity": (_grouped(rows, "local_identity_bin", identity_bin_labels(local_identity_edges),
                                       ece_bins) if any(r["local_identity_bin"] for r in rows) else {}),
        "by_structure": _grouped(rows, "structure", STRUCTURE_GROUPS, ece_bins),
        "calibration": curve.to_dict() if curve else None,
        "stats": dict(stats or {}),
        "items": rows,
    }
