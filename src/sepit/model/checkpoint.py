"""Save / load a SepitModel as one directory (safetensors + JSON only, written atomically, loaded strictly).

```
DIR/model.safetensors     every weight (tied weights stored once)
DIR/sepit_config.json     format, sepit version, the full ModelConfig, base checkpoints, sizes, parameter counts,
                          the sha256 of model.safetensors (checked on load)
DIR/plm/                  the ESM config.json + tokenizer files
DIR/llm/                  the LLM config.json + generation_config.json + tokenizer (with the protein tokens)
DIR/retrieval/            models with homolog context: their retrieval index (sepit.retrieval.index), hard-linked
```
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from sepit._io import atomic_dir, sha256_file, write_json
from sepit.config import from_dict, to_dict
from sepit.errors import CheckpointError, ConfigError
from sepit.log import get_logger
from sepit.model.config import TINY, ModelConfig
from sepit.version import __version__

log = get_logger(__name__)

FORMAT = "sepit-model"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "sepit_config.json"
RETRIEVAL = "retrieval"  # the homolog-context index (models with retrieval.enabled)
REQUIRED = (WEIGHTS, CONFIG, "plm/config.json", "llm/config.json")

#: Config fields that change the architecture or the weights' meaning; a checkpoint and a config that disagree on
#: any of them cannot be combined. The rest (corruption rates, limits) are run-time settings.
ARCHITECTURE_FIELDS: tuple[str, ...] = (
    "plm", "llm", "text_encoder", "structure.num_kernels", "structure.bias_hidden", "structure.node_scale",
    "heads.contrastive_dim", "projector.num_layers", "projector.hidden_dim", "projector.pool", "moe.enabled",
    "moe.num_experts",
)


def _get(cfg: ModelConfig, dotted: str) -> Any:
    value: Any = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def architecture_differences(saved: ModelConfig, wanted: ModelConfig) -> list[str]:
    """``["moe.enabled=True (config asks for False)", ...]`` for every architecture field that differs."""
    fields = list(ARCHITECTURE_FIELDS)
    if TINY in {saved.plm, saved.llm, saved.text_encoder}:  # random tiny weights depend on the sizes and seed
        fields += [f"tiny.{f.name}" for f in dataclasses.fields(saved.tiny)]
    return [f"{f}={_get(saved, f)!r} (config asks for {_get(wanted, f)!r})" for f in fields
            if _get(saved, f) != _get(wanted, f)]


def _untie(model, weights: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, torch.Tensor]:
    """``weights`` with each tied parameter stored once under the name safetensors' ``save_model`` keeps (the first
    in sorted order), the others recorded in ``metadata`` as it does; so both ways of saving write the same file."""
    names: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), []).append(name)
    out = dict(weights)
    for group in names.values():
        present = sorted(n for n in group if n in out)
        for name in present[1:]:
            metadata.setdefault(name, present[0])
            del out[name]
    return {k: v.contiguous() for k, v in out.items()}


def save_model(model, directory: str | Path, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``model`` to ``directory`` (replaced atomically). Returns the directory.

    ``weights``: the full state dict to write instead of ``model.state_dict()`` (an FSDP run gathers it, as the
    model's own parameters are shards); the file is the same as for an unsharded model.
    """
    from safetensors.torch import save_model as save_weights

    from sepit.model.params import parameter_counts

    directory = Path(directory)
    if model.processor is None:
        raise CheckpointError(f"{directory}: cannot save a model without tokenizers (a meta-device skeleton)")
    esm_conf, llm_conf = model.encoder.esm.config, model.llm.config
    record = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sepit_version": __version__,
        "config": to_dict(model.config),
        "plm": {"source": model.sources.get("plm", model.config.plm), "architecture": type(model.encoder.esm).__name__,
                "hidden_size": esm_conf.hidden_size, "num_layers": esm_conf.num_hidden_layers,
                "num_heads": esm_conf.num_attention_heads, "vocab_size": esm_conf.vocab_size},
        "llm": {"source": model.sources.get("llm", model.config.llm), "architecture": type(model.llm).__name__,
                "hidden_size": llm_conf.hidden_size, "num_layers": llm_conf.num_hidden_layers,
                "vocab_size": model.llm.get_input_embeddings().weight.shape[0],
                "protein_tokens": list(model.processor.llm_tokenizer.convert_ids_to_tokens(
                    [model.processor.protein_token_id, model.processor.protein_start_id,
                     model.processor.protein_end_id]))},
        "text_encoder": {"source": model.config.text_encoder,
                         "hidden_size": int(model.sources.get("text_hidden_size", 0))},
        "moe": {"enabled": model.is_moe, "num_experts": model.config.moe.num_experts},
        "pool": model.config.projector.pool,
        "parameters": parameter_counts(model),
    }
    with atomic_dir(directory) as tmp:
        metadata = {"format": "pt", "sepit_format": FORMAT}
        if weights is None:
            save_weights(model, str(tmp / WEIGHTS), metadata=metadata)
        else:
            from safetensors.torch import save_file

            save_file(_untie(model, weights, metadata), str(tmp / WEIGHTS), metadata=metadata)
        esm_conf.save_pretrained(tmp / "plm")
        model.processor.protein_tokenizer.save_pretrained(tmp / "plm")
        llm_conf.save_pretrained(tmp / "llm")
        if model.llm.generation_config is not None:
            model.llm.generation_config.save_pretrained(tmp / "llm")
        model.processor.llm_tokenizer.save_pretrained(tmp / "llm")
        index = getattr(model, "retrieval_index", None)
        if index is not None and model.config.retrieval.enabled:  # self-contained: answers need only this folder
            from sepit.retrieval.index import copy_index

            copy_index(index, tmp / RETRIEVAL)
        record["sha256"] = {WEIGHTS: sha256_file(tmp / WEIGHTS)}  # a damaged file is refused on load
        write_json(tmp / CONFIG, record)  # last: a directory with a config has everything
    log.info("saved model to %s", directory)
    return directory


def read_record(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's ``sepit_config.json`` after checking the directory is complete."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"{d}: checkpoint directory not found")
    missing = [f for f in REQUIRED if not (d / f).is_file()]
    if missing:
        raise CheckpointError(f"{d}: not a complete sepit checkpoint (missing {', '.join(missing)})")
    try:
        record = json.loads((d / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{d / CONFIG}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{d / CONFIG}: not a sepit model config (format is not {FORMAT!r})")
    if record.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{d / CONFIG}: format version {record.get('format_version')} is not supported "
                              f"(this sepit reads {FORMAT_VERSION})")
    return record


def verify_files(directory: str | Path, record: dict[str, Any] | None = None) -> None:
    """Check the files of a checkpoint against the sha256 sums its ``sepit_config.json`` recorded when it was saved
    (``record``: that file's content, read here when None): a file that differs (cut short, damaged, replaced) is a
    one-line CheckpointError naming it. Checkpoints from before the sums were recorded load unchecked."""
    d = Path(directory)
    record = read_record(d) if record is None else record
    verify_sums(d, record.get("sha256"), "its checkpoint's " + CONFIG)


def verify_sums(folder: Path, sums: Any, where: str) -> None:
    """Check each ``{file name: sha256}`` of ``sums`` (recorded in ``where``) under ``folder``; ``sums`` not a dict
    (written by an older sepit) checks nothing."""
    if not isinstance(sums, dict):
        log.debug("%s: no checksums recorded in %s (saved by an older sepit); files not verified", folder, where)
        return
    for name, digest in sums.items():
        check_sha256(folder / name, digest, where)


def check_sha256(file: Path, digest: str, where: str) -> None:
    """One-line CheckpointError unless ``file`` has the sha256 ``digest`` recorded in ``where``."""
    try:
        actual = sha256_file(file)
    except OSError as e:
        raise CheckpointError(f"{file}: unreadable ({e.strerror or e})") from None
    if actual != digest:
        raise CheckpointError(f"{file}: damaged or changed since it was saved (its sha256 differs from the one in "
                              f"{where}); restore it, or use another checkpoint")


def checkpoint_config(directory: str | Path) -> ModelConfig:
    """The ModelConfig a checkpoint was made with."""
    d = Path(directory)
    try:
        return from_dict(ModelConfig, read_record(d)["config"])
    except (ConfigError, KeyError, TypeError) as e:
        raise CheckpointError(f"{d / CONFIG}: invalid model config ({e})") from None


def load_model(directory: str | Path, expect: ModelConfig | None = None, *, device: str | torch.device = "cpu"):
    """Load a saved SepitModel; needs nothing but the directory. Strict: every weight must fit exactly.

    ``expect``: the config a caller intends to use; if its architecture fields differ from the checkpoint's, a
    CheckpointError names them. Its run-time settings (corruption rates, limits) then replace the saved ones.
    """
    d = Path(directory)
    model = _rebuild(d, expect)
    load_weights(model, d / WEIGHTS, device=device, against="the recorded architecture")
    if (d / RETRIEVAL).is_dir():
        model.retrieval_index = d / RETRIEVAL
    return model.to(device)


def _rebuild(d: Path, expect: ModelConfig | None):
    """The model of checkpoint ``d`` without its weights (as its modules initialise them), after checking its files
    (:func:`load_model`)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, EsmModel

    from sepit.model.build import assemble

    record = read_record(d)
    cfg = checkpoint_config(d)
    if expect is not None:
        diffs = architecture_differences(cfg, expect)
        if diffs:
            raise CheckpointError(f"{d}: checkpoint was made with different options: {'; '.join(diffs)}")
        cfg = expect
    verify_files(d, record)
    try:
        esm = EsmModel(AutoConfig.from_pretrained(d / "plm"), add_pooling_layer=False)
        llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d / "llm"))
        plm_tok = AutoTokenizer.from_pretrained(d / "plm")
        llm_tok = AutoTokenizer.from_pretrained(d / "llm")
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{d}: cannot rebuild the model from its configs ({type(e).__name__}: {e})") from None
    if llm.get_input_embeddings().weight.shape[0] != record["llm"]["vocab_size"]:
        llm.resize_token_embeddings(record["llm"]["vocab_size"], mean_resizing=False)
    try:
        generation = (d / "llm" / "generation_config.json")
        if generation.is_file():
            from transformers import GenerationConfig

            llm.generation_config = GenerationConfig.from_pretrained(d / "llm")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{generation}: unreadable ({e})") from None
    text_hidden = int(record.get("text_encoder", {}).get("hidden_size") or 0)
    if text_hidden <= 0:
        raise CheckpointError(f"{d / CONFIG}: text_encoder.hidden_size missing")
    sources = {"plm": record["plm"]["source"], "llm": record["llm"]["source"], "text_hidden_size": text_hidden}
    return assemble(cfg, esm, llm, plm_tok, llm_tok, text_hidden, sources=sources)


def load_weights(model: torch.nn.Module, file: str | Path, *, device: str | torch.device = "cpu",
                 against: str = "the model") -> None:
    """Load a ``model.safetensors`` written by :func:`save_model` into ``model``, strictly: every parameter and
    persistent buffer must be in the file with its shape, and nothing else; tied weights (the LM's embeddings and
    head) are stored once, under one of their names. Any mismatch is a one-line CheckpointError naming ``file``
    and, as ``against``, what the weights were meant to fit."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as _load_safetensors

    try:
        # safetensors' loader knows which of the model's names share a tensor, so a tied weight stored under
        # another of its names is neither missing nor unexpected.
        missing, unexpected = _load_safetensors(model, str(file), strict=False, device=str(device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: unreadable weights ({e})") from None
    except RuntimeError as e:  # shapes that do not fit
        msg = str(e).strip().splitlines()
        raise CheckpointError(f"{file}: weights do not fit {against} ({' '.join(m.strip() for m in msg[:3])})"
                              ) from None
    if missing or unexpected:
        raise CheckpointError(f"{file}: weights do not fit {against} (missing "
                              f"{sorted(missing)[:3]}{'…' if len(missing) > 3 else ''}, unexpected "
                              f"{sorted(unexpected)[:3]}{'…' if len(unexpected) > 3 else ''})")


# ---- reading in parts (FSDP set-up: each process reads the rows of its shards) -------------------------------------
@dataclasses.dataclass(eq=False, frozen=True)
class StoredTensor:
    """A tensor of the safetensors ``file`` (stored under ``key``, of ``shape``), to read in parts; ``added``: rows
    that follow the stored ones (an embedding grown by new tokens), a CPU tensor."""

    file: Path
    key: str
    shape: tuple[int, ...]
    added: torch.Tensor | None = None

    @property
    def full_shape(self) -> tuple[int, ...]:
        """The shape with the added rows."""
        if self.added is None:
            return self.shape
        return (self.shape[0] + self.added.shape[0], *self.shape[1:])

    def read(self, start: int | None = None, stop: int | None = None) -> torch.Tensor:
        """Rows ``start:stop`` of the tensor (all of it when both are None), a CPU tensor of the stored dtype (the
        added rows' dtype for those). Only those rows are read: the file is opened for this read alone, through
        ``safe_open(...).get_slice``."""
        from safetensors import SafetensorError, safe_open

        rows = self.full_shape[0] if self.full_shape else 0
        start, stop = (0, rows) if start is None and stop is None else (start or 0, rows if stop is None else stop)
        stored = self.shape[0] if self.shape else 0
        parts = []
        try:
            with safe_open(str(self.file), "pt") as f:
                if not self.shape:  # 0-d: read whole
                    return f.get_tensor(self.key)
                if start < stored or self.added is None:  # (an empty slice for a shard with no rows)
                    parts.append(f.get_slice(self.key)[min(start, stored):min(stop, stored)])
        except (SafetensorError, OSError) as e:
            raise CheckpointError(f"{self.file}: unreadable weights ({e})") from None
        if self.added is not None and stop > stored:
            parts.append(self.added[max(start - stored, 0):stop - stored].to(parts[0].dtype if parts else None))
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def stored_tensors(file: str | Path) -> dict[str, StoredTensor]:
    """Every tensor of a safetensors file by name (nothing read but the header). A tied weight stored once appears
    under each of its names: the file's metadata maps the other names to the stored one, the way safetensors'
    ``save_model`` and :func:`save_model` write it."""
    from safetensors import SafetensorError, safe_open

    file = Path(file)
    try:
        with safe_open(str(file), "pt") as f:
            out = {k: StoredTensor(file, k, tuple(f.get_slice(k).get_shape())) for k in f.keys()}
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{file}: unreadable weights ({e})") from None
    for name, stored in metadata.items():
        if stored in out and name not in out:
            out[name] = out[stored]
    return out


def pretrained_tensors(directory: str | Path) -> dict[str, StoredTensor]:
    """The tensors of a Hugging Face checkpoint folder by name: ``model.safetensors``, or the files listed by its
    ``model.safetensors.index.json``. A folder without safetensors weights is a one-line CheckpointError."""
    d = Path(directory)
    index = d / "model.safetensors.index.json"
    if index.is_file():
        try:
            files = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(f"{index}: unreadable index of weight files ({e})") from None
    elif (d / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        raise CheckpointError(f"{d}: no safetensors weights (model.safetensors or model.safetensors.index.json) to "
                              "read in parts; convert its weights to safetensors")
    out: dict[str, StoredTensor] = {}
    for name in files:
        out.update(stored_tensors(d / name))
    return out


def load_skeleton(directory: str | Path, expect: ModelConfig | None = None):
    """:func:`load_model`'s model as a skeleton to fill in parts: every parameter on the meta device, buffers real
    (:func:`sepit.model.build.parameters_on_meta`); of the weights only their names and shapes are read (their file
    is checked against its sha256 first, as load_model checks it). Returns (model, the file's tensors by name,
    :func:`stored_tensors`)."""
    from sepit.model.build import parameters_on_meta

    d = Path(directory)
    with parameters_on_meta():
        model = _rebuild(d, expect)
    if (d / RETRIEVAL).is_dir():
        model.retrieval_index = d / RETRIEVAL
    return model, stored_tensors(d / WEIGHTS)


def skeleton_from_checkpoint(directory: str | Path, *, moe: bool | None = None):
    """A weightless meta-device model with a checkpoint's architecture (for counting); ``moe`` overrides whether
    the LLM is upcycled. Returns (model, where the architecture came from)."""
    from transformers import AutoConfig, AutoModelForCausalLM, EsmModel

    from sepit.model.build import assemble, with_moe

    d = Path(directory)
    record = read_record(d)
    cfg = checkpoint_config(d)
    if moe is not None:
        cfg = with_moe(cfg, moe)
    with torch.device("meta"):
        esm = EsmModel(AutoConfig.from_pretrained(d / "plm"), add_pooling_layer=False)
        llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(d / "llm"))
        model = assemble(cfg, esm, llm, None, None, int(record["text_encoder"]["hidden_size"]))
    return model, {"plm": record["plm"]["source"], "llm": record["llm"]["source"], "checkpoint": str(d)}
