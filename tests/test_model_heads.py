"""Stage-0 heads and losses: equivariant denoising, contrastive InfoNCE, masked residues."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sepit.model import Protein, build_model, load_text_encoder, tiny
from sepit.model.heads import ContrastiveHead, DenoisingHead, MaskedResidueHead, masked_mean
from sepit.model.params import param_groups
from sepit.model.structure import GaussianBasis, pair_distances


def _rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q.float()  # rotations and reflections: the head must be equivariant to both (E(3))


@pytest.fixture(scope="module")
def model():
    return build_model(tiny())


@pytest.fixture(scope="module")
def text_encoder():
    return load_text_encoder("tiny")


WEIGHTS = {"contrastive": 1.0, "denoise": 1.0, "mlm": 1.0}


def stage0_batch(model, proteins, captions, text_encoder) -> dict:
    """Protein keys + the captions pooled by the frozen text encoder, as ``Stage0Runner.collate`` makes them."""
    batch = model.processor.stage0_batch(proteins, captions, text_encoder)
    batch["text_features"] = text_encoder(batch.pop("text_input_ids"), batch.pop("text_attention_mask"))
    return batch


def test_model_loads_its_own_text_encoder(model) -> None:
    enc = model.load_text_encoder()
    assert enc.hidden_size == model.heads.contrastive.text_proj.in_features
    assert not any(p.requires_grad for p in enc.parameters()) and not enc.train().training


def test_denoising_head_is_equivariant() -> None:
    torch.manual_seed(0)
    head = DenoisingHead(hidden_size=16, num_kernels=8, num_heads=4)
    basis = GaussianBasis(8)
    hidden = torch.randn(2, 7, 16)
    coords = torch.randn(2, 7, 3) * 4
    mask = torch.tensor([[1, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]], dtype=torch.bool)
    rot, shift = _rotation(1), torch.tensor([3.0, -2.0, 5.0])

    def predict(x):
        return head(hidden, basis(pair_distances(x)), x, mask)

    with torch.no_grad():
        base = predict(coords)
        moved = predict(coords @ rot.T + shift)
    assert base.abs().max() > 1e-3
    torch.testing.assert_close(moved, base @ rot.T, atol=1e-5, rtol=1e-4)
    assert (base[~mask] == 0).all()


def test_contrastive_head() -> None:
    head = ContrastiveHead(protein_dim=8, text_dim=6, dim=512, temperature_init=0.07)
    assert head.protein_proj.out_features == 512 and head.text_proj.out_features == 512
    assert math.isclose(float(head.logit_scale.detach().exp()), 1 / 0.07, rel_tol=1e-5)
    torch.manual_seed(0)
    p, t = torch.randn(4, 8), torch.randn(4, 6)
    loss = head(p, t)
    # the loss is the symmetric cross-entropy of the scaled cosine-similarity matrix with the diagonal as target
    pe = torch.nn.functional.normalize(head.protein_proj(p), dim=-1)
    te = torch.nn.functional.normalize(head.text_proj(t), dim=-1)
    logits = head.logit_scale.exp() * pe @ te.T
    tgt = torch.arange(4)
    ref = 0.5 * (torch.nn.functional.cross_entropy(logits, tgt) + torch.nn.functional.cross_entropy(logits.T, tgt))
    torch.testing.assert_close(loss, ref)
    loss.backward()
    assert head.logit_scale.grad is not None


def test_masked_mean_ignores_padding() -> None:
    x = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(x, torch.tensor([[True, True, False]])).item() == 2.0


def test_mlm_head_uses_the_real_esm_vocabulary(model) -> None:
    assert isinstance(model.heads.mlm, MaskedResidueHead)
    assert model.heads.mlm.decoder.out_features == 33 == len(model.processor.protein_tokenizer)


def test_stage0_losses_with_structure(model, text_encoder) -> None:
    rng = np.random.default_rng(0)
    prots = [Protein("MKTAYIAKQRQISFVKSHF", rng.normal(size=(19, 3)).astype(np.float32) * 5), "MKVLAAGIV",
             Protein("GAVLIPFM", rng.normal(size=(8, 3)).astype(np.float32) * 5)]
    batch = stage0_batch(model, prots, ["a kinase", "a small peptide", "unknown"], text_encoder)
    assert batch["text_features"].shape[0] == 3
    model.zero_grad(set_to_none=True)
    weights = {"contrastive": 0.5, "denoise": 2.0, "mlm": 0.25}
    losses = model.stage0_losses(batch, weights, generator=torch.Generator().manual_seed(0))
    assert set(losses) == {"loss", "contrastive", "denoise", "mlm"}
    for v in losses.values():
        assert v.ndim == 0 and torch.isfinite(v)
    assert losses["denoise"] > 0 and losses["mlm"] > 0 and losses["contrastive"] > 0
    torch.testing.assert_close(losses["loss"], 0.5 * losses["contrastive"] + 2.0 * losses["denoise"]
                               + 0.25 * losses["mlm"])
    losses["loss"].backward()
    groups = param_groups(model)
    for g in ("plm", "structure", "heads"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in groups[g]), g
    for g in ("projector", "llm"):
        assert all(p.grad is None for _, p in groups[g]), g
    assert all(p.grad is None for p in text_encoder.parameters())
    # same generator seed → same corruption → same losses
    again = model.stage0_losses(batch, weights, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(again["loss"], losses["loss"].detach())


def test_stage0_validation_without_grad_scores_the_denoising_too(model, text_encoder) -> None:
    """The stage-0 losses are the same computed with or without autograd (validation runs under no_grad)."""
    prots = [Protein("MKTAYIAKQRQISF", np.random.default_rng(3).normal(size=(14, 3)).astype(np.float32) * 5)]
    batch = stage0_batch(model, prots, ["a kinase"], text_encoder)
    with torch.no_grad():
        scored = model.stage0_losses(batch, WEIGHTS, generator=torch.Generator().manual_seed(4))
    trained = model.stage0_losses(batch, WEIGHTS, generator=torch.Generator().manual_seed(4))
    assert scored["denoise"] > 0
    for k, v in scored.items():
        torch.testing.assert_close(v, trained[k].detach())


def test_stage0_without_structure_has_zero_denoise_loss(model, text_encoder) -> None:
    batch = stage0_batch(model, ["MKTAYIAKQR", "MKV"], ["x", "y"], text_encoder)
    losses = model.stage0_losses(batch, WEIGHTS, generator=torch.Generator().manual_seed(1))
    assert losses["denoise"].item() == 0.0 and losses["mlm"] > 0
    losses["loss"].backward()


def test_mlm_masks_about_the_configured_fraction(model, text_encoder) -> None:
    """The MLM target count follows mask_prob (15%) and at least one residue per protein."""
    seqs = ["A" * 200, "MKV"]
    batch = stage0_batch(model, seqs, ["x", "y"], text_encoder)
    chosen = []
    hook = model.heads.mlm.register_forward_hook(lambda mod, args, out: chosen.append(args[0].shape[0]))
    try:
        model.stage0_losses(batch, WEIGHTS, generator=torch.Generator().manual_seed(2))
    finally:
        hook.remove()
    assert 15 <= chosen[0] <= 50  # ~0.15 × 203 residues (binomial), ≥ 1 for the short one


def test_denoising_head_regresses_unit_variance_noise(text_encoder) -> None:
    """Coordinates get σ·ε; the target is ε itself, so a head that predicts zero scores mean(ε²) ≈ 1, not σ²."""
    model = build_model(tiny())
    with torch.no_grad():
        model.heads.denoise.out.weight.zero_()  # the head now predicts zero everywhere
    rng = np.random.default_rng(5)
    prots = [Protein("".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), 150)),
                     (rng.normal(size=(150, 3)) * 8).astype(np.float32)) for _ in range(2)]
    batch = stage0_batch(model, prots, ["a", "b"], text_encoder)
    seen = []
    hook = model.heads.denoise.register_forward_hook(lambda mod, args, out: seen.append((args[2], args[3])))
    try:
        with torch.no_grad():
            losses = model.stage0_losses(batch, WEIGHTS, generator=torch.Generator().manual_seed(6))
    finally:
        hook.remove()
    noisy, cmask = seen[0]
    sigma = model.config.heads.denoise_sigma
    eps = (noisy - batch["coords"])[cmask] / sigma
    assert eps.shape[0] == 300
    torch.testing.assert_close(losses["denoise"], eps.pow(2).mean(), rtol=1e-4, atol=1e-5)
    assert 0.8 < float(losses["denoise"]) < 1.2  # mean of 900 squared N(0, 1) draws
    assert float(eps.std()) == pytest.approx(1.0, abs=0.1)  # the noise added is σ·ε with σ = 0.2 Å


def test_contrastive_loss_reads_a_clean_encoder_pass(model, text_encoder) -> None:
    """The protein side of InfoNCE is the pooled encoder output of the uncorrupted sequence and clean coordinates;
    the masked, noised pass feeds only the masked-residue and denoising heads."""
    rng = np.random.default_rng(7)
    prots = [Protein("MKTAYIAKQRQISFVKSHFSRQ", (rng.normal(size=(22, 3)) * 5).astype(np.float32)), "MKVLAAGIVG"]
    batch = stage0_batch(model, prots, ["a kinase", "a peptide"], text_encoder)
    losses = model.stage0_losses(batch, WEIGHTS, generator=torch.Generator().manual_seed(8))
    clean = model.encode(batch).last
    expected = model.heads.contrastive(masked_mean(clean, batch["protein_residue_mask"].bool()),
                                       batch["text_features"])
    torch.testing.assert_close(losses["contrastive"], expected)


def test_stage0_losses_need_the_pooled_captions(model, text_encoder) -> None:
    from sepit.errors import InputError

    batch = model.processor.stage0_batch(["MKV"], ["x"], text_encoder)  # caption tokens only
    with pytest.raises(InputError, match="text_features"):
        model.stage0_losses(batch, WEIGHTS)
    with pytest.raises(ValueError, match="mlm"):
        model.stage0_losses(stage0_batch(model, ["MKV"], ["x"], text_encoder), {"contrastive": 1, "denoise": 1})


def test_contrastive_head_without_a_process_group_is_local() -> None:
    """``gather=True`` in one process (no group) is the local loss: one process is its own global batch."""
    head = ContrastiveHead(protein_dim=8, text_dim=6, dim=16)
    p, t = torch.randn(5, 8), torch.randn(5, 6)
    torch.testing.assert_close(head(p, t, gather=True), head(p, t, gather=False))
