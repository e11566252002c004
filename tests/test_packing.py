"""Packed forwards (sepit.model.packing): prompts of different lengths through the decoder as one sequence give each
prompt what it gets alone; shared prefixes run once; prefill packs prompts and keeps the gathered cache; LLMs whose
attention cannot read the segments are not packed. Tiny models only."""

from __future__ import annotations

import copy

import pytest
import torch

from sepit.model import build_model, tiny
from sepit.model.packing import ends_after_prefixes, packable, packed_forward, packs


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


def test_ends_after_shared_prefixes_equal_whole_prompts(llm) -> None:
    """Groups of prompts sharing a prefix (run once) and lone prompts, packed two packs' worth: each row's end is its
    whole prompt's hidden states from the prefix on."""
    decoder = llm.get_decoder()
    d = llm.config.hidden_size
    torch.manual_seed(1)
    shared = torch.randn(9, d)
    prompts = [torch.cat([shared, torch.randn(n, d)]) for n in (2, 5, 1)] + [torch.randn(6, d), torch.randn(4, d)]
    groups = [([0, 1, 2], 9), ([3], 0), ([4], 3)]  # the last: a lone prompt whose first 3 positions run first
    with torch.no_grad():
        ends = ends_after_prefixes(decoder, prompts, groups, budget=20)  # the first group fills a pack alone
        for rows, p in groups:
            for r in rows:
                torch.testing.assert_close(ends[r], _alone(decoder, prompts[r])[p:], atol=1e-5, rtol=1e-5)


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
