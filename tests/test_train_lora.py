"""LoRA on the LLM (``lora:`` section of a stage): config checks, what trains, merged checkpoints that load without
peft and give the trained model's outputs, exact resume, coexistence with stage-2 MoE upcycling."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import torch
from test_train import cfg_for, make_items

from sepit.config import from_dict
from sepit.errors import CheckpointError, ConfigError, SepitError
from sepit.model import build_model, load_model, tiny
from sepit.train.config import LoraSection, TrainConfig
from sepit.train.loop import train
from sepit.train.stages import ChatRunner

needs_peft = pytest.mark.skipif(importlib.util.find_spec("peft") is None, reason="peft is not installed")

LORA = LoraSection(rank=4, alpha=8.0)
LR = {"projector": 1e-3, "llm": 1e-2}


def test_lora_section_parses_and_checks_its_keys() -> None:
    base = {"stage": 1, "out_dir": "x", "lr": {"projector": 1e-3, "llm": 1e-4}}
    cfg = from_dict(TrainConfig, base)
    assert cfg.lora.rank == 0 and cfg.trainable() == cfg.lr  # off by default: full fine-tuning
    cfg = from_dict(TrainConfig, {**base, "lora": {"rank": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}})
    assert cfg.lora == LoraSection(rank=8, alpha=16.0, dropout=0.0, targets=["q_proj", "v_proj"])
    assert cfg.trainable() == {"projector": 1e-3, "lora": 1e-4}  # the adapters take the llm rate
    assert from_dict(TrainConfig, base, ["lora.rank=4"]).lora.rank == 4
    with pytest.raises(ConfigError, match=r"unknown key 'lora.rnak'.*'rank'"):
        from_dict(TrainConfig, {**base, "lora": {"rnak": 4}})
    for bad, msg in (({"rank": -1}, "rank must be >= 0"), ({"rank": 4, "dropout": 1.0}, "dropout"),
                     ({"rank": 4, "alpha": 0}, "alpha"), ({"rank": 4, "targets": []}, "targets is empty")):
        with pytest.raises(ConfigError, match=msg):
            from_dict(TrainConfig, {**base, "lora": bad})
    with pytest.raises(ConfigError, match="no llm rate"):
        from_dict(TrainConfig, {**base, "lr": {"projector": 1e-3}, "lora": {"rank": 4}})


def test_lora_without_peft_is_a_one_line_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft → ImportError
    with pytest.raises(SepitError, match=r"needs peft.*pip install 'sepit\[lora\]'") as e:
        train(cfg_for(1, tmp_path, lr=LR, lora=LORA), items=make_items(), model=build_model(tiny()), dry_run=True)
    assert "\n" not in str(e.value)


@needs_peft
def test_lora_with_unknown_targets_is_an_error(tmp_path) -> None:
    with pytest.raises(SepitError, match="lora: "):
        train(cfg_for(1, tmp_path, lr=LR, lora=LoraSection(rank=4, targets=["nope_proj"])), items=make_items(),
              model=build_model(tiny()), dry_run=True)


@needs_peft
def test_stage1_lora_trains_adapters_and_projector_and_saves_a_plain_merged_model(tmp_path) -> None:
    model = build_model(tiny())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = train(cfg_for(1, tmp_path / "run", lr=LR, lora=LORA), items=make_items(), model=model)
    assert res.steps == 4 and all(torch.isfinite(torch.tensor(res.losses)))

    groups = model.param_groups()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for g in ("lora", "projector") for n, _ in groups[g]}
    assert len(groups["lora"]) == 2 * 4 * model.llm.config.num_hidden_layers  # A and B on q, k, v, o per layer
    for n, p in model.named_parameters():  # base weights frozen and unchanged, the projector moved
        if ".lora_" not in n:
            assert torch.equal(p.detach(), before[n.replace(".base_layer.", ".")]) == (n not in trainable), n
    assert any(".lora_B." in n and p.abs().sum() > 0 for n, p in groups["lora"])  # B started at zero

    loaded = load_model(res.final_dir)  # a plain sepit model: no peft names, no adapters
    names = [n for n, _ in loaded.named_parameters()]
    assert not any("lora_" in n or "base_layer" in n for n in names) and not loaded.param_groups()["lora"]
    q = model.llm.model.layers[0].self_attn.q_proj
    want = q.base_layer.weight + LORA.alpha / LORA.rank * q.lora_B["default"].weight @ q.lora_A["default"].weight
    torch.testing.assert_close(loaded.llm.model.layers[0].self_attn.q_proj.weight, want.detach())

    model.eval()
    loaded.eval()
    batch = model.processor([list(i.messages) for i in make_items(3)], [list(i.proteins) for i in make_items(3)])
    with torch.no_grad():
        a, b = model(batch, return_logits=True), loaded(batch, return_logits=True)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-4)
    assert (tmp_path / "run" / "checkpoints" / "step-0000004" / "lora.safetensors").is_file()
    assert not (res.final_dir / "lora.safetensors").exists()


@needs_peft
def test_lora_resume_matches_uninterrupted_run(tmp_path, monkeypatch) -> None:
    items = make_items()

    def cfg(out):
        return cfg_for(1, out, max_steps=6, lr=LR, lora=LORA)

    full = train(cfg(tmp_path / "a"), items=items, model=build_model(tiny()))
    real = ChatRunner.collate

    def dying(self, batch_items, step):
        if step == 4:  # killed during step 5, after the checkpoint of step 4
            raise KeyboardInterrupt
        return real(self, batch_items, step)

    monkeypatch.setattr(ChatRunner, "collate", dying)
    with pytest.raises(KeyboardInterrupt):
        train(cfg(tmp_path / "b"), items=items, model=build_model(tiny()))
    monkeypatch.setattr(ChatRunner, "collate", real)
    with pytest.raises(CheckpointError, match="trained with LoRA"):
        train(cfg_for(1, tmp_path / "b", max_steps=6, lr=LR), items=items, model=build_model(tiny()), resume=True)
    resumed = train(cfg(tmp_path / "b"), items=items, model=build_model(tiny()), resume=True)
    assert resumed.losses == pytest.approx(full.losses, rel=1e-5, abs=1e-6)


@needs_peft
def test_stage2_lora_coexists_with_moe_upcycling(tmp_path) -> None:
    model = build_model(tiny())
    lr = {"projector": 1e-3, "llm": 1e-3, "experts": 1e-3, "router": 1e-3}
    res = train(cfg_for(2, tmp_path / "run", lr=lr, lora=LORA), items=make_items(), model=model)
    assert model.is_moe and all(torch.isfinite(torch.tensor(res.losses)))
    groups = model.param_groups()
    trained = {g for g, ps in groups.items() if ps and all(p.requires_grad for _, p in ps)}
    assert trained == {"projector", "lora", "experts", "router"}
    assert not any(p.requires_grad for _, p in groups["llm"])
    assert not any(".experts." in n for n, _ in groups["lora"])  # attention only: the experts stay plain copies
    loaded = load_model(res.final_dir)
    assert loaded.is_moe and not loaded.param_groups()["lora"]
