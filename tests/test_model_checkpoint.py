"""Save / load: round trip, strictness, option mismatches, corrupt files; shipped configs; `sepit model info`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sepit.cli import main
from sepit.config import load_config
from sepit.errors import CheckpointError
from sepit.model import (
    PROTEIN_TOKEN,
    ModelConfig,
    Protein,
    build_model,
    checkpoint_config,
    load_model,
    load_weights,
    save_model,
    tiny,
    with_moe,
)


def _batch(model):
    convs = [[{"role": "user", "content": f"{PROTEIN_TOKEN} What is it?"},
              {"role": "assistant", "content": "A kinase."}]]
    return model.processor(convs, [[Protein("MKTAYIAKQR", np.random.default_rng(0).normal(size=(10, 3)) * 4)]])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model = build_model(tiny()).eval()
    with torch.no_grad():  # make the weights differ from a fresh build, so loading must really load them
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("ckpt") / "model"
    save_model(model, path)
    return model, path


def test_round_trip(saved) -> None:
    model, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["llm", "model.safetensors", "plm", "sepit_config.json"]
    loaded = load_model(path).eval()
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert loaded.config == model.config
    assert loaded.processor.protein_token_id == model.processor.protein_token_id
    assert len(loaded.processor.llm_tokenizer) == len(model.processor.llm_tokenizer)
    batch = _batch(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).loss, model(batch).loss)
        assert loaded.chat([[{"role": "user", "content": f"{PROTEIN_TOKEN}?"}]], [["MKV"]], max_new_tokens=4) == \
            model.chat([[{"role": "user", "content": f"{PROTEIN_TOKEN}?"}]], [["MKV"]], max_new_tokens=4)
    record = json.loads((path / "sepit_config.json").read_text())
    assert record["config"]["moe"]["enabled"] is False and record["pool"] == 1
    assert record["plm"]["source"] == "tiny" and record["llm"]["protein_tokens"][0] == PROTEIN_TOKEN
    assert record["parameters"]["total"] == sum(p.numel() for p in model.parameters())


def test_moe_round_trip(tmp_path) -> None:
    model = build_model(tiny()).eval()
    model.upcycle()
    save_model(model, tmp_path / "moe")
    assert checkpoint_config(tmp_path / "moe").moe.enabled
    loaded = load_model(tmp_path / "moe")
    assert loaded.is_moe
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_different_options_are_named(saved) -> None:
    _, path = saved
    with pytest.raises(CheckpointError, match=r"different options: moe\.enabled=False \(config asks for True\)"):
        load_model(path, expect=with_moe(tiny(), True))
    other = tiny()
    other.projector.pool = 2
    with pytest.raises(CheckpointError, match=r"projector\.pool=1 \(config asks for 2\)"):
        load_model(path, expect=other)
    runtime = tiny()
    runtime.heads.mask_prob = 0.3  # a run-time setting: allowed, and taken from the caller's config
    assert load_model(path, expect=runtime).config.heads.mask_prob == 0.3


def test_weights_that_do_not_fit_are_refused(saved, tmp_path) -> None:
    import shutil

    _, path = saved
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    record = json.loads((bad / "sepit_config.json").read_text())
    record["config"]["moe"]["enabled"] = True  # config says MoE, weights are dense
    (bad / "sepit_config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="weights do not fit the recorded architecture") as e:
        load_model(bad)
    assert "\n" not in str(e.value)


def test_one_strict_weight_loader(saved, tmp_path) -> None:
    """``load_weights`` (load_model's and the training resume's loader): tied weights are stored once and load into
    both names; a model the file does not fit is a one-line error naming the file; a gathered state dict (what an
    FSDP run passes to save_model) writes the same file."""
    from safetensors import safe_open

    model, path = saved
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        stored = set(f.keys())
    names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    tied = {n for n in names if n not in stored}
    assert tied and len(tied) == len(names) - len({id(p) for p in model.parameters()})  # each tie stored once
    fresh = build_model(tiny())
    load_weights(fresh, path / "model.safetensors")
    a, b = model.state_dict(), fresh.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert fresh.llm.get_input_embeddings().weight is fresh.llm.get_output_embeddings().weight
    save_model(model, tmp_path / "gathered", weights=model.state_dict())
    with safe_open(str(tmp_path / "gathered" / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == stored
    moe = build_model(tiny()).upcycle()
    with pytest.raises(CheckpointError, match="weights do not fit this run's model") as e:
        load_weights(moe, path / "model.safetensors", against="this run's model")
    assert "\n" not in str(e.value) and str(e.value).startswith(str(path / "model.safetensors"))


@pytest.mark.parametrize("damage", ["missing_weights", "corrupt_weights", "corrupt_config", "no_dir", "wrong_format"])
def test_broken_checkpoints_give_one_line_errors(saved, tmp_path, damage) -> None:
    import shutil

    _, path = saved
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    if damage == "missing_weights":
        (bad / "model.safetensors").unlink()
    elif damage == "corrupt_weights":
        (bad / "model.safetensors").write_bytes(b"\x00" * 100)
    elif damage == "corrupt_config":
        (bad / "sepit_config.json").write_text("{not json")
    elif damage == "wrong_format":
        (bad / "sepit_config.json").write_text('{"format": "other"}')
    else:
        bad = tmp_path / "nothing"
    with pytest.raises(CheckpointError) as e:
        load_model(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


def test_save_replaces_atomically(saved, tmp_path) -> None:
    model, _ = saved
    target = tmp_path / "m"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    save_model(model, target)
    assert not (target / "stale.txt").exists() and (target / "model.safetensors").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("name", ["tiny", "default", "paper"])
def test_shipped_configs_load(repo_root, name) -> None:
    cfg = load_config(repo_root / "src" / "sepit" / "configs" / "model" / f"{name}.yaml")
    assert isinstance(cfg, ModelConfig)
    from sepit.model import PRESETS

    assert cfg == PRESETS[name]()  # the YAML files and the preset functions say the same


def test_model_info_command(saved, capsys) -> None:
    assert main(["model", "info", "tiny"]) == 0
    table = capsys.readouterr().out
    assert "| **total** |" in table and "activated per token" in table
    assert main(["model", "info", "tiny", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    model, path = saved
    assert info["dense"]["total"] == sum(p.numel() for p in model.parameters())
    assert info["moe"]["activated_per_token_without_router"] == info["dense"]["llm_total"]
    assert main(["model", "info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dense"]["total"] == info["dense"]["total"]


def test_model_info_paper_scale_without_weights(capsys) -> None:
    """Paper scale is counted on the meta device from the built-in architecture table."""
    from sepit.cli.model import model_info

    info = model_info("paper")
    assert 640e6 < info["dense"]["groups"]["plm"] < 660e6  # ESM-2 650M
    assert 1.0e9 < info["dense"]["groups"]["llm"] < 1.2e9  # TinyLlama-1.1B (+ 3 protein tokens)
    big = model_info("paper", ["llm=meta-llama/Llama-2-7b-chat-hf"])
    assert 6.7e9 < big["dense"]["groups"]["llm"] < 6.8e9
    assert main(["model", "info", "nosuch.yaml"]) == 1
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_weights_checksum_is_recorded_and_checked(saved, tmp_path, damage) -> None:
    import shutil

    from sepit._io import sha256_file

    _, path = saved
    record = json.loads((path / "sepit_config.json").read_text())
    assert record["sha256"] == {"model.safetensors": sha256_file(path / "model.safetensors")}
    bad = tmp_path / "bad"
    shutil.copytree(path, bad)
    f = bad / "model.safetensors"
    data = f.read_bytes()
    # flipped: same size, one byte of a tensor changed (safetensors itself reads it without complaint)
    f.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:] if damage == "flipped" else data[:-1])
    with pytest.raises(CheckpointError, match="damaged or changed since it was saved") as e:
        load_model(bad)
    assert "\n" not in str(e.value) and str(e.value).startswith(str(f))


def test_checkpoints_without_checksums_still_load(saved, tmp_path, caplog, monkeypatch) -> None:
    import logging
    import shutil

    _, path = saved
    old = tmp_path / "old"
    shutil.copytree(path, old)
    record = json.loads((old / "sepit_config.json").read_text())
    del record["sha256"]  # as saved before the checksums were recorded
    (old / "sepit_config.json").write_text(json.dumps(record))
    monkeypatch.setattr(logging.getLogger("sepit"), "propagate", True)
    with caplog.at_level(logging.DEBUG, logger="sepit"):
        assert load_model(old) is not None
    assert any("no checksums recorded" in r.getMessage() for r in caplog.records)
