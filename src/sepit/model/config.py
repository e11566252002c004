"""``ModelConfig``: every architecture choice of a SEPIT model (``kind: model`` YAML files).

Model names (``plm``, ``llm``, ``text_encoder``) are resolved by :func:`sepit.assets.model_path`: a registered name
(``esm2_t6_8M``), any local Hugging Face directory, or ``tiny`` (random weights built offline, for tests). Sizes
under ``tiny`` are used only for ``tiny`` models.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sepit.config import config_kind
from sepit.retrieval.config import RetrievalConfig

TINY = "tiny"


@dataclass
class StructureConfig:
    """Structure module: Gaussian basis of Cα distances → per-head attention bias + node encoding."""

    num_kernels: int = 128
    bias_hidden: int = 128
    node_scale: float = 0.01  # ω: node encoding is added to the residue embeddings × ω


@dataclass
class HeadsConfig:
    """Stage-0 heads and losses (contrastive InfoNCE + coordinate denoising + masked residues, equal weights)."""

    contrastive_dim: int = 512
    temperature_init: float = 0.07  # the logit scale starts at 1 / temperature_init
    denoise_sigma: float = 0.2  # Å, Gaussian noise on real (structured) residues
    mask_prob: float = 0.15
    contrastive_weight: float = 1.0
    denoise_weight: float = 1.0
    mlm_weight: float = 1.0


@dataclass
class ProjectorConfig:
    """Encoder penultimate layer → LLM width. ``num_layers=1`` is a single Linear; ``hidden_dim=0`` = LLM width.

    ``pool`` > 1 averages each run of ``pool`` residues into one LLM token (ceil(L / pool) tokens per protein).
    """

    num_layers: int = 2
    hidden_dim: int = 0
    pool: int = 1


@dataclass
class MoEConfig:
    """Stage-2 MoE upcycling of every decoder FFN (top-1 routing, no token dropping)."""

    enabled: bool = False
    num_experts: int = 4
    aux_loss_weight: float = 0.01


@dataclass
class TinySizes:
    """Sizes of the random ``tiny`` models (used only where a model name is ``tiny``)."""

    plm_hidden: int = 32
    plm_layers: int = 2
    plm_heads: int = 4
    llm_hidden: int = 32
    llm_layers: int = 2
    llm_heads: int = 4
    llm_kv_heads: int = 2
    text_hidden: int = 32
    text_layers: int = 1
    seed: int = 0


@config_kind("model")
@dataclass
class ModelConfig:
    """The whole SEPIT model. Build with :func:`sepit.model.build_model`."""

    plm: str = "esm2_t6_8M"
    llm: str = "smollm2_135m_instruct"
    text_encoder: str = "minilm_l6_v2"
    plm_attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    max_residues: int = 1022  # longer proteins are cropped to their first max_residues residues
    max_new_tokens_limit: int = 1024
    structure: StructureConfig = field(default_factory=StructureConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)  # homolog context (off: the paper's prompt)
    tiny: TinySizes = field(default_factory=TinySizes)

    def __post_init__(self) -> None:
        if self.max_residues < 1:
            raise ValueError("max_residues must be >= 1")
        if self.projector.pool < 1:
            raise ValueError("projector.pool must be >= 1")
        if self.projector.num_layers not in (1, 2):
            raise ValueError("projector.num_layers must be 1 or 2")
        if self.moe.num_experts < 1:
            raise ValueError("moe.num_experts must be >= 1")
        if not 0.0 < self.heads.mask_prob < 1.0:
            raise ValueError("heads.mask_prob must be in (0, 1)")
