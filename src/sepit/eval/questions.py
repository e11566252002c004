"""Bring-your-own questions: score a model on any JSONL of questions about proteins, into the usual report.

Each line is one question::

    {"sequence": "MKT...", "question": "Is this protein an enzyme?", "answer": "yes"}
    {"structure": "1crn.cif.gz", "chain": "A", "question": "Where is it found?", "answer": "...",
     "options": ["Secreted", "Nucleus", "Membrane"], "id": "q7", "task": "location"}

``structure`` paths are relative to the JSONL file. The kind follows from the line: with ``options`` it is multiple
choice (scored by the length-normalised likelihood of each option, :meth:`ProteinQA.choose`; ``answer`` must be one
of them), with the answer ``yes`` or ``no`` a yes/no question (scored by P(yes) alone, one forward pass, no
generation), anything else an open question (greedy generation, scored by BLEU/ROUGE/METEOR/BERTScore).

    items, proteins = read_questions("my_benchmark.jsonl")
    results = score_questions(qa, items, proteins, cfg, out_dir="runs/my_benchmark")
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepit.errors import InputError
from sepit.eval.config import EvalConfig
from sepit.eval.items import EvalItem, Prediction
from sepit.log import get_logger, progress
from sepit.proteins import Protein, protein_from, protein_from_sequence

log = get_logger(__name__)
KNOWN_KEYS = {"id", "sequence", "structure", "chain", "question", "answer", "options", "task"}


@dataclass(frozen=True)
class Question:
    """One line of a questions file: the item it is scored as, and its options (multiple choice only)."""

    item: EvalItem
    options: tuple[str, ...] = ()


def _protein(row: Mapping[str, Any], base: Path, where: str) -> Protein:
    if ("sequence" in row) == ("structure" in row):
        raise InputError(where, "give exactly one of 'sequence' and 'structure'")
    if "sequence" in row:
        return protein_from_sequence(str(row["sequence"]))
    path = Path(str(row["structure"]))
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise InputError(where, f"structure file {path} not found")
    return protein_from(path, row.get("chain"))


def read_questions(path: str | Path) -> tuple[list[Question], dict[str, Protein]]:
    """The questions of a JSONL file and their proteins (id → Protein; a protein's id is the hash of its sequence and
    coordinates, so questions about the same protein resample together in the intervals). One-line InputErrors
    name the file and line."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(p, "questions file not found") from None
    except (UnicodeDecodeError, IsADirectoryError):
        raise InputError(p, "not a UTF-8 JSONL text file") from None
    questions: list[Question] = []
    proteins: dict[str, Protein] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{p}: line {n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(where, f"not JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise InputError(where, "each line must be a JSON object")
        unknown = sorted(set(row) - KNOWN_KEYS)
        if unknown:
            raise InputError(where, f"unknown key(s) {unknown} (known: {', '.join(sorted(KNOWN_KEYS))})")
        question, answer = str(row.get("question", "")).strip(), str(row.get("answer", "")).strip()
        if not question or not answer:
            raise InputError(where, "'question' and 'answer' are required and must not be empty")
        options = row.get("options") or []
        if not isinstance(options, list) or any(not str(o).strip() for o in options):
            raise InputError(where, "'options' must be a list of non-empty strings")
        options = [str(o).strip() for o in options]
        if options and (len(options) < 2 or answer not in options):
            raise InputError(where, "a multiple-choice question needs at least two options, the answer among them")
        try:
            protein = _protein(row, p.parent, where)
        except InputError as e:
            raise InputError(where, e.problem) from None
        pid = _protein_key(protein)
        proteins.setdefault(pid, protein)
        kind = "choice" if options else "yesno" if answer.lower() in ("yes", "no") else "open"
        item = EvalItem(id=str(row.get("id") or f"line{n}"), task=str(row.get("task") or "questions"), kind=kind,
                        question=question, reference=answer.lower() if kind == "yesno" else answer,
                        protein_id=pid, has_structure=protein.has_structure, protein_ids=(pid,))
        questions.append(Question(item, tuple(options)))
    ids = [q.item.id for q in questions]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise InputError(p, f"duplicate question id {dup!r}")
    if not questions:
        raise InputError(p, "no questions in the file")
    return questions, proteins


def _protein_key(p: Protein) -> str:
    h = hashlib.sha256(p.sequence.encode())
    if p.coords is not None:
        h.update(p.coords.tobytes())
    return "protein-" + h.hexdigest()[:12]


def answer_questions(qa: Any, questions: Sequence[Question], proteins: Mapping[str, Protein], *,
                     max_new_tokens: int = 128, batch_size: int = 8) -> list[Prediction]:
    """The model's prediction for every question (``qa`` a :class:`sepit.api.ProteinQA`)."""
    preds: dict[str, Prediction] = {}
    bar = progress(total=len(questions), desc="questions", unit="question")
    try:
        by_kind = {k: [q for q in questions if q.item.kind == k] for k in ("yesno", "choice", "open")}
        for s in range(0, len(by_kind["yesno"]), batch_size):
            chunk = by_kind["yesno"][s:s + batch_size]
            probs = qa.yes_no_many([proteins[q.item.protein_id] for q in chunk], [q.item.question for q in chunk])
            for q, py in zip(chunk, probs):
                preds[q.item.id] = Prediction(q.item.id, "yes" if py >= 0.5 else "no", py)
            bar.update(len(chunk))
        for q in by_kind["choice"]:
            scores = qa.choose(proteins[q.item.protein_id], q.item.question, q.options)
            preds[q.item.id] = Prediction(q.item.id, q.options[max(range(len(scores)), key=scores.__getitem__)])
            bar.update(1)
        for s in range(0, len(by_kind["open"]), batch_size):
            chunk = by_kind["open"][s:s + batch_size]
            texts = qa.ask_many([proteins[q.item.protein_id] for q in chunk], [q.item.question for q in chunk],
                                max_new_tokens=max_new_tokens)
            for q, t in zip(chunk, texts):
                preds[q.item.id] = Prediction(q.item.id, t.strip())
            bar.update(len(chunk))
    finally:
        bar.close()
    return [preds[q.item.id] for q in questions]


def score_questions(qa: Any, questions: Sequence[Question], proteins: Mapping[str, Protein], cfg: EvalConfig, *,
                    out_dir: str | Path, meta: Mapping[str, Any] | None = None, scorer: Any = None
                    ) -> dict[str, Any]:
    """Answer every question, score the answers and write the report (report.json/.md, items.jsonl) into
    ``out_dir``; returns the results. ``scorer`` defaults to the config's text metrics (needed for open questions
    only)."""
    from sepit.eval.report import write_report
    from sepit.eval.run import build_results

    items = [q.item for q in questions]
    if scorer is None and any(it.kind == "open" for it in items):
        from sepit.eval.run import make_text_scorer

        scorer = make_text_scorer(cfg.metrics)
    preds = answer_questions(qa, questions, proteins, max_new_tokens=cfg.generation.max_new_tokens,
                             batch_size=cfg.generation.batch_size)
    kinds = {k: sum(it.kind == k for it in items) for k in ("yesno", "choice", "open")}
    log.info("scored %d questions (%d yes/no, %d multiple choice, %d open)", len(items), kinds["yesno"],
             kinds["choice"], kinds["open"])
    results = build_results(items, {"model": preds}, scorer, cfg=cfg, meta=dict(meta or {}))
    write_report(results, out_dir)
    return results
