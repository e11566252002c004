"""Baselines over plain records: prior/majority answers, nearest-homolog copying (with 'no hit' counted), m8 hits."""

from __future__ import annotations

import pytest

from sepit.errors import InputError
from sepit.eval.baselines import (
    claim_extractor,
    majority_answers,
    nearest_homolog_predictions,
    prior_predictions,
    prior_yes_probability,
    read_m8,
    top_identity,
)
from sepit.eval.items import items_from_records
from sepit.tools.mmseqs import Hit

YESNO_TEMPLATES = {
    "go_cc": ['Is this protein found in the {value}?', 'Is "{value}" one of the cellular components of this protein?'],
}


def rec(pid, task, kind, question, answer, split="train", i=0):
    return {"id": f"{pid}/{task}/{kind}/{i}", "protein_ids": [pid], "task": task, "kind": kind, "split": split,
            "messages": [{"role": "user", "content": f"<protein>\n{question}"},
                         {"role": "assistant", "content": answer}], "answer": answer}


TRAIN = [
    rec("T1", "go_cc", "open", "Where is it?", "Cellular components: nucleus, cytoplasm."),
    rec("T1", "go_cc", "yesno", "Is this protein found in the nucleus?", "Yes, it does.", i=1),
    rec("T1", "go_cc", "yesno", "Is this protein found in the mitochondrion?", "No.", i=2),
    rec("T2", "go_cc", "open", "Where is it?", "Cellular components: membrane."),
    rec("T2", "go_cc", "yesno", "Is this protein found in the membrane?", "Yes.", i=1),
    rec("T3", "ec", "open", "What is its EC number?", "EC 2.7.11.1"),
    rec("T4", "ec", "open", "What is its EC number?", "EC 2.7.11.1"),
    rec("T5", "ec", "open", "What is its EC number?", "EC 3.1.1.1"),
]
TEST = [
    rec("Q1", "go_cc", "open", "Where is it?", "Cellular components: nucleus.", split="test"),
    rec("Q1", "go_cc", "yesno", 'Is "nucleus" one of the cellular components of this protein?', "Yes.", "test", 1),
    rec("Q1", "go_cc", "yesno", "Is this protein found in the cytoplasm?", "Yes.", "test", 2),
    rec("Q1", "go_cc", "yesno", "Is this protein found in the cytosol?", "No.", "test", 3),
    rec("Q2", "ec", "open", "What is its EC number?", "EC 3.1.1.1", split="test"),
    rec("Q3", "go_cc", "open", "Where is it?", "Cellular components: membrane.", split="test"),
]


def test_prior_and_majority():
    # go_cc yes/no: 2 yes of 3 → p_yes 2/3, majority "yes"; ec open: "EC 2.7.11.1" twice, "EC 3.1.1.1" once
    assert prior_yes_probability(TRAIN) == {"go_cc": pytest.approx(2 / 3)}
    maj = majority_answers(TRAIN)
    assert maj[("ec", "open")] == "EC 2.7.11.1"
    assert maj[("go_cc", "yesno")] == "yes"
    # go_cc open: two answers once each → tie broken alphabetically ("...: membrane." < "...: nucleus, ...")
    assert maj[("go_cc", "open")] == "Cellular components: membrane."
    items = items_from_records(TEST)
    preds, stats = prior_predictions(items, TRAIN)
    by = {p.id: p for p in preds}
    assert by["Q2/ec/open/0"].text == "EC 2.7.11.1" and by["Q2/ec/open/0"].p_yes is None
    assert by["Q1/go_cc/yesno/3"].text == "yes" and by["Q1/go_cc/yesno/3"].p_yes == pytest.approx(2 / 3)
    assert stats.to_dict() == {"prior": 6}


def test_claim_extractor():
    claim_of = claim_extractor(YESNO_TEMPLATES)
    assert claim_of("go_cc", "<protein>\nIs this protein  found in the Nucleus?") == "nucleus"
    assert claim_of("go_cc", 'Is "cell membrane" one of the cellular components of this protein?') == "cell membrane"
    assert claim_of("go_cc", "Something else?") is None
    assert claim_of("ec", "Is this protein found in the nucleus?") is None


def test_nearest_homolog_routes_and_no_hit():
    items = items_from_records(TEST)
    hits = {"Q1": [Hit("Q1", "T9", 0.95), Hit("Q1", "T1", 0.80)],  # T9 has no training records → next hit
            "Q2": [Hit("Q2", "T5", 0.42)]}  # Q3: no hit at all
    preds, stats = nearest_homolog_predictions(items, TRAIN, hits, claim_of=claim_extractor(YESNO_TEMPLATES))
    by = {p.id: p.text for p in preds}
    assert by["Q1/go_cc/open/0"] == "Cellular components: nucleus, cytoplasm."  # copied from T1
    assert by["Q1/go_cc/yesno/1"] == "yes"   # T1 was asked about "nucleus" with another template: copied
    assert by["Q1/go_cc/yesno/2"] == "yes"   # "cytoplasm" is in T1's open answer
    assert by["Q1/go_cc/yesno/3"] == "no"    # "cytosol" is not
    assert by["Q2/ec/open/0"] == "EC 3.1.1.1"
    assert by["Q3/go_cc/open/0"] == "Cellular components: membrane."  # no hit → prior (majority) answer
    assert stats.to_dict() == {"copied": 2, "copied_same_claim": 1, "inferred_from_open_answer": 2, "no_hit": 1}


def test_nearest_homolog_without_claims_and_empty_fallback():
    items = items_from_records(TEST)
    hits = {"Q1": [Hit("Q1", "T1", 0.80)]}
    preds, stats = nearest_homolog_predictions(items, TRAIN, hits, fallback="empty")
    by = {p.id: p.text for p in preds}
    # without a claim extractor only an identical question is copied; the others have no usable answer
    assert by["Q1/go_cc/yesno/1"] == "" and by["Q1/go_cc/yesno/2"] == ""
    assert stats.counts["no_answer"] == 3 and stats.counts["no_hit"] == 2 and stats.counts["copied"] == 1


def test_whole_phrase_matching():
    # "kinase activity" must not match inside "protein kinase activity"-like longer words, but does as a phrase
    train = [rec("T1", "go_mf", "open", "Functions?", "Molecular functions: protein-kinase activity, ATP binding.")]
    test = [rec("Q1", "go_mf", "yesno", 'Does it have "kinase activity"?', "No.", "test"),
            rec("Q1", "go_mf", "yesno", 'Does it have "ATP binding"?', "Yes.", "test", 1)]
    claim_of = claim_extractor({"go_mf": ['Does it have "{value}"?']})
    preds, _ = nearest_homolog_predictions(items_from_records(test), train, {"Q1": [Hit("Q1", "T1", 0.60)]},
                                           claim_of=claim_of)
    assert [p.text for p in preds] == ["no", "yes"]


def test_shipped_templates_give_claims():
    from sepit.data.instructions.templates import load_templates

    t = load_templates()
    claim_of = claim_extractor({name: tt.yesno for name, tt in t.tasks.items()})
    for name, tt in t.tasks.items():
        for tpl in tt.yesno:
            q = "<protein>\n" + tpl.format(value="Some Value 1.2.3")
            assert claim_of(name, q) == "some value 1.2.3", (name, tpl)


def test_read_m8_and_top_identity(tmp_path):
    # MMseqs2 easy-search columns: query target fident alnlen mismatch gapopen qstart qend tstart tend evalue bits
    m8 = tmp_path / "hits.m8"
    m8.write_text("Q1\tT1\t0.800\t100\t20\t0\t1\t100\t1\t100\t1e-30\t150\n"
                  "Q1\tT2\t0.950\t100\t5\t0\t1\t100\t1\t100\t1e-50\t210\n"
                  "Q2\tT5\t0.420\t90\t50\t2\t1\t90\t1\t90\t1e-5\t60\n")
    hits = read_m8(m8, identity="fraction")
    assert [h.target for h in hits["Q1"]] == ["T2", "T1"]           # ranked by bit score
    assert hits["Q1"][0] == Hit("Q1", "T2", 0.95, 100, evalue=1e-50, bits=210.0)  # fractions, no coverages
    assert top_identity(hits) == {"Q1": pytest.approx(95.0), "Q2": pytest.approx(42.0)}
    blast = tmp_path / "blast.m8"  # BLAST -outfmt 6: percent identities; auto decides for the whole file
    blast.write_text("Q1\tT1\t80.0\t100\t20\t0\t1\t100\t1\t100\t1e-30\t150\n"
                     "Q2\tT5\t0.9\t90\t50\t2\t1\t90\t1\t90\t1e-5\t60\n")
    auto = read_m8(blast)
    assert auto["Q1"][0].identity == pytest.approx(0.80) and auto["Q2"][0].identity == pytest.approx(0.009)
    with pytest.raises(InputError, match="above 1"):
        read_m8(blast, identity="fraction")
    bad = tmp_path / "bad.m8"
    bad.write_text("Q1\tT1\tabc\n")
    with pytest.raises(InputError, match="line 1"):
        read_m8(bad)
    with pytest.raises(InputError, match="not found"):
        read_m8(tmp_path / "missing.m8")


@pytest.mark.slow
def test_search_training_hits_runs_mmseqs(tmp_path):
    """MMseqs2 really runs: a 95%- and a 60%-identical copy are found with their identities; a shuffled one is not."""
    import random

    from sepit.eval.baselines import search_training_hits
    from sepit.eval.breakdown import identity_bin

    aa = "ACDEFGHIKLMNPQRSTVWY"
    rnd = random.Random(7)
    base = "".join(rnd.choice(aa) for _ in range(200))

    def mutate(seq, n):
        s = list(seq)
        for i in rnd.sample(range(len(s)), n):
            s[i] = rnd.choice([a for a in aa if a != s[i]])
        return "".join(s)

    train = {"T95": mutate(base, 10), "T60": mutate(base, 80), "Tother": "".join(rnd.sample(base, len(base)))}
    test = {"Q": base, "Qnone": "".join(rnd.choice(aa) for _ in range(150))}
    hits = search_training_hits(test, train, evalue=1e-3, work_dir=tmp_path)
    assert "Qnone" not in hits
    by_target = {h.target: h.identity for h in hits["Q"]}
    assert hits["Q"][0].target == "T95"
    assert by_target["T95"] == pytest.approx(0.95, abs=0.01)
    assert by_target["T60"] == pytest.approx(0.60, abs=0.03)
    assert identity_bin(top_identity(hits)["Q"]) == "≥90%"


def test_instruction_objects_are_accepted():
    from sepit.data.instructions.record import Instruction

    objs = [Instruction.from_json(r) for r in TRAIN]
    assert majority_answers(objs) == majority_answers(TRAIN)
    items = items_from_records([Instruction.from_json(r) for r in TEST])
    assert items == items_from_records(TEST)
    preds, _ = nearest_homolog_predictions(items, objs, {"Q2": [Hit("Q2", "T5", 0.42)]})
    assert {p.id: p.text for p in preds}["Q2/ec/open/0"] == "EC 3.1.1.1"


def test_nearest_homolog_reads_a_number_against_the_threshold():
    """"Longer than 300 residues?" about a protein whose top hit is 312 long: the hit's length is compared with the
    threshold (the rule the homolog context uses), not searched for the string "300"."""
    templates = {"length": ["Is this protein longer than {value} residues?"],
                 "mass": ["Is the molecular mass of this protein above {value} kDa?"]}
    train = [rec("T1", "length", "open", "How long is it?", "This protein is 312 amino acids long."),
             rec("T1", "mass", "open", "How heavy is it?", "About 35.2 kDa."),
             rec("T2", "mass", "open", "How heavy is it?", "Unknown.")]
    test = [rec("Q1", "length", "yesno", "Is this protein longer than 300 residues?", "Yes.", "test", 1),
            rec("Q1", "length", "yesno", "Is this protein longer than 620 residues?", "No.", "test", 2),
            rec("Q1", "mass", "yesno", "Is the molecular mass of this protein above 40 kDa?", "No.", "test", 3),
            rec("Q2", "mass", "yesno", "Is the molecular mass of this protein above 40 kDa?", "No.", "test", 4)]
    hits = {"Q1": [Hit("Q1", "T1", 0.6)], "Q2": [Hit("Q2", "T2", 0.6)]}
    preds, stats = nearest_homolog_predictions(items_from_records(test), train, hits,
                                               claim_of=claim_extractor(templates), fallback="empty")
    by = {p.id: (p.text, p.p_yes) for p in preds}
    assert by["Q1/length/yesno/1"] == ("yes", 1.0) and by["Q1/length/yesno/2"] == ("no", 0.0)
    assert by["Q1/mass/yesno/3"] == ("no", 0.0)
    assert by["Q2/mass/yesno/4"][0] == ""  # a hit with no number to read has no answer: the fallback
    assert stats.to_dict()["inferred_from_open_answer"] == 3
