"""``RetrievalConfig``: how a model's prompts get homolog context (part of the model config, so inference applies
what training used). Torch-free."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RetrievalConfig:
    """Homolog context: the top ``k`` MMseqs2 hits of the protein in the model's reference index (by default the
    training split of its dataset) and their annotations for the task asked, put in the prompt before the question.

    ``enabled: false`` is the paper's prompt (protein + question). Cut-offs: ``evalue`` (MMseqs2 ``-e``),
    ``min_identity`` (fraction of identical aligned positions) and ``min_coverage`` (fraction of the query covered).
    ``train_max_identity``: at training time hits above this identity are left out, so that training contexts look
    like those of held-out proteins (whose closest training proteins are distant by construction of the split).
    ``max_chars``: each hit's annotation is cut to this many characters (prompt length stays bounded).
    ``claims``: a yes/no question about one candidate value also shows, per hit, whether its annotation names that
    value (off for models trained before this existed: their prompts stay as they were trained).
    ``own_properties``: a question about the protein's length, mass or composition also gets the protein's own
    value, computed from its sequence (and, with ``claims``, its own answer beside each hit's); off for older
    models, like ``claims``.
    ``choose_open``: an open question about a task the homologs annotate is answered by the model's choice (highest
    mean log-probability per token) among the hits' annotations for it and the index's most common one, worded as
    answers, instead of free text (off for older models and in the paper's form).
    """

    enabled: bool = False
    k: int = 3
    evalue: float = 1.0
    min_identity: float = 0.0
    min_coverage: float = 0.0
    train_max_identity: float = 1.0
    max_chars: int = 160
    sensitivity: float | None = 7.5  # MMseqs2 -s (None: MMseqs2's default, 5.7)
    claims: bool = False
    own_properties: bool = False
    choose_open: bool = False

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError("retrieval.k must be >= 1")
        for name in ("min_identity", "min_coverage", "train_max_identity"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"retrieval.{name} must be a fraction in [0, 1], got {v}")
        if self.evalue <= 0:
            raise ValueError("retrieval.evalue must be > 0")
        if self.max_chars < 20:
            raise ValueError("retrieval.max_chars must be >= 20")
