"""`sepit eval questions`: the user's own yes/no, multiple-choice and open questions, scored into the usual report."""

from __future__ import annotations

import json

import pytest
from _sepit_qa import ANSWER, CRAMBIN, QUESTION, SEQUENCE, YES_QUESTION

from sepit.cli import main
from sepit.errors import InputError
from sepit.eval.questions import read_questions
from sepit.paths import resources_dir

METRICS = ["metrics.tokenizer=regex", "metrics.bertscore_model=", "metrics.meteor=false", "bootstrap=200"]


def _write(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_scores_each_kind(tmp_path, fitted_model_dir, capsys) -> None:
    qs = tmp_path / "qs.jsonl"
    (tmp_path / "crambin.cif.gz").write_bytes(CRAMBIN.read_bytes())
    _write(qs, [
        {"id": "yn", "sequence": SEQUENCE, "question": YES_QUESTION, "answer": "Yes"},
        {"id": "mc", "sequence": SEQUENCE, "question": QUESTION, "options": ["It binds DNA.", ANSWER],
         "answer": ANSWER},
        {"id": "open", "sequence": SEQUENCE, "question": QUESTION, "answer": ANSWER, "task": "function"},
        {"id": "mc-structure", "structure": "crambin.cif.gz", "chain": "A", "question": QUESTION,
         "options": [ANSWER, "It binds DNA."], "answer": "It binds DNA."},
    ])
    out = tmp_path / "report"
    assert main(["eval", "questions", str(qs), str(fitted_model_dir), "-o", str(out), *METRICS]) == 0
    assert "MC acc" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    model = report["systems"]["model"]
    rows = {json.loads(x)["id"]: json.loads(x) for x in (out / "items.jsonl").read_text().splitlines()}
    assert rows["yn"]["prediction"] == "yes" and rows["yn"]["p_yes"] > 0.9 and rows["yn"]["kind"] == "yesno"
    assert rows["mc"]["prediction"] == ANSWER and rows["mc"]["metrics"]["choice_acc"] == 100.0
    assert rows["open"]["prediction"] == ANSWER and rows["open"]["task"] == "function"
    assert rows["mc-structure"]["structure"] == "has structure"
    assert model["overall"]["n_choice"] == 2 and model["overall"]["yesno_acc"] == 100.0
    structure_right = rows["mc-structure"]["prediction"] == "It binds DNA."
    assert model["overall"]["choice_acc"] == pytest.approx(100.0 * (1 + structure_right) / 2)
    assert set(model["intervals"]) >= {"choice_acc", "yesno_acc", "bleu2"}


@pytest.mark.parametrize(("line", "message"), [
    ("not json", "line 1: not JSON"),
    ('{"question": "q", "answer": "a"}', "exactly one of 'sequence' and 'structure'"),
    ('{"sequence": "MKV", "question": "q"}', "'question' and 'answer' are required"),
    ('{"sequence": "MKV", "question": "q", "answer": "c", "options": ["a", "b"]}', "the answer among them"),
    ('{"sequence": "MKV", "question": "q", "answer": "a", "colour": 1}', "unknown key"),
    ('{"sequence": "MK1V", "question": "q", "answer": "a"}', "line 1"),
    ('{"structure": "none.cif", "question": "q", "answer": "a"}', "none.cif not found"),
])
def test_bad_question_files_are_one_line_errors(tmp_path, line, message) -> None:
    f = tmp_path / "q.jsonl"
    f.write_text(line + "\n")
    with pytest.raises(InputError, match=message) as e:
        read_questions(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)


def test_the_shipped_example_file_reads() -> None:
    questions, proteins = read_questions(resources_dir() / "example_questions.jsonl")
    kinds = [q.item.kind for q in questions]
    assert len(proteins) == 10 and kinds.count("yesno") == 20 and kinds.count("choice") == 10
    assert kinds.count("open") == 10
    assert sorted(q.item.reference for q in questions if q.item.kind == "yesno").count("yes") == 10
