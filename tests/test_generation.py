"""Batched generation (unpadded prefill, one gathered KV cache, decoding that skips the padding, finished rows
dropped) against one prompt at a time and transformers' own ``generate``; inference precision (``to_precision``,
``sepit.api.load(precision=...)``, ``--precision``). Tiny models only."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from sepit.errors import ConfigError
from sepit.model import PROTEIN_TOKEN, ModelConfig, Protein, assemble, build_model, tiny
from sepit.model.generation import RAGGED_ATTENTION, row_chunks
from sepit.model.precision import inference_dtype
from sepit.precisions import PRECISIONS, check_precision

CONVS = [
    [{"role": "user", "content": f"{PROTEIN_TOKEN} What is it?"}],
    [{"role": "user", "content": f"Tell me about {PROTEIN_TOKEN} and {PROTEIN_TOKEN} now."}],
    [{"role": "user", "content": f"{PROTEIN_TOKEN} Where is it found in the cell, please?"}],
    [{"role": "user", "content": f"{PROTEIN_TOKEN} What is it?"}],  # same length as the first: prefilled together
    [{"role": "user", "content": f"Does {PROTEIN_TOKEN} bind DNA?"}],
]
PROTS = [["MKTAYIAKQR"], ["MKV", "GAVLIPF"],
         [Protein("MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ", np.random.default_rng(0).normal(size=(33, 3)) * 4)],
         ["GAVLIPFMKT"], ["MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHF"]]


def lively(model):
    """Random LLM matrices with a large spread: a freshly built tiny model answers every prompt with the same
    whitespace, which would make "same answers" checks vacuous; this one's greedy answers differ by prompt."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.llm.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.5, generator=g)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return lively(build_model(tiny()))


def reference(model, conv, prots, max_new_tokens: int) -> str:
    """One prompt through transformers' greedy ``generate(inputs_embeds=...)`` (the research code's way)."""
    from transformers import GenerationConfig

    with torch.no_grad():
        batch = model.processor([conv], [prots], add_generation_prompt=True)
        gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1,
                               pad_token_id=model.processor.pad_token_id, eos_token_id=model._eos_ids())
        out = model.llm.generate(inputs_embeds=model.embed_inputs(batch), attention_mask=batch["attention_mask"],
                                 generation_config=gen)
    return model.processor.llm_tokenizer.decode(out[0], skip_special_tokens=True)


def no_cache_reference(model, conv, prots, steps: int) -> str:
    """Greedy decoding by repeated full forwards (no KV cache at all)."""
    with torch.no_grad():
        batch = model.processor([conv], [prots], add_generation_prompt=True)
        embeds = model.embed_inputs(batch)
        emb_layer, eos, out = model.llm.get_input_embeddings(), set(model._eos_ids()), []
        for _ in range(steps):
            nxt = int(model.llm(inputs_embeds=embeds).logits[0, -1].argmax())
            if nxt in eos:
                break
            out.append(nxt)
            embeds = torch.cat([embeds, emb_layer(torch.tensor([[nxt]]))], dim=1)
    return model.processor.llm_tokenizer.decode(out, skip_special_tokens=True)


def test_batched_fp32_equals_one_at_a_time_and_transformers_generate(model) -> None:
    streamed = []
    with torch.no_grad():
        batched = model.chat(CONVS, PROTS, max_new_tokens=8, callback=lambda texts: streamed.append(list(texts)))
        singles = [model.chat([c], [p], max_new_tokens=8)[0] for c, p in zip(CONVS, PROTS)]
    refs = [reference(model, c, p, 8) for c, p in zip(CONVS, PROTS)]
    assert batched == singles == refs
    assert batched == [no_cache_reference(model, c, p, 8) for c, p in zip(CONVS, PROTS)]
    assert len(streamed) == 8 and streamed[-1] == batched
    assert len(set(batched)) > 1, "the prompts should not all give the same answer (or the test shows nothing)"
    assert model.llm.config._attn_implementation == RAGGED_ATTENTION  # chosen once, when the model was assembled


def test_concurrent_generations_equal_sequential_ones_and_switch_nothing(model, monkeypatch) -> None:
    """Two threads generating with one model (as the server does) get the answers they get one after the other:
    generation changes no state the model shares, such as its attention implementation."""
    from concurrent.futures import ThreadPoolExecutor

    def refuse(*args, **kwargs):
        raise AssertionError("generation must not switch the shared model's attention implementation")

    monkeypatch.setattr(model.llm, "set_attn_implementation", refuse)
    jobs = [(CONVS[:3], PROTS[:3]), (CONVS[3:], PROTS[3:])] * 2
    with torch.no_grad():
        sequential = [model.chat(c, p, max_new_tokens=6) for c, p in jobs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        concurrent = list(pool.map(lambda job: model.chat(*job, max_new_tokens=6), jobs))
    assert concurrent == sequential and sequential[0] != sequential[1]


def test_finished_answers_leave_the_batch_and_match_one_at_a_time(model, monkeypatch) -> None:
    """Make the first answer token of prompt 0 an end-of-sequence token: that row stops at once and is dropped
    from the cache; the others must still decode exactly as alone (and as transformers' generate)."""
    from transformers import StaticCache

    m = copy.deepcopy(model)
    drops = []
    keep_rows = StaticCache.reorder_cache
    monkeypatch.setattr(StaticCache, "reorder_cache", lambda self, idx: (drops.append(len(idx)), keep_rows(self, idx)))
    with torch.no_grad():
        batch = m.processor(CONVS[:1], PROTS[:1], add_generation_prompt=True)
        first = int(m.llm(inputs_embeds=m.embed_inputs(batch)).logits[0, -1].argmax())
    m.llm.generation_config.eos_token_id = [first, *m._eos_ids()]
    with torch.no_grad():
        batched = m.chat(CONVS, PROTS, max_new_tokens=8)
        singles = [m.chat([c], [p], max_new_tokens=8)[0] for c, p in zip(CONVS, PROTS)]
    refs = [reference(m, c, p, 8) for c, p in zip(CONVS, PROTS)]
    assert batched == singles == refs
    assert batched[0] == m.processor.llm_tokenizer.decode([first], skip_special_tokens=True)  # ended at once
    assert drops and drops[0] < len(CONVS)  # the finished row left the batch's cache


def test_sliding_window_model_generates_batched_as_alone() -> None:
    """A Mistral-style LLM (sliding-window cache layers) takes the growing-cache path; same answers batched."""
    from transformers import AutoConfig, AutoModelForCausalLM, EsmModel

    from sepit.model._tiny import tiny_esm_config, tiny_esm_tokenizer, tiny_llm_tokenizer
    from sepit.model.processor import add_protein_tokens

    cfg = ModelConfig(plm="tiny", llm="tiny", text_encoder="tiny")
    tok = tiny_llm_tokenizer()
    add_protein_tokens(tok)
    torch.manual_seed(0)
    llm_conf = AutoConfig.for_model("mistral", vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    max_position_embeddings=1024, sliding_window=512, tie_word_embeddings=True,
                                    eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    llm = AutoModelForCausalLM.from_config(llm_conf)
    m = lively(assemble(cfg, EsmModel(tiny_esm_config(cfg.tiny), add_pooling_layer=False), llm, tiny_esm_tokenizer(),
                        tok, cfg.tiny.text_hidden))
    with torch.no_grad():
        batched = m.chat(CONVS, PROTS, max_new_tokens=6)
        singles = [m.chat([c], [p], max_new_tokens=6)[0] for c, p in zip(CONVS, PROTS)]
    assert batched == singles == [reference(m, c, p, 6) for c, p in zip(CONVS, PROTS)]
    assert len(set(batched)) > 1


def test_moe_model_generates_batched_as_alone(model) -> None:
    m = copy.deepcopy(model).upcycle().eval()
    with torch.no_grad():
        batched = m.chat(CONVS, PROTS, max_new_tokens=6)
        singles = [m.chat([c], [p], max_new_tokens=6)[0] for c, p in zip(CONVS, PROTS)]
    assert batched == singles


def test_repeated_ngram_tokens() -> None:
    from sepit.model.generation import repeated_ngram_tokens

    assert repeated_ngram_tokens([1, 2, 3, 1, 2], 3) == [3]  # "1 2" was followed by 3
    assert repeated_ngram_tokens([5, 6, 5], 2) == [6]
    assert repeated_ngram_tokens([5, 6, 7], 2) == []
    assert repeated_ngram_tokens([4], 3) == [] and repeated_ngram_tokens([4, 4], 0) == []


def test_no_repeat_ngram_answers_repeat_no_ngram_batched_as_alone(model, monkeypatch) -> None:
    """``no_repeat_ngram`` (model config): no answer repeats a token bigram; the batch still answers as each prompt
    alone. The lively tiny model loops without it, so the test shows something."""
    from sepit.model import generation

    chosen: list[int] = []
    pick = generation.next_tokens

    def recording(logits, temperature):
        out = pick(logits, temperature)
        chosen.append(int(out[0]))
        return out

    def answer_ids(m, conv, prots) -> list[int]:  # one prompt: the batch's only row
        chosen.clear()
        m.chat([conv], [prots], max_new_tokens=24)
        return list(chosen)

    def repeats(ids: list[int]) -> bool:
        pairs = list(zip(ids, ids[1:]))
        return len(set(pairs)) < len(pairs)

    m = copy.deepcopy(model)
    m.config.no_repeat_ngram = 2
    with torch.no_grad():
        batched = m.chat(CONVS, PROTS, max_new_tokens=24)
        singles = [m.chat([c], [p], max_new_tokens=24)[0] for c, p in zip(CONVS, PROTS)]
        monkeypatch.setattr(generation, "next_tokens", recording)
        looping = [answer_ids(model, c, p) for c, p in zip(CONVS, PROTS)]
        constrained = [answer_ids(m, c, p) for c, p in zip(CONVS, PROTS)]
    assert batched == singles
    assert any(map(repeats, looping)) and not any(map(repeats, constrained))


def test_row_chunks_skip_long_padding_but_not_for_few_slots() -> None:
    # rows sorted by first real slot: two long prompts (from slot 0) and two short ones (from 500 and 510)
    assert row_chunks([0, 0, 500, 510], 600, overhead=10) == [(0, 2, 0), (2, 4, 500)]
    assert row_chunks([0, 0, 500, 510], 600, overhead=10_000) == [(0, 4, 0)]  # one call is cheaper
    assert row_chunks([7], 20) == [(0, 1, 7)]
    chunks = row_chunks([0, 3, 3, 90, 95, 400], 500, overhead=20)
    assert chunks[0][0] == 0 and chunks[-1][1] == 6 and all(a < b for a, b, _ in chunks)
    assert all(chunks[k][1] == chunks[k + 1][0] for k in range(len(chunks) - 1))


# ---- precision --------------------------------------------------------------------------------------------------

def test_precision_names_are_validated() -> None:
    assert [check_precision(p) for p in PRECISIONS] == ["auto", "fp32", "bf16"]
    for bad in ("fp16", "float32", "", "BF16"):
        with pytest.raises(ConfigError, match="precision must be one of auto, fp32, bf16"):
            inference_dtype(bad, "cpu")
    assert inference_dtype("fp32", "cpu") == torch.float32 and inference_dtype("bf16", "cpu") == torch.bfloat16


def test_auto_precision_follows_the_hardware(monkeypatch) -> None:
    from sepit.model import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert inference_dtype("auto", "cpu") == torch.bfloat16
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert inference_dtype("auto", "cpu") == torch.float32  # plain CPUs: emulated bf16 would be slower
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert inference_dtype("auto", "cuda") == torch.float32  # never fp16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert inference_dtype("auto", "cuda") == torch.bfloat16


def test_bf16_casts_weights_not_buffers_and_still_answers(model) -> None:
    m = copy.deepcopy(model).to_precision("bf16")
    assert m.dtype == torch.bfloat16
    assert {p.dtype for p in m.parameters()} == {torch.bfloat16}
    assert all(b.dtype in (torch.float32, torch.int64) for b in m.buffers())  # RoPE frequencies stay exact
    assert m.llm.get_input_embeddings().weight is m.llm.get_output_embeddings().weight  # still tied
    with torch.no_grad():
        answers = m.chat(CONVS, PROTS, max_new_tokens=6)
        batch = m.processor(CONVS, PROTS, add_generation_prompt=True)
        p16 = m.yes_no_probability(batch)
        p32 = model.yes_no_probability(model.processor(CONVS, PROTS, add_generation_prompt=True))
    assert len(answers) == len(CONVS) and all(isinstance(a, str) for a in answers)
    assert p16.dtype == torch.float32 and ((p16 > 0) & (p16 < 1)).all()
    torch.testing.assert_close(p16, p32, atol=0.05, rtol=0)  # bf16 rounding, not a different model
    assert copy.deepcopy(model).to_precision("fp32").dtype == torch.float32


def test_api_load_takes_a_precision(tmp_path) -> None:
    import sepit.api
    from sepit.model import save_model

    d = tmp_path / "model"
    save_model(build_model(tiny()), d)
    with pytest.raises(ConfigError, match="precision"):
        sepit.api.load(d, device="cpu", precision="fp16")
    with pytest.raises(ConfigError, match="precision"):  # checked before the model directory is even looked at
        sepit.api.load(tmp_path / "missing", precision="half")
    assert sepit.api.load(d, device="cpu", precision="fp32").model.dtype == torch.float32
    assert sepit.api.load(d, device="cpu", precision="bf16").model.dtype == torch.bfloat16
    assert sepit.api.load(d, device="cpu").model.dtype == inference_dtype("auto", "cpu")


def test_cli_precision_flag(capsys) -> None:
    from sepit.cli import main
    from sepit.cli.ask import PRECISIONS as CLI_PRECISIONS

    assert CLI_PRECISIONS == PRECISIONS
    for argv in (["ask", "--sequence", "MKV", "x", "--precision", "fp16"], ["serve", "--precision", "half"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_chunked_prefill_equals_one_pass_and_can_be_stopped_between_chunks(model) -> None:
    from sepit.model.generation import prefill

    llm = model.llm
    torch.manual_seed(0)
    embeds = torch.randn(2, 30, llm.config.hidden_size)
    attn = torch.ones(2, 30, dtype=torch.long)
    attn[1, :9] = 0  # a shorter, left-padded prompt
    order = torch.tensor([0, 1])
    calls = []
    with torch.no_grad():
        whole, c1 = prefill(llm, embeds, attn, order, 4)
        chunked, c2 = prefill(llm, embeds, attn, order, 4, between=lambda: calls.append(1), chunk=7)
    assert torch.allclose(whole, chunked, atol=1e-5)
    assert torch.allclose(c1.layers[0].keys, c2.layers[0].keys, atol=1e-5)
    assert len(calls) == 5 + 3 - 1  # between the forwards: the 30-token prompt's 5 chunks, the 21-token one's 3

    def stop() -> None:
        raise RuntimeError("stopped")

    with pytest.raises(RuntimeError, match="stopped"), torch.no_grad():
        prefill(llm, embeds, attn, order, 4, between=stop, chunk=7)
