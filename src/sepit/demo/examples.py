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
    """Answer ``n`` held-out questions with and without structure; write a markdown table to ``out``."""
    import torch

    from sepit.data.dataset import InstructionDataset
    from sepit.model import load_model

    ds = InstructionDataset(data_dir)
    recs = pick_examples(ds, n)
    model = load_model(model_dir, device="cuda" if torch.cuda.is_available() else "cpu").eval()
    convs, with_s, without_s = [], [], []
    for r in recs:
        p = ds.protein(r.protein_ids[0])
        convs.append([m for m in r.messages if m["role"] != "assistant"])
        with_s.append([p])
        without_s.append([p.without_structure()])
    answers_s = model.chat(convs, with_s, max_new_tokens=max_new_tokens) if recs else []
    answers_n = model.chat(convs, without_s, max_new_tokens=max_new_tokens) if recs else []
    lines = ["| protein | task | question | true annotation | answer (with structure) | answer (sequence only) |",
             "|---|---|---|---|---|---|"]
    rows = []
    for r, a, b in zip(recs, answers_s, answers_n):
        rows.append({"protein": r.protein_ids[0], "task": r.task, "question": r.question, "truth": r.answer,
                     "with_structure": a.strip(), "sequence_only": b.strip()})
        cells = [r.protein_ids[0], r.task, r.question, r.answer, a.strip(), b.strip()]
        lines.append("| " + " | ".join(c.replace("|", "/").replace("\n", " ") for c in cells) + " |")
    if out is not None:
        with atomic_write(out) as f:
            f.write("\n".join(lines) + "\n")
    return {"examples": rows}
