"""The Python API (`sepit.load`, ProteinQA), protein inputs, `sepit annotate` and `sepit ask`, with a fitted tiny
model (tests/_sepit_qa.py)."""

from __future__ import annotations

import gzip
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from _sepit_qa import ANSWER, CRAMBIN, QUESTION, SEQUENCE, YES_QUESTION

import sepit
import sepit.api
from sepit.annotate import Question, annotate_files, done_ids, load_questions
from sepit.api import DefaultModelMissing, ProteinQA
from sepit.cli import main
from sepit.data.readers import SkipLog, read_fasta
from sepit.data.records import ProteinEntry
from sepit.errors import ConfigError, GenerationStopped, InputError, UploadTooLarge
from sepit.proteins import (
    Protein,
    as_protein,
    clean_sequence,
    conversation,
    parse_fasta_text,
    protein_from,
    protein_from_upload,
    read_fasta_file,
    read_proteins,
)


@pytest.fixture(scope="module")
def model_dir(fitted_model_dir) -> Path:
    return fitted_model_dir  # the session's fitted tiny model (conftest.py)


@pytest.fixture(scope="module")
def qa(model_dir) -> ProteinQA:
    return sepit.load(model_dir)


def _two_chain_pdb(path: Path) -> Path:
    """Crambin written as PDB twice, as chains A and B (B shifted), from the real file."""
    import gemmi

    st = gemmi.read_structure(str(CRAMBIN))
    st.remove_ligands_and_waters()
    model = st[0]
    b = model.add_chain(model["A"], pos=-1)
    b.name = "B"
    for res in model["B"]:
        for atom in res:
            atom.pos = gemmi.Position(atom.pos.x + 30, atom.pos.y, atom.pos.z)
    st.setup_entities()
    path.write_text(st.make_pdb_string())
    return path


# ---- proteins from user input -----------------------------------------------------------------------------------

def test_sequence_fasta_and_record_inputs() -> None:
    assert protein_from(" mkta yiak\n*").sequence == "MKTAYIAK"
    rec = protein_from(">sp|P1|X some protein\nMKTA\nYIAK\n")
    assert (rec.id, rec.sequence, rec.has_structure) == ("P1", "MKTAYIAK", False)  # UniProt header → accession
    p = Protein("MKT", id="x")
    assert protein_from(p) is p
    entry = ProteinEntry(accession="P9", sequence="mkt a")
    assert (protein_from(entry).id, protein_from(entry).sequence) == ("P9", "MKTA")


def test_old_names_and_call_order() -> None:
    """``sepit.api`` keeps the names that moved to sepit.proteins / sepit.errors; the old positional
    ``Protein(id, sequence)`` is a clear TypeError rather than a protein with a wrong sequence."""
    assert (sepit.api.Protein, sepit.api.protein_from, sepit.api.conversation, sepit.api.GenerationStopped) == (
        Protein, protein_from, conversation, GenerationStopped)
    with pytest.raises(TypeError, match="id="):
        Protein("x", "MKT")


def test_one_sequence_cleaner_with_two_alphabets() -> None:
    # user input: the 20 standard letters and the ambiguous / rare B, Z, X, U, O; a one-line error otherwise
    assert clean_sequence(" mkB zxuo\n*", strict=True) == "MKBZXUO"
    with pytest.raises(InputError, match=r"my seq: not an amino-acid sequence \(unexpected characters '1J'\)"):
        clean_sequence("MKJ1", strict=True, where="my seq")
    # data files: position numbers dropped, any letter kept, None (skip the record) otherwise
    assert clean_sequence("MKJ 10 aa*") == "MKJAA" and clean_sequence("MK-V") is None and clean_sequence("*") is None


def test_fasta_text_and_fasta_files_share_the_parser(tmp_path) -> None:
    text = ";old comment\n>sp|P1|X_HUMAN some protein\nMKTA\n;inline comment\nyiak\n\n> \nMVL\n"
    assert [(p.id, p.sequence) for p in parse_fasta_text(text)] == [("P1", "MKTAYIAK"), ("record2", "MVL")]
    f = tmp_path / "x.fasta"
    f.write_text(">sp|P1|X_HUMAN\nMKTA\nYIAK\n>b\nMK1J\n>c\nMK-V\n")
    assert [(e.accession, e.sequence) for e in read_fasta(f, SkipLog())] == [("P1", "MKTAYIAK"), ("b", "MKJ")]
    assert [(p.id, p.sequence, p.source) for p in read_fasta_file(f)] == [("P1", "MKTAYIAK", str(f)),
                                                                        ("b", "MKJ", str(f))]
    for bad, message in (("MKT\n>a\nMK", "not FASTA"), (">a\nMK1", "record 'a': not an amino-acid"),
                         (";only a comment\n", "no FASTA records")):
        with pytest.raises(InputError, match=message):
            parse_fasta_text(bad)


def test_as_protein_is_the_one_conversion_for_the_model() -> None:
    coords = np.arange(9, dtype=np.float64).reshape(3, 3)
    coords[0], coords[1] = 0.0, np.nan  # (0, 0, 0) and non-finite rows count as missing
    p = as_protein({"sequence": " mkv ", "coords": coords, "id": "m"})
    assert (p.id, p.sequence, p.coords.dtype, p.coord_mask.tolist()) == ("m", "MKV", np.float32, [False, False, True])
    assert not p.coords[:2].any() and p.has_structure and not p.without_structure().has_structure
    e = as_protein(ProteinEntry(accession="P9", sequence="MKV"))
    assert (e.id, e.sequence, e.coords, e.source) == ("P9", "MKV", None, "")
    with pytest.raises(InputError, match=r"expected \(2, 3\)"):
        as_protein(Protein("MK", np.zeros((3, 3))))


@pytest.mark.parametrize("bad, message", [("MKT1A", "unexpected characters '1'"), ("", "empty"),
                                          ("no/such/file.pdb", "no such file"), (3.5, "cannot read a protein")])
def test_bad_protein_inputs_are_one_line_errors(bad, message) -> None:
    with pytest.raises(InputError) as e:
        protein_from(bad)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_structure_file_gives_sequence_and_ca_trace() -> None:
    p = protein_from(CRAMBIN)
    assert p.id == "1crn:A" and len(p) == 46 and p.sequence.startswith("TTCCPSIVARSNFNVCRLPG")
    assert p.coords.shape == (46, 3) and p.coord_mask.all() and p.has_structure
    # Cα neighbours are ~3.8 Å apart in a real chain
    d = np.linalg.norm(np.diff(p.coords, axis=0), axis=1)
    assert 3.6 < float(np.median(d)) < 4.0


def test_chain_selection(tmp_path) -> None:
    pdb = _two_chain_pdb(tmp_path / "two.pdb")
    assert [p.id for p in read_proteins(pdb)] == ["two:A", "two:B"]
    b = protein_from(pdb, chain="B")
    assert b.id == "two:B" and not np.allclose(b.coords, protein_from(pdb, chain="A").coords)
    with pytest.raises(InputError, match="no protein chain 'C'.*'A', 'B'"):
        protein_from(pdb, chain="C")


def test_folder_and_fasta_file_inputs(tmp_path) -> None:
    (tmp_path / "a.fasta").write_text(">p1\nMKTAYIAK\n>p2\nMVLSPADK\n")
    (tmp_path / "s.cif.gz").write_bytes(CRAMBIN.read_bytes())
    (tmp_path / "notes.txt").write_text("ignored")
    assert [p.id for p in read_proteins(tmp_path)] == ["p1", "p2", "s:A"]
    with pytest.raises(InputError, match="unknown file type"):
        read_proteins(tmp_path / "notes.txt")


def test_upload_is_parsed_in_a_private_folder_not_at_the_requested_path(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    evil = ["../evil.cif.gz", str(tmp_path / "abs.cif.gz")]
    for name in evil:
        [p] = protein_from_upload(CRAMBIN.read_bytes(), name)
        assert len(p) == 46 and p.has_structure and "/" not in p.source
    assert sorted(x.name for x in tmp_path.rglob("*")) == ["sub"]


def test_malformed_and_oversize_uploads() -> None:
    with pytest.raises(InputError) as e:
        protein_from_upload(b"HEADER    garbage\nthis is not a structure\n", "x.pdb")
    assert str(e.value).startswith("x.pdb: ") and "\n" not in str(e.value)
    bomb = gzip.compress(b"A" * 200_000)
    with pytest.raises(UploadTooLarge, match="unpacks to more than 100000 bytes"):
        protein_from_upload(bomb, "b.pdb.gz", max_unpacked_bytes=100_000)
    with pytest.raises(InputError, match="corrupt or truncated gzip"):
        protein_from_upload(b"\x1f\x8b" + b"\x00" * 40, "c.pdb.gz")


def test_conversation_puts_the_protein_in_the_first_user_turn() -> None:
    msgs = conversation("And where?", [{"role": "user", "content": "What?"}, {"role": "assistant", "content": "A"}])
    assert msgs[0]["content"] == "<protein>\nWhat?" and msgs[-1] == {"role": "user", "content": "And where?"}
    with pytest.raises(InputError, match="reserved"):
        conversation("what is <protein>?")


# ---- answering ----------------------------------------------------------------------------------------------

def test_ask_returns_the_fitted_answer(qa) -> None:
    assert qa.ask(SEQUENCE, QUESTION, max_new_tokens=24) == ANSWER


def test_stream_yields_pieces_that_make_the_answer(qa) -> None:
    pieces = list(qa.ask(SEQUENCE, QUESTION, max_new_tokens=24, stream=True))
    assert len(pieces) > 3 and "".join(pieces) == ANSWER


def test_ask_about_a_structure_and_in_a_batch(qa) -> None:
    with_structure = qa.ask(CRAMBIN, QUESTION, max_new_tokens=12)
    assert isinstance(with_structure, str) and with_structure
    batch = qa.ask_many([SEQUENCE, CRAMBIN], [QUESTION, QUESTION], max_new_tokens=12)
    assert batch[0] == ANSWER[: len(batch[0])] and batch[1] == with_structure


def test_yes_no_is_a_probability_that_follows_the_model(qa) -> None:
    p_yes = qa.yes_no(SEQUENCE, YES_QUESTION)
    assert 0.0 <= p_yes <= 1.0 and p_yes > 0.9


def test_should_stop_ends_a_generation(qa) -> None:
    seen: list[str] = []
    with pytest.raises(GenerationStopped):
        qa.generate([protein_from(SEQUENCE)], [conversation(QUESTION)], max_new_tokens=24,
                    on_text=lambda i, t: seen.append(t), should_stop=lambda: len(seen) >= 2)
    assert len(seen) == 2


def test_closing_a_stream_stops_its_thread(qa) -> None:
    it = qa.ask(SEQUENCE, QUESTION, max_new_tokens=24, stream=True)
    next(it)
    it.close()
    for t in threading.enumerate():
        if t.name == "sepit-generate":
            t.join(timeout=10)
            assert not t.is_alive()


class _GreedyOnly:
    """A model whose ``generate`` takes no temperature (as a greedy-only decoder would); the rest is the real one."""

    def __init__(self, model) -> None:
        self._model = model

    def __getattr__(self, name):
        return getattr(self._model, name)

    def generate(self, batch, max_new_tokens=256, callback=None):
        return self._model.generate(batch, max_new_tokens=max_new_tokens, callback=callback)


def test_temperature_samples_or_is_refused_by_a_greedy_model(qa) -> None:
    assert qa.supports_sampling and isinstance(qa.ask(SEQUENCE, QUESTION, max_new_tokens=4, temperature=0.7), str)
    greedy = ProteinQA(_GreedyOnly(qa.model))
    assert not greedy.supports_sampling and greedy.ask(SEQUENCE, QUESTION, max_new_tokens=24) == ANSWER
    with pytest.raises(InputError, match="greedily"):
        greedy.ask(SEQUENCE, QUESTION, temperature=0.7)


def test_load_without_a_default_model_says_how_to_make_one(tmp_path, monkeypatch, model_dir) -> None:
    monkeypatch.setenv("SEPIT_HOME", str(tmp_path))
    with pytest.raises(DefaultModelMissing) as e:
        sepit.load()
    assert "sepit demo" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "default_model").symlink_to(model_dir, target_is_directory=True)
    assert sepit.load().ask(SEQUENCE, QUESTION, max_new_tokens=24) == ANSWER


# ---- annotate -----------------------------------------------------------------------------------------------

def test_standard_question_set_loads() -> None:
    qs = load_questions()
    assert len(qs) >= 12 and len({q.key for q in qs}) == len(qs)
    assert {"function", "go_mf", "location"} <= {q.key for q in qs} and any(q.kind == "yesno" for q in qs)


@pytest.mark.parametrize("text, message", [("questions: []\n", "non-empty list"),
                                           ("questions:\n  - {key: a}\n", "needs 'key' and 'question'"),
                                           ("questions:\n  - {key: a, question: q, kind: maybe}\n", "open or yesno"),
                                           ("questions:\n  - {key: a, question: q}\n  - {key: a, question: r}\n",
                                            "duplicate")])
def test_bad_question_files(tmp_path, text, message) -> None:
    f = tmp_path / "q.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_questions(f)


def test_annotate_files_is_batched_and_resumable(qa, tmp_path) -> None:
    fasta = tmp_path / "in.fasta"
    fasta.write_text(f">p1\n{SEQUENCE}\n>p2\nMVLSPADKTNVKAAW\n>p1\n{SEQUENCE}\n")
    qs = [Question("function", QUESTION), Question("enzyme", YES_QUESTION, "yesno")]
    out = tmp_path / "out.jsonl"
    counts = annotate_files(qa, [fasta, CRAMBIN], out, questions=qs, batch_size=2, max_new_tokens=16)
    assert counts == {"total": 4, "skipped": 0, "written": 4}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p1", "p2", "p1#2", "1crn:A"]
    assert rows[0]["answers"]["function"] == ANSWER and rows[0]["yes_no"]["enzyme"] > 0.9
    assert rows[3]["has_structure"] and not rows[0]["has_structure"]
    # a crash in the middle of the last line: that protein (only) is redone
    text = out.read_text()
    out.write_text(text[: len(text) - 20])
    assert done_ids(out) == {"p1", "p2", "p1#2"}
    counts = annotate_files(qa, [fasta, CRAMBIN], out, questions=qs, batch_size=2, max_new_tokens=16)
    assert counts == {"total": 4, "skipped": 3, "written": 1}
    assert out.read_text() == text


def test_annotate_refuses_a_foreign_output_file(qa, tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text("not json\n")
    with pytest.raises(InputError, match="not an annotation record"):
        annotate_files(qa, [CRAMBIN], out, questions=[Question("f", QUESTION)])


def test_protein_annotate_method(qa) -> None:
    row = qa.annotate(SEQUENCE, [Question("function", QUESTION), Question("enzyme", YES_QUESTION, "yesno")])
    assert row["answers"] == {"function": ANSWER} and set(row["yes_no"]) == {"enzyme"}


# ---- command line -------------------------------------------------------------------------------------------

def test_cli_ask_one_question(model_dir, capsys) -> None:
    assert main(["ask", "--model", str(model_dir), "--sequence", SEQUENCE, QUESTION]) == 0
    assert capsys.readouterr().out.strip() == ANSWER
    assert main(["ask", "--model", str(model_dir), "--structure", str(CRAMBIN), "--chain", "A", "--yes-no",
                 YES_QUESTION]) == 0
    assert 0.0 <= float(capsys.readouterr().out) <= 1.0


def test_cli_chat_keeps_history(model_dir, capsys, monkeypatch) -> None:
    lines = iter([QUESTION, "Tell me more.", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    assert main(["ask", "--model", str(model_dir), "--fasta", str(_fasta(model_dir)), "--record", "p2"]) == 0
    out = capsys.readouterr()
    assert "Chatting about p2 (22 residues" in out.err and out.out.count("sepit> ") == 2 and ANSWER in out.out


def _fasta(model_dir: Path) -> Path:
    f = model_dir.parent / "two.fasta"
    f.write_text(f">p1\nMVLSPADK\n>p2\n{SEQUENCE}\n")
    return f


def test_cli_errors_are_one_line(model_dir, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEPIT_HOME", str(tmp_path))
    assert main(["ask", "--sequence", SEQUENCE, QUESTION]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no default trained model" in err[0]
    assert main(["ask", "--model", str(model_dir), "--structure", str(CRAMBIN), "--chain", "Q", QUESTION]) == 1
    assert "no protein chain 'Q'" in capsys.readouterr().err
    assert main(["ask", "--model", str(model_dir), "--fasta", str(_fasta(model_dir)), "--record", "zz", "x"]) == 1
    assert "no record 'zz'" in capsys.readouterr().err


def test_cli_annotate(model_dir, tmp_path, capsys) -> None:
    qfile = tmp_path / "q.yaml"
    qfile.write_text(f"questions:\n  - {{key: function, question: '{QUESTION}'}}\n")
    out = tmp_path / "a.jsonl"
    argv = ["annotate", "--model", str(model_dir), str(CRAMBIN), "-o", str(out), "--questions", str(qfile)]
    assert main(argv) == 0 and "1 proteins annotated" in capsys.readouterr().out
    assert main(argv) == 0 and "1 already done" in capsys.readouterr().out
    assert list(json.loads(out.read_text())["answers"]) == ["function"]


def test_concurrent_generations_match_sequential_ones(qa) -> None:
    """The server runs generations in threads: shared model state must not leak between them."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(SEQUENCE, QUESTION), (CRAMBIN, QUESTION), ("MVLSPADKTNVKAAW", YES_QUESTION)] * 3
    expected = [qa.ask(p, q, max_new_tokens=16) for p, q in jobs[:3]] * 3
    with ThreadPoolExecutor(max_workers=3) as pool:
        got = list(pool.map(lambda j: qa.ask(j[0], j[1], max_new_tokens=16), jobs))
    assert got == expected and expected[0] == ANSWER


def test_annotate_skips_unreadable_files_inside_folders_only(qa, tmp_path) -> None:
    folder = tmp_path / "structures"
    folder.mkdir()
    (folder / "good.cif.gz").write_bytes(CRAMBIN.read_bytes())
    (folder / "broken.pdb").write_text("not a structure\n")
    qs = [Question("function", QUESTION)]
    counts = annotate_files(qa, [folder], tmp_path / "out.jsonl", questions=qs, max_new_tokens=4)
    assert counts["written"] == 1
    with pytest.raises(InputError, match="broken.pdb"):
        annotate_files(qa, [folder / "broken.pdb"], tmp_path / "out2.jsonl", questions=qs)


def test_choose_picks_the_option_the_model_was_fitted_to(qa) -> None:
    options = ["It binds DNA.", ANSWER, "It is a membrane transporter of sugars.", "It binds."]
    scores = qa.choose(SEQUENCE, QUESTION, options)
    assert len(scores) == 4 and all(s <= 0.0 for s in scores)  # mean log-probabilities per token
    assert max(range(4), key=scores.__getitem__) == 1
    # one option alone gives the same score as within the batch (padding does not leak into the likelihood)
    alone = qa.choose(SEQUENCE, QUESTION, [ANSWER, "It binds DNA."])
    assert alone[0] == pytest.approx(scores[1], abs=1e-4) and alone[1] == pytest.approx(scores[0], abs=1e-4)
    with pytest.raises(InputError, match="at least two"):
        qa.choose(SEQUENCE, QUESTION, [ANSWER])
