"""95% bootstrap intervals over proteins for the headline metrics, and paired intervals of differences.

Items of one protein are not independent (a protein's yes/no pairs and open questions share its annotation), so
the unit of resampling is the protein: each resample draws the test proteins with replacement and every item counts
as often as its protein was drawn. A difference between two systems uses the same resamples for both (paired), so
its interval reflects how the two systems differ on the same proteins, not the spread of either alone.

    intervals = metric_intervals(rows, n_boot=1000, seed=0)      # {"bleu2": (lo, hi), ...}
    diff = paired_differences(rows_model, rows_homolog)           # {"bleu2": {"diff": d, "ci": (lo, hi)}, ...}
    add_intervals(systems)   # every summary: "intervals"; "vs_baselines" to the nearest homolog and the top-k vote

``rows`` are :func:`sepit.eval.breakdown.score_items` rows (one per item, with ``protein_id``, ``kind``,
``metrics`` and, for yes/no items scored by likelihood, ``p_yes`` and ``label``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from sepit.eval.baselines import NEAREST_HOMOLOG, TOPK_VOTE

#: Metrics given intervals: open-ended BLEU-2 and ROUGE-L, yes/no accuracy (%), AUROC of P(yes), multiple-choice
#: accuracy (%).
HEADLINE_METRICS: tuple[str, ...] = ("bleu2", "rougeL", "yesno_acc", "auroc", "choice_acc")
LEVEL = 0.95
#: Systems every other system is compared with (paired), when they are in the report: the nearest-homolog baseline
#: and the top-k vote over the homologs a retrieval model sees.
DIFF_BASELINES: tuple[str, ...] = (NEAREST_HOMOLOG, TOPK_VOTE)


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


def _samples(rows: Sequence[Mapping[str, Any]], weights: np.ndarray, metrics: Sequence[str]
             ) -> dict[str, tuple[np.ndarray, float]]:
    """Per metric the system has: its (B,) values under ``weights`` and its value on all items."""
    ones = np.ones((1, len(rows)))
    out = {}
    for m in metrics:
        values = metric_values(rows, m, weights)
        if values is not None:
            out[m] = (values, float(metric_values(rows, m, ones)[0]))  # type: ignore[index]
    return out


def _differences(a: Mapping[str, tuple[np.ndarray, float]], b: Mapping[str, tuple[np.ndarray, float]]
                 ) -> dict[str, dict[str, Any]]:
    out = {}
    for m, (values, point) in a.items():
        if m not in b:
            continue
        ci = _interval(values - b[m][0])
        diff = point - b[m][1]
        if ci is not None and np.isfinite(diff):
            out[m] = {"diff": float(diff), "ci": ci}
    return out


def _check_paired(rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]]) -> None:
    if [r["id"] for r in rows] != [r["id"] for r in baseline_rows]:
        raise ValueError("paired differences need the same items in the same order for both systems")


def metric_intervals(rows: Sequence[Mapping[str, Any]], *, n_boot: int = 1000, seed: int = 0,
                     metrics: Sequence[str] = HEADLINE_METRICS) -> dict[str, tuple[float, float]]:
    """Percentile 95% intervals of each metric over ``n_boot`` resamples of the proteins (metrics a system does not
    have are left out)."""
    weights = resample_weights([r["protein_id"] for r in rows], n_boot, seed)
    out = {}
    for m, (values, _) in _samples(rows, weights, metrics).items():
        ci = _interval(values)
        if ci is not None:
            out[m] = ci
    return out


def paired_differences(rows: Sequence[Mapping[str, Any]], baseline_rows: Sequence[Mapping[str, Any]], *,
                       n_boot: int = 1000, seed: int = 0, metrics: Sequence[str] = HEADLINE_METRICS
                       ) -> dict[str, dict[str, Any]]:
    """Per metric both systems have: the difference ``system − baseline`` on all items and its paired 95% interval
    (the same protein resamples for both). Both row lists must cover the same items in the same order."""
    _check_paired(rows, baseline_rows)
    weights = resample_weights([r["protein_id"] for r in rows], n_boot, seed)
    return _differences(_samples(rows, weights, metrics), _samples(baseline_rows, weights, metrics))


def add_intervals(systems: Mapping[str, dict[str, Any]], *, baselines: str | Sequence[str] = DIFF_BASELINES,
                  n_boot: int = 1000, seed: int = 0) -> None:
    """Add to every system summary (each needs its ``items``; all on the same items):

    - ``intervals``: ``{metric: [lo, hi]}``, each headline metric's 95% interval;
    - ``vs_baselines``: ``{baseline: {metric: {"diff": d, "ci": [lo, hi]}}}``, the paired difference to each of
      ``baselines`` present among the systems (a baseline gets none to itself);
    - ``vs_baseline``: the first present baseline's differences as ``{"baseline": name, metric: {...}}`` (the
      shape reports had before ``vs_baselines``), for every system but that baseline.

    One set of protein resamples serves every system, so all intervals and differences are paired.
    """
    wanted = [baselines] if isinstance(baselines, str) else list(baselines)
    present = [b for b in wanted if b in systems]
    weights: dict[tuple[str, ...], np.ndarray] = {}  # one set of resamples per list of proteins (normally one)
    samples = {}
    for name, summary in systems.items():
        rows = summary["items"]
        for b in present:
            if b != name:
                _check_paired(rows, systems[b]["items"])
        key = tuple(r["protein_id"] for r in rows)
        if key not in weights:
            weights[key] = resample_weights(key, n_boot, seed)
        samples[name] = _samples(rows, weights[key], HEADLINE_METRICS)
    for name, summary in systems.items():
        summary["intervals"] = {m: list(ci) for m, (v, _) in samples[name].items() if (ci := _interval(v))}
        vs = {b: {m: {"diff": d["diff"], "ci": list(d["ci"])} for m, d in _differences(samples[name],
                                                                                       samples[b]).items()}
              for b in present if b != name}
        if vs:
            summary["vs_baselines"] = vs
        if present and name != present[0]:
            summary["vs_baseline"] = {"baseline": present[0], **vs[present[0]]}


def subset_summaries(systems: Mapping[str, Mapping[str, Any]], keep: Callable[[Mapping[str, Any]], bool], *,
                     baselines: str | Sequence[str] = DIFF_BASELINES, n_boot: int = 1000, seed: int = 0
                     ) -> dict[str, dict[str, Any]]:
    """Every system's headline metrics on the items ``keep`` selects (e.g. one kind of question), as
    ``{name: {"n": items, "point": {metric: value}, "intervals": ..., "vs_baselines": ...}}`` — the shapes of
    :func:`add_intervals`, from resamples of the proteins those items belong to. Systems need their ``items``."""
    sub: dict[str, dict[str, Any]] = {name: {"items": [r for r in s["items"] if keep(r)]}
                                      for name, s in systems.items()}
    if not any(s["items"] for s in sub.values()):
        return {}
    add_intervals(sub, baselines=baselines, n_boot=n_boot, seed=seed)
    ones = {name: np.ones((1, len(s["items"]))) for name, s in sub.items()}
    for name, s in sub.items():
        s["point"] = {m: point for m, (_, point) in _samples(s["items"], ones[name], HEADLINE_METRICS).items()}
        s["n"] = len(s.pop("items"))
        s.pop("vs_baseline", None)
    return sub
