"""Hard negatives for yes/no questions: plausible false answers that never contradict the protein's annotations.

How a false value is found, per task (first rule that yields a value wins):

* GO terms (``go_mf``/``go_bp``/``go_cc``) and ``location``: GO's parent links are not in the data, so a *sibling*
  is approximated by name — a term of the same aspect whose name ends in the same head word (``... kinase
  activity``, ``... membrane``) and shares the most other words with the true term (top 5, one drawn at random).
  Then any term with the same head word; then a term that co-occurs with one of the protein's terms in another
  protein; then any term of that aspect, by frequency.
* ``ec``: a known EC number differing at the last digit (same first three levels), then at the third, then any.
* ``pathway``/``name``: same first word/segment (same top-level pathway, same name stem), then by frequency.
* ``family``/``domains``/``cofactor``/``keywords``: a value co-occurring with one of the protein's values in
  another protein, then by frequency.
* ``catalytic_activity``: a reaction of another protein with no EC number in common; ``function``: the function
  sentence of another protein sharing no GO MF/BP term and no EC number.

A candidate is rejected (:func:`contradicts`) when it equals one of the protein's own values, or — for name-like
values — its words contain or are contained in an own value's words: such a term is likely an ancestor or descendant
of an annotated one (``kinase activity`` vs ``protein kinase activity``), where "no" could be false. Partial EC
numbers (``3.4.-.-``) reject everything they cover.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .catalog import Catalog, ValueIndex, tokens

TRIES = 20
TOP_SIBLINGS = 5
GO_TASKS = {"go_mf": "MF", "go_bp": "BP", "go_cc": "CC"}
CATALOG_FIELD = {"go_mf": "go", "go_bp": "go", "go_cc": "go", "location": "location", "ec": "ec",
                 "catalytic_activity": "catalytic_activity", "family": "family", "domains": "domains",
                 "cofactor": "cofactor", "pathway": "pathway", "keywords": "keywords", "name": "name"}


def is_complete_ec(ec: str) -> bool:
    parts = ec.split(".")
    return len(parts) == 4 and all(p.isdigit() for p in parts)


def _ec_covers(pattern: str, ec: str) -> bool:
    """``3.4.-.-`` covers ``3.4.21.5``; ``n`` (preliminary) numbers cover nothing but themselves."""
    a, b = pattern.split("."), ec.split(".")
    if len(a) != 4 or len(b) != 4:
        return pattern == ec
    return all(x == y or x == "-" or y == "-" for x, y in zip(a, b))


def contradicts(task: str, candidate: str, own: tuple[str, ...], catalog: Catalog) -> bool:
    """Would answering "no" about ``candidate`` contradict (or risk contradicting) the protein's values ``own``?"""
    return _Checker(task, own, catalog)(candidate)


class _Checker:
    """:func:`contradicts` with the protein's side prepared once (it runs for every candidate)."""

    def __init__(self, task: str, own: tuple[str, ...], catalog: Catalog) -> None:
        self.task, self.own, self.catalog = task, own, catalog
        self.low = {o.lower() for o in own}
        self.own_sets = [self._words(o) for o in own]

    def _words(self, value: str) -> frozenset[str]:
        return self.catalog.name_words(value) if self.task in GO_TASKS else frozenset(tokens(value))

    def __call__(self, candidate: str) -> bool:
        if candidate.lower() in self.low:
            return True
        if self.task == "ec":
            return not is_complete_ec(candidate) or any(_ec_covers(o, candidate) for o in self.own)
        if self.task in ("catalytic_activity", "function"):
            return False
        c = self._words(candidate)
        return bool(c) and any(o and (c <= o or o <= c) for o in self.own_sets)


def _first(gen: Callable[[], str | None], accept: Callable[[str], bool], tries: int = TRIES) -> str | None:
    for _ in range(tries):
        c = gen()
        if c is not None and accept(c):
            return c
    return None


def _cooccurring(vi: ValueIndex, own: tuple[str, ...], self_idx: int | None, rng: random.Random,
                 accept: Callable[[str], bool]) -> str | None:
    present = [v for v in own if v in vi.postings]
    if not present:
        return None

    def gen() -> str | None:
        post = vi.postings[rng.choice(present)]
        j = post[rng.randrange(len(post))]
        vals = vi.by_protein[j] if j != self_idx else ()
        return rng.choice(vals) if vals else None

    return _first(gen, accept)


def _name_sibling(group: str, positive: str, catalog: Catalog, rng: random.Random,
                  accept: Callable[[str], bool]) -> str | None:
    top = []
    for c in catalog.ranked_siblings(group, positive):  # best first; accept() only until enough are found
        if accept(c):
            top.append(c)
            if len(top) == TOP_SIBLINGS:
                break
    if top:
        return rng.choice(top)
    head = catalog.same_head(group, positive)
    return _first(lambda: rng.choice(head), accept) if head else None


def _ec3(e: str) -> str:
    return ".".join(e.split(".")[:3]) if is_complete_ec(e) else ""


def _ec2(e: str) -> str:
    return ".".join(e.split(".")[:2]) if is_complete_ec(e) else ""


def _pathway_top(p: str) -> str:
    return p.split(";")[0].strip().lower()


def _name_stem(n: str) -> str:
    return (tokens(n) or ("",))[0]


def _by_prefix(positive: str, catalog: Catalog, field_name: str, key: Callable[[str], str], rng: random.Random,
               accept: Callable[[str], bool]) -> str | None:
    k = key(positive)
    same = [v for v in catalog.grouped(field_name, key).get(k, ()) if accept(v)] if k else []
    return rng.choice(same) if same else None


def hard_negative(task: str, positive: str, own: tuple[str, ...], catalog: Catalog, rng: random.Random,
                  accession: str = "") -> str | None:
    """A false value for ``task`` near ``positive`` (one of ``own``, the protein's values), or None if none is safe.

    ``accession`` (the protein's) keeps its own annotations out of co-occurrence draws.
    """
    self_idx = catalog.index.get(accession)
    if task == "function":
        return _function_negative(catalog, self_idx, rng)
    field_name = CATALOG_FIELD[task]
    vi = catalog.fields[field_name]
    check = _Checker(task, own, catalog)
    if task in GO_TASKS:
        aspect = GO_TASKS[task]

        def accept(c: str) -> bool:
            return c in catalog.go and catalog.go[c].aspect == aspect and not check(c)
    else:
        def accept(c: str) -> bool:
            return not check(c)
    if task == "catalytic_activity":
        own_ec = catalog.fields["ec"].by_protein[self_idx] if self_idx is not None else ()
        base = accept

        def accept(c: str) -> bool:
            return base(c) and not any(set(catalog.fields["ec"].by_protein[j]) & set(own_ec)
                                       for j in vi.postings.get(c, ()))
    found: str | None = None
    if task in GO_TASKS:
        found = _name_sibling(GO_TASKS[task], positive, catalog, rng, accept)
    elif task == "location":
        found = _name_sibling("location", positive, catalog, rng, accept)
    elif task == "ec":
        found = (_by_prefix(positive, catalog, "ec", _ec3, rng, accept)
                 or _by_prefix(positive, catalog, "ec", _ec2, rng, accept))
    elif task == "pathway":
        found = _by_prefix(positive, catalog, "pathway", _pathway_top, rng, accept)
    elif task == "name":
        found = _by_prefix(positive, catalog, "name", _name_stem, rng, accept)
    if found is None and task not in ("ec", "name", "catalytic_activity"):
        found = _cooccurring(vi, own, self_idx, rng, accept)
    if found is None:
        found = _first(lambda: vi.sample(rng), accept, tries=TRIES * 3)
    return found


def _function_negative(catalog: Catalog, self_idx: int | None, rng: random.Random) -> str | None:
    """The function sentence of another protein with no GO MF/BP term and no EC number in common."""
    n = len(catalog)
    if self_idx is None or n < 2:
        return None
    own_go = set(catalog.fields["go"].by_protein[self_idx])
    own_ec = set(catalog.fields["ec"].by_protein[self_idx])
    own_text = catalog.summaries[self_idx].lower()
    for _ in range(TRIES):
        j = rng.randrange(n)
        text = catalog.summaries[j]
        if (j != self_idx and text and text.lower() != own_text
                and not (own_go & set(catalog.fields["go"].by_protein[j]))
                and not (own_ec & set(catalog.fields["ec"].by_protein[j]))):
            return text
    return None


# --- numeric / closed-set tasks: (true value, false value) pairs ---------------------------------------------------

def _round_to(x: float, step: int, up: bool) -> int:
    q = int(x // step) + (1 if up and x % step else 0)
    return q * step


def length_pair(length: int, rng: random.Random) -> tuple[str, str] | None:
    """Thresholds for "longer than N residues?": one clearly below the length (yes), one clearly above (no)."""
    step = 10 if length < 400 else 50
    low = _round_to(length * rng.uniform(0.5, 0.85), step, up=False)
    high = _round_to(length * rng.uniform(1.2, 2.0), step, up=True)
    if low <= 0 or not (low < length < high):
        return None
    return str(low), str(high)


def mass_pair(mass_da: float, rng: random.Random) -> tuple[str, str] | None:
    """Thresholds in kDa for "heavier than N kDa?" (yes below the mass, no above it)."""
    kda = mass_da / 1000.0
    low = int(kda * rng.uniform(0.5, 0.85))
    high = int(kda * rng.uniform(1.2, 2.0)) + 1
    if low <= 0 or not (low < kda < high):
        return None
    return str(low), str(high)


def composition_pair(comp: list[tuple[str, float]], rng: random.Random) -> tuple[str, str] | None:
    """(most common residue, a residue at most half as common); None when the top is tied."""
    if len(comp) < 2 or comp[0][1] <= 0 or comp[0][1] == comp[1][1]:
        return None
    rare = [aa for aa, f in comp[1:] if f <= comp[0][1] / 2]
    return (comp[0][0], rng.choice(rare)) if rare else None


def closed_set_negative(own: tuple[str, ...], vocabulary: tuple[str, ...], rng: random.Random,
                        prefer: Callable[[str], bool] | None = None) -> str | None:
    """A vocabulary value not among ``own`` (preferring ``prefer``-ed ones: the hard cases)."""
    pool = [v for v in vocabulary if v not in own]
    hard = [v for v in pool if prefer(v)] if prefer else []
    pick = hard or pool
    return rng.choice(pick) if pick else None
