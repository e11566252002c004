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


#: HeadsConfig keys of older sepit versions, no longer used: the stage-0 loss weights are the training config's
#: ``loss_weights`` (one source for training and validation). Models saved before still carry them.
RETIRED_HEADS_KEYS = ("contrastive_weight", "denoise_weight", "mlm_weight")


@dataclass
class HeadsConfig:
    """Stage-0 heads and their corruption settings (contrastive InfoNCE + coordinate denoising + masked residues).
    The losses' weights are not here: they are the training config's ``loss_weights``."""

    contrastive_dim: int = 512
    temperature_init: float = 0.07  # the logit scale starts at 1 / temperature_init
    denoise_sigma: float = 0.2  # Å: noise σ·ε on real (structured) residues; the head predicts ε
    mask_prob: float = 0.15
    # Retired (RETIRED_HEADS_KEYS): accepted so that older models' sepit_config.json still loads, and dropped.
    contrastive_weight: float | None = field(default=None, repr=False)
    denoise_weight: float | None = field(default=None, repr=False)
    mlm_weight: float | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        given = {k: getattr(self, k) for k in RETIRED_HEADS_KEYS if getattr(self, k) is not None}
        if given:
            from sepit.log import get_logger

            get_logger(__name__).debug(f"heads: retired key(s) {given} dropped; the stage-0 loss weights are the "
                                       "training config's loss_weights")
            for k in given:
                setattr(self, k, None)


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
    # decoding: an answer never repeats an n-gram of this many tokens (0 = off); a small model's greedy answers
    # otherwise loop ("DNA binding, DNA binding, ...")
    no_repeat_ngram: int = 0
    structure: StructureConfig = field(default_factory=StructureConfig)
    heads: HeadsConfig = field(default_factory=HeadsConfig)
    projector: ProjectorConfig = field(default_factory=ProjectorConfig)
    moe: MoEConfig = field(default_factory=MoEConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)  # homolog context (off: the paper's prompt)
    tiny: TinySizes = field(default_factory=TinySizes)

    def __post_init__(self) -> None:
        if self.max_residues < 1:
            raise ValueError("max_residues must be >= 1")
        if self.no_repeat_ngram < 0:
            raise ValueError("no_repeat_ngram must be >= 0 (0 = off)")
        if self.projector.pool < 1:
            raise ValueError("projector.pool must be >= 1")
        if self.projector.num_layers not in (1, 2):
            raise ValueError("projector.num_layers must be 1 or 2")
        if self.moe.num_experts < 1:
            raise ValueError("moe.num_experts must be >= 1")
        if not 0.0 < self.heads.mask_prob < 1.0:
            raise ValueError("heads.mask_prob must be in (0, 1)")
