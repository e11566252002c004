"""Breakdowns (task / identity bin / structure), the report files, the report diff and the resumable prediction log."""

from __future__ import annotations

import json

import pytest

from sepit.errors import InputError, SepitError
from sepit.eval.breakdown import evaluate_system, identity_bin, identity_bin_labels
from sepit.eval.items import EvalItem, Prediction, items_from_records, percent
from sepit.eval.metrics import TextScorer
from sepit.eval.predictions import PredictionLog
from sepit.eval.report import compare_reports, format_main_table, load_report, write_report
from sepit.eval.text import regex_tokenize

ITEMS = [
    EvalItem("a", "go_cc", "open", "q", "the cat sat on the mat", "P1", identity=25.0, has_structure=True),
    EvalItem("b", "go_cc", "yesno", "q", "Yes.", "P1", identity=25.0, has_structure=True),
    EvalItem("c", "ec", "yesno", "q", "No, it does not.", "P2", identity=95.0),
    EvalItem("d", "ec", "yesno", "q", "Yes.", "P3", identity=None),
    EvalItem("e", "ec", "open", "q", "EC 2.7.11.1", "P2", identity=95.0),
]
MODEL = [Prediction("a", "the cat is on the mat"), Prediction("b", "Yes, it is.", 0.9),
         Prediction("c", "Yes.", 0.6), Prediction("d", "I do not know", 0.2), Prediction("e", "EC 2.7.11.1")]
PRIOR = [Prediction("a", "the mat"), Prediction("b", "yes", 0.5), Prediction("c", "yes", 0.5),
         Prediction("d", "yes", 0.5), Prediction("e", "EC 3.1.1.1")]


@pytest.fixture(scope="module")
def scorer():
    return TextScorer(regex_tokenize)


def test_identity_bins():
    assert identity_bin_labels() == ["<30%", "30–50%", "50–90%", "≥90%", "no hit"]
    assert [identity_bin(x) for x in (0.0, 29.9, 30.0, 49.99, 50.0, 90.0, 100.0, None)] == \
        ["<30%", "<30%", "30–50%", "30–50%", "50–90%", "≥90%", "≥90%", "no hit"]
    assert identity_bin(45.0, [40]) == "≥40%"
    assert percent(0.42) == pytest.approx(42.0) and percent(None) is None
    with pytest.raises(ValueError, match="fraction"):
        percent(42.0)  # identities are fractions everywhere; a percentage here is a bug, not a guess


def test_evaluate_system_breakdowns(scorer):
    s = evaluate_system(ITEMS, MODEL, scorer)
    # yes/no: b right (yes), c wrong (said yes, reference no), d wrong (no yes/no word) → 1/3
    assert s["overall"]["yesno_acc"] == pytest.approx(100 / 3)
    assert s["overall"]["n_text"] == 2 and s["overall"]["n_yesno"] == 3
    # BLEU-2: item a = 100·√(5/6·3/5) = 70.71; item e identical (tokens ec 2 . 7 . 11 . 1) = 100 → mean 85.36
    assert s["overall"]["bleu2"] == pytest.approx((100 * 0.5 ** 0.5 + 100) / 2)
    assert list(s["by_task"]) == ["ec", "go_cc"]
    assert s["by_task"]["ec"]["yesno_acc"] == pytest.approx(0.0)
    assert s["by_task"]["go_cc"]["yesno_acc"] == pytest.approx(100.0)
    assert list(s["by_identity"]) == ["<30%", "≥90%", "no hit"]   # empty bins left out, order kept
    assert s["by_identity"]["≥90%"]["n"] == 2 and s["by_identity"]["no hit"]["yesno_acc"] == 0.0
    assert s["by_structure"]["has structure"]["n"] == 2 and s["by_structure"]["no structure"]["n"] == 3
    # likelihood: p = [.9, .6, .2], labels [1, 0, 1] → thresholded yes, yes, no → 1/3 right
    # AUROC: positives {.9, .2} vs negative {.6}: .9 > .6 wins, .2 < .6 loses → 1/2
    cs = s["overall"]["closed_set"]
    assert cs["n"] == 3 and cs["accuracy"] == pytest.approx(100 / 3) and cs["auroc"] == pytest.approx(0.5)
    assert s["calibration"]["counts"] and sum(s["calibration"]["counts"]) == 3
    assert s["by_task"]["go_cc"]["closed_set"]["auroc"] is None   # one class only


def test_missing_prediction_is_an_error(scorer):
    with pytest.raises(SepitError, match="1 of 5 items have no prediction"):
        evaluate_system(ITEMS, MODEL[:-1], scorer)


def _results(scorer, model_preds=MODEL):
    return {"meta": {"checkpoint": "ckpt", "dataset": "ds", "split": "test", "n_items": len(ITEMS)},
            "systems": {"model": evaluate_system(ITEMS, model_preds, scorer),
                        "prior": evaluate_system(ITEMS, PRIOR, scorer, stats={"prior": 5})}}


def test_write_report_files(scorer, tmp_path):
    results = _results(scorer)
    written = write_report(results, tmp_path / "out")
    out = tmp_path / "out"
    for name in ("report.json", "report.md", "items.jsonl", "identity_bins.png", "calibration.png"):
        assert (out / name).is_file(), name
    for png in ("identity_bins.png", "calibration.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(written) == {"json", "markdown", "items", "identity_plot", "calibration_plot"}
    rep = load_report(out)
    assert list(rep["systems"]) == ["model", "prior"] and "items" not in rep["systems"]["model"]
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert len(rows) == 10 and {r["system"] for r in rows} == {"model", "prior"}
    md = (out / "report.md").read_text()
    for heading in ("## Model vs baselines", "## Per task", "## Per identity bin", "## By structure",
                    "## Closed-set scoring by likelihood", "![calibration](calibration.png)", "prior 5"):
        assert heading in md, heading
    table = format_main_table(results)
    first, _, model_row, prior_row = table.splitlines()
    assert "BLEU-2" in first and "AUROC" in first
    assert model_row.startswith("model") and "85.36" in model_row and "33.33" in model_row
    assert prior_row.startswith("prior")


def test_compare_reports(scorer, tmp_path):
    a = _results(scorer)
    better = [Prediction(p.id, "Yes." if p.id == "d" else p.text, p.p_yes) for p in MODEL]
    b = _results(scorer, better)
    write_report(a, tmp_path / "a")
    diff = compare_reports(tmp_path / "a", b, names=("old", "new"))
    # y/n accuracy of "model" goes 33.33 → 66.67 (item d now right): Δ +33.33; prior unchanged: +0 not shown as +
    line = next(x for x in diff.splitlines() if x.startswith("| model | y/n acc"))
    assert "| 33.33 | 66.67 | +33.33 |" in line
    prior_line = next(x for x in diff.splitlines() if x.startswith("| prior | y/n acc"))
    assert prior_line.endswith("| 0.00 |")
    with pytest.raises(InputError, match="no report here"):
        compare_reports(tmp_path / "a", tmp_path / "nothing")


def test_items_from_records_reads_protein_rows():
    recs = [{"id": "P1/go_cc/yesno/0", "protein_ids": ["P1"], "task": "go_cc", "kind": "yesno", "split": "test",
             "messages": [{"role": "user", "content": "<protein>\nIs it?"}, {"role": "assistant", "content": "No."}],
             "answer": "No."}]
    it = items_from_records(recs, {"P1": {"max_identity_to_train": 0.37, "has_structure": True}})[0]
    assert it.identity == pytest.approx(37.0) and it.has_structure and it.question == "<protein>\nIs it?"
    with pytest.raises(InputError, match="duplicate record id"):
        items_from_records(recs * 2, source="x.jsonl")
    with pytest.raises(InputError, match="lacks task"):
        items_from_records([{"id": "x", "kind": "open"}], source="x.jsonl")


def test_prediction_log_resumes(tmp_path):
    path = tmp_path / "preds" / "model.jsonl"
    fp = {"checkpoint": "ckpt", "max_new_tokens": 64}
    log = PredictionLog(path, fp)
    assert log.pending(ITEMS) == ITEMS
    log.append(MODEL[:2])
    # a crash in the middle of writing the next line
    with path.open("a") as f:
        f.write('{"id": "c", "te')
    again = PredictionLog(path, fp)
    assert again.done_ids() == {"a", "b"} and [it.id for it in again.pending(ITEMS)] == ["c", "d", "e"]
    assert again.load()["b"] == MODEL[1]                       # p_yes round-trips
    again.append(MODEL[2:])
    assert len(PredictionLog(path, fp)) == 5
    with pytest.raises(InputError, match="max_new_tokens differ"):
        PredictionLog(path, {"checkpoint": "ckpt", "max_new_tokens": 128})
