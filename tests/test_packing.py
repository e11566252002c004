"""Packed forwards (sepit.model.packing): prompts of different lengths through the decoder as one sequence give each
prompt what it gets alone; beginnings and shared prefixes run once, or come from a PrefixStore; prefill packs prompts
and keeps the gathered cache; LLMs whose attention cannot read the segments are not packed. Tiny models only."""

from __future__ import annotations

import copy

import pytest
import torch

from sepit.model import build_model, tiny
from sepit.model.packing import Group, PrefixStore, packable, packed_forward, packs, run_groups


@pytest.fixture(scope="module")
def llm():
    torch.manual_seed(0)
    m = build_model(tiny()).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a large spread, so that attending over a wrong token would show
        for p in m.llm.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5, generator=g)
    return m.llm


def _alone(decoder, x: torch.Tensor) -> torch.Tensor:
    return decoder(inputs_embeds=x[None], use_cache=False).last_hidden_state[0]


def test_packed_prompts_each_get_what_they_get_alone(llm) -> None:
    decoder = llm.get_decoder()
    torch.manual_seed(0)
    parts = [torch.randn(n, llm.config.hidden_size) for n in (7, 1, 12, 3)]
    with torch.no_grad():
        hidden, cache = packed_forward(decoder, parts)
        want = [_alone(decoder, x) for x in parts]
        # the same prompts as one ordinary sequence: each would attend over the ones before it
        mixed = _alone(decoder, torch.cat(parts))
    got = hidden.split([x.shape[0] for x in parts])
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(mixed[7:8], want[1], atol=1e-3)  # packing without segments would be wrong
    assert cache.layers[0].keys.shape[2] == 23


def _ends(decoder, prompts, groups, store=None, budget=20):
    ends, start = {}, {}
    for run in run_groups(decoder, prompts, groups, store, budget=budget):
        ends.update(run.ends)
        start.update(run.start)
    return ends, start


def test_beginnings_and_shared_prefixes_run_once_and_ends_equal_whole_prompts(llm) -> None:
    """Prompts about one protein (a beginning of 5 positions), two of them also sharing a longer prefix, a lone
    prompt, and a beginning too long for its row's limit: every row's end is its whole prompt's hidden states from
    where it starts, packed two packs' worth."""
    decoder = llm.get_decoder()
    d = llm.config.hidden_size
    torch.manual_seed(1)
    begin, more = torch.randn(5, d), torch.randn(4, d)
    prompts = [torch.cat([begin, more, torch.randn(n, d)]) for n in (2, 3)] + [torch.cat([begin, torch.randn(6, d)]),
                                                                              torch.randn(4, d), torch.randn(6, d)]
    groups = [Group([0, 1], shared=9, base=(b"p", 5)), Group([2], base=(b"p", 5)), Group([3]),
              Group([4], base=(b"q", 6), limit=5)]  # the last: a beginning as long as the row cannot be used
    with torch.no_grad():
        ends, start = _ends(decoder, prompts, groups)
        for r, x in enumerate(prompts):
            torch.testing.assert_close(ends[r], _alone(decoder, x)[start[r]:], atol=1e-5, rtol=1e-5)
    assert start == {0: 9, 1: 9, 2: 5, 3: 0, 4: 0}


def test_a_prefix_store_keeps_beginnings_for_later_prompts_until_full(llm) -> None:
    decoder = llm.get_decoder()
    d = llm.config.hidden_size
    torch.manual_seed(3)
    begin = torch.randn(6, d)
    first, later = torch.cat([begin, torch.randn(3, d)]), torch.cat([begin, torch.randn(2, d)])
    store = PrefixStore(max_gb=1.0).bind(llm)
    with torch.no_grad():
        _ends(decoder, [first], [Group([0], base=(b"k", 6))], store)
        assert (store.hits, store.misses, len(store)) == (0, 1, 1)
        ends, start = _ends(decoder, [later], [Group([0], base=(b"k", 6))], store)
        assert (store.hits, store.misses) == (1, 1) and start[0] == 6
        torch.testing.assert_close(ends[0], _alone(decoder, later)[6:], atol=1e-5, rtol=1e-5)
    tiny_store = PrefixStore(max_gb=1e-9).bind(llm)  # too small for any beginning: nothing kept, still right
    with torch.no_grad():
        ends, _ = _ends(decoder, [later], [Group([0], base=(b"k", 6))], tiny_store)
    assert len(tiny_store) == 0 and tiny_store.bytes == 0
    torch.testing.assert_close(ends[0], _alone(decoder, later)[6:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="another model"):
        store.bind(copy.deepcopy(llm))


def test_packs_cut_at_the_budget() -> None:
    assert packs([3, 4, 2, 9, 1], budget=8) == [[0, 1], [2], [3], [4]]
    assert packs([], budget=8) == []
    assert packs([5, 3], budget=8) == [[0, 1]]


def test_packed_prefill_equals_prompts_alone(llm) -> None:
    """prefill packs the prompts of a left-padded batch and gathers their caches: last-token logits and cached keys
    as each prompt run alone."""
    from sepit.model.generation import prefill

    torch.manual_seed(2)
    embeds = torch.randn(3, 10, llm.config.hidden_size)
    attn = torch.ones(3, 10, dtype=torch.long)
    attn[0, :6] = 0
    attn[2, :3] = 0
    order = torch.tensor([1, 2, 0])
    with torch.no_grad():
        logits, cache = prefill(llm, embeds, attn, order, 2)
        for k, r in enumerate(order.tolist()):
            e = embeds[r][attn[r].bool()][None]
            out = llm(inputs_embeds=e, use_cache=True)
            torch.testing.assert_close(logits[k], out.logits[0, -1].float(), atol=1e-4, rtol=1e-4)
            n = e.shape[1]
            torch.testing.assert_close(cache.layers[1].keys[k, :, 10 - n:10], out.cache.layers[1].keys[0],
                                       atol=1e-5, rtol=1e-5)


def test_only_segment_reading_attention_without_sliding_windows_is_packed(llm) -> None:
    from transformers import AutoConfig, AutoModelForCausalLM

    assert packable(llm)
    eager = copy.deepcopy(llm)
    eager.set_attn_implementation("eager")
    assert not packable(eager)
    conf = AutoConfig.for_model("mistral", vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                num_attention_heads=2, num_key_value_heads=1, sliding_window=8)
    sliding = AutoModelForCausalLM.from_config(conf)
    from sepit.model.generation import use_ragged_attention

    assert not packable(use_ragged_attention(sliding))


def test_model_answers_are_the_same_with_a_prefix_store_that_is_reused(llm) -> None:
    """SepitModel's yes/no probabilities, option likelihoods and generations with a PrefixStore: equal to those
    without, and a second question about the same protein finds its beginning (header + protein) there."""
    from sepit.model import PROTEIN_TOKEN

    torch.manual_seed(0)
    m = build_model(tiny()).eval()
    m.llm.load_state_dict(llm.state_dict())
    prots = [["MKTAYIAKQRQISFVKSHF"], ["GAVLIPFMKT"], ["MKTAYIAKQRQISFVKSHF"]]
    convs = [[{"role": "user", "content": f"{PROTEIN_TOKEN}\n{q}"}]
             for q in ("Is it an enzyme?", "Does it bind DNA?", "Is it a membrane protein? Answer briefly.")]
    store = PrefixStore(1.0)
    with torch.no_grad():
        enc = m.processor(convs, prots, add_generation_prompt=True)
        want = m.yes_no_probability(enc)
        torch.testing.assert_close(m.yes_no_probability(enc, store), want, atol=1e-5, rtol=1e-5)
        assert (store.misses, len(store)) == (2, 2)  # two proteins; rows 0 and 2 share theirs within the batch
        encoded = []
        real_features = m.encoder_features
        m.encoder_features = lambda sub: encoded.append(1) or real_features(sub)
        torch.testing.assert_close(m.yes_no_probability(enc, store), want, atol=1e-5, rtol=1e-5)
        assert store.hits == 2 and store.misses == 2 and encoded == []  # no protein needed encoding
        del m.encoder_features
        assert m.chat(convs, prots, max_new_tokens=5, store=store) == m.chat(convs, prots, max_new_tokens=5)
        opts = [["Yes, it is.", "No."]] * 3
        assert m.choose(convs, prots, opts, store) == m.choose(convs, prots, opts)
    assert store.misses == 2  # everything after the first call came from the store
