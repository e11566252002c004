"""Architectures of well-known checkpoints, for counting parameters (``sepit model info``) without their files.

Used only when a model name does not resolve to a local directory; building a model with weights always needs
the real checkpoint directory. Values are the checkpoints' published ``config.json`` fields.
"""

from __future__ import annotations

from typing import Any

_ESM_COMMON = {"model_type": "esm", "vocab_size": 33, "max_position_embeddings": 1026,
               "position_embedding_type": "rotary", "token_dropout": True, "mask_token_id": 32, "pad_token_id": 1,
               "emb_layer_norm_before": False, "layer_norm_eps": 1e-5}

KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    # protein language models
    "esm2_t6_8M": {**_ESM_COMMON, "hidden_size": 320, "num_hidden_layers": 6, "num_attention_heads": 20,
                   "intermediate_size": 1280},
    "facebook/esm2_t6_8M_UR50D": {**_ESM_COMMON, "hidden_size": 320, "num_hidden_layers": 6,
                                  "num_attention_heads": 20, "intermediate_size": 1280},
    "facebook/esm2_t33_650M_UR50D": {**_ESM_COMMON, "hidden_size": 1280, "num_hidden_layers": 33,
                                     "num_attention_heads": 20, "intermediate_size": 5120},
    # causal LMs
    "smollm2_135m_instruct": {"model_type": "llama", "vocab_size": 49152, "hidden_size": 576,
                              "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
                              "num_key_value_heads": 3, "max_position_embeddings": 8192, "tie_word_embeddings": True},
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0": {"model_type": "llama", "vocab_size": 32000, "hidden_size": 2048,
                                           "intermediate_size": 5632, "num_hidden_layers": 22,
                                           "num_attention_heads": 32, "num_key_value_heads": 4,
                                           "max_position_embeddings": 2048, "tie_word_embeddings": False},
    "meta-llama/Llama-2-7b-chat-hf": {"model_type": "llama", "vocab_size": 32000, "hidden_size": 4096,
                                      "intermediate_size": 11008, "num_hidden_layers": 32, "num_attention_heads": 32,
                                      "num_key_value_heads": 32, "max_position_embeddings": 4096,
                                      "tie_word_embeddings": False},
    # text encoders
    "minilm_l6_v2": {"model_type": "bert", "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
                     "num_attention_heads": 12, "intermediate_size": 1536},
    "sentence-transformers/all-MiniLM-L6-v2": {"model_type": "bert", "vocab_size": 30522, "hidden_size": 384,
                                               "num_hidden_layers": 6, "num_attention_heads": 12,
                                               "intermediate_size": 1536},
}


def known_config(name: str):
    """A transformers config object for a known checkpoint name, or None."""
    spec = KNOWN_CONFIGS.get(name)
    if spec is None:
        return None
    from transformers import AutoConfig

    spec = dict(spec)
    return AutoConfig.for_model(spec.pop("model_type"), **spec)
