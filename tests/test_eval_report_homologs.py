"""The report with the retrieval systems: six rows (model, its two ablations, three baselines) with intervals and
paired differences to both homolog baselines, and the breakdown by best hit at any coverage (partial homologs)."""

from __future__ import annotations

import io
import json

import pytest

from sepit.eval.baselines import NEAREST_HOMOLOG, PRIOR, TOPK_VOTE
from sepit.eval.bootstrap import add_intervals
from sepit.eval.breakdown import evaluate_system
from sepit.eval.items import EvalItem, Prediction
from sepit.eval.metrics import TextScorer
from sepit.eval.report import format_main_table, print_main_table, report_markdown, write_report
from sepit.eval.text import regex_tokenize

SYSTEMS = ("model", "model (no homologs)", "model (no structure)", PRIOR, NEAREST_HOMOLOG, TOPK_VOTE)

# 8 proteins, 2 yes/no + 1 open item each. Local identities: P0–P1 no hit, P2–P3 <30%, P4–P5 30–50%, P6–P7 ≥50%;
# the full-length identity is known only for P7 (a close homolog over ≥80% of it): P6 has only a partial one.
LOCAL = [None, None, 20.0, 25.0, 40.0, 45.0, 80.0, 95.0]
ITEMS = [EvalItem(f"P{p}/{j}", "go_cc", "yesno" if j < 2 else "open", "q",
                  ("Yes." if j == 0 else "No.") if j < 2 else "cellular components nucleus", f"P{p}",
                  identity=95.0 if p == 7 else None, local_identity=LOCAL[p])
         for p in range(8) for j in range(3)]


def _predictions(right_from: int, p_yes: bool) -> list[Prediction]:
    """Yes/no right on proteins ≥ ``right_from`` (else wrong); open answers exact on the same proteins."""
    out = []
    for it in ITEMS:
        good = int(it.protein_id[1:]) >= right_from
        if it.kind == "yesno":
            yes = (it.reference == "Yes.") == good
            out.append(Prediction(it.id, "yes" if yes else "no", (0.8 if yes else 0.2) if p_yes else None))
        else:
            out.append(Prediction(it.id, it.reference if good else "membrane"))
    return out


@pytest.fixture(scope="module")
def results():
    scorer = TextScorer(regex_tokenize)
    preds = {"model": _predictions(2, True), "model (no homologs)": _predictions(6, True),
             "model (no structure)": _predictions(3, True), PRIOR: _predictions(8, True),
             NEAREST_HOMOLOG: _predictions(6, False), TOPK_VOTE: _predictions(4, True)}
    systems = {name: evaluate_system(ITEMS, preds[name], scorer, stats={"x": 1} if name == TOPK_VOTE else None)
               for name in SYSTEMS}
    add_intervals(systems, n_boot=200)
    return {"meta": {"checkpoint": "ckpt", "n_items": len(ITEMS)}, "systems": systems}


def test_local_identity_breakdown(results):
    loc = results["systems"]["model"]["by_local_identity"]
    assert list(loc) == ["<30%", "30–50%", "≥50%", "no hit"]
    assert [(a["n_proteins"], a["n"]) for a in loc.values()] == [(2, 6)] * 4
    # the model is right from P2 on: every bin but "no hit"; the top-k vote from P4 on
    assert [a["yesno_acc"] for a in loc.values()] == [100.0, 100.0, 100.0, 0.0]
    assert results["systems"][TOPK_VOTE]["by_local_identity"]["<30%"]["yesno_acc"] == 0.0
    # the ≥80%-coverage identity bins see only P7: the partial homolog P6 falls in "no hit" there
    assert {b: a["n_proteins"] for b, a in results["systems"]["model"]["by_identity"].items()} == \
        {"≥90%": 1, "no hit": 7}
    assert results["systems"]["model"]["overall"]["n_proteins"] == 8
    row = next(r for r in results["systems"]["model"]["items"] if r["id"] == "P6/0")
    assert row["local_identity"] == 80.0 and row["local_identity_bin"] == "≥50%"
    unknown = evaluate_system([EvalItem("a", "t", "yesno", "q", "Yes.", "P")], [Prediction("a", "yes")], None)
    assert unknown["by_local_identity"] == {}  # no search: no breakdown, not one big "no hit" bin
    assert unknown["items"][0]["local_identity_bin"] is None


def _section(md: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of any level."""
    rest = md.split(heading, 1)[1].split("\n", 1)[1]
    return rest.split("\n#", 1)[0]


def test_report_has_six_rows_intervals_and_both_differences(results, tmp_path):
    md = report_markdown(results)
    main = _section(md, "## Model vs baselines")
    assert [line.split(" | ")[0].lstrip("| ") for line in main.strip().splitlines()[2:]] == list(SYSTEMS)
    intervals = _section(md, "## 95% intervals")
    for name in SYSTEMS:
        assert f"| {name} | " in intervals
    assert "| model | 75.00 [" in intervals  # BLEU-2: exact answers on 6 of 8 proteins, nothing right on 2
    vs_vote = _section(md, "### Paired difference to top-k vote")
    assert "Δ y/n acc vs top-k vote" in vs_vote and f"| {TOPK_VOTE} |" not in vs_vote
    # the model is right on P2–P3 where the vote is wrong: +2 of 8 proteins = +25 points of y/n accuracy
    assert "| model | " in vs_vote and "+25.00 [" in vs_vote
    vs_nearest = _section(md, "### Paired difference to nearest homolog")
    assert f"| {TOPK_VOTE} |" in vs_nearest and f"| {NEAREST_HOMOLOG} |" not in vs_nearest
    local = _section(md, "## By best hit to the training set at any coverage")
    assert "| best hit | proteins | items | % of items | model: BLEU-2 | model: y/n acc |" in local
    assert "| ≥50% | 2 | 6 | 25.00 |" in local
    assert "| no hit | 2 | 6 | 25.00 | 0.00 |" in local  # model BLEU-2 on P0–P1: wrong answers
    assert "- **top-k vote**: x 1" in md
    write_report(results, tmp_path)
    rep = json.loads((tmp_path / "report.json").read_text())
    model = rep["systems"]["model"]
    assert set(model["vs_baselines"]) == {NEAREST_HOMOLOG, TOPK_VOTE}
    assert model["vs_baseline"]["baseline"] == NEAREST_HOMOLOG  # the older key, unchanged
    assert model["vs_baselines"][TOPK_VOTE]["yesno_acc"]["diff"] == pytest.approx(25.0)
    assert model["by_local_identity"]["≥50%"]["n_proteins"] == 2


def test_main_table_prints_every_system(results):
    table = format_main_table(results)
    lines = table.splitlines()
    assert len(lines) == 2 + len(SYSTEMS)
    assert [line[:len(name)] for line, name in zip(lines[2:], SYSTEMS)] == list(SYSTEMS)
    assert len({len(line.rstrip()) for line in lines[:2]}) == 1  # header and rule aligned
    buf = io.StringIO()
    print_main_table(results, file=buf)
    assert buf.getvalue() == table + "\n"


def test_older_reports_with_one_baseline_still_render():
    """A report.json written before ``vs_baselines`` (only ``vs_baseline``) still gets its difference table."""
    old = {"systems": {"model": {"overall": {"yesno_acc": 70.0}, "intervals": {"yesno_acc": [60.0, 80.0]},
                                 "vs_baseline": {"baseline": "nearest homolog",
                                                 "yesno_acc": {"diff": 5.0, "ci": [1.0, 9.0]}}},
                       "nearest homolog": {"overall": {"yesno_acc": 65.0}, "intervals": {"yesno_acc": [55.0, 75.0]}}}}
    md = report_markdown(old)
    assert "| model | 70.00 [60.00, 80.00] |" in md
    assert "| model | +5.00 [+1.00, +9.00] |" in md and "Δ y/n acc vs nearest homolog" in md
