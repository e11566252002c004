"""Bootstrap intervals over proteins: exact against known answers, paired differences, and in the report."""

from __future__ import annotations

import numpy as np
import pytest

from sepit.eval.bootstrap import (
    add_intervals,
    metric_intervals,
    paired_differences,
    resample_weights,
    subset_summaries,
    weighted_auroc,
)
from sepit.eval.closed_set import auroc
from sepit.eval.report import report_markdown


def _yesno_rows(correct: list[bool], proteins: list[str]) -> list[dict]:
    return [{"id": f"i{k}", "protein_id": p, "kind": "yesno", "metrics": {"yesno_acc": 100.0 * c}}
            for k, (c, p) in enumerate(zip(correct, proteins))]


def test_weighted_auroc_equals_the_rank_auroc_with_ties_and_repeats() -> None:
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(60), 1)  # many ties
    labels = (rng.random(60) < 0.4).astype(np.int64)
    assert weighted_auroc(scores, labels, np.ones((1, 60)))[0] == pytest.approx(auroc(scores, labels))
    reps = rng.integers(0, 4, size=60)  # an item drawn k times = that item repeated k times
    expected = auroc(np.repeat(scores, reps), np.repeat(labels, reps))
    assert weighted_auroc(scores, labels, reps[None, :].astype(float))[0] == pytest.approx(expected)
    only_pos = weighted_auroc(scores, labels, (labels == 1)[None, :].astype(float))
    assert np.isnan(only_pos[0])  # a resample without negatives has no AUROC


def test_resampling_draws_proteins_not_items() -> None:
    w = resample_weights(["a", "a", "b", "c", "c", "c"], n_boot=200, seed=0)
    assert w.shape == (200, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 5]).all()  # a protein's items move together
    assert (w[:, [0, 2, 3]].sum(axis=1) == 3).all()  # three proteins drawn per resample


def test_interval_of_an_accuracy_matches_the_binomial_answer() -> None:
    """400 proteins, one item each, 280 right: the 95% interval is 70% ± 1.96·√(0.21/400) = ±4.49 points."""
    correct = [k % 10 < 7 for k in range(400)]
    lo, hi = metric_intervals(_yesno_rows(correct, [f"p{k}" for k in range(400)]), n_boot=4000)["yesno_acc"]
    assert (lo + hi) / 2 == pytest.approx(70.0, abs=0.4)
    assert (hi - lo) / 2 == pytest.approx(4.49, abs=0.35)


def test_items_of_one_protein_widen_the_interval() -> None:
    """100 proteins with 4 identical items each: the information of 100 items, not 400 (±8.98 points, not ±4.49)."""
    correct = [p % 10 < 7 for p in range(100) for _ in range(4)]
    proteins = [f"p{p}" for p in range(100) for _ in range(4)]
    lo, hi = metric_intervals(_yesno_rows(correct, proteins), n_boot=4000)["yesno_acc"]
    assert (hi - lo) / 2 == pytest.approx(8.98, abs=0.7)


def test_paired_differences() -> None:
    rng = np.random.default_rng(3)
    base = [{"id": f"i{k}", "protein_id": f"p{k // 2}", "kind": "open",
             "metrics": {"bleu2": float(rng.uniform(0, 60)), "rougeL": float(rng.uniform(0, 60))}} for k in range(80)]
    better = [dict(r, metrics={"bleu2": r["metrics"]["bleu2"] + 5.0, "rougeL": r["metrics"]["rougeL"]}) for r in base]
    d = paired_differences(better, base, n_boot=500)
    assert d["bleu2"]["diff"] == pytest.approx(5.0) and d["bleu2"]["ci"] == pytest.approx((5.0, 5.0))
    assert d["rougeL"] == {"diff": 0.0, "ci": (0.0, 0.0)}  # the same answers: no difference on any resample
    assert set(d) == {"bleu2", "rougeL"}  # metrics neither system has are left out
    unpaired = metric_intervals(better, n_boot=500)["bleu2"]
    assert unpaired[1] - unpaired[0] > 5.0  # alone, each system's interval is wide; the paired one is not
    with pytest.raises(ValueError, match="same items"):
        paired_differences(better[1:], base)


def test_intervals_reach_the_report() -> None:
    rows = _yesno_rows([k % 3 > 0 for k in range(30)], [f"p{k}" for k in range(30)])
    for r in rows:
        r.update(p_yes=0.8 if r["metrics"]["yesno_acc"] else 0.3, label=int(r["metrics"]["yesno_acc"] > 0))
    homolog = [dict(r, p_yes=None, metrics={"yesno_acc": 100.0}) for r in rows]
    systems = {"model": {"items": rows, "overall": {"yesno_acc": 66.67, "closed_set": {"auroc": 1.0}}},
               "nearest homolog": {"items": homolog, "overall": {"yesno_acc": 100.0, "closed_set": None}}}
    add_intervals(systems, n_boot=300)
    assert systems["model"]["intervals"]["auroc"] == [1.0, 1.0]
    assert set(systems["model"]["vs_baseline"]) == {"baseline", "yesno_acc"}  # the homolog has no AUROC
    lo, hi = systems["model"]["vs_baseline"]["yesno_acc"]["ci"]
    assert hi < 0 and systems["model"]["vs_baseline"]["yesno_acc"]["diff"] == pytest.approx(-100 / 3)
    assert "vs_baseline" not in systems["nearest homolog"]
    md = report_markdown({"meta": {}, "systems": systems})
    assert "## 95% intervals (bootstrap over test proteins)" in md
    assert "| model | 66.67 [" in md and "Δ y/n acc vs nearest homolog" in md and "BLEU-2" not in md


def _open_rows(bleu: list[float]) -> list[dict]:
    return [{"id": f"i{k}", "protein_id": f"p{k // 3}", "kind": "open", "metrics": {"bleu2": b}}
            for k, b in enumerate(bleu)]


def test_paired_differences_to_every_baseline() -> None:
    """model = top-k vote + 7 on every item → Δ 7 with an interval tight around it; a copy of the top-k vote →
    Δ 0 exactly; noise of mean zero → an interval that contains 0; each difference also to the nearest homolog."""
    rng = np.random.default_rng(5)
    vote = rng.uniform(0, 60, 120)
    systems = {
        "model": {"items": _open_rows(list(vote + 7.0))},
        "model (no homologs)": {"items": _open_rows(list(vote))},
        "model (no structure)": {"items": _open_rows(list(vote + rng.normal(0, 5, 120)))},
        "nearest homolog": {"items": _open_rows(list(rng.uniform(0, 60, 120)))},
        "top-k vote": {"items": _open_rows(list(vote))},
    }
    for s in systems.values():
        s["overall"] = {"bleu2": float(np.mean([r["metrics"]["bleu2"] for r in s["items"]]))}
    add_intervals(systems, n_boot=400)
    vs = systems["model"]["vs_baselines"]
    assert list(vs) == ["nearest homolog", "top-k vote"]
    assert vs["top-k vote"]["bleu2"]["diff"] == pytest.approx(7.0)
    assert vs["top-k vote"]["bleu2"]["ci"] == pytest.approx([7.0, 7.0])
    assert systems["model (no homologs)"]["vs_baselines"]["top-k vote"]["bleu2"] == {"diff": 0.0, "ci": [0.0, 0.0]}
    lo, hi = systems["model (no structure)"]["vs_baselines"]["top-k vote"]["bleu2"]["ci"]
    assert lo < 0 < hi and hi - lo < 4.0  # paired: far tighter than either system's own interval (~±3.1 each)
    # the baselines are compared with each other, never with themselves
    assert list(systems["top-k vote"]["vs_baselines"]) == ["nearest homolog"]
    assert list(systems["nearest homolog"]["vs_baselines"]) == ["top-k vote"]
    # the older key stays: the nearest homolog's differences, for every system but the nearest homolog
    assert systems["model"]["vs_baseline"] == {"baseline": "nearest homolog", **vs["nearest homolog"]}
    assert "vs_baseline" not in systems["nearest homolog"] and "vs_baseline" in systems["top-k vote"]
    # the same resamples as paired_differences on its own
    alone = paired_differences(systems["model"]["items"], systems["nearest homolog"]["items"], n_boot=400)
    assert vs["nearest homolog"]["bleu2"]["ci"] == pytest.approx(list(alone["bleu2"]["ci"]))
    md = report_markdown({"meta": {}, "systems": systems})
    assert "### Paired difference to nearest homolog" in md and "### Paired difference to top-k vote" in md
    assert "| model | +7.00 [+7.00, +7.00] |" in md


def test_only_the_top_k_vote_present_and_mismatched_items() -> None:
    systems = {"model": {"items": _open_rows([10.0] * 6)}, "top-k vote": {"items": _open_rows([4.0] * 6)}}
    add_intervals(systems, n_boot=50)
    assert systems["model"]["vs_baseline"]["baseline"] == "top-k vote"
    assert systems["model"]["vs_baselines"]["top-k vote"]["bleu2"]["diff"] == pytest.approx(6.0)
    no_base = {"model": {"items": _open_rows([10.0] * 6)}, "other": {"items": _open_rows([1.0] * 3)}}
    add_intervals(no_base, n_boot=50)  # no baseline: intervals only, items may differ
    assert "vs_baselines" not in no_base["model"] and no_base["other"]["intervals"]["bleu2"] == [1.0, 1.0]
    bad = {"model": {"items": _open_rows([10.0] * 6)}, "top-k vote": {"items": _open_rows([4.0] * 3)}}
    with pytest.raises(ValueError, match="same items"):
        add_intervals(bad, n_boot=50)


def test_a_subset_of_the_questions_gets_its_own_intervals_and_differences() -> None:
    """The model is perfect on length questions and no better than chance elsewhere; the homolog is right on half of
    each. Without the length questions the model's AUROC is its chance-level one, with a paired difference to the
    homolog whose interval holds 0; on all items it is well above."""
    rows, homolog = [], []
    for k in range(80):
        task, label = ("length" if k < 40 else "function"), k % 2
        p = float(label) if task == "length" else (0.5 + 0.1 * ((k // 2) % 2 == 0))  # length: exact; else noise
        rows.append({"id": f"i{k}", "protein_id": f"p{k // 2}", "task": task, "kind": "yesno", "p_yes": p,
                     "label": label, "metrics": {"yesno_acc": 100.0 * ((p >= 0.5) == bool(label))}})
        right = (k // 2) % 2 == 0
        homolog.append(dict(rows[-1], p_yes=float(label if right else 1 - label),
                            metrics={"yesno_acc": 100.0 * right}))
    systems = {"model": {"items": rows}, "nearest homolog": {"items": homolog}}
    sub = subset_summaries(systems, lambda r: r["task"] != "length", n_boot=400)
    assert sub["model"]["n"] == 40 and sub["model"]["point"]["auroc"] == pytest.approx(0.5)
    lo, hi = sub["model"]["vs_baselines"]["nearest homolog"]["auroc"]["ci"]
    assert lo < 0 < hi and sub["nearest homolog"]["point"]["auroc"] == pytest.approx(0.5)
    add_intervals(systems, n_boot=400)
    assert systems["model"]["vs_baselines"]["nearest homolog"]["auroc"]["ci"][0] > 0  # all items: above
    assert "items" in systems["model"]  # the full summaries are left as they were
    md = report_markdown({"meta": {}, "systems": systems, "without_sequence_tasks": sub})
    assert "### Without the questions the protein's sequence answers" in md and "| model | 40 | 50.00 [" in md
    assert subset_summaries(systems, lambda r: False) == {}
