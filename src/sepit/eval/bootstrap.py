"""95% bootstrap intervals over proteins for the headline metrics, and paired intervals of differences.

Items of one protein are not independent (a protein's yes/no pairs and open questions share its annotation), so
the unit of resampling is the protein: each resample draws the test proteins with replacement and every item counts
as often as its protein was drawn. A difference between two systems uses the same resamples for both (paired), so
its interval reflects how the two systems differ on the same proteins, not the spread of either alone.

    intervals = metric_intervals(rows, n_boot=1000, seed=0)      # {"bleu2": (lo, hi), ...}
    diff = paired_differences(rows_model, rows_homolog)           # {"bleu2": {"diff": d, "ci": (lo, hi)}, ...}

``rows`` are :func:`sepit.eval.breakdown.score_items` rows (one per item, with ``protein_id``, ``kind``,
``metrics`` and, for yes/no items scored by likelihood, ``p_yes`` and ``label``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Metrics given intervals: open-ended BLEU-2 and ROUGE-L, yes/no accuracy (%), AUROC of P(yes), multiple-choice
#: accuracy (%).
HEADLINE_METRICS: tuple[str, ...] = ("bleu2", "rougeL", "yesno_acc", "auroc", "choice_acc")
LEVEL = 0.95


def resample_weights(protein_ids: Sequence[str], n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_items) item weights: how often each item's protein was drawn in each resample of the proteins."""
    proteins = sorted(set(protein_ids))
    index = {p: i for i, p in enumerate(proteins)}
    rng = np.random.default_rng(seed)
    n = len(proteins)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot) if n else np.zeros((n_boot, 0))
    return counts[:, [index[p] for p in protein_ids]].astype(np.float64)


def _metric_items(rows: Sequence[Mapping[str, Any]], metric: str) -> np.ndarray:
    """Indices of the rows a metric is computed over."""
    if metric == "auroc":
        return np.array([i for i, r in enumerate(rows) if r["kind"] == "yesno" and r.get("p_yes") is not None],
                        dtype=np.int64)
    return np.array([i for i, r in enumerate(rows) if metric in r["metrics"]], dtype=np.int64)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) weighted means of ``values`` (n,) under ``weights`` (B, n); NaN where a resample has no weight."""
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights @ values / np.where(total > 0, total, 1.0), np.nan)


def weighted_auroc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B,) AUROC of ``scores`` (n,) for binary ``labels`` (n,) with item ``weights`` (B, n), ties counting ½; NaN
    where a resample lacks a class. With all weights 1 it equals the rank-based AUROC."""
    groups, inverse = np.unique(scores, return_inverse=True)
    onehot = np.zeros((scores.size, groups.size))
    onehot[np.arange(scores.size), inverse] = 1.0
    pos, neg = labels == 1, labels == 0
    neg_per_group = weights[:, neg] @ onehot[neg]                   # (B, G) negative weight at each score
    neg_below = np.cumsum(neg_per_group, axis=1) - neg_per_group     # (B, G) negative weight strictly below
    credit = neg_below + 0.5 * neg_per_group                          # (B, G) what a positive at that score earns
    wins = (weights[:, pos] * credit[:, inverse[pos]]).sum(axis=1)
    denom = weights[:, pos].sum(axis=1) * weights[:, neg].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, wins / np.where(denom > 0, denom, 1.0), np.nan)


def metric_values(rows: Sequence[Mapping[str, Any]], metric: str, weights: np.ndarray) -> np.ndarray | None:
    """(B,) the metric under each row of ``weights`` (B, n_rows); None when no row has the metric."""
    idx = _metric_items(rows, metric)
    if not idx.size:
        return None
    w = weights[:, idx]
    if metric == "auroc":
        scores = np.array([rows[i]["p_yes"] for i in idx], dtype=np.float64)
        labels = np.array([rows[i]["label"] for i in idx], dtype=np.int64)
        if labels.min() == labels.max():
            return None
        return weighted_auroc(scores, labels, w)
    return weighted_mean(np.array([rows[i]["metrics"][metric] for i in idx], dtype=np.float64), w)


def _interval(samples: np.ndarray) -> tuple[float, float] | None:
    samples = samples[np.isfinite(samples)]
    if not samples.size:
        return None
    lo, hi = np.quantile(samples, [(1 - LEVEL) / 2, 1 - (1 - LEVEL) / 2])
    return float(lo), float(hi)


def metric_intervals(rows: Sequence[Mapping[str, Any]], *, n_boot: int = 1000, seed: int = 0,
                     metrics: Sequence[str] = HEADLINE_METRICS) -> dict[str, tuple[float, float]]:
    """Percentile 95% intervals of each metric over ``n_boot`` resamples of the proteins (metrics a system does not
    have are left out)."""
    weights = resample_weights([r["protein_id"] for r in rows], n_boot, seed)
    out = {}
    for m in metrics:
        values = metric_values(rows, m, weights)
        ci = None if values is None else _interval(values)
        if ci is not None:
            out[m] = ci
    return out


def paired_differences(rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]], *,
                       n_boot: int = 1000, seed: int = 0, metrics: Sequence[str] = HEADLINE_METRICS
                       ) -> dict[str, dict[str, Any]]:
    """Per metric both systems have: the difference ``system − baseline`` on all items and its paired 95% interval
    (the same protein resamples for both). Both row lists must cover the same items in the same order."""
    if [r["id"] for r in rows] != [r["id"] for r in baseline_rows]:
        raise ValueError("paired differences need the same items in the same order for both systems")
    ones = np.ones((1, len(rows)))
    weights = resample_weights([r["protein_id"] for r in rows], n_boot, seed)
    out = {}
    for m in metrics:
        a, b = metric_values(rows, m, weights), metric_values(baseline_rows, m, weights)
        if a is None or b is None:
            continue
        ci = _interval(a - b)
        point = metric_values(rows, m, ones)[0] - metric_values(baseline_rows, m, ones)[0]  # type: ignore[index]
        if ci is not None and np.isfinite(point):
            out[m] = {"diff": float(point), "ci": ci}
    return out


def add_intervals(systems: Mapping[str, dict[str, Any]], *, baseline: str = "nearest homolog", n_boot: int = 1000,
                  seed: int = 0) -> None:
    """Add ``intervals`` (each headline metric's 95% interval) to every system summary and, where ``baseline`` is
    among them, ``vs_baseline`` (paired differences to it) to every other system. Summaries need their ``items``."""
    base = systems.get(baseline)
    for name, summary in systems.items():
        rows = summary["items"]
        summary["intervals"] = {m: list(ci) for m, ci in metric_intervals(rows, n_boot=n_boot, seed=seed).items()}
        if base is not None and name != baseline:
            diffs = paired_differences(rows, base["items"], n_boot=n_boot, seed=seed)
            summary["vs_baseline"] = {"baseline": baseline,
                                      **{m: {"diff": d["diff"], "ci": list(d["ci"])} for m, d in diffs.items()}}
