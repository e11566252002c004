"""MoE upcycling: experts equal the dense FFN, logits equal at init, activated parameters, aux loss, groups."""

from __future__ import annotations

import copy

import pytest
import torch

from sepit.model import (
    GROUPS,
    PROTEIN_TOKEN,
    MoEFeedForward,
    Protein,
    build_model,
    parameter_counts,
    tiny,
    upcycle_to_moe,
)
from sepit.model.moe import decoder_layers, moe_layers, upcycle_mlp


def _batch(model):
    convs = [[{"role": "user", "content": f"{PROTEIN_TOKEN} What is it?"},
              {"role": "assistant", "content": "A kinase."}],
             [{"role": "user", "content": f"Compare {PROTEIN_TOKEN} and {PROTEIN_TOKEN}, in a few words."},
              {"role": "assistant", "content": "Both bind ATP."}]]
    prots = [[Protein("MKTAYIAKQR", torch.randn(10, 3).numpy() * 4)], ["MKV", "GAVLIPF"]]
    return model.processor(convs, prots)


@pytest.fixture()
def dense():
    return build_model(tiny()).eval()


def test_upcycled_experts_equal_the_dense_ffn(dense) -> None:
    snapshot = copy.deepcopy(dense.llm.state_dict())
    llm = upcycle_to_moe(dense.llm, num_experts=4)
    assert not moe_layers(dense.llm), "copy=True must leave the dense model untouched"
    assert dense.llm.state_dict().keys() == snapshot.keys()
    assert all(torch.equal(v, snapshot[k]) for k, v in dense.llm.state_dict().items())
    for dense_layer, moe_layer in zip(decoder_layers(dense.llm), decoder_layers(llm)):
        moe = moe_layer.mlp
        assert isinstance(moe, MoEFeedForward) and len(moe.experts) == 4
        assert moe.router.in_features == dense.llm.config.hidden_size and moe.router.out_features == 4
        assert moe.router.bias is None
        for expert in moe.experts:
            for (n1, p1), (n2, p2) in zip(expert.named_parameters(), dense_layer.mlp.named_parameters()):
                assert n1 == n2 and torch.equal(p1, p2) and p1.data_ptr() != p2.data_ptr()
    with pytest.raises(ValueError, match="already a mixture"):
        upcycle_to_moe(llm)


def test_upcycled_logits_equal_dense_at_init(dense) -> None:
    batch = _batch(dense)
    with torch.no_grad():
        before = dense(batch, return_logits=True)
        full_before = dense.llm(inputs_embeds=dense.embed_inputs(batch), attention_mask=batch["attention_mask"]).logits
        dense.upcycle()
        after = dense(batch, return_logits=True)
        full_after = dense.llm(inputs_embeds=dense.embed_inputs(batch), attention_mask=batch["attention_mask"]).logits
    assert dense.is_moe and dense.config.moe.enabled
    torch.testing.assert_close(after.logits, before.logits, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(full_after, full_before, atol=1e-6, rtol=1e-6)
    # the routers do spread tokens over several experts, so the equality is not a single-expert accident
    counts = torch.stack([m.expert_counts() for m in moe_layers(dense.llm)]).sum(0)
    assert (counts > 0).sum() >= 2


def test_aux_loss_is_reported_and_weighted(dense) -> None:
    dense.upcycle()
    batch = _batch(dense)
    out = dense(batch)
    assert out.aux_loss is not None and out.aux_loss.ndim == 0
    torch.testing.assert_close(out.loss, out.lm_loss + 0.01 * out.aux_loss)
    # Switch-style value: per layer E * sum_e f_e * P_e over the real (non-padding) tokens
    real = int(batch["attention_mask"].sum())
    mask = batch["attention_mask"].bool()
    layers = moe_layers(dense.llm)
    for m in layers:
        assert int(m.expert_counts(mask).sum()) == real < m.last_routing.choice.numel()  # padding left out
    torch.testing.assert_close(out.aux_loss, sum(m.aux_loss(mask) for m in layers))
    assert 0.9 * len(layers) <= float(out.aux_loss.detach()) <= 4.0 * len(layers)  # ≥ ~1 per layer, ≤ E per layer
    out.loss.backward()
    routers = dense.param_groups()["router"]
    assert routers and all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in routers)


def test_aux_loss_formula() -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 8))
    moe = upcycle_mlp(mlp, hidden_size=8, num_experts=4)
    x = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    y = moe(x)
    torch.testing.assert_close(y, mlp(x), atol=1e-6, rtol=1e-6)  # no token dropped, gate = 1
    flat = x.reshape(-1, 8)[mask.reshape(-1)]
    probs = torch.softmax(moe.router(flat), -1)
    frac = torch.bincount(probs.argmax(-1), minlength=4).float() / flat.shape[0]
    torch.testing.assert_close(moe.aux_loss(mask), 4 * (frac * probs.mean(0)).sum())
    assert int(moe.expert_counts(mask).sum()) == 8 and int(moe.expert_counts().sum()) == 10
    with pytest.raises(ValueError, match=r"token mask of shape \(2, 4\) does not fit .* of shape \(2, 5\)"):
        moe.aux_loss(mask[:, :4])
    with pytest.raises(ValueError, match=r"\(5, 2\)"):
        moe.expert_counts(mask.T)


def test_routing_uses_the_chosen_expert() -> None:
    torch.manual_seed(0)
    mlp = torch.nn.Linear(4, 4)
    moe = upcycle_mlp(mlp, hidden_size=4, num_experts=2)
    with torch.no_grad():
        moe.experts[1].weight.mul_(2.0)
        moe.experts[1].bias.mul_(2.0)
    x = torch.randn(10, 4)
    choice = moe.router(x).argmax(-1)
    y = moe(x)
    expected = torch.where((choice == 1)[:, None], 2 * mlp(x), mlp(x))
    torch.testing.assert_close(y, expected, atol=1e-6, rtol=1e-6)


def test_activated_parameters_per_token_equal_dense(dense) -> None:
    before = parameter_counts(dense)
    dense.upcycle()
    after = parameter_counts(dense)
    routers = after["groups"]["router"]
    hidden, layers = dense.llm.config.hidden_size, dense.llm.config.num_hidden_layers
    assert routers == hidden * 4 * layers
    assert after["activated_per_token_without_router"] == before["llm_total"]
    assert after["activated_per_token"] == before["llm_total"] + routers
    ffn = sum(p.numel() for p in decoder_layers(dense.llm)[0].mlp.experts[0].parameters()) * layers
    assert after["groups"]["experts"] == 4 * ffn
    assert after["llm_total"] == before["llm_total"] + 3 * ffn + routers


@pytest.mark.parametrize("moe", [False, True])
def test_every_parameter_in_exactly_one_group(moe) -> None:
    m = build_model(tiny())
    if moe:
        m.upcycle()
    groups = m.param_groups()
    assert tuple(groups) == GROUPS
    names = [n for g in groups.values() for n, _ in g]
    assert len(names) == len(set(names))
    assert sorted(names) == sorted(n for n, _ in m.named_parameters())
    ids = [id(p) for g in groups.values() for _, p in g]
    assert len(ids) == len(set(ids)) == len(list(m.parameters()))
    for g in ("plm", "structure", "heads", "projector", "llm"):
        assert groups[g], g
    assert bool(groups["experts"]) == moe and bool(groups["router"]) == moe
    assert all(".experts." in n for n, _ in groups["experts"]) and all(".router." in n for n, _ in groups["router"])


def test_activation_checkpointing_gives_the_same_gradients(dense) -> None:
    """MoE routing + aux-loss masking recompute identically under activation checkpointing (ESM and LLM)."""
    dense.upcycle()
    dense.train()
    batch = _batch(dense)
    out = dense(batch)
    out.loss.backward()
    ref = {n: p.grad.clone() for n, p in dense.named_parameters() if p.grad is not None}
    dense.zero_grad(set_to_none=True)
    dense.llm.activation_checkpointing_enable()
    dense.encoder.esm.activation_checkpointing_enable()
    out2 = dense(batch)
    out2.loss.backward()
    got = {n: p.grad for n, p in dense.named_parameters() if p.grad is not None}
    assert got.keys() == ref.keys() and any(".router." in n for n in got)
    torch.testing.assert_close(out2.loss, out.loss)
    for n, grad in ref.items():
        torch.testing.assert_close(got[n], grad, atol=1e-6, rtol=1e-5)
