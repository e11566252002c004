"""All instruction records of one protein: a caption, and per task an open question and balanced yes/no pairs.

Every yes/no question comes as a pair asked with the same template: the true value (answer ``yes``) and a hard
negative (answer ``no``, :mod:`.negatives`); a true value without a safe negative is not asked at all, so yes and no
are exactly balanced per task and per template. Sampling uses one RNG per (seed, protein, task): a protein's records
do not depend on the order of proteins or on which other tasks are enabled.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from sepit.data.records import ProteinEntry

from . import facts, negatives, secondary, seqprops
from .caption import compose_caption
from .catalog import Catalog
from .facts import join_list
from .record import Instruction, conversation
from .templates import TASKS, Templates


@dataclass(frozen=True)
class QAOptions:
    """How many records per protein and task."""

    tasks: tuple[str, ...] = TASKS
    captions: bool = True
    open_per_task: int = 1
    yesno_pairs_per_task: int = 1
    max_list: int = 12  # values listed in an open answer before "and N more"


@dataclass(frozen=True)
class _TaskFacts:
    values: str  # the open answer's {values}; "" = no open question
    positives: tuple[str, ...]  # true values for yes/no questions
    negative: Callable[[str, random.Random], str | None]
    display: Callable[[str], str] = str  # how a yes/no value reads in the question (GO id → name)


def _none(_: str, __: random.Random) -> None:
    return None


def _catalog_task(task: str, entry: ProteinEntry, own: tuple[str, ...], display: tuple[str, ...],
                  catalog: Catalog, max_list: int, positives: tuple[str, ...] | None = None) -> _TaskFacts | None:
    if not own:
        return None

    def neg(pos: str, rng: random.Random) -> str | None:
        return negatives.hard_negative(task, pos, own, catalog, rng, entry.accession)

    return _TaskFacts(join_list(display, max_list), own if positives is None else positives, neg)


def task_facts(task: str, entry: ProteinEntry, catalog: Catalog, *, ss_labels: str | None = None,
               max_list: int = 12, rng: random.Random | None = None) -> _TaskFacts | None:
    """What ``entry`` says for ``task`` (open answer values, yes/no positives, negative sampler), or None."""
    rng = rng or random.Random(0)
    if task in negatives.GO_TASKS:
        aspect = negatives.GO_TASKS[task]
        ids = tuple(g for g in facts.go_values(entry, aspect) if g in catalog.go)
        tf = _catalog_task(task, entry, ids, tuple(catalog.go_name(g) for g in ids), catalog, max_list)
        return None if tf is None else _TaskFacts(tf.values, tf.positives, tf.negative, catalog.go_name)
    if task == "function":
        names = {g: catalog.go[g] for g in (t.id for t in entry.go) if g in catalog.go}
        answer = facts.function_answer(entry, names)
        summary = facts.function_summary(entry, names)
        if not answer:
            return None
        return _TaskFacts(answer, (summary,) if summary else (),
                          lambda pos, r: negatives.hard_negative("function", pos, (summary,), catalog, r,
                                                                 entry.accession))
    if task == "ec":
        own = facts.ec_values(entry)
        return _catalog_task(task, entry, own, own, catalog, max_list,
                             tuple(e for e in own if negatives.is_complete_ec(e)))
    simple: dict[str, Callable[[ProteinEntry], tuple[str, ...]]] = {
        "location": facts.location_values, "family": facts.family_values, "domains": facts.domain_values,
        "cofactor": facts.cofactor_values, "pathway": facts.pathway_values, "keywords": facts.keyword_values,
        "catalytic_activity": facts.catalytic_values, "name": facts.name_values,
    }
    if task in simple:
        own = simple[task](entry)
        display = own
        if task == "name" and own and entry.gene:
            display = (f"{own[0]} (gene {entry.gene})",)
        if task == "catalytic_activity":
            display = tuple(r + "." for r in own)
            return _catalog_task(task, entry, own, (" ".join(display),), catalog, max_list)
        return _catalog_task(task, entry, own, display, catalog, max_list)
    if task == "subunit":
        if not entry.subunit:
            return None
        states = facts.subunit_states(entry)
        text = " ".join(entry.subunit).lower()

        def sub_neg(pos: str, r: random.Random) -> str | None:
            family = "homo" if pos.startswith("homo") else "hetero" if pos.startswith("hetero") else ""
            vocab = tuple(s for s in facts.OLIGOMER_STATES if s not in text)
            return negatives.closed_set_negative(states, vocab, r, prefer=lambda s: bool(family)
                                                 and s.startswith(family))

        return _TaskFacts(" ".join(entry.subunit), states, sub_neg)
    if task == "length":
        pair = negatives.length_pair(entry.length, rng)
        return _TaskFacts(str(entry.length), (pair[0],) if pair else (),
                          lambda pos, r: pair[1] if pair else None)
    if task == "mass":
        mass = float(entry.mass) if entry.mass else seqprops.average_mass(entry.sequence)
        pair = negatives.mass_pair(mass, rng)
        return _TaskFacts(seqprops.mass_text(mass), (pair[0],) if pair else (),
                          lambda pos, r: pair[1] if pair else None)
    if task == "composition":
        comp = seqprops.composition(entry.sequence)
        if not comp:
            return None
        top = seqprops.composition_text(comp)
        cpair = negatives.composition_pair(comp, rng)
        return _TaskFacts(top,
                          (seqprops.aa_label(cpair[0]),) if cpair else (),
                          lambda pos, r: seqprops.aa_label(cpair[1]) if cpair else None)
    if task == "secondary_structure":
        ss = secondary.summarize(ss_labels) if ss_labels else None
        if ss is None:
            return None
        cls = ss.ss_class

        def ss_neg(pos: str, r: random.Random) -> str | None:
            return negatives.closed_set_negative((pos,), secondary.SS_CLASSES, r)

        return _TaskFacts(ss.describe(), (cls,) if cls else (), ss_neg)
    raise ValueError(f"unknown task {task!r}")


def protein_instructions(entry: ProteinEntry, catalog: Catalog, templates: Templates, *, split: str, seed: int,
                         options: QAOptions = QAOptions(), ss_labels: str | None = None, structure: str = "",
                         stats: Counter[str] | None = None) -> list[Instruction]:
    """The caption and QA records of one protein (deterministic for ``seed``).

    ``ss_labels``: per-residue H/E/C/- string from the structure (None without one); ``structure``: a
    :func:`~sepit.data.instructions.caption.structure_note`. ``stats`` counts yes/no pairs dropped for want of a
    safe negative (``"no negative: <task>"``).
    """
    acc = entry.accession
    out: list[Instruction] = []

    def add(task: str, kind: str, i: int, question: str, answer_text: str, answer: str) -> None:
        out.append(Instruction(id=f"{acc}/{task}/{kind}/{i}", protein_ids=(acc,), task=task,
                               kind=kind,  # type: ignore[arg-type]
                               split=split, messages=conversation(question, answer_text), answer=answer))

    if options.captions:
        rng = random.Random(f"{seed}/{acc}/caption")
        names = {g: catalog.go[g] for g in (t.id for t in entry.go) if g in catalog.go}
        cap = compose_caption(entry, names, structure)
        add("caption", "caption", 0, rng.choice(templates.caption), cap, cap)
    for task in options.tasks:
        tt = templates.tasks.get(task)
        if tt is None:
            continue
        rng = random.Random(f"{seed}/{acc}/{task}")
        tf = task_facts(task, entry, catalog, ss_labels=ss_labels, max_list=options.max_list, rng=rng)
        if tf is None:
            continue
        if tf.values:
            for i in range(options.open_per_task):
                text = rng.choice(tt.answer).format(values=tf.values)
                text = text[0].upper() + text[1:]
                add(task, "open", i, rng.choice(tt.open), text, text)
        if not tf.positives or options.yesno_pairs_per_task <= 0:
            continue
        k = min(options.yesno_pairs_per_task, len(tf.positives))
        n = 0
        for pos in rng.sample(list(tf.positives), k):
            neg = tf.negative(pos, rng)
            if neg is None:
                if stats is not None:
                    stats[f"no negative: {task}"] += 1
                continue
            q = rng.choice(tt.yesno)
            add(task, "yesno", n, q.format(value=tf.display(pos)), rng.choice(templates.yes), "yes")
            add(task, "yesno", n + 1, q.format(value=tf.display(neg)), rng.choice(templates.no), "no")
            n += 2
    return out
