"""The evaluation run end to end with the `tiny` model: predictions (resumable), baselines, report."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sepit.config import from_dict
from sepit.eval.config import EvalConfig
from sepit.eval.items import items_from_records
from sepit.eval.run import MODEL, MODEL_NO_STRUCTURE, NEAREST_HOMOLOG, PRIOR, TOPK_VOTE, evaluate, select_items
from sepit.tools.mmseqs import Hit

SEQS = {"P1": "MKTAYIAKQRQISFVKSHFSRQ", "P2": "MKVLAAGIVGLLLA", "T1": "MKTAYIAKQRQISFVKSHFSRE"}
rng = np.random.default_rng(0)
COORDS = {"P1": np.cumsum(rng.normal(size=(len(SEQS["P1"]), 3)) * 2.0, axis=0).astype(np.float32)}


def rec(pid, task, kind, q, a, split, i=0):
    return {"id": f"{pid}/{task}/{kind}/{i}", "protein_ids": [pid], "task": task, "kind": kind, "split": split,
            "messages": [{"role": "user", "content": f"<protein>\n{q}"}, {"role": "assistant", "content": a}],
            "answer": a}


TEST = [rec("P1", "go_cc", "open", "Where is it?", "Cellular components: nucleus.", "test"),
        rec("P1", "go_cc", "yesno", "Is it found in the nucleus?", "Yes.", "test", 1),
        rec("P2", "go_cc", "yesno", "Is it found in the membrane?", "No.", "test", 1)]
TRAIN = [rec("T1", "go_cc", "open", "Where is it?", "Cellular components: nucleus, cytoplasm.", "train"),
         rec("T1", "go_cc", "yesno", "Is it found in the nucleus?", "Yes.", "train", 1)]
PROTEIN_ROWS = {"P1": {"has_structure": True, "max_identity_to_train": 0.95}, "P2": {"has_structure": False}}


def lookup(pid):
    return {"sequence": SEQS[pid], "coords": COORDS.get(pid)}


@pytest.fixture(scope="module")
def tiny_model():
    from sepit.model import build_model, tiny

    return build_model(tiny()).eval()


def test_select_items():
    items = items_from_records(TEST)
    cfg = from_dict(EvalConfig, {"kinds": ["yesno"], "limit": 1})
    picked = [it.id for it in select_items(items, cfg)]
    assert len(picked) == 1 and picked == [it.id for it in select_items(items, cfg)]  # deterministic
    assert picked[0] in {"P1/go_cc/yesno/1", "P2/go_cc/yesno/1"}


def test_select_items_per_kind_keeps_yes_no_pairs_whole():
    recs = [rec(f"P{p}", t, "yesno", f"Is it {v}?", a, "test", i)
            for p in range(20) for t in ("go_cc", "go_mf") for i, (v, a) in enumerate([("x", "Yes."), ("y", "No.")])]
    recs += [rec(f"P{p}", "go_cc", "open", "Where is it?", "Nucleus.", "test") for p in range(20)]
    cfg = from_dict(EvalConfig, {"limits": {"yesno": 30, "open": 7}})
    got = select_items(items_from_records(recs), cfg)
    yn = [it for it in got if it.kind == "yesno"]
    assert len(yn) == 30 and sum(it.id.endswith("/0") for it in yn) == 15  # 15 whole (yes, no) pairs
    assert len([it for it in got if it.kind == "open"]) == 7
    assert len({it.protein_id for it in yn}) > 5  # spread over proteins, not the first ones
    with pytest.raises(Exception, match="limits"):
        from_dict(EvalConfig, {"limits": {"maybe": 3}})


def test_evaluate_end_to_end_and_resume(tiny_model, tmp_path):
    cfg = from_dict(EvalConfig, {"metrics": {"tokenizer": "regex", "bertscore_model": "", "meteor": False},
                                 "generation": {"max_new_tokens": 4, "batch_size": 2}})
    items = items_from_records(TEST, PROTEIN_ROWS)
    calls = []
    real_chat = tiny_model.chat

    def counting_chat(convs, prots, **kw):
        calls.append([len(p) for p in prots])
        # the ablation run must not see coordinates
        return real_chat(convs, prots, **kw)

    tiny_model.chat = counting_chat
    try:
        kwargs = dict(out_dir=tmp_path, model=tiny_model, proteins=lookup, train_records=TRAIN,
                      hits={"P1": [Hit("P1", "T1", 0.95)]}, meta={"checkpoint": "tiny", "dataset": "inline"})
        res = evaluate(cfg, items, **kwargs)
        assert list(res["systems"]) == [MODEL, MODEL_NO_STRUCTURE, PRIOR, NEAREST_HOMOLOG, TOPK_VOTE]
        # yes/no items are scored by likelihood alone: one decoding call per model run, for the open item
        assert calls == [[1], [1]]
        preds = [json.loads(x) for x in (tmp_path / "predictions" / "model.jsonl").read_text().splitlines()[1:]]
        assert len(preds) == 3
        assert all(0.0 <= p["p_yes"] <= 1.0 for p in preds if "yesno" in p["id"])
        model = res["systems"][MODEL]
        assert model["overall"]["closed_set"]["n"] == 2
        assert model["by_identity"]["≥90%"]["n"] == 2 and model["by_identity"]["no hit"]["n"] == 1
        homolog = res["systems"][NEAREST_HOMOLOG]
        assert homolog["stats"] == {"copied": 1, "copied_same_question": 1, "no_hit": 1}
        assert homolog["by_identity"]["≥90%"]["yesno_acc"] == 100.0
        for name in ("report.json", "report.md", "items.jsonl", "identity_bins.png", "calibration.png"):
            assert (tmp_path / name).is_file()
        # a rerun finds every prediction done and never calls the model
        calls.clear()
        again = evaluate(cfg, items, **kwargs)
        assert calls == []
        assert again["systems"][MODEL]["overall"] == model["overall"]
    finally:
        del tiny_model.chat


def test_structure_ablation_drops_coordinates(tiny_model, tmp_path):
    from sepit.eval.predictions import PredictionLog
    from sepit.eval.run import predict_with_model

    seen = []
    real = tiny_model.processor.__class__.__call__

    def spy(self, convs, prots, **kw):
        seen.extend(p.coords is not None for ps in prots for p in ps)
        return real(self, convs, prots, **kw)

    items = items_from_records(TEST[:1], PROTEIN_ROWS)
    try:
        tiny_model.processor.__class__.__call__ = spy
        predict_with_model(tiny_model, items, lookup, PredictionLog(tmp_path / "a.jsonl"), max_new_tokens=2)
        assert seen == [True]
        seen.clear()
        predict_with_model(tiny_model, items, lookup, PredictionLog(tmp_path / "b.jsonl"), max_new_tokens=2,
                           use_structure=False)
        assert seen == [False]
    finally:
        tiny_model.processor.__class__.__call__ = real


def test_non_finite_p_yes_stops_the_evaluation(tiny_model, tmp_path):
    """Corrupt weights (NaN logits) end the evaluation with a one-line error; nothing NaN reaches the log."""
    import torch

    from sepit.errors import SepitError
    from sepit.eval.predictions import PredictionLog
    from sepit.eval.run import predict_with_model

    items = items_from_records(TEST, PROTEIN_ROWS)
    tiny_model.yes_no_probability = lambda enc, store=None: torch.full((enc["input_ids"].shape[0],), float("nan"))
    try:
        plog = PredictionLog(tmp_path / "p.jsonl", {"run": "nan"})
        with pytest.raises(SepitError, match=r"non-finite P\(yes\) for item 'P\d/.*corrupt"):
            predict_with_model(tiny_model, items, lookup, plog, max_new_tokens=2, batch_size=4)
    finally:
        del tiny_model.yes_no_probability
    assert plog.load() == {}  # the failed batch (all three items) was not logged
