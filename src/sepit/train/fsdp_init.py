"""FSDP set-up without any process holding the whole model: build on the meta device, shard, then each rank
allocates its own shards and fills them from where the weights are.

    model, weights = load_on_meta(directory)           # init_from: a sepit model directory
    model, weights = build_on_meta(model_config, seed)  # a preset or config: pretrained ESM-2 / LLM + new modules
    add_routers(model, weights, seed)                   # after stage 2 upcycled the (meta) model
    fsdp.shard_model(model, ...)
    materialise(model, device)                          # each rank's shards, uninitialised; buffers kept
    fill(model, weights, where)                         # or fill(model, checkpoint_weights(dir), dir): a resume

``weights`` maps state-dict names to where their values are: a :class:`~sepit.model.checkpoint.StoredTensor` (a
tensor of a safetensors file, read by rows: each rank reads the rows of its shards only) or a CPU tensor (what the
one-process build draws or computes itself, drawn the same way: sepit's new modules, routers, random ``tiny`` parts,
buffers; small, and taken whole). The experts of an upcycled LLM read the weights of the FFN they copy. The weights
must fit the model exactly, as :func:`sepit.model.checkpoint.load_weights` requires. Parameters FSDP leaves whole
(0-d ones, a replicated encoder) are read whole.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from sepit.errors import CheckpointError
from sepit.model.checkpoint import StoredTensor
from sepit.train.fsdp import local_rows

#: Where a weight's values are: rows of a file, or a (small) CPU tensor taken whole.
Source = StoredTensor | torch.Tensor


# ---- where the weights are ------------------------------------------------------------------------------------------
def load_on_meta(directory: Path) -> tuple[nn.Module, dict[str, Source]]:
    """The model of a sepit model directory on the meta device (:func:`~sepit.model.checkpoint.load_skeleton`), and
    its weights file's tensors."""
    from sepit.model.checkpoint import load_skeleton

    return load_skeleton(directory)


def checkpoint_weights(directory: Path) -> dict[str, Source]:
    """The weights of a saved model directory (a resumed checkpoint's ``model/``), checked against the sha256 its
    config recorded, by name."""
    from sepit.model.checkpoint import WEIGHTS, stored_tensors, verify_files

    verify_files(directory)  # a damaged file is a one-line error, not a crash
    return stored_tensors(Path(directory) / WEIGHTS)


def build_on_meta(cfg, *, seed: int) -> tuple[nn.Module, dict[str, Source]]:
    """:func:`~sepit.model.build_model`'s model (``cfg``, ``seed``) on the meta device, and its weights: the
    pretrained ESM-2 / LLM parameters in their checkpoint folders' safetensors files (the LLM's embeddings grown by
    the protein tokens' rows), the rest drawn as build_model draws it (:func:`sepit.model.build.build_on_meta`)."""
    from sepit.model import build

    model, values, pretrained = build.build_on_meta(cfg, seed=seed)
    weights: dict[str, Source] = dict(values)
    if "plm" in pretrained:
        weights.update(_pretrained(model.encoder.esm, "encoder.esm.", pretrained["plm"]))
    if "llm" in pretrained:
        weights.update(_pretrained_llm(model.llm, "llm.", pretrained["llm"], seed))
    return model, weights


def _pretrained(module: nn.Module, prefix: str, directory: Path) -> dict[str, Source]:
    """The tensors of a Hugging Face checkpoint folder that ``module``'s names (under ``prefix`` in the model) have,
    matched as ``from_pretrained`` matches them, with transformers' own renamings (legacy ``LayerNorm.gamma``, the
    base model's prefix ``esm.``). A tensor transformers would convert (split, merge) cannot be read in rows: a
    one-line CheckpointError."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, dot_natural_key, rename_source_key

    from sepit.model.checkpoint import pretrained_tensors

    stored = pretrained_tensors(directory)
    transforms = get_model_conversion_mapping(module)
    renamings = [t for t in transforms if isinstance(t, WeightRenaming)]
    converters = [t for t in transforms if isinstance(t, WeightConverter)]
    names = module.state_dict(keep_vars=True)
    base = module.base_model_prefix
    out: dict[str, Source] = {}
    for key in sorted(stored, key=dot_natural_key):  # the order from_pretrained renames them in
        name, converted = rename_source_key(key, renamings, converters, base, names)
        if name not in names and key in names:
            name, converted = rename_source_key(key, [], [], base, names)
        if name in names:
            if converted is not None:
                raise CheckpointError(f"{directory}: weight {key} is converted by transformers while loading "
                                      f"({converted}), so it cannot be read in parts for FSDP; use "
                                      "distributed.strategy=ddp")
            out[prefix + name] = stored[key]
    return out


def _pretrained_llm(llm: nn.Module, prefix: str, directory: Path, seed: int) -> dict[str, Source]:
    """:func:`_pretrained` for the LLM, whose embeddings (and untied output embeddings) have more rows than the
    file's: the protein tokens' rows follow the stored ones, drawn as build_model draws them (which needs the whole
    pretrained matrix: :func:`sepit.model.build.added_token_rows`)."""
    from transformers import AutoConfig

    from sepit.model.build import added_token_rows

    out = _pretrained(llm, prefix, directory)
    names: dict[int, list[str]] = {}
    for name, t in llm.state_dict(keep_vars=True).items():
        names.setdefault(id(t), []).append(prefix + name)

    def stored(weight: torch.Tensor) -> tuple[list[str], StoredTensor | None]:
        group = names[id(weight)]
        return group, next((out[n] for n in group if isinstance(out.get(n), StoredTensor)), None)

    emb = llm.get_input_embeddings().weight
    head = llm.get_output_embeddings().weight if llm.get_output_embeddings() is not None else emb
    emb_names, emb_src = stored(emb)
    if emb_src is None or emb_src.shape[0] >= emb.shape[0]:
        return out  # nothing added (a missing weight is reported when the weights are matched to the model)
    tied = head is emb
    head_names, head_src = stored(head)
    if not tied and head_src is None:
        return out
    rows_in, rows_out = added_token_rows(AutoConfig.from_pretrained(directory), emb_src.read(),
                                         None if tied else head_src.read(), emb.shape[0], seed=seed)
    out.update({n: dataclasses.replace(emb_src, added=rows_in) for n in emb_names})
    if not tied:
        out.update({n: dataclasses.replace(head_src, added=rows_out) for n in head_names})
    return out


def add_routers(model: nn.Module, weights: dict[str, Source], *, seed: int) -> None:
    """After ``model.upcycle()`` of a meta-device model under ``_seeded(seed)``: its routers' values, drawn as that
    upcycling draws them for a real model (:func:`sepit.model.build.router_weights`). The experts need nothing:
    they read the weights of the FFN they copy."""
    from sepit.model.build import router_weights
    from sepit.model.moe import MoEFeedForward

    moe = [(name, m) for name, m in model.named_modules() if isinstance(m, MoEFeedForward)]
    routers = router_weights(len(moe), int(model.llm.config.hidden_size), model.config.moe.num_experts, seed=seed)
    weights.update({f"{name}.router.weight": w for (name, _), w in zip(moe, routers)})


def _dense_names(model: nn.Module) -> dict[str, str]:
    """Each MoE expert's state-dict name → the name of the same weight in the dense FFN it was copied from."""
    from sepit.model.moe import MoEFeedForward

    out = {}
    for prefix, m in model.named_modules():
        if isinstance(m, MoEFeedForward):
            for e, expert in enumerate(m.experts):
                for name in expert.state_dict(keep_vars=True):
                    out[f"{prefix}.experts.{e}.{name}"] = f"{prefix}.{name}"
    return out


def _shape(src: Source) -> tuple[int, ...]:
    return src.full_shape if isinstance(src, StoredTensor) else tuple(src.shape)


def resolve(model: nn.Module, weights: dict[str, Source], where: str) -> dict[str, Source]:
    """Each state-dict name of ``model`` (parameters and persistent buffers) → its source, strictly: every one has a
    source of its shape (tied weights: under any of their names; an expert: under its dense FFN's), and every source
    is used; otherwise a one-line CheckpointError naming ``where`` the weights come from."""
    groups: dict[int, list[str]] = {}
    tensors: dict[int, torch.Tensor] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(t), []).append(name)
        tensors[id(t)] = t
    dense = _dense_names(model)
    out: dict[str, Source] = {}
    used: set[str] = set()
    missing, mismatched = [], []
    for key, names in groups.items():
        found = [n for n in names if n in weights] or [dense[n] for n in names if dense.get(n) in weights]
        if not found:
            missing.append(names[0])
            continue
        src = weights[found[0]]
        if _shape(src) != tuple(tensors[key].shape):
            mismatched.append(f"{names[0]}: {_shape(src)} for {tuple(tensors[key].shape)}")
        used.update(found)
        out.update({n: src for n in names})
    unexpected = [n for n in weights if n not in used]
    if missing or unexpected or mismatched:
        def few(xs: list[str]) -> str:
            return f"{sorted(xs)[:3]}{'…' if len(xs) > 3 else ''}"

        raise CheckpointError(f"{where}: weights do not fit this run's model (missing {few(missing)}, unexpected "
                              f"{few(unexpected)}, shapes {few(mismatched)})")
    return out


# ---- each rank's shards ---------------------------------------------------------------------------------------------
def materialise(model: nn.Module, device: torch.device) -> None:
    """Allocate a sharded, meta-device model on ``device``: each rank its shards (parameters FSDP left whole:
    whole), uninitialised until :func:`fill`. Buffers keep the values they were built with (non-persistent ones,
    such as rotary frequencies, are in no checkpoint)."""
    buffers = {name: b for name, b in model.named_buffers()}  # real: see build.parameters_on_meta
    model.to_empty(device=device)  # FSDP re-pads its shards' storage after this (FSDPModule._apply)
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])


@torch.no_grad()
def fill(model: nn.Module, weights: dict[str, Source], where: str) -> None:
    """Copy into each of ``model``'s tensors its values from ``weights`` (:func:`resolve`): a sharded parameter gets
    the rows of its shard only, read from the file's rows (or cut from a small CPU tensor); a whole tensor all of
    them. ``where``: the weights' origin, named in errors."""
    from torch.distributed.tensor import DTensor

    sources = resolve(model, weights, where)
    done: set[int] = set()
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in done:
            continue  # a tied weight, filled under its first name
        done.add(id(t))
        src = sources[name]
        if isinstance(t, DTensor):
            start, stop = local_rows(t)
            rows = src.read(start, stop) if isinstance(src, StoredTensor) else src[start:stop]
            t.to_local().copy_(rows)
        else:
            t.copy_(src.read() if isinstance(src, StoredTensor) else src)
