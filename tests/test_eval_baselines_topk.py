"""The top-k vote baseline (identity × coverage weights, ties, self-hits, fallbacks) and the best hit at any coverage
(``EvalItem.local_identity``), on hand-made records and hits whose answers are worked out by hand."""

from __future__ import annotations

import pytest

from sepit.eval.baselines import (
    NEAREST_HOMOLOG,
    PRIOR,
    TOPK_VOTE,
    claim_extractor,
    hit_weight,
    nearest_homolog_predictions,
    top_k_hits,
    topk_vote_predictions,
)
from sepit.eval.items import EvalItem, items_from_records, with_local_identity
from sepit.tools.mmseqs import Hit

CLAIMS = claim_extractor({"go_cc": ["Is this protein found in the {value}?"]})


def rec(pid, task, kind, question, answer, split="train", i=0):
    return {"id": f"{pid}/{task}/{kind}/{i}", "protein_ids": [pid], "task": task, "kind": kind, "split": split,
            "messages": [{"role": "user", "content": f"<protein>\n{question}"},
                         {"role": "assistant", "content": answer}], "answer": answer}


NUCLEUS = "Is this protein found in the nucleus?"
TRAIN = [
    rec("A", "go_cc", "yesno", NUCLEUS, "Yes."),                                  # votes yes (own record)
    rec("B", "go_cc", "open", "Where is it?", "Cellular components: cytoplasm."),  # votes no (not in its answer)
    rec("C", "go_cc", "yesno", NUCLEUS, "No, it is not."),                        # votes no (own record)
    rec("C", "go_cc", "open", "Where is it?", "Cellular components: membrane.", i=1),
    rec("D", "go_cc", "yesno", NUCLEUS, "Yes."),                                  # rank 4: beyond k = 3
    rec("D", "go_cc", "open", "Where is it?", "Cellular components: nucleus.", i=1),
    rec("Q1", "go_cc", "yesno", NUCLEUS, "Yes."),                                 # the query itself: never used
    rec("Q1", "go_cc", "open", "Where is it?", "Cellular components: nucleolus.", i=1),
    rec("E", "go_cc", "yesno", "Is this protein found in the mitochondrion?", "No."),  # prior: 3 yes of 5
]
TEST = [
    rec("Q1", "go_cc", "yesno", NUCLEUS, "No.", "test"),
    rec("Q1", "go_cc", "open", "Where is it?", "Cellular components: cytoplasm.", "test", 1),
    rec("Q2", "go_cc", "yesno", NUCLEUS, "Yes.", "test"),                         # no hit at all
    rec("Q3", "go_cc", "yesno", NUCLEUS, "Yes.", "test"),                         # hits without usable answers
    rec("Q3", "go_cc", "open", "Where is it?", "Cellular components: nucleus.", "test", 1),
]
HITS = {
    "Q1": [Hit("Q1", "Q1", 1.0, qcov=1.0),
           Hit("Q1", "A", 0.9, qcov=0.5),     # w = 0.45, yes
           Hit("Q1", "A", 0.9, qcov=0.5),     # a repeated target counts once (and takes no slot)
           Hit("Q1", "B", 0.5, qcov=1.0),     # w = 0.50, no
           Hit("Q1", "C", 0.3),               # w = 0.30 (coverage unknown → 1), no
           Hit("Q1", "D", 0.99, qcov=1.0)],   # 4th distinct hit: outside the top 3
    "Q3": [Hit("Q3", "Z", 0.7, qcov=0.9)],    # Z has no training records
}


def _by_id(preds):
    return {p.id: p for p in preds}


def test_names_and_weights():
    assert (PRIOR, NEAREST_HOMOLOG, TOPK_VOTE) == ("prior", "nearest homolog", "top-k vote")
    from sepit.eval import run

    assert (run.PRIOR, run.NEAREST_HOMOLOG) == (PRIOR, NEAREST_HOMOLOG)  # one name per system
    assert hit_weight(Hit("q", "t", 0.8, qcov=0.5)) == pytest.approx(0.4)
    assert hit_weight(Hit("q", "t", 0.8)) == pytest.approx(0.8)
    assert [h.target for h in top_k_hits(HITS, "Q1", 3)] == ["A", "B", "C"]
    assert [h.target for h in top_k_hits(HITS, "Q1", 1)] == ["A"]
    assert top_k_hits(HITS, "Q2", 3) == []


def test_weighted_vote_differs_from_the_nearest_homolog():
    items = items_from_records(TEST)
    preds, stats = topk_vote_predictions(items, TRAIN, HITS, k=3, claim_of=CLAIMS)
    by = _by_id(preds)
    # yes 0.45 (A) vs no 0.50 (B) + 0.30 (C): p_yes = 0.45 / 1.25 = 0.36 → "no" (the self-hit and D would say yes)
    assert by["Q1/go_cc/yesno/0"].p_yes == pytest.approx(0.36) and by["Q1/go_cc/yesno/0"].text == "no"
    # open: B (0.50) beats C (0.30); A has no open answer; D (0.99) and Q1 itself are not among the top 3
    assert by["Q1/go_cc/open/1"].text == "Cellular components: cytoplasm." and by["Q1/go_cc/open/1"].p_yes is None
    # Q2 no hit, Q3 no usable answer → the prior: yes/no p_yes = training share of yes (3 of 5), open the majority
    assert by["Q2/go_cc/yesno/0"].text == "yes" and by["Q2/go_cc/yesno/0"].p_yes == pytest.approx(0.6)
    assert by["Q3/go_cc/yesno/0"].p_yes == pytest.approx(0.6)
    assert by["Q3/go_cc/open/1"].text == "Cellular components: cytoplasm."  # alphabetical first of a 1-1-1-1 tie
    assert stats.to_dict() == {"copied": 1, "no_answer": 2, "no_hit": 1, "voted_split": 1}
    nearest, _ = nearest_homolog_predictions(items, TRAIN, HITS, claim_of=CLAIMS)
    assert _by_id(nearest)["Q1/go_cc/yesno/0"].text == "yes"  # the nearest homolog alone (A) says yes
    # k = 1: only A votes → unanimous yes with p_yes 1
    one, stats1 = topk_vote_predictions(items, TRAIN, HITS, k=1, claim_of=CLAIMS)
    assert _by_id(one)["Q1/go_cc/yesno/0"].p_yes == 1.0 and _by_id(one)["Q1/go_cc/yesno/0"].text == "yes"
    assert stats1.counts["voted_unanimous"] == 1
    assert _by_id(one)["Q1/go_cc/open/1"].text == "Cellular components: cytoplasm."  # A has none: fallback prior
    assert stats1.counts["no_answer"] == 3


def test_tie_says_yes_and_open_tie_keeps_the_better_ranked_hit():
    items = items_from_records(TEST[:2])
    hits = {"Q1": [Hit("Q1", "A", 0.6, qcov=0.5), Hit("Q1", "C", 0.3, qcov=1.0)]}  # 0.30 yes vs 0.30 no
    preds, stats = topk_vote_predictions(items, TRAIN, hits, claim_of=CLAIMS)
    by = _by_id(preds)
    assert by["Q1/go_cc/yesno/0"].p_yes == pytest.approx(0.5) and by["Q1/go_cc/yesno/0"].text == "yes"
    hits = {"Q1": [Hit("Q1", "C", 0.4, qcov=1.0), Hit("Q1", "B", 0.8, qcov=0.5)]}  # equal weights 0.4: C first
    by = _by_id(topk_vote_predictions(items, TRAIN, hits, claim_of=CLAIMS)[0])
    assert by["Q1/go_cc/open/1"].text == "Cellular components: membrane."


def test_self_hit_only_falls_back_and_empty_fallback():
    items = items_from_records(TEST[:2])
    hits = {"Q1": [Hit("Q1", "Q1", 1.0, qcov=1.0)]}
    preds, stats = topk_vote_predictions(items, TRAIN, hits, claim_of=CLAIMS)
    assert _by_id(preds)["Q1/go_cc/yesno/0"].p_yes == pytest.approx(0.6)  # prior, not the query's own "Yes."
    assert stats.to_dict() == {"no_hit": 2}  # a self-hit is no hit
    preds, _ = topk_vote_predictions(items, TRAIN, hits, claim_of=CLAIMS, fallback="empty")
    assert [(p.text, p.p_yes) for p in preds] == [("", None), ("", None)]
    with pytest.raises(ValueError, match="k must be"):
        topk_vote_predictions(items, TRAIN, hits, k=0)


def test_without_claims_only_identical_questions_vote():
    items = items_from_records(TEST[:1])
    preds, stats = topk_vote_predictions(items, TRAIN, HITS, k=3)  # B cannot be read without a claim extractor
    # yes 0.45 (A) vs no 0.30 (C): p_yes = 0.6
    assert preds[0].p_yes == pytest.approx(0.45 / 0.75) and preds[0].text == "yes"


def test_with_local_identity():
    items = [EvalItem("a", "go_cc", "open", "q", "r", "P1", identity=None),
             EvalItem("b", "go_cc", "yesno", "q", "Yes.", "P1", identity=None),
             EvalItem("c", "go_cc", "yesno", "q", "Yes.", "P2", identity=35.0)]
    hits = {"P1": [Hit("P1", "P1", 1.0), Hit("P1", "T1", 0.42, qcov=0.9), Hit("P1", "T2", 0.81, qcov=0.2)]}
    out = with_local_identity(items, hits)
    # the best hit at any coverage: T2 at 81% over 20% of P1 (the self-hit does not count); P2 has no hit
    assert [it.local_identity for it in out] == [pytest.approx(81.0), pytest.approx(81.0), None]
    assert [it.identity for it in out] == [None, None, 35.0] and items[0].local_identity is None
    assert with_local_identity(iter(items), {}) == items
