"""Homolog context for prompts: search an index once per batch of proteins (cached per sequence), keep the top k
hits that pass the model's cut-offs, and turn them into the context block and the provenance shown to users.

    r = Retriever(RetrievalIndex.load(model_dir / "retrieval"), cfg.retrieval)
    hom = r.homologs(proteins, tasks, questions)  # per protein: [Homolog, ...] (≤ k; the protein itself never)
    ctx = r.contexts(proteins, tasks, questions)  # the prompt blocks
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from sepit.log import get_logger
from sepit.proteins import Protein
from sepit.retrieval.config import RetrievalConfig
from sepit.retrieval.context import Homolog, asks_yes_no, claim_holds, clip, context_block, context_task, question_claim
from sepit.retrieval.facts import CONTEXT_TASKS, SEQUENCE_TASKS, sequence_facts
from sepit.retrieval.index import RetrievalIndex, answer_key
from sepit.tools.mmseqs import Hit

log = get_logger(__name__)

CACHED_HITS = 25  # hits kept per searched sequence: enough for k after leaving out the protein itself and near-copies


def _key(sequence: str) -> str:
    return "s" + hashlib.sha1(sequence.encode()).hexdigest()[:20]


class Retriever:
    """An index with the retrieval settings of a model. ``max_identity`` (training: the config's
    ``train_max_identity``) leaves out hits above that identity fraction."""

    def __init__(self, index: RetrievalIndex, cfg: RetrievalConfig, *, max_identity: float = 1.0) -> None:
        self.index = index
        self.cfg = cfg
        self.max_identity = max_identity
        self._cache: dict[str, list[Hit]] = {}
        self.searches = 0  # MMseqs2 calls made (the cache keeps repeated proteins from adding to it)

    def hits(self, proteins: Sequence[Protein]) -> list[list[Hit]]:
        """Per protein, its top-k hits: one MMseqs2 search for the sequences not searched before; a hit on the
        protein's own id, or above ``max_identity``, is left out."""
        todo = {_key(p.sequence): p.sequence for p in proteins if p.sequence and _key(p.sequence) not in self._cache}
        if todo:
            c = self.cfg
            found = self.index.search(todo, evalue=c.evalue, min_identity=c.min_identity,
                                      min_coverage=c.min_coverage, sensitivity=c.sensitivity)
            self.searches += 1
            for k in todo:
                self._cache[k] = found.get(k, [])[:CACHED_HITS]
        out = []
        for p in proteins:
            hs = [h for h in self._cache.get(_key(p.sequence), [])
                  if h.target != p.id and h.identity <= self.max_identity]
            out.append(hs[: self.cfg.k])
        return out

    def claims(self, tasks: Sequence[str | None], questions: Sequence[str] | None) -> list[str | None]:
        """Per question, the candidate value of a yes/no question that hits are read against (``claims`` on, a task
        whose hits have an annotation for it), else None."""
        if questions is None or not self.cfg.claims:
            return [None] * len(tasks)
        return [question_claim(t, q) if context_task(t) == t else None for t, q in zip(tasks, questions)]

    def homologs(self, proteins: Sequence[Protein], tasks: Sequence[str | None],
                 questions: Sequence[str] | None = None) -> list[list[Homolog]]:
        """Per protein, its hits as :class:`Homolog` s with their annotation for the task asked; with ``questions``,
        a yes/no question's hits also carry their own answer to it (:attr:`Homolog.answers_yes`)."""
        out = []
        for hits, task, claim in zip(self.hits(proteins), tasks, self.claims(tasks, questions)):
            key = context_task(task)
            row = []
            for h in hits:
                text = self.index.facts(h.target).get(key, "")
                row.append(Homolog(h.target, h.identity, h.qcov, h.evalue, clip(text, self.cfg.max_chars),
                                   claim_holds(key, text, claim) if claim and text else None))
            out.append(row)
        return out

    def contexts(self, proteins: Sequence[Protein], tasks: Sequence[str | None],
                 questions: Sequence[str] | None = None) -> list[str]:
        """Per protein, the context block of a question of ``tasks[i]`` (``questions[i]``, when given: a yes/no
        question's block ends with each hit's answer to it)."""
        return [context_block(h, t, c, self.own_fact(p, t)) for p, h, t, c in
                zip(proteins, self.homologs(proteins, tasks, questions), tasks, self.claims(tasks, questions))]

    def answer_options(self, proteins: Sequence[Protein], tasks: Sequence[str | None], questions: Sequence[str]
                       ) -> list[list[str]]:
        """Per question, the answers the model chooses among instead of writing one (``choose_open``): each hit's
        annotation for the task, worded with the task's first answer template, and the index's most common
        annotation for the task (the answer when no homolog speaks for the protein). [] where the model writes its
        answer: the setting off, a yes/no question, a task the homologs do not annotate, or one the protein's own
        sequence answers (``own_properties``)."""
        from sepit.data.instructions.templates import load_templates

        out: list[list[str]] = []
        templates = load_templates().tasks if self.cfg.choose_open else {}
        for hits, task, question in zip(self.hits(proteins), tasks, questions):
            if (not self.cfg.choose_open or task is None or task not in CONTEXT_TASKS or task not in templates
                    or asks_yes_no(question) or (self.cfg.own_properties and task in SEQUENCE_TASKS)):
                out.append([])
                continue
            # a hit's whole open answer where the index has one (its prompt text is compact), else its prompt text
            texts = [(f := self.index.facts(h.target)).get(answer_key(task)) or f.get(task, "") for h in hits]
            texts.append(self.index.most_common_answer(task))
            worded = [" ".join(templates[task].answer[0].format(values=t).split()) for t in texts if t]
            out.append(list(dict.fromkeys(worded)))  # each answer once, best-ranked hit first
        return out

    def own_fact(self, protein: Protein, task: str | None) -> str:
        """The protein's own value for a question its sequence answers (length, mass, composition) when the
        config's ``own_properties`` is on, else ""."""
        if not self.cfg.own_properties or task not in SEQUENCE_TASKS:
            return ""
        return sequence_facts(protein.sequence).get(task, "")
