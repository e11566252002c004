"""The evaluation config (``kind: eval``): which items, which metrics, which baselines, how to decode.

Identity bin edges are percentages; metric models are registered names (``minilm_l6_v2``) or local HF directories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from sepit.config import config_kind

BASELINES = ("prior", "nearest_homolog", "topk_vote")


@dataclass
class MetricsSection:
    """Text metrics. ``tokenizer``: BLEU/METEOR tokens — ``wordpiece`` (the HF tokenizer at ``tokenizer_path``,
    as the research code did with PubMedBERT) or ``regex`` (needs nothing). ``bertscore_model``: "" turns
    BERTScore off; ``bertscore_layers`` null = the encoder's last layer."""

    tokenizer: Literal["wordpiece", "regex"] = "wordpiece"
    tokenizer_path: str = "minilm_l6_v2"
    meteor: bool = True
    bertscore_model: str = "minilm_l6_v2"
    bertscore_layers: int | None = None
    bertscore_batch_size: int = 32
    device: str = "cpu"


@dataclass
class GenerationSection:
    """Greedy decoding of the model under test."""

    max_new_tokens: int = 128
    batch_size: int = 8
    yesno_likelihood: bool = True  # yes/no items: P(yes) from one forward pass, no decoding
    no_structure_ablation: bool = True
    no_retrieval_ablation: bool = True  # a model with homolog context is also run without it
    # GiB of prompt beginnings (chat header + protein) kept across the model's runs: the other questions about a
    # protein, and the same questions without homologs or structure, run only their own tokens (0 = keep none)
    prefix_store_gb: float = 4.0


@dataclass
class BaselineSection:
    """Baselines run on the same items. ``fallback``: answer for items without a usable homolog."""

    run: list[str] = field(default_factory=lambda: list(BASELINES))
    fallback: Literal["prior", "empty"] = "prior"
    mmseqs_sensitivity: float = 7.5
    mmseqs_evalue: float = 10.0
    max_hits: int = 10


@config_kind("eval")
@dataclass
class EvalConfig:
    """What ``sepit eval`` does. ``limit`` 0 = all items; ``limits`` per kind (e.g. ``{yesno: 600, open: 200}``)
    take precedence over ``limit`` for their kinds; ``tasks``/``kinds`` empty = all."""

    split: str = "test"
    kinds: list[str] = field(default_factory=lambda: ["open", "yesno"])
    tasks: list[str] = field(default_factory=list)
    limit: int = 0
    limits: dict[str, int] = field(default_factory=dict)
    identity_bins: list[float] = field(default_factory=lambda: [30.0, 50.0, 90.0])
    ece_bins: int = 10
    # resamples of the test proteins for the 95% intervals of the headline metrics and of each system's difference to
    # the nearest-homolog baseline (0 = no intervals)
    bootstrap: int = 1000
    metrics: MetricsSection = field(default_factory=MetricsSection)
    generation: GenerationSection = field(default_factory=GenerationSection)
    baselines: BaselineSection = field(default_factory=BaselineSection)

    def __post_init__(self) -> None:
        if self.limit < 0 or any(v < 0 for v in self.limits.values()):
            raise ValueError("limit and limits must be >= 0")
        if set(self.limits) - {"caption", "open", "yesno"}:
            raise ValueError(f"limits: unknown kinds {sorted(set(self.limits) - {'caption', 'open', 'yesno'})}")
        if self.ece_bins < 1:
            raise ValueError("ece_bins must be >= 1")
        if self.bootstrap < 0:
            raise ValueError("bootstrap must be >= 0 (0 = no intervals)")
        if any(not 0 < b < 100 for b in self.identity_bins):
            raise ValueError("identity_bins are percentages strictly between 0 and 100")
        bad_kinds = set(self.kinds) - {"caption", "open", "yesno"}
        if bad_kinds:
            raise ValueError(f"unknown kinds {sorted(bad_kinds)} (caption, open, yesno)")
        bad = set(self.baselines.run) - set(BASELINES)
        if bad:
            raise ValueError(f"unknown baselines {sorted(bad)} (known: {', '.join(BASELINES)})")
