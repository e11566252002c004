"""Protein–LLM fusion: processor (markers, labels, padding), scatter with count check, loss, generation, yes/no."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sepit.errors import InputError
from sepit.model import (
    PROTEIN_END,
    PROTEIN_START,
    PROTEIN_TOKEN,
    ModelConfig,
    Protein,
    assemble,
    build_model,
    tiny,
)
from sepit.model._tiny import tiny_esm_tokenizer, tiny_llm_tokenizer
from sepit.model.processor import IGNORE, add_protein_tokens
from sepit.model.projector import gather_residues


def _conv(question: str, answer: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "user", "content": question}]
    if answer is not None:
        msgs.append({"role": "assistant", "content": answer})
    return msgs


@pytest.fixture(scope="module")
def model():
    return build_model(tiny()).eval()


def test_marker_expands_to_residue_count_and_labels_cover_only_assistant_turns(model) -> None:
    proc = model.processor
    tok = proc.llm_tokenizer
    conv = [{"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": f"Compare {PROTEIN_TOKEN} with {PROTEIN_TOKEN}."},
            {"role": "assistant", "content": "They differ."},
            {"role": "user", "content": "Is the first an enzyme?"},
            {"role": "assistant", "content": "yes"}]
    ex = proc.encode_chat(conv, ["MKTAYIAKQR", Protein("GAV", np.zeros((3, 3), np.float32))])
    ids = torch.tensor(ex.input_ids)
    assert int((ids == proc.protein_token_id).sum()) == 13
    starts = [i for i, t in enumerate(ex.input_ids) if t == proc.protein_start_id]
    ends = [i for i, t in enumerate(ex.input_ids) if t == proc.protein_end_id]
    assert [e - s - 1 for s, e in zip(starts, ends)] == [10, 3]  # exactly each protein's residue count, in order
    labelled = [t for t, lab in zip(ex.input_ids, ex.labels) if lab != IGNORE]
    assert all(lab in (IGNORE, t) for t, lab in zip(ex.input_ids, ex.labels))
    assert tok.decode(labelled) == "They differ.<|im_end|>\nyes<|im_end|>\n"
    assert "You answer" not in tok.decode(labelled)


def test_marker_count_must_match_proteins(model) -> None:
    with pytest.raises(InputError, match="1 <protein> marker"):
        model.processor.encode_chat(_conv(f"{PROTEIN_TOKEN} ?", "a"), ["MKV", "MKV"])
    with pytest.raises(InputError, match="markers belong in user"):
        model.processor.encode_chat(_conv("?", f"{PROTEIN_TOKEN}"), [])
    with pytest.raises(InputError, match="must not contain"):
        model.processor.encode_chat(_conv(f"{PROTEIN_START} ?", "a"), [])
    with pytest.raises(InputError, match="coordinates have shape"):
        model.processor.encode_chat(_conv(f"{PROTEIN_TOKEN} ?", "a"), [Protein("MKV", np.zeros((2, 3)))])


def test_pooling_and_cropping_change_the_slot_count() -> None:
    cfg = tiny()
    cfg.projector.pool = 4
    cfg.max_residues = 9
    m = build_model(cfg)
    ex = m.processor.encode_chat(_conv(f"{PROTEIN_TOKEN}", "x"), ["MKTAYIAKQRQISF"])  # 14 residues → 9 → 3 tokens
    assert ex.input_ids.count(m.processor.protein_token_id) == 3
    batch = m.processor([_conv(f"{PROTEIN_TOKEN}", "x")], [["MKTAYIAKQRQISF"]])
    assert batch["protein_residue_mask"].sum() == 9
    # pooled features fill exactly the pooled slots: 3 runs of the 9 real residues, averaged, then projected
    m.eval()
    with torch.no_grad():
        residues = m.encode(batch).penultimate[0][batch["protein_residue_mask"][0].bool()]  # (9, D_plm)
        pooled = torch.stack([residues[i:i + 4].mean(0) for i in (0, 4, 8)])              # (3, D_plm)
        assert [f.shape[0] for f in m.encoder_features(batch)] == [3]
        slots = batch["input_ids"] == m.processor.protein_token_id
        torch.testing.assert_close(m.embed_inputs(batch)[slots], m.projector(pooled))
        assert torch.isfinite(m(batch).loss)


def test_gather_residues_pools_real_residues_only() -> None:
    h = torch.arange(2 * 6, dtype=torch.float32).view(2, 6, 1)
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]], dtype=torch.bool)
    assert gather_residues(h, mask).squeeze(-1).tolist() == [1, 2, 3, 7, 8, 9, 10, 11]
    assert gather_residues(h, mask, pool=2).squeeze(-1).tolist() == [1.5, 3.0, 7.5, 9.5, 11.0]


def test_collate_pads_right_for_training_and_left_for_generation(model) -> None:
    convs = [_conv(f"{PROTEIN_TOKEN} short", "a"), _conv(f"A much longer question about {PROTEIN_TOKEN}?", "b")]
    prots = [["MKV"], ["MKTAYIAKQR"]]
    right = model.processor(convs, prots)
    left = model.processor([c[:1] for c in convs], prots, add_generation_prompt=True)
    pad = model.processor.pad_token_id
    assert right["attention_mask"][0, 0] == 1 and right["attention_mask"][0, -1] == 0
    assert left["attention_mask"][0, 0] == 0 and bool(left["attention_mask"][:, -1].all())
    assert (right["input_ids"][right["attention_mask"] == 0] == pad).all()
    assert (right["labels"][right["attention_mask"] == 0] == IGNORE).all()
    assert (left["labels"] == IGNORE).all()
    assert right["protein_input_ids"].shape == (2, 12)


def test_padding_is_never_content(model) -> None:
    """A sample's loss is the same alone and in a right-padded batch (loss = token-weighted mean)."""
    convs = [_conv(f"{PROTEIN_TOKEN} What is it?", "A kinase."),
             _conv(f"Describe {PROTEIN_TOKEN} and {PROTEIN_TOKEN} in detail, please.", "Two small proteins.")]
    prots = [[Protein("MKTAYIAKQR", np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32) * 4)],
             ["MKV", "GAVLIPF"]]
    with torch.no_grad():
        singles = [model(model.processor([c], [p])) for c, p in zip(convs, prots)]
        both = model(model.processor(convs, prots))
    expected = sum(s.lm_loss * s.num_tokens for s in singles) / sum(s.num_tokens for s in singles)
    assert both.num_tokens == sum(s.num_tokens for s in singles)
    torch.testing.assert_close(both.lm_loss, expected, atol=1e-5, rtol=1e-5)


def test_features_are_scattered_into_the_slots_with_a_count_check(model) -> None:
    batch = model.processor([_conv(f"{PROTEIN_TOKEN} and {PROTEIN_TOKEN}", "x")], [["MKTA", "GAVLI"]])
    with torch.no_grad():
        embeds = model.embed_inputs(batch)
        feats = model.protein_tokens(batch)
    slots = batch["input_ids"][0] == model.processor.protein_token_id
    torch.testing.assert_close(embeds[0, slots], feats)
    text = model.llm.get_input_embeddings()(batch["input_ids"])
    torch.testing.assert_close(embeds[0, ~slots], text[0, ~slots])
    bad = dict(batch)
    bad["input_ids"] = batch["input_ids"].clone()
    bad["input_ids"][0, int(slots.nonzero()[0])] = model.processor.pad_token_id  # one slot fewer
    with pytest.raises(InputError, match="protein token count mismatch: the prompts have 8 <protein> slots but "
                                         "the proteins give 9"):
        model.embed_inputs(bad)


def test_logits_only_where_the_loss_needs_them(model) -> None:
    batch = model.processor([_conv(f"{PROTEIN_TOKEN} ?", "An answer."), _conv("No protein here.", "ok")],
                            [["MKTAYI"], []])
    with torch.no_grad():
        out = model(batch, return_logits=True)
        full = model.llm(inputs_embeds=model.embed_inputs(batch), attention_mask=batch["attention_mask"]).logits
    sel = batch["labels"][:, 1:] != IGNORE
    assert out.logits.shape == (int(sel.sum()), model.llm.config.vocab_size) and out.num_tokens == int(sel.sum())
    torch.testing.assert_close(out.logits, full[:, :-1][sel], atol=1e-5, rtol=1e-5)
    ref = torch.nn.functional.cross_entropy(full[:, :-1][sel], batch["labels"][:, 1:][sel])
    torch.testing.assert_close(out.loss, ref, atol=1e-5, rtol=1e-5)
    assert out.aux_loss is None


def test_backward_reaches_encoder_projector_and_llm(model) -> None:
    model.train()
    model.zero_grad(set_to_none=True)
    batch = model.processor([_conv(f"{PROTEIN_TOKEN}", "yes")], [[Protein("MKTAYI", np.eye(6, 3) * 5)]])
    model(batch).loss.backward()
    groups = model.param_groups()
    for g in ("plm", "structure", "projector", "llm"):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in groups[g]), g
    model.zero_grad(set_to_none=True)
    model.eval()


def test_generation_limits(model) -> None:
    batch = model.processor([_conv(f"{PROTEIN_TOKEN}")], [["MKV"]], add_generation_prompt=True)
    with pytest.raises(InputError, match="max_new_tokens"):
        model.generate(batch, max_new_tokens=0)
    with pytest.raises(InputError, match="max_new_tokens"):
        model.generate(batch, max_new_tokens=model.config.max_new_tokens_limit + 1)
    right = model.processor([_conv(f"{PROTEIN_TOKEN}"), _conv(f"a longer one {PROTEIN_TOKEN}")], [["MKV"], ["MKV"]],
                            add_generation_prompt=True, padding_side="right")
    with pytest.raises(InputError, match="left-padded"):
        model.generate(right, max_new_tokens=2)


def test_yes_no_probability(model) -> None:
    convs = [_conv(f"Is {PROTEIN_TOKEN} an enzyme?"), _conv(f"Does {PROTEIN_TOKEN} bind DNA, really?")]
    prots = [["MKTAYIAKQR"], ["GAVL"]]
    with torch.no_grad():
        left = model.yes_no_probability(model.processor(convs, prots, add_generation_prompt=True))
        right = model.yes_no_probability(model.processor(convs, prots, add_generation_prompt=True,
                                                         padding_side="right"))
        single = model.yes_no_probability(model.processor(convs[:1], prots[:1], add_generation_prompt=True))
        batch = model.processor(convs[:1], prots[:1], add_generation_prompt=True)
        probs = torch.softmax(model.llm(inputs_embeds=model.embed_inputs(batch)).logits[0, -1], -1)
    assert left.shape == (2,) and ((left > 0) & (left < 1)).all()
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(left[:1], single, atol=1e-5, rtol=1e-5)
    yes, no = model._answer_token_ids("yes"), model._answer_token_ids("no")
    assert set(yes).isdisjoint(no)
    torch.testing.assert_close(single[0], probs[yes].sum() / (probs[yes].sum() + probs[no].sum()))


def test_yes_no_pairs_share_their_prefix(model) -> None:
    """The two questions of a yes/no pair (same protein, same context) run their common prefix once: the same
    P(yes) as each prompt alone; prompts about other proteins are not grouped with them."""
    from sepit.model.generation import protein_keys, shared_prefixes

    context = "Homologs (MMseqs2) and their functions: 1. P12345, 48% identity over 92%: DNA binding and repair."
    convs = [_conv(f"{PROTEIN_TOKEN}\n{context}\nIs it an enzyme?"),
             _conv(f"{PROTEIN_TOKEN}\nWhat is it?"),
             _conv(f"{PROTEIN_TOKEN}\n{context}\nDoes it bind DNA? Answer yes or no."),
             _conv(f"{PROTEIN_TOKEN}\n{context}\nIs it an enzyme?")]
    prots = [["MKTAYIAKQRQISFVKSHF"], ["GAVL"], ["MKTAYIAKQRQISFVKSHF"], ["MKTAYIAKQRQISFVKSHW"]]
    with torch.no_grad():
        batch = model.processor(convs, prots, add_generation_prompt=True)
        real = batch["attention_mask"].bool()
        groups = shared_prefixes([batch["input_ids"][i][real[i]] for i in range(4)],
                                 protein_keys(batch, model.processor.protein_start_id))
        together = model.yes_no_probability(batch)
        alone = torch.cat([model.yes_no_probability(model.processor([c], [p], add_generation_prompt=True))
                           for c, p in zip(convs, prots)])
    by_row = {r: (rows, p) for rows, p in groups for r in rows}
    assert sorted(by_row[0][0]) == [0, 2] and by_row[0][1] > 20  # the pair: protein + context shared
    assert by_row[1] == ([1], 0) and by_row[3] == ([3], 0)  # another protein (one residue differs): alone
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_the_options_of_a_question_share_their_prompt(model) -> None:
    """answer_log_likelihood runs the options of one question (same protein, same prompt) from one prefix: the same
    mean log-probability per answer token as a plain padded forward over each whole conversation."""
    from sepit.model.generation import protein_keys, shared_prefixes

    context = "Homologs (MMseqs2) and their functions: 1. P12345, 48% identity over 92%: DNA binding and repair."
    q = f"{PROTEIN_TOKEN}\n{context}\nWhat does it do?"
    convs = [_conv(q, "DNA binding and repair."), _conv(q, "It binds ATP."), _conv(q, "Repair."),
             _conv(f"{PROTEIN_TOKEN}\nWhat is it?", "A kinase."), _conv(q, "DNA binding.")]
    prots = [["MKTAYIAKQRQISFVKSHF"]] * 3 + [["GAVL"], ["MKTAYIAKQRQISFVKSHW"]]
    with torch.no_grad():
        batch = model.processor(convs, prots)
        real = batch["attention_mask"].bool()
        groups = shared_prefixes([batch["input_ids"][i][real[i]] for i in range(5)],
                                 protein_keys(batch, model.processor.protein_start_id))
        got = model.answer_log_likelihood(batch)
        out = model(batch, return_logits=True)  # logits at the labelled positions, row-major
        targets = batch["labels"][:, 1:]
        sel = targets != IGNORE
        lp = torch.log_softmax(out.logits.float(), -1).gather(1, targets[sel].unsqueeze(1)).squeeze(1)
        want = torch.zeros(5).index_add_(0, sel.nonzero()[:, 0], lp) / sel.sum(1)
    by_row = {r: (rows, p) for rows, p in groups for r in rows}
    assert sorted(by_row[0][0]) == [0, 1, 2] and by_row[0][1] > 20 and by_row[3][1] == by_row[4][1] == 0
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert got.argmax() == want.argmax()
    empty = model.processor([[{"role": "user", "content": q}]], prots[:1])  # no assistant turn: nothing to score
    assert model.answer_log_likelihood(empty)[0] == float("-inf")


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_other_llama_family_models(family) -> None:
    """The fusion works over other Llama-family causal LMs (tiny random Qwen2 / Mistral)."""
    from transformers import AutoConfig, AutoModelForCausalLM, EsmModel

    from sepit.model._tiny import tiny_esm_config

    cfg = ModelConfig(plm="tiny", llm="tiny", text_encoder="tiny")
    tok = tiny_llm_tokenizer()
    add_protein_tokens(tok)
    torch.manual_seed(0)
    llm_conf = AutoConfig.for_model(family, vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    max_position_embeddings=1024, tie_word_embeddings=True,
                                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    llm = AutoModelForCausalLM.from_config(llm_conf)
    model = assemble(cfg, EsmModel(tiny_esm_config(cfg.tiny), add_pooling_layer=False), llm, tiny_esm_tokenizer(),
                     tok, cfg.tiny.text_hidden).eval()
    batch = model.processor([_conv(f"{PROTEIN_TOKEN} and {PROTEIN_TOKEN}?", "yes")], [["MKTA", "GAV"]])
    out = model(batch)
    assert torch.isfinite(out.loss) and out.num_tokens > 0
    dense_logits = model(batch, return_logits=True).logits
    model.upcycle()
    torch.testing.assert_close(model(batch, return_logits=True).logits, dense_logits, atol=1e-6, rtol=1e-6)
    assert len(model.chat([_conv(f"{PROTEIN_TOKEN}?")], [["MKV"]], max_new_tokens=3)) == 1
    assert PROTEIN_END in tok.get_vocab()


def test_cached_encoder_features_fill_the_slots_with_a_count_check(model) -> None:
    """``encoder_features`` (what a frozen-encoder cache stores) gives each protein its slot count and passed back
    as ``protein_features`` must fill the slots exactly (that the loss is then the same is
    tests/test_train.py::test_stage2_encoder_cache_is_exact)."""
    convs = [_conv(f"{PROTEIN_TOKEN} and {PROTEIN_TOKEN}?", "yes"), _conv(f"{PROTEIN_TOKEN}!", "no")]
    prots = [[Protein("MKTAYIAKQR", np.random.default_rng(1).normal(size=(10, 3)) * 4), "GAV"], ["MKVLL"]]
    batch = model.processor(convs, prots)
    with torch.no_grad():
        feats = model.encoder_features(model.processor.protein_batch([p for ps in prots for p in ps]))
        assert [f.shape[0] for f in feats] == [10, 3, 5]
        with pytest.raises(InputError, match="mismatch"):
            model(dict(batch, protein_features=torch.cat(feats[:2])))


def test_sampling_with_temperature_is_seeded_and_greedy_at_zero() -> None:
    import torch as _torch

    from sepit.model import build_model as _build
    from sepit.model import tiny as _tiny

    m = _build(_tiny()).eval()
    conv = [[{"role": "user", "content": "<protein>\nWhat does it do?"}]]
    prots = [["MKTAYIAKQRQISFVKSHFSRQ"]]
    greedy = [m.chat(conv, prots, max_new_tokens=6) for _ in range(2)]
    assert greedy[0] == greedy[1]
    _torch.manual_seed(1)
    a = m.chat(conv, prots, max_new_tokens=6, temperature=5.0)
    _torch.manual_seed(1)
    b = m.chat(conv, prots, max_new_tokens=6, temperature=5.0)
    outs = set()
    for seed in range(6):
        _torch.manual_seed(seed)
        outs.add(m.chat(conv, prots, max_new_tokens=6, temperature=5.0)[0])
    assert a == b and len(outs) > 1  # sampling is seeded and actually varies at a high temperature


def test_a_protein_asked_about_twice_is_encoded_once(model) -> None:
    from sepit.model.generation import unpadded_features

    encoded = []

    class Counting:
        def encoder_features(self, sub):
            encoded.append(sub["protein_input_ids"].shape[0])
            return model.encoder_features(sub)

        def __getattr__(self, name):
            return getattr(model, name)

    convs = [_conv(f"Is {PROTEIN_TOKEN} an enzyme?"), _conv(f"Is {PROTEIN_TOKEN} a kinase?"),
             _conv(f"Is {PROTEIN_TOKEN} an enzyme?")]
    with torch.no_grad():
        batch = model.processor(convs, [["MKTAYIAKQR"], ["MKTAYIAKQW"], ["MKTAYIAKQR"]], add_generation_prompt=True)
        feats = unpadded_features(Counting(), batch)["protein_features"]
        alone = model.encoder_features(model.processor(convs[1:2], [["MKTAYIAKQW"]]))[0]
    assert encoded == [2]  # one call for the equal-length proteins, the repeated one once
    per_protein = feats.split(feats.shape[0] // 3)
    assert torch.equal(per_protein[0], per_protein[2])
    torch.testing.assert_close(per_protein[1], alone)
    # rows whose beginning a prefix store serves: their proteins are not encoded (zeros), the others still are
    encoded.clear()
    with torch.no_grad():
        part = unpadded_features(model, batch, skip_rows={0, 1})["protein_features"].split(feats.shape[0] // 3)
        unpadded_features(Counting(), batch, skip_rows={0, 2})
    assert not part[0].any() and not part[1].any() and torch.equal(part[2], per_protein[2])
    assert encoded == [1]


def test_a_single_option_is_the_answer_without_a_forward_pass(model, monkeypatch) -> None:
    """choose scores options only where there is something to choose: one distinct option is the answer as it is."""
    q = [{"role": "user", "content": f"{PROTEIN_TOKEN}\nWhat does it do?"}]
    calls = []
    real = model.answer_log_likelihood
    monkeypatch.setattr(model, "answer_log_likelihood", lambda batch, store=None: calls.append(batch) or real(batch))
    with torch.no_grad():
        got = model.choose([q, q, q], [["MKTAYIAKQR"]] * 3, [["It binds DNA."], [], ["Repair.", "Repair."]])
    assert got == ["It binds DNA.", "", "Repair."] and calls == []
    with torch.no_grad():
        two = model.choose([q], [["MKTAYIAKQR"]], [["It binds DNA.", "Repair."]])
    assert two[0] in ("It binds DNA.", "Repair.") and len(calls) == 1
