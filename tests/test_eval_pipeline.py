"""`evaluate_dataset` over a dataset object that follows the built-dataset contract (records + proteins.jsonl)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from sepit.config import from_dict
from sepit.errors import InputError
from sepit.eval.config import EvalConfig
from sepit.eval.pipeline import evaluate_dataset, read_protein_rows

SEQS = {"P1": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWASRVGDGYQLLPRMLDGSARLS",  # noqa: E501 - real sequences
        "T1": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWSSRVGDGYQLLPRMLDGSARLS",  # noqa: E501 - real sequences
        "T2": "MSTNPKPQRKTKRNTNRRPQDVKFPGGGQIVGGVYLLPRRGPRLGVRATRKTSERSQPRGRRQPIPKARRPEGRTWAQPGYPWPLYGNEGCGWAGWLLSPRGSRPSWGPTDPRRRSRNLGKVIDTLTCGFADLMGYIPLVGAPLGGAARALAHGVRVLEDGVNYATGNLPGCSFSIFLLALLSCLTVPASA"}  # noqa: E501 - real sequences


def rec(pid, task, kind, q, a, split, i=0):
    return {"id": f"{pid}/{task}/{kind}/{i}", "protein_ids": [pid], "task": task, "kind": kind, "split": split,
            "messages": [{"role": "user", "content": f"<protein>\n{q}"}, {"role": "assistant", "content": a}],
            "answer": a}


RECORDS = [
    rec("P1", "go_cc", "open", "In which cellular components is this protein found?", "Cellular components: nucleus.",
        "test"),
    rec("P1", "go_cc", "yesno", "Is this protein found in the nucleus?", "yes", "test", 1),
    rec("P1", "go_cc", "yesno", "Is this protein found in the membrane?", "no", "test", 2),
    rec("T1", "go_cc", "open", "Which cellular structures is this protein part of or located in?",
        "This protein is found in nucleus, cytoplasm.", "train"),
    rec("T2", "go_cc", "open", "In which cellular components is this protein found?",
        "Cellular components: membrane.", "train"),
    rec("T2", "go_cc", "yesno", "Is this protein found in the membrane?", "yes", "train", 1),
]


class FakeDataset:
    """The part of `sepit.data.dataset.InstructionDataset` the evaluation uses."""

    def records(self, split=None, kinds=None, tasks=None):
        from sepit.data.instructions.record import Instruction

        for r in RECORDS:
            if (split is None or r["split"] == split) and (not kinds or r["kind"] in kinds) \
                    and (not tasks or r["task"] in tasks):
                yield Instruction.from_json(r)

    def protein(self, pid):
        return SimpleNamespace(sequence=SEQS[pid], coords=None, coord_mask=None)


def _dataset_dir(tmp_path, with_identity=True):
    d = tmp_path / "ds"
    d.mkdir()
    rows = [{"id": "P1", "split": "test", "has_structure": False,
             **({"max_identity_to_train": 0.42} if with_identity else {})},
            {"id": "T1", "split": "train"}, {"id": "T2", "split": "train"}]
    (d / "proteins.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


CFG = {"metrics": {"tokenizer": "regex", "bertscore_model": "", "meteor": False}}


def test_prior_only_from_dataset(tmp_path):
    cfg = from_dict(EvalConfig, {**CFG, "baselines": {"run": ["prior"]}})
    res = evaluate_dataset(cfg, _dataset_dir(tmp_path), tmp_path / "out", dataset=FakeDataset())
    assert list(res["systems"]) == ["prior"]
    prior = res["systems"]["prior"]
    assert prior["n"] == 3 and list(prior["by_identity"]) == ["30–50%"]   # 0.42 from proteins.jsonl
    assert prior["overall"]["yesno_acc"] == 50.0  # training yes/no is all "yes": right on 1 of 2
    assert (tmp_path / "out" / "report.md").is_file()


def test_no_records_is_a_clear_error(tmp_path):
    cfg = from_dict(EvalConfig, {**CFG, "split": "valid"})
    with pytest.raises(InputError, match="no valid records"):
        evaluate_dataset(cfg, _dataset_dir(tmp_path), tmp_path / "out", dataset=FakeDataset())


def test_bad_protein_rows(tmp_path):
    (tmp_path / "proteins.jsonl").write_text('{"id": "P1"}\nnot json\n')
    with pytest.raises(InputError, match="line 2"):
        read_protein_rows(tmp_path)


@pytest.mark.slow
def test_checkpoint_and_nearest_homolog_with_mmseqs(tmp_path):
    """A saved `tiny` checkpoint + the nearest-homolog baseline with a real MMseqs2 search."""
    from sepit.model import build_model, save_model, tiny

    ckpt = tmp_path / "ckpt"
    save_model(build_model(tiny()), ckpt)
    cfg = from_dict(EvalConfig, {**CFG, "generation": {"max_new_tokens": 3}})
    res = evaluate_dataset(cfg, _dataset_dir(tmp_path, with_identity=False), tmp_path / "out", checkpoint=ckpt,
                           dataset=FakeDataset())
    assert list(res["systems"]) == ["model", "prior", "nearest homolog", "top-k vote"]  # no structure → no ablation
    homolog = res["systems"]["nearest homolog"]
    # P1 differs from T1 at one residue of 225 → identity ≈ 99.6% (filled in from the search)
    assert list(homolog["by_identity"]) == ["≥90%"]
    # T1 is the top hit; its open answer is copied, and the claims nucleus/membrane are checked against it
    assert homolog["stats"] == {"copied": 1, "inferred_from_open_answer": 2}
    assert homolog["overall"]["yesno_acc"] == 100.0
    assert res["meta"]["checkpoint"] == str(ckpt)


# ---- precision ---------------------------------------------------------------------------------------------------

EVAL_OVERRIDES = ["metrics.tokenizer=regex", "metrics.bertscore_model=", "metrics.meteor=false",
                  "generation.max_new_tokens=3", "baselines.run=[prior]"]


def test_cli_precision_bf16_runs_and_is_recorded(tmp_path, monkeypatch):
    """`sepit eval --precision bf16` evaluates the tiny checkpoint with bf16 weights and says so in the report; a
    rerun into the same folder at another precision is refused rather than mixed with the bf16 predictions."""
    import torch

    import sepit.eval.pipeline
    from sepit.cli import main
    from sepit.model import SepitModel, build_model, save_model, tiny

    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    save_model(build_model(tiny()), ckpt)
    monkeypatch.setattr(sepit.eval.pipeline, "open_dataset", lambda path: FakeDataset())
    seen = []
    real_chat = SepitModel.chat

    def chat(self, *args, **kwargs):
        seen.append(self.dtype)
        return real_chat(self, *args, **kwargs)

    monkeypatch.setattr(SepitModel, "chat", chat)
    argv = ["eval", str(ckpt), str(_dataset_dir(tmp_path)), "-o", str(out), "--device", "cpu"]
    assert main([*argv, "--precision", "bf16", *EVAL_OVERRIDES]) == 0
    assert seen and set(seen) == {torch.bfloat16}
    report = json.loads((out / "report.json").read_text())
    assert report["meta"]["precision"] == "bf16" and report["meta"]["weights_dtype"] == "bfloat16"
    assert list(report["systems"]) == ["model", "prior"]
    md = (out / "report.md").read_text()
    assert "- **precision**: bf16" in md and "- **weights_dtype**: bfloat16" in md
    header = json.loads((out / "predictions" / "model.jsonl").read_text().splitlines()[0])["_header"]
    assert header["dtype"] == "bfloat16"
    cfg = from_dict(EvalConfig, {}, EVAL_OVERRIDES)
    with pytest.raises(InputError, match="dtype differ"):  # fp32 (the default) would mix into bf16 predictions
        evaluate_dataset(cfg, tmp_path / "ds", out, checkpoint=ckpt, dataset=FakeDataset())


def test_bad_precision_is_a_one_line_error(tmp_path, capsys):
    from sepit.cli import main
    from sepit.cli.eval import PRECISIONS as CLI_PRECISIONS
    from sepit.errors import ConfigError
    from sepit.model.precision import PRECISIONS

    assert sorted(CLI_PRECISIONS) == sorted(PRECISIONS) and CLI_PRECISIONS[0] == "fp32"
    with pytest.raises(SystemExit) as e:
        main(["eval", "ckpt", "ds", "-o", str(tmp_path / "out"), "--precision", "fp16"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith("sepit eval: error: argument --precision: invalid choice: 'fp16'")
    cfg = from_dict(EvalConfig, CFG)
    # checked before the dataset is opened (this folder does not exist)
    with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16, got 'half'") as e:
        evaluate_dataset(cfg, tmp_path / "missing", tmp_path / "out", precision="half")
    assert "\n" not in str(e.value)
