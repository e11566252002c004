"""Example answers of a trained model beside the true annotations, with and without the protein's structure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sepit._io import atomic_write

TASK_ORDER = ("function", "go_mf", "go_cc", "location", "family", "ec", "go_bp", "keywords")


def pick_examples(ds: Any, n: int, split: str = "test") -> list[Any]:
    """Open-ended test records of ``n`` distinct proteins, those with a structure first (the more informative tasks
    first)."""
    by_protein: dict[str, list[Any]] = {}
    for rec in ds.records(split=split, kinds=["open"]):
        if len(rec.protein_ids) == 1:
            by_protein.setdefault(rec.protein_ids[0], []).append(rec)
    rank = {t: i for i, t in enumerate(TASK_ORDER)}
    chosen = []
    for pid in sorted(by_protein, key=lambda p: (not ds.protein(p).has_structure, p))[:n]:
        recs = sorted(by_protein[pid], key=lambda r: (rank.get(r.task, len(rank)), r.id))
        chosen.append(recs[0])
    return chosen


def show_examples(model_dir: str | Path, data_dir: str | Path, n: int = 4, max_new_tokens: int = 48,
                  out: str | Path | None = None) -> dict[str, Any]:
    """Answer ``n`` held-out questions with and without structure (and, for a model with homolog context, without
    its homologs: searched in the dataset's training-split index, as the evaluation does); write a markdown table
    to ``out``."""
    import torch

    from sepit.data.dataset import InstructionDataset
    from sepit.data.instructions.record import add_context
    from sepit.eval.pipeline import dataset_retriever
    from sepit.model import load_model

    ds = InstructionDataset(data_dir)
    recs = pick_examples(ds, n)
    model = load_model(model_dir, device="cuda" if torch.cuda.is_available() else "cpu").eval()
    retriever = dataset_retriever(model, data_dir)
    prots = [ds.protein(r.protein_ids[0]) for r in recs]
    plain = [[m for m in r.messages if m["role"] != "assistant"] for r in recs]
    questions = [r.question for r in recs]
    homologs = (retriever.homologs(prots, [r.task for r in recs], questions) if retriever and recs
                else [[] for _ in recs])
    contexts = (retriever.contexts(prots, [r.task for r in recs], questions) if retriever and recs
                else ["" for _ in recs])
    convs = [add_context(c, x) for c, x in zip(plain, contexts)]
    options = (retriever.answer_options(prots, [r.task for r in recs], questions) if retriever and recs
               else [[] for _ in recs])
    runs = {"answer": (convs, [[p] for p in prots], options),
            "sequence only": (convs, [[p.without_structure()] for p in prots], options)}
    if any(options):  # what the model writes itself where it answers by choosing among its homologs' annotations
        runs["written answer"] = (convs, [[p] for p in prots], [[] for _ in recs])
    if retriever is not None:
        runs["no homologs"] = (plain, [[p] for p in prots], [[] for _ in recs])
    answers = {k: (model.answer(*run, max_new_tokens=max_new_tokens) if recs else []) for k, run in runs.items()}
    cols = list(runs)
    lines = ["| protein | task | question | true annotation | top homolog in the prompt | "
             + " | ".join(cols) + " |", "|---|---|---|---|---|" + "---|" * len(cols)]
    rows = []
    for i, r in enumerate(recs):
        top = homologs[i][0] if homologs[i] else None
        hom = f"{top.id} ({100 * top.identity:.0f}%): {top.annotation or '–'}" if top else "–"
        got = {k: answers[k][i].strip() for k in cols}
        rows.append({"protein": r.protein_ids[0], "task": r.task, "question": r.question, "truth": r.answer,
                     "top_homolog": hom, **got})
        cells = [r.protein_ids[0], r.task, r.question, r.answer, hom, *got.values()]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    if out is not None:
        with atomic_write(out) as f:
            f.write("\n".join(lines) + "\n")
    return {"examples": rows}
