"""Stage 0 (warm-up) in training: one set of loss weights for training and validation, the validation loss scores
the denoising term, the text encoder runs in collate, the runner's loss goes through the module it is given, old
models with the retired heads weights still load, and contrastive negatives gathered across two gloo processes
make them compute what one process computes with the same global batch. Stage 0's data filter (only proteins with
a structure), the denoising term's logs (structure-less batches leave it out; validation averages it over the
structured residues), and the denoising head over each residue's nearest structured residues."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os

import _distributed
import pytest
import torch
import torch.nn.functional as F
from test_train import cfg_for, make_items
from torch import nn

from sepit.config import ConfigError, from_dict, load_config
from sepit.data.dataset import InstructionDataset
from sepit.demo.run import _structured_captions
from sepit.errors import CheckpointError
from sepit.model import build_model, load_model, save_model, tiny
from sepit.model.heads import ContrastiveHead, DenoisingHead
from sepit.model.structure import GaussianBasis, pair_distances
from sepit.paths import configs_dir
from sepit.proteins import Protein
from sepit.train.config import STAGE0_LOSS_WEIGHTS, DataSection, TrainConfig
from sepit.train.loop import train
from sepit.train.stages import Stage0Objective, Stage0Runner

CPU = torch.device("cpu")
WEIGHTS = {"contrastive": 0.5, "denoise": 3.0, "mlm": 0.25}  # unequal: a term scored with another weight shows


def _runner(tmp_path, weights: dict[str, float], seed: int = 3) -> Stage0Runner:
    cfg = TrainConfig(stage=0, out_dir=str(tmp_path), lr={"heads": 1e-3}, loss_weights=weights, batch_size=8,
                      seed=seed)
    runner = Stage0Runner(cfg, build_model(tiny()), CPU)
    runner.prepare([])
    return runner


def _weighted(parts: dict[str, torch.Tensor], weights: dict[str, float]) -> float:
    return sum(weights[k] * float(parts[k].detach()) for k in ("contrastive", "denoise", "mlm"))


def test_validation_loss_includes_the_denoising_term(tmp_path) -> None:
    """``validation_loss`` runs under no_grad; it equals the weighted sum of the three parts computed with grad on
    (same generator seed), denoising included, with the training config's weights."""
    runner = _runner(tmp_path, WEIGHTS)
    items = make_items(6)  # every other protein has structure
    runner._valid = items  # one validation batch (batch_size 8)
    valid = runner.validation_loss()

    batch = runner.collate(items, step=-1)
    parts = runner.objective(runner.model)(batch, gather=False, generator=torch.Generator().manual_seed(3))
    assert parts["denoise"].requires_grad and float(parts["denoise"].detach()) > 0.1
    assert valid == pytest.approx(_weighted(parts, WEIGHTS), rel=1e-5)
    assert abs(valid - (_weighted(parts, WEIGHTS) - 3.0 * float(parts["denoise"].detach()))) > 0.3


def test_training_and_validation_use_the_train_configs_weights(tmp_path) -> None:
    runner = _runner(tmp_path, WEIGHTS)
    objective = runner.objective(runner.model)
    assert isinstance(objective, Stage0Objective) and objective.model is runner.model
    batch = runner.collate(make_items(4), step=0)
    torch.manual_seed(0)
    loss, logs = runner.loss(objective, batch, denom=2.0, n_micro=2)
    torch.manual_seed(0)
    parts = runner.model.stage0_losses(batch, WEIGHTS)
    assert float(loss.detach()) == pytest.approx(_weighted(parts, WEIGHTS) / 2, rel=1e-6)
    assert logs["denoise"] == pytest.approx(float(parts["denoise"].detach()) / 2, rel=1e-6)
    # the defaults live in the train config: a stage-0 config leaving a weight out gets it from there
    assert TrainConfig(stage=0, out_dir="x", lr={"heads": 1.0}, loss_weights={"mlm": 0.5}).loss_weights == \
        {**STAGE0_LOSS_WEIGHTS, "mlm": 0.5}


def test_runner_loss_runs_the_module_it_is_given(tmp_path) -> None:
    """The loop hands ``loss`` the objective (in DDP with several processes): ``loss`` must run that module."""

    class Fixed(nn.Module):
        def forward(self, batch, *, gather: bool, generator=None):
            self.gather = gather
            return {"loss": torch.tensor(6.0), "contrastive": torch.tensor(1.0), "denoise": torch.tensor(2.0),
                    "mlm": torch.tensor(4.0)}

    runner = _runner(tmp_path, WEIGHTS)
    module = Fixed()
    loss, logs = runner.loss(module, runner.collate(make_items(2), step=0), denom=2.0, n_micro=2)
    assert float(loss) == 3.0 and logs == {"loss": 3.0, "contrastive": 0.5, "denoise": 1.0, "mlm": 2.0}
    assert module.gather is False  # one process: nothing to gather


def test_collate_pools_the_captions_with_the_frozen_text_encoder(tmp_path) -> None:
    runner = _runner(tmp_path, WEIGHTS)
    items = make_items(3)
    batch = runner.collate(items, step=0)
    assert "text_input_ids" not in batch and "text_attention_mask" not in batch
    tokens = runner.text_encoder.tokenize([i.caption for i in items])
    expected = runner.text_encoder(tokens["text_input_ids"], tokens["text_attention_mask"])
    assert batch["text_features"].shape == (3, runner.text_encoder.hidden_size)
    assert not batch["text_features"].requires_grad
    torch.testing.assert_close(batch["text_features"], expected)


def test_unknown_loss_weights_are_config_errors(tmp_path) -> None:
    base = {"kind": "train", "out_dir": str(tmp_path), "lr": {"heads": 1e-3}}
    with pytest.raises(ConfigError, match=r"loss_weights\.contrast is not a loss of stage 0; its losses are "
                                          r"\['contrastive', 'denoise', 'mlm'\]") as e:
        from_dict(TrainConfig, {**base, "stage": 0, "loss_weights": {"contrast": 1.0}})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"loss_weights\.aux is not a loss of stage 0"):
        from_dict(TrainConfig, {**base, "stage": 0, "loss_weights": {"aux": 0.01}})
    with pytest.raises(ConfigError, match=r"loss_weights\.mlm is not a loss of stage 1; its losses are \['aux'\]"):
        from_dict(TrainConfig, {**base, "stage": 1, "lr": {"llm": 1e-5}, "loss_weights": {"mlm": 1.0}})
    with pytest.raises(ConfigError, match=r"loss_weights\.denoise must be a finite number >= 0"):
        from_dict(TrainConfig, {**base, "stage": 0, "loss_weights": {"denoise": -1.0}})
    assert from_dict(TrainConfig, {**base, "stage": 2, "lr": {"router": 1e-5},
                                   "loss_weights": {"aux": 0.01}}).loss_weights == {"aux": 0.01}


def test_unknown_loss_weights_in_a_yaml_file_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"stage0_tiny\.yaml: .*loss_weights\.denoising is not a loss of stage 0"):
        load_config(configs_dir() / "train" / "stage0_tiny.yaml", TrainConfig, ["loss_weights.denoising=1.0"])


def test_models_saved_with_the_retired_heads_weights_still_load(tmp_path, caplog) -> None:
    path = save_model(build_model(tiny()), tmp_path / "old")
    record = json.loads((path / "sepit_config.json").read_text())
    assert "mlm_weight" in record["config"]["heads"]  # still written (as null): the key is accepted, not used
    record["config"]["heads"].update(contrastive_weight=1.0, denoise_weight=1.0, mlm_weight=0.5)  # as old sepit
    (path / "sepit_config.json").write_text(json.dumps(record))
    with caplog.at_level(logging.DEBUG, logger="sepit"):
        model = load_model(path)
    assert [r for r in caplog.records if "retired key(s)" in r.getMessage() and "mlm_weight" in r.getMessage()]
    assert model.config.heads.mlm_weight is None and model.config.heads.denoise_weight is None  # dropped
    record["config"]["heads"]["mlm_weigth"] = 1.0  # any other unknown key is still refused
    (path / "sepit_config.json").write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="mlm_weigth"):
        load_model(path)


# ---- two processes ---------------------------------------------------------------------------------------------

def _gather_worker(rank: int, port: int, out: str) -> None:
    """Each rank scores its own rows of one 5-pair batch (4 on rank 0, 1 on rank 1) with gathered negatives."""
    import torch.distributed as dist

    _distributed.join(rank, port)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    head = ContrastiveHead(protein_dim=8, text_dim=6, dim=16)
    p_all, t_all = torch.randn(5, 8), torch.randn(5, 6)
    rows = slice(0, 4) if rank == 0 else slice(4, 5)
    p, t = p_all[rows].clone().requires_grad_(), t_all[rows].clone().requires_grad_()
    loss = head(p, t, gather=True)
    loss.backward()
    torch.save({"loss": loss.detach(), "p": p.grad, "t": t.grad,
                "params": {n: q.grad for n, q in head.named_parameters()}}, os.path.join(out, f"rank{rank}.pt"))
    _distributed.leave()


@pytest.mark.dist
def test_gathered_negatives_with_unequal_local_batches_match_one_process(tmp_path) -> None:
    """The mean of the ranks' losses and of their parameter gradients (what data-parallel averaging takes) equals
    one process's InfoNCE over all 5 pairs and its gradients; so do the gradients of each rank's own rows."""
    _distributed.spawn(_gather_worker, str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    torch.manual_seed(0)
    head = ContrastiveHead(protein_dim=8, text_dim=6, dim=16)
    p_all, t_all = torch.randn(5, 8).requires_grad_(), torch.randn(5, 6).requires_grad_()
    ref = head(p_all, t_all)
    ref.backward()
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, ref.detach())
    for n, q in head.named_parameters():
        torch.testing.assert_close((ranks[0]["params"][n] + ranks[1]["params"][n]) / 2, q.grad)
    # d(mean of the ranks' losses)/d(rank r's rows) = rank r's gradient / world
    torch.testing.assert_close(torch.cat([ranks[0]["p"], ranks[1]["p"]]) / 2, p_all.grad)
    torch.testing.assert_close(torch.cat([ranks[0]["t"], ranks[1]["t"]]) / 2, t_all.grad)


CONTRASTIVE_ONLY = {"contrastive": 1.0, "denoise": 0.0, "mlm": 0.0}


def _metric(run, key: str) -> list[float]:
    return [json.loads(line)[key] for line in (run / "metrics.jsonl").read_text().splitlines()]


def _train_worker(rank: int, port: int, out: str) -> None:
    _distributed.join(rank, port)
    res = train(cfg_for(0, out, batch_size=2, grad_accum=1, max_steps=3, save_every=100,
                        loss_weights=CONTRASTIVE_ONLY), items=make_items(), model=build_model(tiny()))
    if rank == 0:
        torch.save({"losses": res.losses}, os.path.join(out, "losses.pt"))
    _distributed.leave()


@pytest.mark.dist
def test_two_gloo_processes_match_one_process_in_stage0(tmp_path) -> None:
    """2 processes × batch 2 vs 1 × batch 4 (the same global batches): the same losses and trained weights, which
    needs each process's InfoNCE to see the other's pairs as negatives. The masks and coordinate noise are drawn
    from each process's own RNG, so the split would change the masked-residue and denoising terms: they are
    weighted 0 here (their heads then get zero gradients and stay as they are in both runs)."""
    two = tmp_path / "two"
    _distributed.spawn(_train_worker, str(two))
    one = train(cfg_for(0, tmp_path / "one", batch_size=4, grad_accum=1, max_steps=3, save_every=100,
                        loss_weights=CONTRASTIVE_ONLY), items=make_items(), model=build_model(tiny()))
    two_losses = torch.load(two / "losses.pt")["losses"]
    assert two_losses == pytest.approx(one.losses, rel=1e-4)
    a, b = load_model(two / "final"), load_model(one.final_dir)
    # Adam's step is g / √v: an entry whose gradient is close to 0 turns float noise of the different padding into
    # up to ~1e-5 (weights moved ~2e-3 in these 3 steps; without the gathered negatives they move apart by ~1e-3)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.allclose(p, q, atol=1e-4), n
    assert _metric(two, "grad_norm") == pytest.approx(_metric(one.out_dir, "grad_norm"), rel=1e-4)
    start = build_model(tiny()).heads.contrastive.protein_proj.weight
    assert (a.heads.contrastive.protein_proj.weight - start).abs().max() > 1e-4  # it trained


# ---- only proteins with a structure; what the denoising term logs ------------------------------------------------


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The embedded data's first 40 proteins (none has a structure) + 20 later ones that have one."""
    import lzma
    from dataclasses import replace

    from sepit.data.build import build_dataset, default_config, default_data_dir

    with lzma.open(default_data_dir() / "proteins.tsv.xz", "rt") as f:
        header, rows = f.readline(), f.readlines()
    table = tmp_path_factory.mktemp("src") / "table.tsv"
    table.write_text(header + "".join(rows[:40] + [r for r in rows[40:] if r.split("\t")[3] == "1"][:20]))
    out = tmp_path_factory.mktemp("data") / "ds"
    embedded = default_config()
    build_dataset(replace(embedded, sources=[str(table)]), out)
    return out


def _data_runner(dataset, **data_kw) -> Stage0Runner:
    cfg = TrainConfig(stage=0, out_dir="unused", lr={"heads": 1e-3},
                      data=DataSection(dir=str(dataset), max_protein_len=50, **data_kw))
    return Stage0Runner(cfg, build_model(tiny()), CPU)


def test_require_structure_keeps_exactly_the_records_whose_proteins_have_a_structure(dataset) -> None:
    """Training (streamed through the record index) and validation items alike: the structured records, all of
    them, in order, judged by proteins.jsonl's ``has_structure``; ``max_records`` then counts those."""
    ds = InstructionDataset(dataset)
    # validation from the train split too: the small dataset's valid split may hold no structure at all
    every = _data_runner(dataset, eval_split="train", eval_records=10_000)
    items = every.load_items()
    items = [items[i] for i in range(len(items))]
    want = [i.id for i in items if ds.protein_info(i.protein_ids[0])["has_structure"]]
    assert 0 < len(want) < len(items)

    only = _data_runner(dataset, eval_split="train", eval_records=10_000, require_structure=True)
    got = only.load_items()
    assert [got[i].id for i in range(len(got))] == want
    assert all(got[i].proteins[0].coords is not None for i in range(len(got)))
    assert [i.id for i in only._valid] == want  # the validation items are filtered the same way
    # the demo drops the filter for a dataset with no such caption (the smoke size's proteins have no structure)
    assert _structured_captions(dataset) == len(want)

    capped = _data_runner(dataset, eval_records=0, require_structure=True, max_records=2).load_items()
    assert [capped[i].id for i in range(len(capped))] == want[:2]
    shipped = [load_config(configs_dir() / "train" / f"stage0_{n}.yaml", TrainConfig, ["out_dir=x"])
               for n in ("tiny", "default", "paper")]
    assert all(c.data.require_structure for c in shipped)  # stage 0's data is (protein, structure, caption)
    assert not DataSection().require_structure  # stages 1–2 keep proteins without one


def _bare(items):
    """The same items without structure."""
    return [dataclasses.replace(i, proteins=(Protein(i.proteins[0].sequence),)) for i in items]


def test_logged_denoise_leaves_out_micro_batches_without_structure(tmp_path) -> None:
    """A structure-less micro-batch logs no denoise (its 0 is no score), while its loss stays the weighted sum;
    with gradient accumulation the step's denoise is the structured micro-batches' mean by residues."""
    runner = _runner(tmp_path, WEIGHTS)
    objective = runner.objective(runner.model)
    bare = runner.collate(_bare(make_items(3)), step=0)
    torch.manual_seed(0)
    loss, logs = runner.loss(objective, bare, denom=1.0, n_micro=1)
    torch.manual_seed(0)
    parts = runner.model.stage0_losses(bare, WEIGHTS)
    assert "denoise" not in logs and float(parts["denoise"].detach()) == 0.0
    assert float(loss.detach()) == pytest.approx(_weighted(parts, WEIGHTS), rel=1e-6)
    assert logs["loss"] == pytest.approx(0.5 * logs["contrastive"] + 0.25 * logs["mlm"], rel=1e-5)

    # a step of three micro-batches: two with structure (different numbers of residues), one without
    items = make_items(8)
    micro = [runner.collate(items[0:2], 0), runner.collate(_bare(items[2:5]), 0), runner.collate(items[4:8], 0)]
    runner.normaliser(micro)
    summed, denoise, residues = {}, [], []
    for b in micro:
        torch.manual_seed(1)
        _, logs = runner.loss(objective, b, denom=3.0, n_micro=3)
        for k, v in logs.items():  # as the loop sums a step's micro-batch logs
            summed[k] = summed.get(k, 0.0) + v
        torch.manual_seed(1)
        denoise.append(float(runner.model.stage0_losses(b, WEIGHTS)["denoise"].detach()))
        residues.append(int((b["coord_mask"].bool() & b["protein_residue_mask"].bool()).sum()))
    assert residues[1] == 0 and residues[0] != residues[2] > 0
    assert summed["denoise"] == pytest.approx((denoise[0] * residues[0] + denoise[2] * residues[2])
                                              / (residues[0] + residues[2]), rel=1e-5)


def test_training_without_structure_logs_no_denoise(tmp_path) -> None:
    res = train(cfg_for(0, tmp_path / "run", max_steps=2, loss_weights=WEIGHTS), items=_bare(make_items(8)),
                model=build_model(tiny()))
    lines = [json.loads(line) for line in (res.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and all("denoise" not in r and r["mlm"] > 0 for r in lines)


def test_validation_denoise_is_a_mean_over_the_structured_residues(tmp_path) -> None:
    """Validation batches of 2: structured batches weigh by their structured residues, a batch without structure
    not at all; contrastive and mlm are means over items; the loss is their weighted sum."""
    runner = _runner(tmp_path, WEIGHTS)
    runner.cfg.batch_size = 2
    items = make_items(6)
    runner._valid = items[0:2] + _bare(items[2:4]) + items[4:6]
    parts = runner.validation_parts()

    gen = torch.Generator().manual_seed(runner.cfg.seed)  # one generator for the pass, as validation draws
    want = {"contrastive": 0.0, "mlm": 0.0, "denoise": 0.0}
    residues = []
    with torch.no_grad():
        for s in (0, 2, 4):
            b = runner.collate(runner._valid[s:s + 2], step=-1)
            got = runner.model.stage0_losses(b, WEIGHTS, generator=gen)
            r = int((b["coord_mask"].bool() & b["protein_residue_mask"].bool()).sum())
            residues.append(r)
            want["contrastive"] += float(got["contrastive"]) * 2 / 6
            want["mlm"] += float(got["mlm"]) * 2 / 6
            want["denoise"] += float(got["denoise"]) * r
    assert residues[1] == 0 and residues[0] != residues[2] > 0
    want["denoise"] /= residues[0] + residues[2]
    for k, v in want.items():
        assert parts[k] == pytest.approx(v, rel=1e-5), k
    assert parts["denoise_residues"] == residues[0] + residues[2] and parts["denoise_proteins"] == 2
    assert parts["loss"] == pytest.approx(_weighted({k: torch.tensor(v) for k, v in want.items()}, WEIGHTS),
                                          rel=1e-5)
    assert runner.validation_loss() == pytest.approx(parts["loss"], rel=1e-6)
    assert "denoise" in runner.notes() and "predicting zero scores 1.0" in runner.notes()

    runner._valid = _bare(items)
    none = runner.validation_parts()
    assert none["denoise"] is None and none["loss"] == pytest.approx(
        WEIGHTS["contrastive"] * none["contrastive"] + WEIGHTS["mlm"] * none["mlm"], rel=1e-6)


# ---- the denoising head: each residue's nearest structured residues ---------------------------------------------


def _all_pairs(head: DenoisingHead, hidden, kernels, coords, mask, k: int) -> torch.Tensor:
    """The head's formula written over all L × L pairs, attention masked to each residue's k nearest others."""
    b, n, _ = hidden.shape
    h, hd = head.num_heads, head.head_dim
    q = head.q(hidden).view(b, n, h, hd).transpose(1, 2)
    key = head.k(hidden).view(b, n, h, hd).transpose(1, 2)
    scores = q @ key.transpose(-1, -2) / math.sqrt(hd) + head.pair_bias(kernels).permute(0, 3, 1, 2)
    rel = coords[:, :, None] - coords[:, None]
    dist = rel.norm(dim=-1)
    pair = mask[:, :, None] & mask[:, None] & ~torch.eye(n, dtype=torch.bool)
    rank = dist.masked_fill(~pair, float("inf")).argsort(dim=-1).argsort(dim=-1)  # 0 = nearest
    near = pair & (rank < k)
    attn = torch.softmax(scores.masked_fill(~near[:, None], float("-inf")), dim=-1).nan_to_num(0.0)
    gate = head.pair_gate(kernels).permute(0, 3, 1, 2)
    unit = rel / torch.sqrt((rel * rel).sum(-1, keepdim=True) + 1e-6)
    vec = torch.einsum("bhij,bijc->bhic", attn * gate, unit)
    return head.out(vec.permute(0, 2, 3, 1)).squeeze(-1) * mask.unsqueeze(-1)


@pytest.mark.parametrize("k", [3, 100])
def test_denoising_head_attends_over_the_k_nearest_structured_residues(k) -> None:
    torch.manual_seed(0)
    head, basis = DenoisingHead(hidden_size=16, num_kernels=8, num_heads=4, neighbours=k), GaussianBasis(8)
    hidden, coords = torch.randn(2, 9, 16), torch.randn(2, 9, 3) * 4
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, 6:] = False  # 6 structured residues in the first protein, 9 in the second
    kernels = basis(pair_distances(coords))
    with torch.no_grad():
        got = head(hidden, kernels, coords, mask)
        want = _all_pairs(head, hidden, kernels, coords, mask, k)
    assert got.abs().max() > 1e-3
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_denoising_head_ignores_residues_beyond_the_nearest() -> None:
    torch.manual_seed(1)
    head, basis = DenoisingHead(hidden_size=16, num_kernels=8, num_heads=4, neighbours=3), GaussianBasis(8)
    hidden, coords = torch.randn(1, 10, 16), torch.randn(1, 10, 3) * 4
    mask = torch.ones(1, 10, dtype=torch.bool)
    far = int((coords[0] - coords[0, 0]).norm(dim=-1).argmax())
    moved = coords.clone()
    moved[0, far] += 5.0 * (coords[0, far] - coords[0, 0]) / (coords[0, far] - coords[0, 0]).norm()  # farther still
    with torch.no_grad():
        a = head(hidden, basis(pair_distances(coords)), coords, mask)
        b = head(hidden, basis(pair_distances(moved)), moved, mask)
    torch.testing.assert_close(a[0, 0], b[0, 0])  # residue 0 reads only its 3 nearest
    assert (a[0, far] - b[0, far]).abs().max() > 1e-4


def test_denoising_head_keeps_the_parameters_of_the_all_pairs_head() -> None:
    """Models saved with the head that attended over all pairs load into this one: the same names and shapes."""
    layout = {name: tuple(p.shape) for name, p in DenoisingHead(320, 128).state_dict().items()}
    assert layout == {"q.weight": (320, 320), "q.bias": (320,), "k.weight": (320, 320), "k.bias": (320,),
                      "pair_bias.weight": (8, 128), "pair_bias.bias": (8,), "pair_gate.0.weight": (128, 128),
                      "pair_gate.0.bias": (128,), "pair_gate.2.weight": (8, 128), "pair_gate.2.bias": (8,),
                      "out.weight": (1, 8)}


def _chains(n: int, length: int, gen: torch.Generator) -> torch.Tensor:
    """(n, length, 3) Cα-like chains: steps of 3.8 Å, each turning 60–90° from the last (bond angles 90–120°)."""
    out = torch.zeros(n, length, 3)
    step = F.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    for i in range(1, length):
        r = torch.randn(n, 3, generator=gen)
        perp = F.normalize(r - (r * step).sum(-1, keepdim=True) * step, dim=-1)
        turn = math.pi / 3 + torch.rand(n, 1, generator=gen) * math.pi / 6
        step = torch.cos(turn) * step + torch.sin(turn) * perp
        out[:, i] = out[:, i - 1] + 3.8 * step
    return out


def test_denoising_head_learns_below_predicting_zero_on_chains() -> None:
    """Coordinates + 0.2·ε on Cα-like chains: 60 Adam steps (head + kernel basis) bring the MSE on held-out chains
    well below what predicting zero scores on the same noise (mean ε²)."""
    torch.manual_seed(0)
    head, basis = DenoisingHead(hidden_size=16, num_kernels=32, num_heads=4), GaussianBasis(32)
    opt = torch.optim.Adam([*head.parameters(), *basis.parameters()], lr=1e-2)
    hidden, mask = torch.zeros(4, 48, 16), torch.ones(4, 48, dtype=torch.bool)

    def mse(coords: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn(coords.shape, generator=gen)
        noisy = coords + 0.2 * eps
        return F.mse_loss(head(hidden, basis(pair_distances(noisy)), noisy, mask), eps), eps.pow(2).mean()

    gen = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss, _ = mse(_chains(4, 48, gen), gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        held_out, zero = mse(_chains(4, 48, torch.Generator().manual_seed(99)), torch.Generator().manual_seed(5))
    assert float(held_out) < 0.9 * float(zero)
