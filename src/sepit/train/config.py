"""The training config: a stage is data + trainable groups with learning rates + losses, all declared here.

Parameter groups are the model's named groups (``plm, structure, heads, projector, llm, experts, router``): a group
listed in ``lr`` trains at that learning rate, every other group is frozen. With ``lora.rank`` > 0 the LLM's own
weights stay frozen and LoRA adapters on its attention projections train at ``lr.llm`` instead (see
:meth:`TrainConfig.trainable`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from sepit.config import config_kind

GROUPS = ("plm", "structure", "heads", "projector", "llm", "experts", "router")

#: The ``loss_weights`` keys each stage reads. Stage 0's defaults are here, the one place they are set: a stage-0
#: config gets every key (those it leaves out at these values), for training and its validation loss alike. ``aux``
#: (stages 1–2) defaults to the model's ``moe.aux_loss_weight``.
LOSS_WEIGHT_KEYS: dict[int, tuple[str, ...]] = {0: ("contrastive", "denoise", "mlm"), 1: ("aux",), 2: ("aux",)}
STAGE0_LOSS_WEIGHTS: dict[str, float] = {"contrastive": 1.0, "denoise": 1.0, "mlm": 1.0}


@dataclass
class DataSection:
    """Which records of a built dataset (``sepit data build``) a stage trains on."""

    dir: str = ""
    split: str = "train"
    kinds: list[str] = field(default_factory=lambda: ["caption"])
    tasks: list[str] = field(default_factory=list)
    max_records: int = 0
    max_protein_len: int = 1022
    eval_split: str = "valid"
    eval_records: int = 64
    # only records whose proteins all have a structure (``has_structure`` in proteins.jsonl), in training and
    # validation alike; ``max_records``/``eval_records`` then count those. Stage 0 sets it: its data is (protein,
    # structure, caption), and a protein without one gives no denoising signal.
    require_structure: bool = False


@dataclass
class DistributedSection:
    """How several processes (``torchrun`` / ``accelerate launch``) share a stage; one process ignores it.

    ``strategy``: ``ddp`` keeps a whole model per process and averages gradients; ``fsdp`` shards weights,
    gradients and optimizer state over the processes (torch FSDP2) for models that do not fit on one device;
    ``auto`` is ddp. ``reshard_after_forward`` (fsdp): free each block's gathered weights after its forward and
    gather them again for backward (less memory, more communication).
    """

    strategy: Literal["auto", "ddp", "fsdp"] = "auto"
    reshard_after_forward: bool = True


@dataclass
class LoraSection:
    """LoRA adapters on the LLM (needs ``peft``: ``pip install 'sepit[lora]'``); ``rank`` 0 (the default) = off, full
    fine-tuning of the groups in ``lr``.

    With ``rank`` > 0, every LLM linear layer whose name ends in one of ``targets`` gets a low-rank update
    ``(alpha / rank) · B A`` (``dropout`` on its input); the adapters train at ``lr.llm`` while the LLM's own
    weights stay frozen (MoE experts and routers, other groups: as ``lr`` says). Checkpoints hold the merged weights,
    so a saved model is a plain sepit model that loads without peft.
    """

    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise ValueError(f"lora.rank must be >= 0 (0 = off), got {self.rank}")
        if self.alpha <= 0:
            raise ValueError(f"lora.alpha must be > 0, got {self.alpha}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora.dropout must be in [0, 1), got {self.dropout}")
        if self.rank and not self.targets:
            raise ValueError("lora.targets is empty: name the LLM linear layers to adapt (e.g. q_proj, v_proj)")


@dataclass
class TrainConfig:
    """One training stage. ``stage``: 0 warm-up (contrastive + denoise + MLM), 1 captions, 2 MoE QA."""

    stage: int
    out_dir: str
    model: str = "tiny"
    model_overrides: list[str] = field(default_factory=list)  # key=value on the model config (when not init_from)
    init_from: str = ""
    data: DataSection = field(default_factory=DataSection)
    lr: dict[str, float] = field(default_factory=dict)
    loss_weights: dict[str, float] = field(default_factory=dict)
    structure_dropout: float = 0.15
    upcycle_experts: int = 0
    cache_encoder: bool = True
    cache_max_gb: float = 4.0  # stage 2's encoder cache: host memory per process (least recently used out first)
    epochs: int = 1
    max_steps: int = 0
    batch_size: int = 4
    grad_accum: int = 1
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    seed: int = 0
    save_every: int = 100
    keep_checkpoints: int = 2
    log_every: int = 10
    grad_checkpointing: bool = False
    length_grouping: bool = True
    distributed: DistributedSection = field(default_factory=DistributedSection)
    lora: LoraSection = field(default_factory=LoraSection)

    def __post_init__(self) -> None:
        if self.stage not in (0, 1, 2):
            raise ValueError(f"stage must be 0, 1 or 2, got {self.stage}")
        if not str(self.out_dir).strip():
            raise ValueError("out_dir is empty: name the folder for checkpoints and metrics (out_dir=runs/NAME)")
        unknown = sorted(set(self.lr) - set(GROUPS))
        if unknown:
            raise ValueError(f"lr names unknown parameter group(s) {unknown}; groups are {list(GROUPS)}")
        if not self.lr:
            raise ValueError("lr is empty: a stage must train at least one parameter group")
        allowed = LOSS_WEIGHT_KEYS[self.stage]
        for key, weight in self.loss_weights.items():
            if key not in allowed:
                raise ValueError(f"loss_weights.{key} is not a loss of stage {self.stage}; its losses are "
                                 f"{list(allowed)}")
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"loss_weights.{key} must be a finite number >= 0, got {weight}")
        if self.stage == 0:
            self.loss_weights = {**STAGE0_LOSS_WEIGHTS, **self.loss_weights}
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
        if self.cache_max_gb < 0:
            raise ValueError(f"cache_max_gb must be >= 0 (0 = cache nothing), got {self.cache_max_gb}")
        if not 0.0 <= self.structure_dropout <= 1.0:
            raise ValueError("structure_dropout must be in [0, 1]")
        if self.lora.rank and "llm" not in self.lr:
            raise ValueError(f"lora.rank={self.lora.rank} adapts the LLM, but lr has no llm rate for the adapters"
                             f"{' (stage 0 does not run the LLM)' if self.stage == 0 else ''}")

    def trainable(self) -> dict[str, float]:
        """Parameter group → learning rate of what trains: ``lr``, except that with LoRA (``lora.rank`` > 0) the
        ``llm`` rate goes to the adapters (group ``lora``) and the LLM's own weights stay frozen."""
        if not self.lora.rank:
            return dict(self.lr)
        return {("lora" if g == "llm" else g): v for g, v in self.lr.items()}


config_kind("train")(TrainConfig)
