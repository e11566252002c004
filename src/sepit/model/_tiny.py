"""Random ``tiny`` models and tokenizers, built fully offline (tests, CI, quick demos).

The protein tokenizer is a real ``EsmTokenizer`` over the real 33-token ESM-2 alphabet; the LLM and text
tokenizers are byte-level (256 byte symbols, no merges) built with the ``tokenizers`` library, the LLM one with a
ChatML chat template like SmolLM2's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sepit.model.config import TinySizes

#: The ESM-2 alphabet, in the order of facebook/esm2_* vocab.txt (ids 0..32).
ESM_ALPHABET: tuple[str, ...] = (
    "<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K", "Q", "N", "F",
    "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>", "<mask>",
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def tiny_esm_tokenizer():
    """An ``EsmTokenizer`` over the real 33-token ESM-2 alphabet."""
    from transformers import EsmTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        vocab = Path(tmp) / "vocab.txt"
        vocab.write_text("\n".join(ESM_ALPHABET) + "\n")
        return EsmTokenizer(vocab_file=str(vocab))


def _byte_level(special: list[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {ch: i for i, ch in enumerate(sorted(ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(special)
    return tok


def tiny_llm_tokenizer():
    """Byte-level tokenizer with ``<|endoftext|>`` (padding), ``<|im_start|>``, ``<|im_end|>`` (end of turn)."""
    from transformers import PreTrainedTokenizerFast

    tok = _byte_level(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML_TEMPLATE)


def tiny_text_tokenizer():
    """Byte-level tokenizer with BERT-style ``[CLS] … [SEP]`` framing and ``[PAD]``."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    tok = _byte_level(["[PAD]", "[CLS]", "[SEP]", "[UNK]"])
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls_id),
                                                                                             ("[SEP]", sep_id)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                   unk_token="[UNK]")


def tiny_esm_config(sizes: TinySizes):
    from transformers import EsmConfig

    return EsmConfig(vocab_size=len(ESM_ALPHABET), hidden_size=sizes.plm_hidden, num_hidden_layers=sizes.plm_layers,
                     num_attention_heads=sizes.plm_heads, intermediate_size=2 * sizes.plm_hidden,
                     max_position_embeddings=1026, position_embedding_type="rotary", token_dropout=True,
                     mask_token_id=ESM_ALPHABET.index("<mask>"), pad_token_id=ESM_ALPHABET.index("<pad>"),
                     emb_layer_norm_before=False, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def tiny_llama_config(sizes: TinySizes, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=len(tokenizer), hidden_size=sizes.llm_hidden, intermediate_size=2 * sizes.llm_hidden,
                       num_hidden_layers=sizes.llm_layers, num_attention_heads=sizes.llm_heads,
                       num_key_value_heads=sizes.llm_kv_heads, max_position_embeddings=4096, tie_word_embeddings=True,
                       eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, bos_token_id=None)


def tiny_bert_config(sizes: TinySizes, tokenizer):
    from transformers import BertConfig

    return BertConfig(vocab_size=len(tokenizer), hidden_size=sizes.text_hidden, num_hidden_layers=sizes.text_layers,
                      num_attention_heads=4, intermediate_size=2 * sizes.text_hidden, max_position_embeddings=512,
                      pad_token_id=tokenizer.pad_token_id)
