"""The training config: a stage is data + trainable groups with learning rates + losses, all declared here.

Parameter groups are the model's named groups (``plm, structure, heads, projector, llm, experts, router``): a group
listed in ``lr`` trains at that learning rate, every other group is frozen. With ``lora.rank`` > 0 the LLM's own
weights stay frozen and LoRA adapters on its attention projections train at ``lr.llm`` instead (see
:meth:`TrainConfig.trainable`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sepit.config import config_kind

GROUPS = ("plm", "structure", "heads", "projector", "llm", "experts", "router")


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
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ValueError("batch_size and grad_accum must be >= 1")
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
