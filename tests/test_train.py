"""The training loop on the tiny model: every stage runs, checkpoints load, resume is exact, NaN stops cleanly,
and two gloo processes match one process with the same global batch."""

from __future__ import annotations

import os

import _distributed
import numpy as np
import pytest
import torch

from sepit.errors import SepitError
from sepit.model import Protein, build_model, load_model, tiny
from sepit.train.batching import Item
from sepit.train.config import TrainConfig
from sepit.train.loop import TrainingError, latest_checkpoint, train
from sepit.train.stages import ChatRunner

AA = list("ACDEFGHIKLMNPQRSTVWY")


def make_items(n: int = 12, seed: int = 0, kinds=("open",), lengths=lambda i: 8 + i % 5) -> list[Item]:
    """``n`` conversations about random proteins of ``lengths(i)`` residues, every other one with Cα coordinates."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        L = lengths(i)
        seq = "".join(rng.choice(AA, L))
        coords = (rng.normal(size=(L, 3)) * 4).astype("float32") if i % 2 else None
        prot = Protein(seq, coords, None if coords is None else np.ones(L, bool))
        answer = "It is a kinase." if i % 3 else "It transports ions."
        items.append(Item(f"p{i}", (prot,), messages=({"role": "user", "content": "<protein>\nWhat does it do?"},
                                                      {"role": "assistant", "content": answer}),
                          caption=answer, task="function", length=L, protein_ids=(f"p{i}",)))
    return items


STAGES = {
    0: dict(stage=0, lr={"plm": 1e-3, "structure": 1e-3, "heads": 1e-3}),
    1: dict(stage=1, lr={"plm": 1e-4, "structure": 1e-4, "projector": 1e-3, "llm": 1e-3}),
    2: dict(stage=2, lr={"projector": 1e-3, "llm": 1e-3, "experts": 1e-3, "router": 1e-3}, upcycle_experts=4),
}
EXPECTED_TRAINABLE = {0: {"plm", "structure", "heads"}, 1: {"plm", "structure", "projector", "llm"},
                      2: {"projector", "llm", "experts", "router"}}


def cfg_for(stage: int, out, **kw) -> TrainConfig:
    base = dict(out_dir=str(out), batch_size=2, grad_accum=2, max_steps=4, save_every=2, structure_dropout=0.0,
                warmup_ratio=0.0)
    base.update(STAGES[stage])
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("stage", [0, 1, 2])
def test_each_stage_trains_and_saves_a_loadable_model(stage, tmp_path) -> None:
    model = build_model(tiny())
    res = train(cfg_for(stage, tmp_path / "run"), items=make_items(), model=model)
    assert res.steps == 4 and all(np.isfinite(res.losses))
    groups = model.param_groups()
    trainable = {g for g, ps in groups.items() if ps and all(p.requires_grad for _, p in ps)}
    frozen = {g for g, ps in groups.items() if ps and not any(p.requires_grad for _, p in ps)}
    assert trainable == EXPECTED_TRAINABLE[stage]  # the exact trainable set of the stage
    assert trainable | frozen == {g for g, ps in groups.items() if ps}
    loaded = load_model(res.final_dir)
    assert loaded.is_moe == (stage == 2)
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), loaded.named_parameters()):
        assert n1 == n2 and torch.equal(p1.detach().cpu(), p2.detach().cpu())
    assert latest_checkpoint(tmp_path / "run").name == "step-0000004"
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4


def test_loss_falls_when_overfitting_stage1(tmp_path) -> None:
    items = make_items(4)
    res = train(cfg_for(1, tmp_path, max_steps=30, grad_accum=1, batch_size=4, save_every=100,
                        lr={"projector": 1e-2, "llm": 1e-2}), items=items, model=build_model(tiny()))
    assert res.losses[-1] < 0.5 * res.losses[0]


@pytest.mark.parametrize("stage", [1, 2])
def test_resume_matches_uninterrupted_run(stage, tmp_path, monkeypatch) -> None:
    items = make_items()
    full = train(cfg_for(stage, tmp_path / "a", max_steps=6), items=items, model=build_model(tiny()))

    calls = {"n": 0}
    real = ChatRunner.collate

    def dying(self, batch_items, step):
        calls["n"] += 1
        if step == 4:  # killed during step 5, after the checkpoint of step 4
            raise KeyboardInterrupt
        return real(self, batch_items, step)

    monkeypatch.setattr(ChatRunner, "collate", dying)
    with pytest.raises(KeyboardInterrupt):
        train(cfg_for(stage, tmp_path / "b", max_steps=6), items=items, model=build_model(tiny()))
    monkeypatch.setattr(ChatRunner, "collate", real)
    with pytest.raises(SepitError, match="already has checkpoints"):
        train(cfg_for(stage, tmp_path / "b", max_steps=6), items=items, model=build_model(tiny()))
    resumed = train(cfg_for(stage, tmp_path / "b", max_steps=6), items=items, model=build_model(tiny()),
                    resume=True)
    assert resumed.losses == pytest.approx(full.losses, rel=1e-5, abs=1e-6)


def test_nan_loss_stops_and_names_last_checkpoint(tmp_path, monkeypatch) -> None:
    real = ChatRunner.loss
    calls = {"n": 0}

    def nan_at_3(self, model, batch, denom, n_micro):
        loss, parts = real(self, model, batch, denom, n_micro)
        calls["n"] += 1
        if calls["n"] > 4:  # 2 micro-batches per step: steps 1 and 2 are fine, step 3 goes NaN
            loss = loss * float("nan")
        return loss, parts

    monkeypatch.setattr(ChatRunner, "loss", nan_at_3)
    with pytest.raises(TrainingError, match=r"loss is nan at step 3.*Last good checkpoint: .*step-0000002"):
        train(cfg_for(1, tmp_path, max_steps=4), items=make_items(), model=build_model(tiny()))
    assert latest_checkpoint(tmp_path).name == "step-0000002"
    assert load_model(latest_checkpoint(tmp_path) / "model") is not None  # still usable


def test_unknown_group_and_empty_moe_groups_are_errors(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown parameter group"):
        cfg_for(1, tmp_path, lr={"decoder": 1e-3})
    with pytest.raises(SepitError, match="experts"):
        train(cfg_for(1, tmp_path, lr={"experts": 1e-3}), items=make_items(), model=build_model(tiny()))


def test_dry_run_prints_plan(tmp_path) -> None:
    plan = train(cfg_for(1, tmp_path, max_steps=0, epochs=2), items=make_items(), model=build_model(tiny()),
                 dry_run=True)
    assert plan["total_steps"] == 2 * (12 // 4) and plan["tasks"] == {"function": 12}
    assert "trainable" in plan["trainable"] and not (tmp_path / "metrics.jsonl").exists()


def _worker(rank: int, port: int, out: str) -> None:
    _distributed.join(rank, port)
    res = train(cfg_for(1, out, batch_size=2, grad_accum=1, max_steps=3, save_every=100), items=make_items(),
                model=build_model(tiny()))
    if rank == 0:
        torch.save({"losses": res.losses}, os.path.join(out, "losses.pt"))
    _distributed.leave()


@pytest.mark.dist
def test_two_gloo_processes_match_one_process(tmp_path) -> None:
    two = tmp_path / "two"
    _distributed.spawn(_worker, str(two))
    one = train(cfg_for(1, tmp_path / "one", batch_size=4, grad_accum=1, max_steps=3, save_every=100),
                items=make_items(), model=build_model(tiny()))
    two_losses = torch.load(two / "losses.pt")["losses"]
    assert two_losses == pytest.approx(one.losses, rel=1e-4)
    a, b = load_model(two / "final"), load_model(one.final_dir)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(p, q, atol=1e-5), n


def test_stage2_encoder_cache_is_exact(tmp_path) -> None:
    items = make_items()
    kw = dict(max_steps=3, structure_dropout=0.5)
    cached = train(cfg_for(2, tmp_path / "c", cache_encoder=True, **kw), items=items, model=build_model(tiny()))
    plain = train(cfg_for(2, tmp_path / "p", cache_encoder=False, **kw), items=items, model=build_model(tiny()))
    assert cached.losses == pytest.approx(plain.losses, rel=1e-5)
