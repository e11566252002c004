"""LoRA on the LLM during a training stage, through peft's public API; saved models stay plain sepit models.

``add_lora`` injects peft LoRA layers into the LLM in place (``peft.inject_adapter_in_model``: the LLM stays the
same transformers model, only its target linears become ``base_layer`` + ``lora_A``/``lora_B``). Checkpoints never
hold peft's names: inside ``merged(model)`` every LoRA layer is swapped for a merged copy of its base linear
(peft's ``merge()`` on a copy), so ``save_model`` writes, and ``load_weights`` reads, the plain model's weights.
A checkpoint also keeps the LoRA layers' own state (frozen base weights + adapters, ``lora.safetensors``) so that
``--resume`` continues exactly. peft is optional (``pip install 'sepit[lora]'``) and imported only when used.

    add_lora(model.llm, rank=8, alpha=16, dropout=0.0, targets=["q_proj", "v_proj"])
    with merged(model):
        save_model(model, out_dir)   # loads with sepit.model.load_model, without peft
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from torch import nn

from sepit.errors import CheckpointError, SepitError

STATE_FILE = "lora.safetensors"


def add_lora(llm: nn.Module, rank: int, alpha: float, dropout: float, targets: list[str]) -> nn.Module:
    """Inject LoRA adapters (``rank``, scaling ``alpha / rank``, ``dropout`` on their input) into every linear layer
    of ``llm`` whose name ends in one of ``targets``; in place, returns ``llm``. B starts at zero, so the model's
    outputs are unchanged until the adapters train."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        raise SepitError(f"lora.rank={rank} needs peft, which is not installed: pip install 'sepit[lora]' "
                         "(or peft>=0.11)") from None
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets), bias="none")
    try:
        return inject_adapter_in_model(config, llm)
    except ValueError as e:  # e.g. no module matches the targets
        raise SepitError(f"lora: {str(e).splitlines()[0]}") from None


def lora_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Name → peft LoRA layer of every adapted linear in ``model``; empty without LoRA."""
    if sys.modules.get("peft") is None:  # nothing can hold a peft layer before peft is imported
        return {}
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}


@contextmanager
def merged(model: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``model`` is the plain model with the adapters merged in: every LoRA layer is replaced by a
    merged copy of its base linear (W + (alpha / rank)·B A). The trained layers come back afterwards, untouched
    (the copies take no part in training). Without LoRA, ``model`` as it is."""
    layers = lora_layers(model)
    try:
        for name, layer in layers.items():
            plain = copy.deepcopy(layer)
            plain.merge()
            _set_submodule(model, name, plain.get_base_layer())
        yield model
    finally:
        for name, layer in layers.items():
            _set_submodule(model, name, layer)


def save_state(model: nn.Module, directory: Path) -> None:
    """Write the LoRA layers' own state (base weights and adapters, under the model's names) to
    ``directory/lora.safetensors``, for an exact resume; nothing without LoRA."""
    layers = lora_layers(model)
    if not layers:
        return
    from safetensors.torch import save_file

    state = {f"{name}.{k}": v.detach().contiguous() for name, layer in layers.items()
             for k, v in layer.state_dict().items()}
    save_file(state, str(Path(directory) / STATE_FILE))


def load_state(model: nn.Module, directory: Path) -> None:
    """Load ``directory/lora.safetensors`` into the model's LoRA layers (after the merged weights were loaded into
    the rest of the model). Strict: every LoRA layer's tensors must be there, and nothing else."""
    layers = lora_layers(model)
    file = Path(directory) / STATE_FILE
    if not layers:
        if file.is_file():
            raise CheckpointError(f"{directory} was trained with LoRA (it has {STATE_FILE}); resume it with the "
                                  "same lora settings, or start a new run from its model")
        return
    if not file.is_file():
        raise CheckpointError(f"{directory}: no {STATE_FILE}, so it was not trained with LoRA; resume it without "
                              "lora, or start a new run with init_from")
    from safetensors.torch import load_file

    state = load_file(str(file))
    wanted = {f"{name}.{k}" for name, layer in layers.items() for k in layer.state_dict()}
    if set(state) != wanted:
        missing, unexpected = sorted(wanted - set(state)), sorted(set(state) - wanted)
        raise CheckpointError(f"{file}: LoRA state does not fit this run's adapters (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}); resume with the same lora settings")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes (another rank)
        raise CheckpointError(f"{file}: LoRA state does not fit this run's adapters "
                              f"({str(e).strip().splitlines()[-1].strip()})") from None


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)
