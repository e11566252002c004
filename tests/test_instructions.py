"""Instruction templates, captions, QA generation and hard negatives (sepit.data.instructions).

Uses the embedded default table (real 2014 Swiss-Prot rows, vendored in resources/default_data) and a few entries
built here with the UniProt flat-file annotations that table lacks (FUNCTION, location, cofactor, pathway, ...).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from itertools import islice

import pytest

from sepit.data.build import default_data_dir
from sepit.data.instructions import (
    TASKS,
    Catalog,
    QAOptions,
    compose_caption,
    contradicts,
    load_templates,
    negatives,
    protein_instructions,
    secondary,
    seqprops,
    structure_note,
    task_facts,
)
from sepit.data.readers import read_go_terms, read_proteins
from sepit.data.records import DomainRef, Feature, GoTerm, ProteinEntry
from sepit.errors import InputError

SEQ = ("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALR"
       "PDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVG"
       "IGGKLSDGHRHDVRAPDYDDWUAIGLNQ").replace("U", "S")


def _flat_entries() -> list[ProteinEntry]:
    """Entries shaped like UniProt flat-file records (values taken from real Swiss-Prot entries)."""
    return [
        ProteinEntry(
            accession="P00750", sequence=SEQ, name="Tissue-type plasminogen activator", gene="PLAT",
            organism="Homo sapiens", function=("Converts the abundant, but inactive, zymogen plasminogen to plasmin "
                                               "by hydrolyzing a single Arg-Val bond in plasminogen. It plays a role "
                                               "in tissue remodeling.",),
            catalytic_activity=("Specific cleavage of Arg-|-Val bond in plasminogen to form plasmin",),
            ec=("3.4.21.68",), subcellular_location=("Secreted", "Cell membrane"),
            subunit=("Heterodimer of chain A and chain B held by a disulfide bond. Binds to fibrin.",),
            keywords=("Hydrolase", "Protease", "Serine protease", "Complete proteome"),
            go=(GoTerm("GO:0004252", "MF", "serine-type endopeptidase activity"),
                GoTerm("GO:0005576", "CC", "extracellular region")),
            domains=(DomainRef("Pfam", "PF00089", "Trypsin"), DomainRef("Pfam", "PF00051", "Kringle")),
            features=(Feature("DOMAIN", 39, 81, "Fibronectin type-I"), Feature("DOMAIN", 82, 120, "EGF-like")),
            extra=(("similarity", "Belongs to the peptidase S1 family."),)),
        ProteinEntry(
            accession="Q8NE62", sequence=SEQ[:180], name="Choline dehydrogenase, mitochondrial", gene="CHDH",
            ec=("1.1.99.1",), catalytic_activity=("Choline + acceptor = betaine aldehyde + reduced acceptor",),
            cofactors=("FAD",), subcellular_location=("Mitochondrion inner membrane",),
            pathway=("Amine and polyamine biosynthesis; betaine biosynthesis via choline pathway; betaine aldehyde "
                     "from choline (cytochrome c reductase route): step 1/1.",),
            subunit=("Homodimer.",), keywords=("FAD", "Flavoprotein", "Oxidoreductase"),
            domains=(DomainRef("Pfam", "PF05199", "GMC_oxred_C"),),
            extra=(("similarity", "Belongs to the GMC oxidoreductase family."),)),
        ProteinEntry(
            accession="P0A186", sequence=SEQ[20:200], name="Naphthalene 1,2-dioxygenase system ferredoxin subunit",
            ec=("1.14.12.12",), cofactors=("[2Fe-2S] cluster",), subcellular_location=("Cytoplasm",),
            pathway=("Aromatic compound metabolism; naphthalene degradation.",), subunit=("Monomer.",),
            keywords=("2Fe-2S", "Iron", "Metal-binding")),
        ProteinEntry(
            accession="Q9XYZ1", sequence=SEQ[5:150], name="Lysine decarboxylase", ec=("4.1.1.18", "3.4.-.-"),
            cofactors=("pyridoxal 5'-phosphate",), subcellular_location=("Cytoplasm", "Nucleus"),
            pathway=("Amine and polyamine biosynthesis; cadaverine biosynthesis.",), subunit=("Homodecamer.",),
            keywords=("Decarboxylase", "Lyase", "Pyridoxal phosphate")),
    ]


@pytest.fixture(scope="module")
def real():
    d = default_data_dir()
    go = read_go_terms(d / "go_terms.tsv.xz")
    entries = list(islice(read_proteins(d / "proteins.tsv.xz", go_terms=go, human=d / "human.tsv.xz"), 600))
    entries += _flat_entries()
    return entries, Catalog.build(entries, go), go


@pytest.fixture(scope="module")
def templates():
    return load_templates()


def test_shipped_templates_cover_every_task_with_paraphrases(templates) -> None:
    assert set(templates.tasks) == set(TASKS) and len(TASKS) >= 10
    for name, tt in templates.tasks.items():
        assert len(tt.open) >= 3 and len(tt.yesno) >= 3, name
        assert len(set(tt.open)) == len(tt.open) and len(set(tt.yesno)) == len(tt.yesno), name
        assert all("{value}" in q for q in tt.yesno) and all("{values}" in a for a in tt.answer)
    assert len(templates.caption) >= 4


@pytest.mark.parametrize("body,problem", [
    ("caption: [x]\nyes_answers: [Yes.]\nno_answers: [No.]\ntasks:\n  go_mf: {open: [a, b], answer: ['{values}'], "
     "yesno: ['Is {valu}?', 'b {value}']}\n", "unknown placeholder"),
    ("caption: [x]\nyes_answers: [Yes.]\nno_answers: [No.]\ntasks:\n  go_mf: {open: [a, b], answer: ['{values}'], "
     "yesno: ['Is it?', 'b {value}']}\n", "lacks {value}"),
    ("caption: ['<protein> describe']\nyes_answers: [Yes.]\nno_answers: [No.]\ntasks: {}\n", "must not contain"),
    ("caption: [x]\nyes_answers: [Yes.]\nno_answers: [No.]\ntasks:\n  gomf: {open: [a], answer: [b], yesno: [c]}\n",
     "unknown task"),
    ("- just a list\n", "expected keys"),
])
def test_bad_templates_are_one_line_errors(tmp_path, body, problem) -> None:
    p = tmp_path / "t.yaml"
    p.write_text(body)
    with pytest.raises(InputError, match=re.escape(problem)) as e:
        load_templates(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def _ss(e):
    return "-" * 3 + "HHHHHHHHHHHHCCCCEEEEE" * 4 if e.accession == "P00750" else None


def _all_records(entries, catalog, templates, seed=0, **opts):
    out = []
    for e in entries:
        out += protein_instructions(e, catalog, templates, split="train", seed=seed, options=QAOptions(**opts),
                                    ss_labels=_ss(e))
    return out


def test_records_cover_at_least_ten_tasks_and_yes_no_balance_per_task_and_template(real, templates) -> None:
    entries, catalog, _ = real
    recs = _all_records(entries, catalog, templates, yesno_pairs_per_task=2)
    tasks = {r.task for r in recs if r.kind != "caption"}
    assert len(tasks) >= 10 and set(TASKS) <= tasks, set(TASKS) - tasks
    per_task: dict[str, Counter[str]] = {}
    per_template: Counter[tuple[str, str, str]] = Counter()
    for r in recs:
        assert r.messages[0]["content"].startswith("<protein>\n") and r.protein_ids == (r.id.split("/")[0],)
        if r.kind == "yesno":
            assert r.answer in ("yes", "no")
            per_task.setdefault(r.task, Counter())[r.answer] += 1
    for task, c in per_task.items():
        assert c["yes"] == c["no"] > 0, (task, c)
    # every yes/no pair uses one template: consecutive records share the question's wording around the value
    yn = [r for r in recs if r.kind == "yesno"]
    for yes, no in zip(yn[::2], yn[1::2]):
        assert (yes.answer, no.answer) == ("yes", "no") and yes.id.rsplit("/", 1)[0] == no.id.rsplit("/", 1)[0]
        tt = templates.tasks[yes.task].yesno
        matched = [t for t in tt if re.fullmatch(re.escape(t).replace(re.escape("{value}"), ".+"), yes.question,
                                                 re.DOTALL)]
        assert any(re.fullmatch(re.escape(t).replace(re.escape("{value}"), ".+"), no.question, re.DOTALL)
                   for t in matched), (yes.question, no.question)
        per_template[(yes.task, matched[0], "pair")] += 1
    assert len(per_template) > len(per_task)  # several paraphrases in use


def test_negatives_never_contradict_the_proteins_own_annotations(real, templates) -> None:
    entries, catalog, _ = real
    checked = Counter()
    for e in entries:
        for task in negatives.CATALOG_FIELD:
            tf = task_facts(task, e, catalog, rng=random.Random(1))
            if tf is None or not tf.positives:
                continue
            own_all = {
                "go_mf": tuple(t.id for t in e.go if t.aspect == "MF"),
                "go_bp": tuple(t.id for t in e.go if t.aspect == "BP"),
                "go_cc": tuple(t.id for t in e.go if t.aspect == "CC"),
            }.get(task)
            for pos in tf.positives:
                neg = tf.negative(pos, random.Random(hash((e.accession, task, pos)) & 0xFFFF))
                if neg is None:
                    continue
                own = own_all if own_all is not None else catalog.values_of(task if task not in ("ec",) else "ec",
                                                                             e.accession) or tf.positives
                assert neg not in own and neg.lower() not in {o.lower() for o in own}, (e.accession, task, neg)
                assert not contradicts(task, neg, own, catalog), (e.accession, task, neg)
                if own_all is not None:  # a GO negative is of the same aspect and not an own term by name
                    assert catalog.go[neg].aspect == task[-2:].upper()
                    own_names = {catalog.go_name(g).lower() for g in own}
                    assert catalog.go_name(neg).lower() not in own_names
                if task == "ec":
                    assert negatives.is_complete_ec(neg) and not any(negatives._ec_covers(o, neg) for o in own)
                checked[task] += 1
    assert {"go_mf", "go_bp", "go_cc", "ec", "family", "name", "location", "cofactor", "pathway",
            "keywords"} <= set(checked), checked


def test_no_question_never_asks_about_an_own_value(real, templates) -> None:
    """Record level: a "no" question must differ from the same template filled with any of the protein's values."""
    entries, catalog, _ = real
    recs = _all_records(entries, catalog, templates)
    by_acc = {e.accession: e for e in entries}
    n = 0
    for r in recs:
        if r.kind != "yesno" or r.answer != "no":
            continue
        e = by_acc[r.protein_ids[0]]
        tf = task_facts(r.task, e, catalog, rng=random.Random(0), ss_labels=_ss(e))
        own = [tf.display(v) for v in tf.positives]
        if r.task in ("go_mf", "go_bp", "go_cc", "name", "location", "family", "keywords", "cofactor", "pathway"):
            own += [v for v in tf.values.split(", ")]
        for t in templates.tasks[r.task].yesno:
            for v in own:
                assert r.question != t.format(value=v), (r.id, r.question)
        n += 1
    assert n > 500


def test_numeric_negatives_are_false_and_positives_true() -> None:
    rng = random.Random(0)
    for length in (31, 80, 399, 400, 1500):
        lo, hi = negatives.length_pair(length, rng)
        assert int(lo) < length < int(hi)
    mass = seqprops.average_mass(SEQ)
    lo, hi = negatives.mass_pair(mass, rng)
    assert int(lo) < mass / 1000 < int(hi)
    comp = seqprops.composition(SEQ + "L" * 20)
    top, rare = negatives.composition_pair(comp, rng)
    assert top == comp[0][0] and dict(comp)[rare] <= comp[0][1] / 2
    assert negatives.composition_pair([("A", 0.5), ("L", 0.5)], rng) is None  # a tie has no single answer


def test_average_mass_matches_expasy() -> None:
    # Ubiquitin (P0CG48 chain, 76 aa): ExPASy ProtParam average mass 8564.84 Da.
    ubq = "MQIFVKTLTGKTITLEVEPSDTIENVKAKIQDKEGIPPDQQRLIFAGKQLEDGRTLSDYNIQKESTLHLVLRLRGG"
    assert abs(seqprops.average_mass(ubq) - 8564.84) < 0.5


def test_secondary_structure_classes_are_exclusive() -> None:
    ss = secondary.summarize("H" * 50 + "C" * 50)
    assert ss.ss_class == secondary.SS_CLASSES[0] and "50%" in ss.describe()
    assert secondary.summarize("E" * 40 + "C" * 60).ss_class == secondary.SS_CLASSES[1]
    assert secondary.summarize("H" * 30 + "E" * 20 + "C" * 50).ss_class == secondary.SS_CLASSES[2]
    assert secondary.summarize("H" * 5 + "C" * 95).ss_class == secondary.SS_CLASSES[3]
    assert secondary.summarize("-" * 100 + "H" * 10) is None  # too few resolved residues
    rng = random.Random(0)
    for cls in secondary.SS_CLASSES:
        assert negatives.closed_set_negative((cls,), secondary.SS_CLASSES, rng) != cls


def test_go_negative_is_a_name_sibling_not_an_ancestor() -> None:
    terms = {"GO:1": "protein kinase activity", "GO:2": "protein serine/threonine kinase activity",
             "GO:3": "protein tyrosine kinase activity", "GO:4": "lipid kinase activity", "GO:5": "ATP binding"}
    entries = [ProteinEntry(f"P{i}", SEQ, go=(GoTerm(g, "MF", terms[g]),)) for i, g in enumerate(terms)]
    me = ProteinEntry("Q1", SEQ, go=(GoTerm("GO:2", "MF", terms["GO:2"]),))
    cat = Catalog.build([*entries, me])
    seen = {negatives.hard_negative("go_mf", "GO:2", ("GO:2",), cat, random.Random(s), "Q1") for s in range(30)}
    # "protein kinase activity" is likely an ancestor (its words are inside the true term's): never offered
    assert seen and seen <= {"GO:3", "GO:4"} and "GO:3" in seen


def test_ec_negative_differs_at_the_last_digit_when_possible() -> None:
    ecs = ["3.4.21.68", "3.4.21.5", "3.4.21.4", "1.1.1.1", "3.4.22.1"]
    cat = Catalog.build([ProteinEntry(f"P{i}", SEQ, ec=(e,)) for i, e in enumerate(ecs)])
    for s in range(20):
        neg = negatives.hard_negative("ec", "3.4.21.68", ("3.4.21.68",), cat, random.Random(s), "P0")
        assert neg in ("3.4.21.5", "3.4.21.4")
    # a partial EC of the protein rules out everything it covers
    assert contradicts("ec", "3.4.21.5", ("3.4.-.-",), cat) and not contradicts("ec", "1.1.1.1", ("3.4.-.-",), cat)


def test_caption_uses_function_text_else_go_names_with_definitions(real) -> None:
    entries, catalog, go = real
    flat = _flat_entries()[0]
    names = {g.id: catalog.go[g.id] for g in flat.go if g.id in catalog.go}
    cap = compose_caption(flat, names, structure_note("1A5H", "A", "CATALYTIC DOMAIN OF TWO-CHAIN TPA"))
    assert cap.startswith("Tissue-type plasminogen activator (gene PLAT) is a")
    assert "Converts the abundant" in cap and "EC 3.4.21.68" in cap and "peptidase S1 family" in cap
    assert "PDB 1A5H, chain A: catalytic domain of two-chain tpa" in cap
    table_entry = next(e for e in entries if e.source == "sprot2014" and any(t.aspect == "MF" for t in e.go))
    names = {t.id: catalog.go[t.id] for t in table_entry.go if t.id in catalog.go}
    cap = compose_caption(table_entry, names)
    first_mf = next(t for t in table_entry.go if t.aspect == "MF")
    assert first_mf.name in cap and "molecular functions include" in cap
    defined = go[first_mf.id].definition
    if defined:
        assert defined.split()[1].lower().strip(",.") in cap.lower()


def test_generation_is_deterministic_for_a_seed(real, templates) -> None:
    entries, catalog, _ = real
    a = [r.to_line() for r in _all_records(entries[:200], catalog, templates, seed=3)]
    b = [r.to_line() for r in _all_records(entries[:200], catalog, templates, seed=3)]
    c = [r.to_line() for r in _all_records(entries[:200], catalog, templates, seed=4)]
    assert a == b and a != c
    # a protein's records do not depend on the others
    one = [r.to_line() for r in _all_records(entries[5:6], catalog, templates, seed=3)]
    assert all(line in a for line in one)


def test_options_select_tasks_and_counts(real, templates) -> None:
    _, catalog, _ = real
    e = _flat_entries()[1]
    recs = protein_instructions(e, catalog, templates, split="valid", seed=0,
                                options=QAOptions(tasks=("cofactor", "pathway"), captions=False, open_per_task=2))
    assert {r.task for r in recs} == {"cofactor", "pathway"} and all(r.split == "valid" for r in recs)
    assert Counter(r.kind for r in recs)["open"] == 4
