"""Baselines over plain data: the prior (majority) answer per task, copying the nearest homolog's answer, and a
vote of the top-k homologs a retrieval-augmented model sees.

All return :class:`~sepit.eval.items.Prediction` lists scored by the same code as a model.

**Prior**: per (task, kind) the most frequent training answer (ties → alphabetically first); for yes/no the
training fraction of "yes" is also given as ``p_yes`` and the text answer is ``yes`` iff that fraction ≥ 0.5.

**Nearest homolog** (the baseline the paper lacked; Wu et al. EMNLP 2025 found it beats protein LLMs): for a test
protein, walk its ranked training hits (MMseqs2) and take the first hit protein with a training record of the same
task and kind.

- open / caption: copy that protein's answer (the one to the same question text when there is one).
- yes/no: the question asks about one candidate ``{value}``. If a claim extractor is given (built from the
  instruction templates by :func:`claim_extractor`), the hit's own yes/no record about the same value is copied
  when it exists; otherwise its open answer for that task is read as the homolog context reads a hit
  (:func:`sepit.retrieval.context.claim_holds`: for length and mass its number against the value, else whether the
  value appears in it as a whole phrase — for composition, among the residues it lists). Without an extractor only
  an identical question of the hit is copied.
- Items whose protein has no hit are counted (``no_hit``) and, like items where no hit has a usable answer
  (``no_answer``), get the prior answer (or an empty answer with ``fallback="empty"``).
- yes/no answers carry ``p_yes``: 1 or 0 for a copied answer, the task's prior for a fallback, so the baseline has
  an AUROC (for hard answers, its balanced accuracy) and a paired AUROC difference to a model.

**Top-k vote** (:data:`TOPK_VOTE`): the retrieval baseline for a model that sees its protein's top-k training
hits in the prompt: the same ``k`` hits (:func:`top_k_hits`: ranked as given, the query itself never counts, each
training protein once), answered without a model.

- yes/no: every one of the k hits with a usable answer (read as for the nearest homolog: its own yes/no record
  about the same claim, else its open answer read by ``claim_holds``) votes with weight identity × query
  coverage (coverage taken as 1 when unknown); ``p_yes = Σ w·[yes] / Σ w`` and the answer is "yes" iff
  ``p_yes ≥ 0.5`` (a tie says yes). Routes: ``voted_unanimous`` / ``voted_split``.
- open / caption: the answer of the hit with the highest identity × coverage among the k that has an answer of the
  task and kind (the earlier-ranked hit on a tie); route ``copied``.
- No hit (``no_hit``) or no usable answer among the k (``no_answer``; also yes/no votes of total weight 0): the
  prior — for yes/no also the task's training ``p_yes``, as :func:`prior_predictions` gives — or an empty answer
  with ``fallback="empty"``.
"""

from __future__ import annotations

import csv
import re
import string
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sepit.errors import InputError
from sepit.eval.items import (
    EvalItem,
    Prediction,
    normalize_question,
    percent,
    question_text,
    record_dict,
    reference_answer,
)
from sepit.eval.text import last_yes_no
from sepit.retrieval.context import claim_holds
from sepit.tools.mmseqs import Hit

ClaimOf = Callable[[str, str], "str | None"]  # (task, question text) → the candidate value, or None

# System names of the baselines in reports.
PRIOR = "prior"
NEAREST_HOMOLOG = "nearest homolog"
TOPK_VOTE = "top-k vote"


@dataclass
class BaselineStats:
    """How a baseline answered: counts per route (``copied``, ``inferred``, ``no_hit``, ``no_answer``, ...)."""

    counts: Counter = field(default_factory=Counter)

    def to_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


# ---------------------------------------------------------------------------------------------------- prior


def _yesno_label(answer: str) -> str | None:
    return last_yes_no(answer) or None


def prior_yes_probability(train_records: Iterable[Any]) -> dict[str, float]:
    """Per task, the fraction of training yes/no records whose answer is "yes"."""
    yes, tot = Counter(), Counter()
    for r in map(record_dict, train_records):
        if r.get("kind") == "yesno":
            lab = _yesno_label(reference_answer(r))
            if lab is not None:
                tot[r["task"]] += 1
                yes[r["task"]] += lab == "yes"
    return {t: yes[t] / tot[t] for t in sorted(tot)}


def majority_answers(train_records: Iterable[Any]) -> dict[tuple[str, str], str]:
    """Per (task, kind) the most frequent training answer (ties → alphabetically first).

    For yes/no: ``yes`` iff at least half of the task's training answers are yes (consistent with the prior's
    ``p_yes >= 0.5``).
    """
    records = [record_dict(r) for r in train_records]
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in records:
        if r.get("kind") != "yesno":
            counts[(r["task"], r["kind"])][reference_answer(r).strip()] += 1
    out = {key: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for key, c in counts.items()}
    for task, p in prior_yes_probability(records).items():
        out[(task, "yesno")] = "yes" if p >= 0.5 else "no"
    return dict(sorted(out.items()))


def prior_predictions(items: Sequence[EvalItem], train_records: Iterable[Any]
                      ) -> tuple[list[Prediction], BaselineStats]:
    """The prior baseline: every item gets its (task, kind)'s majority training answer (yes/no also ``p_yes``)."""
    records = [record_dict(r) for r in train_records]
    majority, p_yes = majority_answers(records), prior_yes_probability(records)
    stats = BaselineStats()
    preds = []
    for it in items:
        text = majority.get((it.task, it.kind))
        stats.counts["prior" if text is not None else "task_not_in_training"] += 1
        preds.append(Prediction(it.id, text or "", p_yes.get(it.task) if it.kind == "yesno" else None))
    return preds, stats


# ------------------------------------------------------------------------------------------ nearest homolog


def claim_extractor(yesno_templates: Mapping[str, Sequence[str]]) -> ClaimOf:
    """Build ``claim_of(task, question)`` from each task's yes/no templates (strings with one ``{value}``).

    ``{tt.yesno for tt in load_templates().tasks.values()}`` is the usual input. Matching ignores ``<protein>``
    markers, case and runs of whitespace; the first template that matches gives the value.
    """
    compiled: dict[str, list[re.Pattern[str]]] = {}
    for task, templates in yesno_templates.items():
        pats = []
        for tpl in templates:
            parts = []
            for literal, fld, _, _ in string.Formatter().parse(normalize_question(tpl)):
                parts.append(re.escape(literal))
                if fld == "value":
                    parts.append("(?P<value>.+?)")
            pats.append(re.compile("^" + "".join(parts) + "$", re.DOTALL))
        compiled[task] = pats

    def claim_of(task: str, question: str) -> str | None:
        q = normalize_question(question)
        for pat in compiled.get(task, ()):
            m = pat.match(q)
            if m:
                return m.group("value").strip()
        return None

    return claim_of


class _TrainIndex:
    """Training records grouped by (protein, task, kind) for fast look-up."""

    def __init__(self, train_records: Iterable[Any]) -> None:
        self.by_key: dict[tuple[str, str, str], list[Mapping[str, Any]]] = defaultdict(list)
        for r in map(record_dict, train_records):
            for pid in (r.get("protein_ids") or [])[:1]:
                self.by_key[(str(pid), r["task"], r["kind"])].append(r)
        for recs in self.by_key.values():
            recs.sort(key=lambda r: str(r.get("id", "")))

    def get(self, protein: str, task: str, kind: str) -> list[Mapping[str, Any]]:
        return self.by_key.get((protein, task, kind), [])


def _answer_from_hit(it: EvalItem, hit: str, index: _TrainIndex, claim_of: ClaimOf | None) -> tuple[str, str] | None:
    """(answer, route) from one training protein, or None when it has nothing usable for this item."""
    q = normalize_question(it.question)
    if it.kind != "yesno":
        recs = index.get(hit, it.task, it.kind)
        if not recs:
            return None
        same = [r for r in recs if normalize_question(question_text(r)) == q]
        return reference_answer((same or recs)[0]), "copied"
    recs = index.get(hit, it.task, "yesno")
    claim = claim_of(it.task, it.question) if claim_of else None
    for r in recs:
        if claim is not None:
            if claim_of(it.task, question_text(r)) == claim:
                return _yesno_label(reference_answer(r)) or "", "copied_same_claim"
        elif normalize_question(question_text(r)) == q:
            return _yesno_label(reference_answer(r)) or "", "copied_same_question"
    if claim is not None:
        opens = index.get(hit, it.task, "open")
        if opens:
            read = [claim_holds(it.task, reference_answer(r), claim) for r in opens]
            if any(v is not None for v in read):
                return ("yes" if any(read) else "no"), "inferred_from_open_answer"
    return None


def nearest_homolog_predictions(items: Sequence[EvalItem], train_records: Iterable[Any],
                                hits: Mapping[str, Sequence[Hit]], *, claim_of: ClaimOf | None = None,
                                fallback: Literal["prior", "empty"] = "prior"
                                ) -> tuple[list[Prediction], BaselineStats]:
    """The nearest-homolog baseline (see the module docstring); ``hits`` maps test protein id → ranked hits."""
    records = [record_dict(r) for r in train_records]
    index = _TrainIndex(records)
    majority = majority_answers(records) if fallback == "prior" else {}
    prior_yes = prior_yes_probability(records) if fallback == "prior" else {}
    stats = BaselineStats()
    preds = []
    for it in items:
        ranked = [h for h in hits.get(it.protein_id, ()) if h.target != it.protein_id]
        got = None
        for h in ranked:
            got = _answer_from_hit(it, h.target, index, claim_of)
            if got is not None:
                break
        p_yes = None
        if got is None:
            stats.counts["no_hit" if not ranked else "no_answer"] += 1
            text = majority.get((it.task, it.kind), "")
            if it.kind == "yesno":
                p_yes = prior_yes.get(it.task)
        else:
            text, route = got
            stats.counts[route] += 1
            if it.kind == "yesno" and text in ("yes", "no"):
                p_yes = 1.0 if text == "yes" else 0.0  # a hard answer: its AUROC is its balanced accuracy
        preds.append(Prediction(it.id, text, p_yes))
    return preds, stats


# ------------------------------------------------------------------------------------------------ top-k vote


def top_k_hits(hits: Mapping[str, Sequence[Hit]], protein_id: str, k: int) -> list[Hit]:
    """The first ``k`` hits of ``protein_id`` in rank order, skipping hits to itself and repeated targets (a
    training protein counts once, at its best rank)."""
    out: list[Hit] = []
    seen = {protein_id}
    for h in hits.get(protein_id, ()):
        if len(out) >= k:
            break
        if h.target not in seen:
            seen.add(h.target)
            out.append(h)
    return out


def hit_weight(hit: Hit) -> float:
    """A hit's vote weight: identity × query coverage (fractions; coverage 1 when unknown)."""
    return hit.identity * (1.0 if hit.qcov is None else hit.qcov)


def topk_vote_predictions(items: Sequence[EvalItem], train_records: Iterable[Any],
                          hits: Mapping[str, Sequence[Hit]], *, k: int = 3, claim_of: ClaimOf | None = None,
                          fallback: Literal["prior", "empty"] = "prior") -> tuple[list[Prediction], BaselineStats]:
    """The top-k vote baseline (see the module docstring); ``hits`` maps test protein id → ranked hits, already
    filtered by the retrieval cut-offs. Yes/no predictions carry ``p_yes`` (the weighted vote, or the prior's)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    records = [record_dict(r) for r in train_records]
    index = _TrainIndex(records)
    majority = majority_answers(records) if fallback == "prior" else {}
    prior_p = prior_yes_probability(records) if fallback == "prior" else {}
    stats = BaselineStats()
    preds = []
    for it in items:
        ranked = top_k_hits(hits, it.protein_id, k)
        answers = [(h, got[0]) for h in ranked
                   if (got := _answer_from_hit(it, h.target, index, claim_of)) is not None and got[0]]
        if it.kind == "yesno":
            votes = [(hit_weight(h), ans == "yes") for h, ans in answers if ans in ("yes", "no")]
            total = sum(w for w, _ in votes)
            if total > 0:
                p = sum(w for w, yes in votes if yes) / total
                stats.counts["voted_unanimous" if len({yes for _, yes in votes}) == 1 else "voted_split"] += 1
                preds.append(Prediction(it.id, "yes" if p >= 0.5 else "no", p))
                continue
        elif answers:
            best = max(answers, key=lambda ha: hit_weight(ha[0]))  # max keeps the first (best-ranked) on a tie
            stats.counts["copied"] += 1
            preds.append(Prediction(it.id, best[1]))
            continue
        stats.counts["no_hit" if not ranked else "no_answer"] += 1
        preds.append(Prediction(it.id, majority.get((it.task, it.kind), ""),
                                prior_p.get(it.task) if it.kind == "yesno" else None))
    return preds, stats


# ------------------------------------------------------------------------------------------------ search hits


def read_m8(path: str | Path, identity: Literal["auto", "fraction", "percent"] = "auto") -> dict[str, list[Hit]]:
    """Read BLAST-tab hits (MMseqs2 ``convertalis`` default / ``easy-search`` output, BLAST ``-outfmt 6``).

    Columns used: 1 query, 2 target, 3 identity, 4 alignment length, 11 e-value, 12 bit score (when present).
    Column 3 is a fraction in MMseqs2's default output (``fident``) and a percentage in BLAST's (``pident``):
    ``identity`` says which; ``auto`` decides once for the whole file (percent iff any value exceeds 1). Hits keep
    identities as fractions, like every :class:`~sepit.tools.mmseqs.Hit`. Hits per query are ranked by bit score
    (high first), else kept in file order.
    """
    p = Path(path)
    rows: list[tuple[str, str, float, int | None, float | None, float | None]] = []
    try:
        with p.open(newline="") as f:
            for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
                if not row or row[0].startswith("#"):
                    continue
                if len(row) < 3:
                    raise InputError(p, f"line {n}: expected at least 3 tab-separated columns")
                try:
                    ident = float(row[2])
                    aln_len = int(float(row[3])) if len(row) > 3 else None
                    evalue = float(row[10]) if len(row) > 10 else None
                    bits = float(row[11]) if len(row) > 11 else None
                except ValueError:
                    raise InputError(p, f"line {n}: identity/length/e-value/bits are not numbers") from None
                if not 0.0 <= ident <= 100.0:
                    raise InputError(p, f"line {n}: bad identity {row[2]!r}")
                rows.append((row[0], row[1], ident, aln_len, evalue, bits))
    except FileNotFoundError:
        raise InputError(p, "hits file not found") from None
    if identity == "auto":
        identity = "percent" if any(r[2] > 1.0 for r in rows) else "fraction"
    elif identity == "fraction" and any(r[2] > 1.0 for r in rows):
        raise InputError(p, "identity=fraction, but column 3 has values above 1 (a percentage?)")
    scale = 0.01 if identity == "percent" else 1.0
    out: dict[str, list[Hit]] = defaultdict(list)
    for q, t, ident, aln_len, evalue, bits in rows:
        out[q].append(Hit(q, t, ident * scale, aln_len, evalue=evalue, bits=bits))
    for hs in out.values():
        if all(h.bits is not None for h in hs):
            hs.sort(key=lambda h: -h.bits)  # type: ignore[operator]
    return dict(out)


def search_training_hits(test_sequences: Mapping[str, str], train_sequences: Mapping[str, str], *,
                         evalue: float = 10.0, sensitivity: float | None = 7.5, max_seqs: int = 300,
                         max_hits: int = 10, work_dir: str | Path | None = None) -> dict[str, list[Hit]]:
    """MMseqs2 search of the test proteins against the training proteins (via :mod:`sepit.tools.mmseqs`):
    test id → up to ``max_hits`` hits, best first. Test proteins without a hit are absent.

    A permissive e-value (10) and high sensitivity (7.5) keep remote homologs, so the "no hit" bin really means
    MMseqs2 found nothing; ``min-seq-id`` stays 0.
    """
    import tempfile

    from sepit.tools import mmseqs

    if not test_sequences or not train_sequences:
        return {}
    with tempfile.TemporaryDirectory(prefix="sepit-eval-", dir=work_dir) as tmp:
        q, t = Path(tmp) / "test.fasta", Path(tmp) / "train.fasta"
        mmseqs.write_fasta(sorted(test_sequences.items()), q)
        mmseqs.write_fasta(sorted(train_sequences.items()), t)
        raw = mmseqs.search(q, t, evalue=evalue, sensitivity=sensitivity, max_seqs=max_seqs, tmp_dir=tmp)
    return {qid: hs[:max_hits] for qid, hs in raw.items()}


def top_identity(hits: Mapping[str, Sequence[Hit]]) -> dict[str, float]:
    """Per query, the highest identity (%, as the report's bins use) among its hits: its identity to the training
    set."""
    return {q: percent(max(h.identity for h in hs)) for q, hs in hits.items() if hs}
