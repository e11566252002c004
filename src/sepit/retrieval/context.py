"""The homolog context block of a prompt, and which task a free-text question asks about.

    Homologs (MMseqs2) and their subcellular location:
    1. P02144, 62% identity over 95% of this protein: Cytoplasm
    2. Q9XYZ1, 31% identity over 40% of this protein: no subcellular location annotation

A yes/no question about one candidate value ("Is this protein found in the nucleus?") also gets, per hit, whether
its annotation for the task names that value — the hit's own answer to the question, read by the same rule
(:func:`claim_holds`) as the retrieval baselines read it, so the model sees the evidence they count:

    Homologs (MMseqs2) and their subcellular location:
    1. P02144, 62% identity over 95% of this protein: Cytoplasm
    2. Q9XYZ1, 31% identity over 40% of this protein: no subcellular location annotation
    Does each name "Nucleus"? 1: no, 2: –

The block goes into the first user turn after the protein marker line, before the question
(:func:`sepit.data.instructions.record.with_context`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sepit.retrieval.facts import CAPTION, CONTEXT_TASKS

LABELS: dict[str, str] = {
    "function": "function", "go_mf": "GO molecular functions", "go_bp": "GO biological processes",
    "go_cc": "GO cellular components", "location": "subcellular location", "ec": "EC number",
    "catalytic_activity": "catalytic activity", "family": "family", "domains": "domains", "cofactor": "cofactor",
    "pathway": "pathway", "subunit": "subunit structure", "keywords": "UniProt keywords", "name": "name",
    "length": "length in residues", "mass": "molecular mass", "composition": "most common residues",
    CAPTION: "annotation",
}
HEADER = "Homologs (MMseqs2)"
_CLAIM_ASKS = {"length": "Is each longer than {} residues?", "mass": "Is each above {} kDa?",
               "composition": 'Is "{}" among the most common residues of each?'}


@dataclass(frozen=True)
class Homolog:
    """One retrieved reference protein as shown in a prompt and to the user: accession, identity and query
    coverage (fractions), e-value, and its annotation for the task asked ("" when it has none)."""

    id: str
    identity: float
    coverage: float | None
    evalue: float | None
    annotation: str
    # a yes/no question about one candidate value: the hit's own answer, read from its whole (unclipped) annotation
    # by claim_holds; None: no such question, or nothing to read
    answers_yes: bool | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"id": self.id, "identity": round(self.identity, 4),
               "coverage": None if self.coverage is None else round(self.coverage, 4),
               "evalue": self.evalue, "annotation": self.annotation}
        if self.answers_yes is not None:
            out["answers_yes"] = self.answers_yes
        return out


def context_task(task: str | None) -> str:
    """The facts key a question of ``task`` reads: the task itself where homologs annotate it, else ``caption``."""
    return task if task in CONTEXT_TASKS else CAPTION


def context_block(homologs: list[Homolog], task: str | None, claim: str | None = None, own: str = "") -> str:
    """The prompt text for ``homologs`` (possibly none) of a question of ``task``; ``claim``, a yes/no question's
    candidate value, adds a last line with each hit's answer (:attr:`Homolog.answers_yes`). ``own``: the protein's
    own value for a task its sequence answers (length, mass, composition; :func:`sepit.retrieval.facts.
    sequence_facts`), given first and, with a claim, read like a hit's."""
    key = context_task(task)
    lines = [f"This protein's {LABELS[key]} (from its sequence): {own}"] if own and key != CAPTION else []
    if not homologs:
        lines.append(f"{HEADER}: none found.")
    else:
        lines.append(f"{HEADER} and their {LABELS[key]}:" if key != CAPTION else f"{HEADER}:")
    for i, h in enumerate(homologs, 1):
        cov = f" over {round(100 * h.coverage)}% of this protein" if h.coverage is not None else ""
        text = h.annotation or f"no {LABELS[key]} annotation"
        lines.append(f"{i}. {h.id}, {round(100 * h.identity)}% identity{cov}: {text}")
    said = {True: "yes", False: "no", None: "–"}
    answers = [f"{i}: {said[h.answers_yes]}" for i, h in enumerate(homologs, 1)]
    if own and claim and key != CAPTION:
        answers.insert(0, f"this protein: {said[own_claim_holds(key, own, claim)]}")
    if claim and key != CAPTION and answers:
        # last, so both questions of a yes/no pair share the whole list above as one prompt prefix
        lines.append(_CLAIM_ASKS.get(key, 'Does each name "{}"?').format(claim) + " " + ", ".join(answers))
    return "\n".join(lines)


def names(text: str, value: str) -> bool:
    """``value`` occurs in ``text`` as a whole phrase (case-insensitive; not inside a longer word)."""
    return re.search(r"(?<![\w-])" + re.escape(value.lower()) + r"(?![\w-])", text.lower()) is not None


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def claim_holds(task: str, text: str, claim: str) -> bool | None:
    """Whether a protein whose annotation (or open answer) for ``task`` is ``text`` would answer yes to the
    question's ``claim``, as the instruction builder words those questions: "longer than {claim} residues" (length:
    the first number in ``text``), "above {claim} kDa" (mass: likewise; None when ``text`` has no number), else
    ``text`` names the claim — for composition, the residue is among the three most common ones ``text`` lists (on
    the valid split a better reading of a homolog than "is listed first": its top residue often differs by a little;
    docs/retrieval.md). The homolog context and the retrieval baselines read hits with this one rule."""
    if task in ("length", "mass"):
        got, want = _NUMBER.search(text), _NUMBER.search(claim)
        return None if not got or not want else float(got.group()) > float(want.group())
    return names(text, claim)


def own_claim_holds(task: str, own: str, claim: str) -> bool | None:
    """:func:`claim_holds` for the protein's own value: exact where a homolog's is approximate — its composition
    answers yes only for the residue it lists first (the question asks for *the* most common one)."""
    if task == "composition":
        return names(re.split(r",| and ", own, maxsplit=1)[0], claim)
    return claim_holds(task, own, claim)


def clip(text: str, max_chars: int) -> str:
    """``text`` cut at a word boundary to at most ``max_chars`` characters (an ellipsis marks the cut)."""
    text = " ".join(text.split())
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars - 1].rsplit(" ", 1)[0].rstrip(",;: ")
    return cut + "…"


# --- which task a question asks about ------------------------------------------------------------------------------

_KEYWORDS: tuple[tuple[str, str], ...] = (
    (r"molecular function", "go_mf"), (r"biological process", "go_bp"), (r"cellular component", "go_cc"),
    (r"\bgo\b", "go_mf"), (r"\bec\b|enzyme commission", "ec"), (r"cataly|reaction", "catalytic_activity"),
    (r"locat|where|compartment|organelle|secreted|membrane", "location"), (r"family|superfamily", "family"),
    (r"domain|motif|repeat|zinc finger", "domains"), (r"cofactor|metal|binds? (?:zinc|iron|heme)", "cofactor"),
    (r"pathway", "pathway"), (r"subunit|oligomer|dimer|complex", "subunit"), (r"keyword", "keywords"),
    (r"\bname\b|called", "name"), (r"function|what does|role|do\?", "function"),
)


@lru_cache(maxsize=1)
def _template_patterns() -> tuple[tuple[re.Pattern[str], str], ...]:
    from sepit.data.instructions.templates import load_templates

    out = []
    for task, tt in load_templates().tasks.items():
        for tpl in (*tt.open, *tt.yesno):
            pat = re.escape(_norm(tpl)).replace(re.escape("{value}"), ".+?")
            out.append((len(tpl.replace("{value}", "")), re.compile("^" + pat + "$"), task))
    # the most specific template first: "Is this protein longer than {value} residues?" (length) before "Is this
    # protein {value}?" (name), which matches it too
    return tuple((pat, task) for _, pat, task in sorted(out, key=lambda x: -x[0]))


@lru_cache(maxsize=1)
def _claim_patterns() -> dict[str, tuple[re.Pattern[str], ...]]:
    from sepit.data.instructions.templates import load_templates

    out = {}
    for task, tt in load_templates().tasks.items():
        out[task] = tuple(re.compile("^" + re.escape(_norm(tpl)).replace(re.escape("{value}"), "(?P<value>.+?)") + "$",
                                     re.IGNORECASE) for tpl in tt.yesno)
    return out


def question_claim(task: str | None, question: str) -> str | None:
    """The candidate value of a yes/no question of ``task`` written from one of its templates ("Is this protein found
    in the {value}?"), as the question writes it; None for any other question."""
    q = " ".join(question.replace("<protein>", " ").split())
    for pat in _claim_patterns().get(task or "", ()):
        m = pat.match(q)
        if m:
            return m.group("value").strip()
    return None


def _norm(text: str) -> str:
    return " ".join(text.lower().replace("<protein>", " ").split())


def question_task(question: str) -> str | None:
    """The task of a free-text question: the task of the most specific instruction template it matches (the most
    fixed text), else the first task whose keywords it contains, else None (the context then gives the homologs'
    captions)."""
    q = _norm(question)
    for pat, task in _template_patterns():
        if pat.match(q):
            return task
    for pattern, task in _KEYWORDS:
        if re.search(pattern, q):
            return task
    return None


_YES_NO_START = re.compile(r"^(?:is|are|does|do|did|can|could|has|have|was|were|will|would|should)\b")


def asks_yes_no(question: str) -> bool:
    """Whether a free-text question reads as a yes/no question ("Is this protein…?", "…? Answer yes or no.")."""
    q = _norm(question)
    return bool(_YES_NO_START.match(q)) or "yes or no" in q
