"""Homolog context (sepit.retrieval): the index, the search (never the query itself), the prompt block, and a model
directory that answers with its own index after its dataset is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sepit.data.instructions import seqprops
from sepit.data.instructions.record import add_context, with_context
from sepit.errors import InputError, SepitError
from sepit.proteins import Protein, conversation
from sepit.retrieval.config import RetrievalConfig
from sepit.retrieval.context import Homolog, claim_holds, clip, context_block, question_claim, question_task
from sepit.retrieval.facts import sequence_facts
from sepit.retrieval.index import RetrievalIndex, build_index
from sepit.retrieval.retriever import Retriever

pytestmark = pytest.mark.slow  # real MMseqs2 searches

GLOBIN = ("MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNF"
          "KLLSHCLLVTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR")
LYSOZYME = ("KVFGRCELAAAMKRHGLDNYRGYSLGNWVCAAKFESNFNTQATNRNTDGSTDYGILQINSRWWCNDGRTPGSRNLCNIPCSALLSSDITASVNCAKKI"
            "VSDGNGMNAWVAWRNRCKGTDVQAWIRGCRL")


def _mutate(seq: str, every: int) -> str:
    """``seq`` with every ``every``-th residue changed (identity ≈ 1 - 1/every)."""
    return "".join(("A" if c != "A" else "G") if i % every == 0 else c for i, c in enumerate(seq))


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> RetrievalIndex:
    rows = [
        ("HBA", GLOBIN, {"location": "Cytoplasm", "caption": "Hemoglobin alpha; globin family"}),
        ("HBA_LIKE", _mutate(GLOBIN, 4), {"caption": "Globin-like protein"}),
        ("LYZ", LYSOZYME, {"location": "Secreted", "function": "Lyses bacterial cell walls.",
                           "answer:function": "Lyses bacterial cell walls; it is involved in defense response."}),
    ]
    return RetrievalIndex.load(build_index(tmp_path_factory.mktemp("idx") / "index", rows))


def test_index_folder_and_facts(index) -> None:
    assert len(index) == 3 and index.manifest["format"] == "sepit-retrieval-index"
    assert index.facts("LYZ")["location"] == "Secreted" and index.facts("nope") == {}
    assert sorted(p.name for p in index.path.iterdir()) == ["db", "facts.jsonl", "index.json", "proteins.fasta"]


def test_retrieval_never_returns_the_query_itself(index) -> None:
    r = Retriever(index, RetrievalConfig(enabled=True, k=3))
    own, other, stranger = r.hits([Protein(GLOBIN, id="HBA"), Protein(GLOBIN, id="user-1"),
                                   Protein("MKTAYIAKQRQISFVKSHFSRQ" * 3, id="x")])
    assert [h.target for h in own] == ["HBA_LIKE"]  # its own entry is left out, its homolog stays
    assert [h.target for h in other][:2] == ["HBA", "HBA_LIKE"] and other[0].identity == pytest.approx(1.0)
    assert stranger == []
    assert r.searches == 1  # one MMseqs2 call for the batch (the same sequence twice is searched once)
    r.hits([Protein(GLOBIN, id="again")])
    assert r.searches == 1  # cached per sequence


def test_training_cutoff_leaves_out_near_copies(index) -> None:
    r = Retriever(index, RetrievalConfig(enabled=True), max_identity=0.9)
    (hits,) = r.hits([Protein(GLOBIN, id="q")])
    assert [h.target for h in hits] == ["HBA_LIKE"] and hits[0].identity <= 0.9


def test_context_block_says_what_each_hit_knows(index) -> None:
    r = Retriever(index, RetrievalConfig(enabled=True, k=2))
    (ctx,) = r.contexts([Protein(GLOBIN, id="q")], ["location"])
    lines = ctx.splitlines()
    assert lines[0] == "Homologs (MMseqs2) and their subcellular location:"
    assert lines[1].startswith("1. HBA, 100% identity over 100% of this protein: Cytoplasm")
    assert lines[2].endswith(": no subcellular location annotation") and lines[2].startswith("2. HBA_LIKE, 7")
    (cap,) = r.contexts([Protein(GLOBIN, id="q")], ["secondary_structure"])  # not a homology task: captions
    assert cap.splitlines()[1].endswith("Hemoglobin alpha; globin family")
    (none,) = r.contexts([Protein("MKTAYIAKQRQISFVKSHFSRQ" * 3, id="x")], ["location"])
    assert none == "Homologs (MMseqs2): none found."
    homs = r.homologs([Protein(GLOBIN, id="q")], ["location"])[0]
    assert homs[0].to_json() == {"id": "HBA", "identity": 1.0, "coverage": 1.0, "evalue": homs[0].evalue,
                                 "annotation": "Cytoplasm"}


def test_a_yes_no_claim_is_checked_against_each_hit(index) -> None:
    q_yes, q_no = "<protein>\nIs this protein located in the cytoplasm?", "Is this protein located in the nucleus?"
    assert question_claim("location", q_yes) == "cytoplasm" and question_claim("location", q_no) == "nucleus"
    assert question_claim("location", "Where is this protein located in the cell?") is None  # open, no claim
    assert question_claim("go_cc", q_yes) is None  # another task's template
    r = Retriever(index, RetrievalConfig(enabled=True, k=2, claims=True))
    globin, lysozyme = Protein(GLOBIN, id="q"), Protein(LYSOZYME, id="q2")
    yes, no, other = r.contexts([globin, globin, lysozyme], ["location"] * 3, [q_yes, q_no, q_yes])
    # the hits as without a claim, then each hit's answer (a hit with no annotation for the task has none to give)
    assert yes.splitlines()[:3] == no.splitlines()[:3] == r.contexts([globin], ["location"])[0].splitlines()
    assert yes.splitlines()[3] == 'Does each name "cytoplasm"? 1: yes, 2: –'
    assert no.splitlines()[3] == 'Does each name "nucleus"? 1: no, 2: –'
    assert other.splitlines()[-1] == 'Does each name "cytoplasm"? 1: no' and other.count("\n") == 2
    assert r.homologs([globin], ["location"], [q_yes])[0][0].to_json()["answers_yes"] is True
    # a question about the structure gets the captions, and no claim
    assert r.contexts([globin], ["secondary_structure"], ["Is this protein mainly alpha?"])[0].splitlines()[0] == \
        "Homologs (MMseqs2):"
    # off (models trained before it): the block is as it was
    plain = Retriever(index, RetrievalConfig(enabled=True, k=2))
    assert plain.contexts([globin], ["location"], [q_yes]) == plain.contexts([globin], ["location"])
    assert "Does each" not in plain.contexts([globin], ["location"], [q_yes])[0]


def test_own_properties_give_the_protein_s_own_value_and_answer(index) -> None:
    r = Retriever(index, RetrievalConfig(enabled=True, k=2, claims=True, own_properties=True))
    globin = Protein(GLOBIN, id="q")
    own = sequence_facts(GLOBIN)
    assert own["length"] == str(len(GLOBIN)) and own["mass"].endswith(" kDa")
    top = seqprops.composition(GLOBIN)[0][0]
    assert own["composition"].startswith(seqprops.aa_label(top))
    longer, shorter = f"Is this protein longer than {len(GLOBIN) - 1} residues?", \
        f"Is this protein longer than {len(GLOBIN)} residues?"
    yes, no = r.contexts([globin, globin], ["length", "length"], [longer, shorter])
    assert yes.splitlines()[0] == f"This protein's length in residues (from its sequence): {len(GLOBIN)}"
    assert yes.splitlines()[-1].startswith(f"Is each longer than {len(GLOBIN) - 1} residues? this protein: yes, 1: ")
    assert no.splitlines()[-1].startswith(f"Is each longer than {len(GLOBIN)} residues? this protein: no, 1: ")
    # composition: the protein's own answer is yes for its most common residue only (a hit's, for any of its top 3)
    second = seqprops.aa_label(seqprops.composition(GLOBIN)[1][0])
    first_q, second_q = (f"Is {v} the most common amino acid in this protein?"
                         for v in (seqprops.aa_label(top), second))
    a, b = r.contexts([globin, globin], ["composition"] * 2, [first_q, second_q])
    assert "this protein: yes" in a.splitlines()[-1] and "this protein: no" in b.splitlines()[-1]
    # another task, or the setting off: no own line
    assert "from its sequence" not in r.contexts([globin], ["location"])[0]
    off = Retriever(index, RetrievalConfig(enabled=True, k=2, claims=True))
    assert off.contexts([globin], ["length"], [longer])[0] == "\n".join(yes.splitlines()[1:]).replace(
        "this protein: yes, ", "")
    # no homologs: the own value and answer still come
    assert context_block([], "mass", "10", "15.1 kDa").splitlines() == [
        "This protein's molecular mass (from its sequence): 15.1 kDa", "Homologs (MMseqs2): none found.",
        "Is each above 10 kDa? this protein: yes"]


def test_open_answers_to_choose_from_are_the_hits_worded_as_answers(index) -> None:
    r = Retriever(index, RetrievalConfig(enabled=True, k=2, choose_open=True, own_properties=True))
    globin = Protein(GLOBIN, id="q")
    where, yes_no, length, free = r.answer_options(
        [globin] * 4, ["location", "location", "length", None],
        ["Where is this protein located?", "Is this protein located in the cytoplasm?", "How long is it?", "Hi?"])
    # the first hit (HBA: Cytoplasm), the second (HBA_LIKE) has no location; then the index's most common location
    # (Cytoplasm and Secreted once each: the alphabetically first, already there)
    assert where == ["Subcellular location: Cytoplasm."]
    assert yes_no == [] and length == [] and free == []  # written: a yes/no question, the protein's own length, none
    assert index.most_common_answer("location") == "Cytoplasm" and index.most_common_answer("pathway") == ""
    (lyz,) = r.answer_options([Protein(LYSOZYME, id="q2")], ["location"], ["Where is it found?"])
    assert lyz == ["Subcellular location: Secreted.", "Subcellular location: Cytoplasm."]
    # a hit's whole open answer where the index holds one (its prompt text is compact); the prompt keeps the short one
    (fn,) = r.answer_options([Protein(LYSOZYME, id="q2")], ["function"], ["What does it do?"])
    assert fn == ["Lyses bacterial cell walls; it is involved in defense response."]
    assert "defense" not in r.contexts([Protein(LYSOZYME, id="q2")], ["function"])[0]
    assert "answer:function" not in index.manifest["tasks"] and "function" in index.manifest["tasks"]
    off = Retriever(index, RetrievalConfig(enabled=True, k=2))
    assert off.answer_options([globin], ["location"], ["Where is this protein located?"]) == [[]]


@pytest.mark.parametrize("task, text, claim, holds", [
    ("length", "312", "300", True), ("length", "312", "600", False), ("length", "312", "312", False),
    ("mass", "35.2 kDa", "35", True), ("mass", "35.2 kDa", "40", False), ("mass", "unknown", "40", None),
    ("composition", "leucine (L) 10.1%, alanine (A) 8.0% and serine (S) 7.5%", "leucine (L)", True),
    ("composition", "leucine (L) 10.1%, alanine (A) 8.0% and serine (S) 7.5%", "alanine (A)", True),
    ("composition", "leucine (L) 10.1%, alanine (A) 8.0% and serine (S) 7.5%", "tryptophan (W)", False),
    ("location", "Nucleus; cytoplasm", "cytoplasm", True), ("location", "Nucleoplasm", "nucleus", False),
])
def test_claim_holds_as_the_questions_are_worded(task, text, claim, holds) -> None:
    assert claim_holds(task, text, claim) is holds
    block = context_block([Homolog("P1", 0.5, 0.9, 1e-9, text, holds)], task, claim)
    assert block.endswith({True: "? 1: yes", False: "? 1: no", None: "? 1: –"}[holds])


def test_prompt_layout_and_the_paper_form_without_context() -> None:
    block = context_block([Homolog("P1", 0.5, 0.8, 1e-9, "Nucleus")], "location")
    assert with_context("<protein>\nWhere is it?", block) == f"<protein>\n{block}\nWhere is it?"
    assert with_context("<protein>\nWhere is it?", "") == "<protein>\nWhere is it?"
    assert conversation("Where is it?", context="") == conversation("Where is it?")
    assert conversation("Where is it?")[0]["content"] == "<protein>\nWhere is it?"
    msgs = add_context(({"role": "user", "content": "<protein>\nQ?"}, {"role": "assistant", "content": "A"}), "C")
    assert msgs == [{"role": "user", "content": "<protein>\nC\nQ?"}, {"role": "assistant", "content": "A"}]
    assert clip("one two three four", 12) == "one two…" and clip("short", 20) == "short"


@pytest.mark.parametrize("question, task", [
    ("Where is this protein located in the cell?", "location"),
    ("What is the EC number of this enzyme?", "ec"),
    ("Which biological processes is it involved in?", "go_bp"),
    ("What does this protein do?", "function"),
    # the most specific template wins: name's "Is this protein {value}?" matches these too
    ("Is this protein longer than 300 residues?", "length"), ("Is this protein heavier than 40 kDa?", "mass"),
    ("Is this protein Hemoglobin alpha?", "name"),
    ("Tell me a joke.", None),
])
def test_question_task(question, task) -> None:
    assert question_task(question) == task


def test_broken_index_is_a_one_line_error(tmp_path, index) -> None:
    with pytest.raises(InputError, match="no such retrieval index"):
        RetrievalIndex.load(tmp_path / "missing")
    bad = tmp_path / "bad"
    shutil.copytree(index.path, bad)
    (bad / "facts.jsonl").unlink()
    with pytest.raises(InputError, match=r"missing facts\.jsonl"):
        RetrievalIndex.load(bad)
    (bad / "facts.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match="line 1: not an index entry"):
        RetrievalIndex.load(bad).facts("x")
    with pytest.raises(ValueError, match="fraction"):
        RetrievalConfig(min_identity=30)


# --- a model trained with homolog context ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from sepit.data.build import build_dataset, default_config
    from sepit.data.config import DataConfig

    out = tmp_path_factory.mktemp("data") / "ds"
    build_dataset(default_config(DataConfig(max_proteins=80)), out)
    return out


def test_data_build_indexes_the_training_split_only(dataset) -> None:
    idx = RetrievalIndex.load(dataset / "index")
    rows = [json.loads(x) for x in (dataset / "proteins.jsonl").read_text().splitlines()]
    train = [r["id"] for r in rows if r["split"] == "train"]
    ids = [x[1:] for x in (idx.path / "proteins.fasta").read_text().split() if x.startswith(">")]
    assert ids == train and len(idx) == len(train)
    assert any(idx.facts(i).get("go_mf") for i in train)
    # a homolog's sequence properties, as the instruction builder states them for its own questions
    seqs = dict(zip(ids, (x for x in (idx.path / "proteins.fasta").read_text().split() if not x.startswith(">"))))
    first = idx.facts(train[0])
    assert first["length"] == str(len(seqs[train[0]])) and first["mass"].endswith(" kDa")
    assert first["composition"].split(" (")[0] in ("alanine", "leucine", "serine", "glycine", "glutamate", "lysine",
                                                   "valine", "arginine", "aspartate", "threonine", "proline",
                                                   "isoleucine", "asparagine", "glutamine", "phenylalanine",
                                                   "tyrosine", "histidine", "cysteine", "methionine", "tryptophan")


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> Path:
    """A tiny stage-1 model trained with homolog context on a copy of the dataset; the copy is deleted after."""
    from sepit.config import load_config
    from sepit.paths import configs_dir
    from sepit.train.config import TrainConfig
    from sepit.train.loop import train

    tmp = tmp_path_factory.mktemp("trained")
    data = tmp / "data"
    shutil.copytree(dataset, data)
    cfg = load_config(configs_dir() / "train" / "stage1_tiny.yaml", TrainConfig,
                      [f"data.dir={data}", f"out_dir={tmp / 'run'}", "max_steps=2", "save_every=2",
                       "model_overrides=[retrieval.enabled=true]", "data.kinds=[open]"])
    res = train(cfg)
    shutil.rmtree(data)
    return res.final_dir


def test_model_dir_answers_with_its_own_index_after_the_dataset_is_deleted(trained, tmp_path) -> None:
    from sepit.api import load

    model_dir = tmp_path / "model"
    shutil.copytree(trained, model_dir)
    qa = load(model_dir, device="cpu")
    assert qa.retriever is not None and qa.retriever.index.path == model_dir / "retrieval"
    protein = (model_dir / "retrieval" / "proteins.fasta").read_text().split()[1]
    homs = qa.homologs(protein, "What are its molecular functions?")
    assert homs and homs[0]["identity"] == pytest.approx(1.0)  # a user's copy of a reference protein finds it
    conv = qa.conversations([Protein(protein)], ["What are its molecular functions?"])[0]
    assert conv[0]["content"].startswith("<protein>\nHomologs (MMseqs2) and their GO molecular functions:\n1. ")
    assert isinstance(qa.ask(protein, "What are its molecular functions?", max_new_tokens=4), str)
    plain = load(model_dir, device="cpu", retrieval=False)  # --no-retrieval: exactly the paper's prompt
    assert plain.retriever is None and plain.homologs(protein) is None
    assert plain.conversations([Protein(protein)], ["What does it do?"]) == [conversation("What does it do?")]
    shutil.rmtree(model_dir / "retrieval")
    with pytest.raises(SepitError, match="no retrieval index"):
        load(model_dir, device="cpu")


def test_a_model_with_claims_gives_each_hit_s_answer_in_its_prompt(trained, tmp_path) -> None:
    from sepit.api import load

    model_dir = tmp_path / "model"
    shutil.copytree(trained, model_dir)
    meta = json.loads((model_dir / "sepit_config.json").read_text())
    assert meta["config"]["retrieval"]["claims"] is False  # what the tiny config trained with
    meta["config"]["retrieval"]["claims"] = True
    (model_dir / "sepit_config.json").write_text(json.dumps(meta))
    qa = load(model_dir, device="cpu")
    protein = (model_dir / "retrieval" / "proteins.fasta").read_text().split()[1]
    below, above = len(protein) - 1, len(protein) + 100
    (yes,) = qa.homologs(protein, f"Is this protein longer than {below} residues?")[:1]
    assert yes["annotation"] == str(len(protein)) and yes["answers_yes"] is True
    assert qa.homologs(protein, f"Is this protein longer than {above} residues?")[0]["answers_yes"] is False
    conv = qa.conversations([Protein(protein)], [f"Is this protein longer than {below} residues?"])[0]
    lines = conv[0]["content"].splitlines()
    assert lines[1] == "Homologs (MMseqs2) and their length in residues:"
    assert lines[-2].startswith(f"Is each longer than {below} residues? 1: yes")
    assert lines[-1] == f"Is this protein longer than {below} residues?"
    assert "answers_yes" not in qa.homologs(protein, "How long is it?")[0]  # not a yes/no question


def test_a_model_that_chooses_answers_with_one_of_its_homologs_answers(trained, tmp_path) -> None:
    from sepit.api import load

    model_dir = tmp_path / "model"
    shutil.copytree(trained, model_dir)
    meta = json.loads((model_dir / "sepit_config.json").read_text())
    meta["config"]["retrieval"]["choose_open"] = True
    (model_dir / "sepit_config.json").write_text(json.dumps(meta))
    qa = load(model_dir, device="cpu")
    protein = (model_dir / "retrieval" / "proteins.fasta").read_text().split()[1]
    question = "What is the function of this protein?"
    (options,) = qa.answer_options([Protein(protein)], [question])
    assert options and all(o.strip() for o in options)
    answer = qa.ask(protein, question)
    assert answer in options
    assert "".join(qa.ask(protein, question, stream=True)) == answer
    scores = qa.choose(protein, question, options) if len(options) > 1 else [0.0]
    assert options[max(range(len(options)), key=scores.__getitem__)] == answer  # the option the model rates best
    assert qa.answer_options([Protein(protein)], ["Does this protein bind DNA?"]) == [[]]


def test_eval_runs_the_model_with_and_without_homologs_and_the_vote(trained, dataset, tmp_path) -> None:
    from sepit.config import from_dict
    from sepit.eval.config import EvalConfig
    from sepit.eval.pipeline import evaluate_dataset

    cfg = from_dict(EvalConfig, {"limits": {"yesno": 6, "open": 2}, "bootstrap": 50,
                                 "metrics": {"tokenizer": "regex", "bertscore_model": "", "meteor": False},
                                 "generation": {"max_new_tokens": 3, "no_structure_ablation": False}})
    res = evaluate_dataset(cfg, dataset, tmp_path / "eval", checkpoint=trained)
    assert list(res["systems"]) == ["model", "model (no homologs)", "prior", "nearest homolog", "top-k vote"]
    assert res["meta"]["retrieval"]["index"].startswith(f"{dataset}/index")
    logs = {p.name: p.read_text().splitlines()[0] for p in (tmp_path / "eval" / "predictions").iterdir()}
    assert '"retrieval"' in logs["model.jsonl"] and '"retrieval"' not in logs["model_no_homologs.jsonl"]
    plain = evaluate_dataset(cfg, dataset, tmp_path / "plain", checkpoint=trained, retrieval=False)
    assert "model (no homologs)" not in plain["systems"] and "retrieval" not in plain["meta"]


def test_index_build_from_a_source_extends_an_index(index, tmp_path) -> None:
    from sepit.cli import main
    from sepit.data.build import default_data_dir

    out = tmp_path / "big"
    src = default_data_dir() / "proteins.tsv.xz"
    assert main(["index", "build", str(src), "--include", str(index.path), "--max-proteins", "20",
                 "-o", str(out)]) == 0
    big = RetrievalIndex.load(out)
    assert len(big) == 23 and big.facts("LYZ") == index.facts("LYZ")  # the included index's proteins come first
    assert sum(bool(big.facts(p[1:])) for p in (out / "proteins.fasta").read_text().split()[::2]) >= 20
    assert main(["index", "build", "-o", str(tmp_path / "none")]) == 1  # nothing to index: a one-line error
