"""Structure-aware encoder: parity with plain ESM without structure, bias through the 4-D mask, invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sepit.model import Protein, build_model, tiny
from sepit.model.structure import GaussianBasis, StructureModule


def _random_rotation(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q.float()


def _coords(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(size=(n, 3))
    steps = 3.8 * steps / np.linalg.norm(steps, axis=1, keepdims=True)  # a Cα-like random walk (3.8 Å steps)
    return np.cumsum(steps, axis=0).astype(np.float32)


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def model(request):
    cfg = tiny()
    cfg.plm_attn_implementation = request.param
    cfg.structure.num_kernels = 16
    m = build_model(cfg).eval()
    # Scale the structure module up so that its effect is far above float noise in these tests.
    with torch.no_grad():
        m.encoder.structure.bias.fc2.weight.mul_(20.0)
        m.encoder.structure.node.scale = 1.0
    return m


def _batch(model, proteins):
    return model.processor.protein_batch(proteins)


def test_no_structure_equals_plain_esm(model) -> None:
    prots = ["MKTAYIAKQRQISFVKSHFSRQ", "GAVL", "MKVLAAGIVG"]
    b = _batch(model, prots)
    with torch.no_grad():
        ours = model.encode(b)
        plain = model.encoder.esm(b["protein_input_ids"], attention_mask=b["protein_attention_mask"].long(),
                                  output_hidden_states=True)
    real = b["protein_attention_mask"]
    assert ours.kernels is None
    torch.testing.assert_close(ours.penultimate[real], plain.hidden_states[-2][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.last[real], plain.last_hidden_state[real], atol=1e-5, rtol=1e-5)


def test_pair_kernels_only_when_asked_whatever_the_grad_mode(model) -> None:
    """``return_kernels`` alone decides whether the (B, L, L, K) kernels come back; both paths give the same
    features, with or without autograd, and the same gradients."""
    seq = "MKTAYIAKQRQISF"
    b = _batch(model, [Protein(seq, _coords(len(seq), 7)), "MKV"])
    args = (b["protein_input_ids"], b["protein_attention_mask"], b["coords"], b["coord_mask"])
    params = list(model.encoder.structure.parameters())
    for grad in (False, True):
        with torch.set_grad_enabled(grad):
            plain = model.encoder(*args)
            full = model.encoder(*args, return_kernels=True)
        assert plain.kernels is None
        assert full.kernels is not None and full.kernels.shape == (2, len(seq) + 2, len(seq) + 2, 16)
        torch.testing.assert_close(plain.penultimate, full.penultimate, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(plain.last, full.last, atol=1e-5, rtol=1e-5)
    for a, c in zip(torch.autograd.grad(plain.penultimate.square().sum(), params),
                    torch.autograd.grad(full.penultimate.square().sum(), params)):
        torch.testing.assert_close(a, c, atol=1e-4, rtol=1e-4)


def test_structure_changes_output_and_masked_parts_change_nothing(model) -> None:
    seq = "MKTAYIAKQRQISFVKSHFSRQ"
    xyz = _coords(len(seq), 0)
    with torch.no_grad():
        none = model.encode(_batch(model, [seq])).penultimate
        with_s = model.encode(_batch(model, [Protein(seq, xyz)])).penultimate
        assert (with_s - none).abs().max() > 1e-3
        # a protein whose structure is all masked (coords present, mask False) equals no structure at all
        off = model.encode(_batch(model, [Protein(seq, xyz, np.zeros(len(seq), bool))])).penultimate
        torch.testing.assert_close(off, none, atol=1e-5, rtol=1e-5)
        # moving a masked residue's coordinates changes nothing
        mask = np.ones(len(seq), bool)
        mask[5] = False
        moved = xyz.copy()
        moved[5] += 50.0
        a = model.encode(_batch(model, [Protein(seq, xyz, mask)])).penultimate
        b = model.encode(_batch(model, [Protein(seq, moved, mask)])).penultimate
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
        # NaN coordinates count as missing
        nan = xyz.copy()
        nan[5] = np.nan
        c = model.encode(_batch(model, [Protein(seq, nan)])).penultimate
        torch.testing.assert_close(a, c, atol=1e-6, rtol=1e-6)


def test_batch_with_and_without_structure_and_padding(model) -> None:
    """Each protein's real positions are the same alone or in a padded mixed batch (padding = −inf keys)."""
    long_seq, short_seq = "MKTAYIAKQRQISFVKSHFSRQLEERLG", "MKVLAAG"
    p_long = Protein(long_seq, _coords(len(long_seq), 1))
    with torch.no_grad():
        alone_long = model.encode(_batch(model, [p_long])).penultimate[0]
        alone_short = model.encode(_batch(model, [short_seq])).penultimate[0]
        both = model.encode(_batch(model, [short_seq, p_long]))
    n = len(short_seq) + 2
    torch.testing.assert_close(both.penultimate[0, :n], alone_short[:n], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both.penultimate[1], alone_long, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(both.penultimate).all()


def test_rotation_and_translation_invariance(model) -> None:
    seq = "MKTAYIAKQRQISFVKSHFSRQ"
    xyz = torch.from_numpy(_coords(len(seq), 2))
    rot = _random_rotation(3)
    moved = xyz @ rot.T + torch.tensor([10.0, -4.0, 7.5])
    mask = torch.ones(1, len(seq), dtype=torch.bool)
    s = model.encoder.structure
    with torch.no_grad():
        bias_a, node_a, _ = s(xyz[None], mask)
        bias_b, node_b, _ = s(moved[None], mask)
        torch.testing.assert_close(bias_a, bias_b, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(node_a, node_b, atol=1e-4, rtol=1e-4)
        out_a = model.encode(_batch(model, [Protein(seq, xyz.numpy())])).penultimate
        out_b = model.encode(_batch(model, [Protein(seq, moved.numpy())])).penultimate
    torch.testing.assert_close(out_a, out_b, atol=1e-4, rtol=1e-4)


def test_bias_reaches_every_layer_through_the_4d_mask(model) -> None:
    """Every ESM layer receives bias + padding as its attention mask, unchanged by transformers' mask utils."""
    seq = "MKTAYIAKQRQ"
    b = _batch(model, [Protein(seq, _coords(len(seq), 4)), "MKV"])
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs["attention_mask"]),
                                             with_kwargs=True) for layer in model.encoder.esm.encoder.layer]
    try:
        with torch.no_grad():
            model.encode(b)
            bias, _, _ = model.encoder.structure(b["coords"], b["coord_mask"] & b["protein_attention_mask"])
    finally:
        for h in hooks:
            h.remove()
    expected = bias.masked_fill(~b["protein_attention_mask"][:, None, None, :], float("-inf"))
    assert len(seen) == len(model.encoder.esm.encoder.layer)
    for mask in seen:
        assert mask.shape == (2, model.encoder.structure.num_heads, b["coords"].shape[1], b["coords"].shape[1])
        torch.testing.assert_close(mask, expected)


def test_bias_is_added_to_attention_scores_before_softmax() -> None:
    """Layer-0 attention probabilities with bias = softmax(log p_without_bias + bias), checked with eager attention."""
    cfg = tiny()
    cfg.plm_attn_implementation = "eager"
    cfg.structure.node_scale = 0.0  # same layer-0 input with and without structure
    m = build_model(cfg).eval()
    with torch.no_grad():
        m.encoder.structure.bias.fc2.weight.mul_(20.0)
    seq = "MKTAYIAKQRQ"
    b = m.processor.protein_batch([Protein(seq, _coords(len(seq), 5))])
    ids, attn = b["protein_input_ids"], b["protein_attention_mask"]
    esm = m.encoder.esm
    with torch.no_grad():
        bias, _, _ = m.encoder.structure(b["coords"], b["coord_mask"])
        emb = esm.embeddings(input_ids=ids, attention_mask=attn.long())
        p_bias = esm(inputs_embeds=emb, attention_mask=bias, output_attentions=True).attentions[0]
        p_plain = esm(inputs_embeds=emb, attention_mask=torch.zeros_like(bias), output_attentions=True).attentions[0]
    expected = torch.softmax(torch.log(p_plain) + bias, dim=-1)
    torch.testing.assert_close(p_bias, expected, atol=1e-5, rtol=1e-4)
    assert (p_bias - p_plain).abs().max() > 1e-3


def test_sdpa_and_eager_agree_with_structure() -> None:
    seq = "MKTAYIAKQRQISF"
    outs = []
    for impl in ("sdpa", "eager"):
        cfg = tiny()
        cfg.plm_attn_implementation = impl
        m = build_model(cfg).eval()
        with torch.no_grad():
            outs.append(m.encode(m.processor.protein_batch([Protein(seq, _coords(len(seq), 6)), "MK"]))
                        .penultimate)
    torch.testing.assert_close(outs[0][0], outs[1][0], atol=1e-5, rtol=1e-5)


def test_gaussian_basis() -> None:
    g = GaussianBasis(128)
    assert g.means.shape == (128,) and g.stds.shape == (128,)
    assert 0.0 <= float(g.means.detach().min()) and float(g.means.detach().max()) <= 3.0
    assert 0.0 <= float(g.stds.detach().min()) and float(g.stds.detach().max()) <= 3.0
    d = torch.linspace(-25, 30, 40001)
    integral = torch.trapezoid(g(d), d, dim=0)  # each kernel is a normalised pdf
    torch.testing.assert_close(integral, torch.ones(128), atol=1e-3, rtol=1e-3)


def test_structure_module_shapes_and_mask() -> None:
    s = StructureModule(num_heads=4, hidden_size=8, num_kernels=128, bias_hidden=128, node_scale=0.01)
    coords = torch.randn(2, 6, 3) * 5
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 1, 0, 1, 1, 0]], dtype=torch.bool)
    bias, node, kernels = s(coords, mask)
    assert bias.shape == (2, 4, 6, 6) and node.shape == (2, 6, 8) and kernels.shape == (2, 6, 6, 128)
    pair = mask[:, :, None] & mask[:, None, :]
    assert (bias.abs().sum(1)[~pair] == 0).all() and (bias.abs().sum(1)[pair] > 0).all()
    assert (node[~mask] == 0).all() and (node[mask].abs().sum(-1) > 0).all()
    assert math.isclose(s.node.scale, 0.01)


def test_chunked_inference_path_equals_full_structure_module() -> None:
    """bias_and_node (no kernels, only proteins with structure, row chunks) == forward's bias and node."""
    from sepit.model.structure import StructureModule

    torch.manual_seed(0)
    mod = StructureModule(num_heads=4, hidden_size=16, num_kernels=8, bias_hidden=8)
    coords = torch.randn(3, 11, 3) * 5
    mask = torch.rand(3, 11) > 0.3
    mask[1] = False  # a protein without structure in the batch
    bias, node, _ = mod(coords, mask)
    for chunk in (1, 3, 64):
        b2, n2 = mod.bias_and_node(coords, mask, 16, chunk=chunk)
        assert torch.allclose(bias, b2, atol=1e-6) and torch.allclose(node, n2, atol=1e-6)
    assert b2[1].abs().max() == 0 and n2[1].abs().max() == 0
