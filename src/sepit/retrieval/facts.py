"""What a reference protein contributes to a prompt: per task, its annotation as one short text (the values the
instruction builder derives for that task's open answer), and a compact caption for questions of other tasks."""

from __future__ import annotations

from sepit.data.instructions import facts, seqprops
from sepit.data.instructions.catalog import Catalog
from sepit.data.instructions.qa import task_facts
from sepit.data.records import ProteinEntry
from sepit.retrieval.index import answer_key

# Tasks whose answer a homolog's annotation speaks to, and properties of a homolog's sequence (length, mass,
# composition: homologs share them roughly, as the nearest-homolog baseline's score on them shows); questions of any
# other task (secondary structure, free questions) get the hits' captions instead.
CONTEXT_TASKS: tuple[str, ...] = (
    "function", "go_mf", "go_bp", "go_cc", "location", "ec", "catalytic_activity", "family", "domains",
    "cofactor", "pathway", "subunit", "keywords", "name", "length", "mass", "composition",
)
CAPTION = "caption"
# Tasks whose answer follows from the sequence alone: with ``retrieval.own_properties`` the context also gives the
# protein's own value, computed as the instruction builder computes it (sequence_facts).
SEQUENCE_TASKS: tuple[str, ...] = ("length", "mass", "composition")


def sequence_facts(sequence: str) -> dict[str, str]:
    """Length, mass and composition of a sequence as the instruction builder words them for its answers
    (``312``, ``35.2 kDa``, ``leucine (L) 10.1%, serine (S) 8.0% and alanine (A) 7.7%``); {} for an empty one."""
    if not sequence:
        return {}
    comp = seqprops.composition(sequence)
    out = {"length": str(len(sequence)), "mass": seqprops.mass_text(seqprops.average_mass(sequence))}
    if comp:
        out["composition"] = seqprops.composition_text(comp)
    return out


def entry_facts(entry: ProteinEntry, catalog: Catalog, max_list: int = 12) -> dict[str, str]:
    """Task → annotation text of ``entry`` (only the tasks it has; compact: at most 6 values, a function summary),
    plus ``caption`` (name; family; what it does) and, under :func:`answer_key`, the task's open answer as the
    instruction builder writes it (``max_list`` values, the whole function text) where that differs: what a model
    choosing among its homologs' annotations answers with (``retrieval.choose_open``)."""
    out: dict[str, str] = {}
    names = {g: catalog.go[g] for g in (t.id for t in entry.go) if g in catalog.go}
    for task in CONTEXT_TASKS:
        whole = task_facts(task, entry, catalog, max_list=max_list)
        if task == "function":
            text = facts.function_summary(entry, names)
        else:
            tf = task_facts(task, entry, catalog, max_list=6)
            text = tf.values if tf is not None else ""
        if text:
            out[task] = " ".join(text.split())
        if whole is not None and whole.values and " ".join(whole.values.split()) != out.get(task):
            out[answer_key(task)] = " ".join(whole.values.split())
    fam = facts.family_values(entry)
    parts = [entry.name, fam[0] + (" family" if not fam[0].lower().endswith("family") else "") if fam else "",
             out.get("function", "")]
    caption = "; ".join(p.strip().rstrip(".") for p in parts if p and p.strip())
    if caption:
        out[CAPTION] = caption
    return out
