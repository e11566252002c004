"""Closed-set (yes/no) scoring from probabilities: accuracy, AUROC, ECE and a calibration curve. Pure numpy.

Inputs are ``p_yes`` (N,) — the system's ``P(yes) / (P(yes) + P(no))`` — and ``labels`` (N,) — 1 for "yes", 0 for
"no". The predicted answer is "yes" when ``p_yes >= 0.5``.

- **AUROC** is the Mann–Whitney statistic: the probability that a random "yes" item gets a higher ``p_yes`` than a
  random "no" item, ties counting one half (average ranks). Undefined (None) when only one class is present.
- **ECE** (Guo et al. 2017, top-label): confidence = probability of the predicted answer, ``max(p, 1-p)``;
  ``n_bins`` equal-width bins over [0, 1]; ``ECE = Σ_b (n_b / N) · |mean confidence_b − accuracy_b|``.
- **Calibration curve** (reliability diagram, the usual binary form): equal-width bins of ``p_yes``; per non-empty
  bin the mean ``p_yes`` and the observed fraction of "yes".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _arrays(p_yes: Sequence[float] | np.ndarray, labels: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(p_yes, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"{p.size} probabilities for {y.size} labels")
    if p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise ValueError("probabilities must lie in [0, 1]")
    if y.size and not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (no) or 1 (yes)")
    return p, y.astype(np.int64)


def accuracy(p_yes, labels) -> float | None:
    """Fraction of items whose thresholded answer (``p_yes >= 0.5`` → yes) equals the label; None when empty."""
    p, y = _arrays(p_yes, labels)
    if not p.size:
        return None
    return float(np.mean((p >= 0.5).astype(np.int64) == y))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x`` with ties given the mean of the ranks they span."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(x.size, dtype=np.float64)
    # Boundaries of runs of equal values in the sorted array.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + 1 + e) / 2.0  # mean of ranks s+1 .. e
    return ranks


def auroc(p_yes, labels) -> float | None:
    """Area under the ROC curve (rank-based, ties = ½); None when only one class is present."""
    p, y = _arrays(p_yes, labels)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = _average_ranks(p)
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _bin_index(x: np.ndarray, n_bins: int) -> np.ndarray:
    # Bins [0, 1/n), [1/n, 2/n), ..., [(n-1)/n, 1]; 1.0 goes into the last bin.
    return np.minimum((x * n_bins).astype(np.int64), n_bins - 1)


def ece(p_yes, labels, n_bins: int = 10) -> float | None:
    """Top-label expected calibration error with ``n_bins`` equal-width bins; None when empty."""
    p, y = _arrays(p_yes, labels)
    if not p.size:
        return None
    pred = (p >= 0.5).astype(np.int64)
    conf = np.where(pred == 1, p, 1.0 - p)
    correct = (pred == y).astype(np.float64)
    idx = _bin_index(conf, n_bins)
    total = 0.0
    for b in np.unique(idx):
        sel = idx == b
        total += sel.sum() / p.size * abs(conf[sel].mean() - correct[sel].mean())
    return float(total)


@dataclass(frozen=True)
class CalibrationCurve:
    """Reliability diagram points, one per non-empty bin: mean ``p_yes``, observed fraction "yes", item count."""

    mean_predicted: list[float]
    fraction_yes: list[float]
    counts: list[int]
    n_bins: int

    def to_dict(self) -> dict:
        return {"mean_predicted": self.mean_predicted, "fraction_yes": self.fraction_yes, "counts": self.counts,
                "n_bins": self.n_bins}


def calibration_curve(p_yes, labels, n_bins: int = 10) -> CalibrationCurve:
    """Equal-width bins of ``p_yes``; per non-empty bin the mean ``p_yes`` and the fraction of "yes" labels."""
    p, y = _arrays(p_yes, labels)
    idx = _bin_index(p, n_bins)
    mp, fy, cnt = [], [], []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            mp.append(float(p[sel].mean()))
            fy.append(float(y[sel].mean()))
            cnt.append(int(sel.sum()))
    return CalibrationCurve(mp, fy, cnt, n_bins)


def closed_set_scores(p_yes, labels, n_bins: int = 10) -> dict:
    """All closed-set numbers of one group: ``n``, ``accuracy``, ``auroc``, ``ece`` (None where undefined)."""
    p, y = _arrays(p_yes, labels)
    return {"n": int(p.size), "accuracy": accuracy(p, y), "auroc": auroc(p, y), "ece": ece(p, y, n_bins)}
