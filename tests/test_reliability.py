"""Work a user loses, and one-line errors (issue #20): annotate outputs that are not ours, training resume from a
missing or damaged checkpoint, replayed metrics, exact stage-2 resume with the encoder cache, safetensors-only
weights, and empty / misplaced inputs."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil

import pytest
import torch
from test_train import cfg_for, make_items

from sepit.annotate import annotate_files, done_ids
from sepit.cli import main
from sepit.errors import CheckpointError, ConfigError, InputError, SepitError
from sepit.model import build_model, load_model, tiny
from sepit.train.config import TrainConfig
from sepit.train.loop import latest_checkpoint, train
from sepit.train.stages import ChatRunner


@pytest.fixture
def sepit_log(caplog, monkeypatch):
    """caplog that also sees the ``sepit`` logger after the CLI set it not to propagate."""
    monkeypatch.setattr(logging.getLogger("sepit"), "propagate", True)
    with caplog.at_level(logging.DEBUG, logger="sepit"):
        yield caplog


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---- sepit annotate -o ----------------------------------------------------------------------------------------------
RECORD = '{"id": "a", "source": "x.fasta", "length": 3, "has_structure": false, "answers": {"f": "A kinase."}, ' \
         '"yes_no": {}}\n'


@pytest.mark.parametrize("content", [
    b'{"id": "x", "name": "not an annotation"}\n',  # JSON with an id, but no answers
    b"hello, no newline at the end",  # one foreign line without a newline: was cut to nothing
    RECORD.encode() + b"some notes\n",  # a foreign line after a good one
    RECORD.encode() + b"# a foreign last line without newline",
    RECORD.encode() + b'{"id": "b", "other": 1}',  # whole JSON without newline, but not a record
    b"\x89PNG\r\n\x1a\n\x00\x00binary",
])
def test_annotate_never_resumes_from_or_cuts_a_foreign_file(tmp_path, content) -> None:
    out = tmp_path / "out.jsonl"
    out.write_bytes(content)
    with pytest.raises(InputError, match="not an annotation record") as e:
        done_ids(out)
    msg = _one_line(e)
    assert msg.startswith(str(out)) and "choose another -o" in msg
    assert out.read_bytes() == content  # neither cut nor overwritten


def test_annotate_resumes_its_own_output_and_cuts_only_its_partial_line(tmp_path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(RECORD + '{"id": "b", "source": "x.fasta", "len')  # killed mid-line
    assert done_ids(out) == {"a"}
    assert out.read_text() == RECORD
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert done_ids(empty) == set() and done_ids(tmp_path / "new.jsonl") == set()


def test_annotate_output_that_is_a_directory_or_under_a_file(tmp_path) -> None:
    with pytest.raises(InputError, match="is a directory") as e:
        annotate_files(None, [tmp_path / "no-such.fasta"], tmp_path, questions=[])  # -o checked before any work
    assert _one_line(e).startswith(str(tmp_path))
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder") as e:
        done_ids(tmp_path / "f" / "out.jsonl")
    _one_line(e)


# ---- training: resume from missing / damaged checkpoints, metrics, out_dir ------------------------------------------
@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A finished 4-step stage-1 run with checkpoints step-2 and step-4 (copied by each test before it changes it)."""
    out = tmp_path_factory.mktemp("base") / "run"
    train(cfg_for(1, out, max_steps=4, save_every=2, keep_checkpoints=2), items=make_items(),
          model=build_model(tiny()))
    return out


def _copy(base, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(base, out)
    return out


def _resume(out, **kw):
    return train(cfg_for(1, out, **{"max_steps": 4, "save_every": 2, "keep_checkpoints": 2, **kw}),
                 items=make_items(), model=build_model(tiny()), resume=True)


def test_latest_gone_falls_back_to_the_newest_readable_checkpoint(base_run, tmp_path, sepit_log) -> None:
    out = _copy(base_run, tmp_path)
    ckpts = out / "checkpoints"
    shutil.rmtree(ckpts / "step-0000004")
    assert latest_checkpoint(out) == ckpts / "step-0000002"
    assert any("step-0000004" in r.getMessage() and "using step-0000002" in r.getMessage() for r in sepit_log.records)
    (ckpts / "latest").unlink()  # no pointer at all: still the newest readable one, never a fresh start over it
    assert latest_checkpoint(out) == ckpts / "step-0000002"


def test_unreadable_latest_resumes_from_the_one_before_and_keeps_it(base_run, tmp_path, sepit_log) -> None:
    out = _copy(base_run, tmp_path)
    ckpts = out / "checkpoints"
    (ckpts / "step-0000004" / "trainer_state.json").write_text("{cut short")
    res = _resume(out, max_steps=3, save_every=3)  # resumes at step 2, saves step 3
    assert res.steps == 3
    assert any("resumed from" in r.getMessage() and "step-0000002" in r.getMessage() for r in sepit_log.records)
    # rotation (keep 2) counts readable checkpoints before the new one: step-2 stays, the unreadable step-4 is left
    assert sorted(p.name for p in ckpts.glob("step-*")) == ["step-0000002", "step-0000003", "step-0000004"]
    assert latest_checkpoint(out) == ckpts / "step-0000003"
    for p in ckpts.glob("step-*"):
        (p / "trainer_state.json").write_text("{}")
    with pytest.raises(CheckpointError, match="no readable checkpoint") as e:
        _resume(out)
    _one_line(e)


@pytest.mark.parametrize("damage", ["truncated_weights", "flipped_weights", "optimizer"])
def test_damaged_checkpoint_files_are_named_on_resume(base_run, tmp_path, damage) -> None:
    out = _copy(base_run, tmp_path)
    ckpt = out / "checkpoints" / "step-0000004"
    f = ckpt / ("optimizer.safetensors" if damage == "optimizer" else "model/model.safetensors")
    data = f.read_bytes()
    if damage == "truncated_weights":
        f.write_bytes(data[:len(data) // 2])
    else:  # same size, one byte changed deep in the tensors: only the checksum sees it
        f.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])
    with pytest.raises(CheckpointError, match="damaged or changed since it was saved") as e:
        _resume(out, max_steps=6)
    assert _one_line(e).startswith(str(f))


def test_metrics_keep_no_replayed_steps(tmp_path, monkeypatch) -> None:
    real = ChatRunner.collate

    def dying(self, batch_items, step):
        if step == 3:  # killed during step 4, after the checkpoint of step 2: steps 3 (logged) and 4 run again
            raise KeyboardInterrupt
        return real(self, batch_items, step)

    monkeypatch.setattr(ChatRunner, "collate", dying)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(1, tmp_path, max_steps=4, save_every=2), items=make_items(), model=build_model(tiny()))
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    monkeypatch.setattr(ChatRunner, "collate", real)
    train(cfg_for(1, tmp_path, max_steps=4, save_every=2), items=make_items(), model=build_model(tiny()), resume=True)
    assert [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_out_dir_that_is_a_file(tmp_path, repo_root, capsys) -> None:
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    for out in (f, f / "run"):
        with pytest.raises(SepitError, match="not a folder: choose another out_dir") as e:
            train(cfg_for(1, out), items=make_items(), model=build_model(tiny()))
        _one_line(e)
    config = repo_root / "src/sepit/configs/train/stage1_tiny.yaml"
    assert main(["train", str(config), f"out_dir={f}", f"data.dir={tmp_path}"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sepit: error: out_dir") and f.read_text() == "mine"
    with pytest.raises(ValueError, match="out_dir is empty"):
        TrainConfig(stage=1, out_dir="", lr={"llm": 1e-3})


# ---- stage 2 with the encoder cache resumes exactly -----------------------------------------------------------------
def test_cached_features_do_not_depend_on_batch_company() -> None:
    model = build_model(tiny()).eval()
    cfg = cfg_for(2, "unused", cache_encoder=True)
    items = make_items(6)
    keys = [((i.id, i.proteins[0].coords is not None), i.proteins[0]) for i in items]
    together = ChatRunner(cfg, model, torch.device("cpu"))
    got = together._ensure_cached(keys)
    for k, p in keys:
        alone = ChatRunner(cfg, model, torch.device("cpu"))
        assert torch.equal(alone._ensure_cached([(k, p)])[k], got[k]), k
        assert torch.equal(together.cache.get(k), got[k]), k  # what the cache holds is what was returned
    assert len({got[k].shape[0] for k, _ in keys}) > 1  # the proteins differ in length


@pytest.mark.slow
def test_stage2_cached_kill_and_resume_is_bitwise_equal(tmp_path, monkeypatch) -> None:
    """The default-like stage 2 (encoder cache, upcycled experts, structure dropout, warm-up) killed after its
    checkpoint at step 100 and resumed: losses, weights and metrics equal an uninterrupted 200-step run's."""
    items = make_items()
    kw = dict(max_steps=200, save_every=100, batch_size=2, grad_accum=1, cache_encoder=True, upcycle_experts=4,
              structure_dropout=0.15, warmup_ratio=0.03)
    full = train(cfg_for(2, tmp_path / "a", **kw), items=items, model=build_model(tiny()))
    real = ChatRunner.collate

    def dying(self, batch_items, step):
        if step == 130:  # killed during step 131: steps 101-130 are logged, then run again
            raise KeyboardInterrupt
        return real(self, batch_items, step)

    monkeypatch.setattr(ChatRunner, "collate", dying)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(2, tmp_path / "b", **kw), items=items, model=build_model(tiny()))
    monkeypatch.setattr(ChatRunner, "collate", real)
    resumed = train(cfg_for(2, tmp_path / "b", **kw), items=items, model=build_model(tiny()), resume=True)
    assert resumed.losses == full.losses  # bitwise
    a, b = load_model(full.final_dir).state_dict(), load_model(resumed.final_dir).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in resumed.metrics_file.read_text().splitlines()]
    assert steps == list(range(1, 201))


# ---- safetensors only -----------------------------------------------------------------------------------------------
def test_local_model_folders_load_safetensors_only(tmp_path, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM, EsmModel, LlamaForCausalLM

    from sepit.assets.convert import safetensors_only
    from sepit.model._tiny import tiny_esm_config, tiny_esm_tokenizer, tiny_llama_config, tiny_llm_tokenizer
    from sepit.model.config import TinySizes

    sizes = TinySizes()
    plm, llm = tmp_path / "plm", tmp_path / "llm"
    EsmModel(tiny_esm_config(sizes), add_pooling_layer=False).save_pretrained(plm)
    tiny_esm_tokenizer().save_pretrained(plm)
    tok = tiny_llm_tokenizer()
    LlamaForCausalLM(tiny_llama_config(sizes, tok)).save_pretrained(llm)
    tok.save_pretrained(llm)
    (tmp_path / "bin").mkdir()
    assert safetensors_only(plm) == {"use_safetensors": True} and safetensors_only(tmp_path / "bin") == {}

    seen = []
    for cls in (EsmModel, AutoModelForCausalLM):
        real = cls.from_pretrained.__func__

        def spy(klass, path, *args, _real=real, **kwargs):
            seen.append((str(path), kwargs.get("use_safetensors")))
            return _real(klass, path, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    build_model(dataclasses.replace(tiny(), plm=str(plm), llm=str(llm)))
    assert sorted(seen) == [(str(llm.resolve()), True), (str(plm.resolve()), True)]


# ---- one-line errors ------------------------------------------------------------------------------------------------
def test_ask_with_an_empty_sequence(capsys) -> None:
    assert main(["ask", "--sequence", "", "What does it do?"]) == 1  # before any model is loaded
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["sepit: error: --sequence: empty sequence"]


def test_metastudent_data_folder_that_is_a_file(tmp_path) -> None:
    from sepit.data.readers.metastudent import convert_metastudent

    f = tmp_path / "metastudent"
    f.write_text("x")
    with pytest.raises(InputError, match="is a file, expected the metastudent data directory"):
        convert_metastudent(tmp_path / "out.tsv", f)
    with pytest.raises(InputError, match="no such directory"):
        convert_metastudent(tmp_path / "out.tsv", tmp_path / "nothing")


def test_config_error_type_for_an_empty_out_dir(tmp_path) -> None:
    from sepit.config import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("kind: train\nstage: 1\nout_dir: ''\nlr: {llm: 1.0e-3}\n")
    with pytest.raises(ConfigError, match="out_dir is empty"):
        load_config(cfg, TrainConfig)
