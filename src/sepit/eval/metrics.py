"""The paper's text metrics, defined as the SEPIT research code defines them (METHOD.md §4).

Per sample, then averaged over samples, all ×100:

- **BLEU-1..4**: NLTK BLEU of the tokenised prediction against the one tokenised reference, **no smoothing**
  (the research code calls ``corpus_bleu([[ref]], [hyp])`` once per sample, which is NLTK's sentence BLEU with
  ``SmoothingFunction().method0``): an n-gram order with zero matches makes that BLEU 0. Weights are the research
  code's: ``(1,0,0,0)``, ``(.5,.5,0,0)``, ``(.33,.33,.33,0)`` (not 1/3: kept for comparability) and ``(.25,)*4``.
- **ROUGE-1/2/L**: F-measure of ``rouge_score`` with the Porter stemmer, on the raw strings (its own tokeniser).
- **METEOR**: ``nltk.translate.meteor_score`` (α=0.9, β=3, γ=0.5, WordNet 3.0 synonyms) on the tokenised texts.
- **yes/no accuracy**: the last standalone "yes"/"no" word of the answer equals the reference's; none → wrong.

BERTScore lives in :mod:`sepit.eval.bertscore`; :class:`TextScorer` runs all of them over lists of pairs.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sepit.errors import SepitError
from sepit.eval.text import Tokenize, last_yes_no

if TYPE_CHECKING:
    from sepit.eval.bertscore import BertScorer

BLEU_WEIGHTS: dict[str, tuple[float, ...]] = {
    "bleu1": (1.0, 0.0, 0.0, 0.0),
    "bleu2": (0.5, 0.5, 0.0, 0.0),
    "bleu3": (0.33, 0.33, 0.33, 0.0),
    "bleu4": (0.25, 0.25, 0.25, 0.25),
}
TEXT_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "rouge1", "rouge2", "rougeL", "meteor", "bertscore_f1")
WORDNET_HINT = ("METEOR needs WordNet 3.0 for NLTK in <venv>/nltk_data/corpora/wordnet (with a 'lexnames' file): "
                "run `bash scripts/setup.sh` (it installs Debian's wordnet-base + wordnet-sense-index and copies "
                "them there), point NLTK_DATA at such a folder, or turn METEOR off (metrics.meteor=false)")


def bleu(hyp: Sequence[str], ref: Sequence[str]) -> dict[str, float]:
    """BLEU-1..4 (×100) of one tokenised prediction against one tokenised reference, no smoothing."""
    from nltk.translate.bleu_score import corpus_bleu

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns on every zero n-gram count; that is the defined result, 0
        scores = corpus_bleu([[list(ref)]], [list(hyp)], weights=list(BLEU_WEIGHTS.values()))
    if not isinstance(scores, list):  # NLTK returns a bare 0 when there is no unigram match at all
        scores = [scores] * len(BLEU_WEIGHTS)
    return {k: 100.0 * float(s) for k, s in zip(BLEU_WEIGHTS, scores)}


class RougeScorer:
    """ROUGE-1/2/L F-measures (×100) with Porter stemming, on raw strings."""

    def __init__(self) -> None:
        from rouge_score import rouge_scorer

        self._scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)

    def __call__(self, prediction: str, reference: str) -> dict[str, float]:
        s = self._scorer.score(reference, prediction)  # (target, prediction); F is symmetric anyway
        return {k: 100.0 * v.fmeasure for k, v in s.items()}


_WORDNET_OK = False


def require_wordnet() -> None:
    """Load NLTK's WordNet from local files or raise a one-line SepitError saying what to install."""
    global _WORDNET_OK
    if _WORDNET_OK:
        return
    from nltk.corpus import wordnet

    try:
        wordnet.synsets("protein")
    except (LookupError, OSError) as e:
        raise SepitError(f"{WORDNET_HINT} ({type(e).__name__})") from None
    _WORDNET_OK = True


def meteor(hyp: Sequence[str], ref: Sequence[str]) -> float:
    """METEOR (×100) of one tokenised prediction against one tokenised reference (NLTK defaults, WordNet 3.0)."""
    require_wordnet()
    from nltk.translate.meteor_score import meteor_score

    if not hyp or not ref:
        return 0.0
    return 100.0 * float(meteor_score([list(ref)], list(hyp)))


def yes_no_correct(prediction: str, reference: str) -> float:
    """1.0 when the last yes/no word of ``prediction`` equals the reference's answer, else 0.0.

    The reference is a bare ``yes``/``no`` in sepit's records; a longer reference uses its own last yes/no word.
    """
    ref = last_yes_no(reference) or reference.strip().lower()
    return float(last_yes_no(prediction) == ref)


def mean(values: Sequence[float]) -> float | None:
    """Plain mean; None for no values (reported as "–", never as 0)."""
    return float(sum(values) / len(values)) if values else None


class TextScorer:
    """All open-ended metrics for lists of (prediction, reference) pairs.

    ``tokenize`` is used for BLEU and METEOR; ``bertscorer`` (optional) adds ``bertscore_f1``; ``use_meteor=False``
    drops METEOR (then WordNet is not needed).
    """

    def __init__(self, tokenize: Tokenize, *, bertscorer: BertScorer | None = None, use_meteor: bool = True) -> None:
        self.tokenize = tokenize
        self.bertscorer = bertscorer
        self.use_meteor = use_meteor
        self._rouge = RougeScorer()
        if use_meteor:
            require_wordnet()

    @property
    def metric_names(self) -> tuple[str, ...]:
        drop = {"meteor"} if not self.use_meteor else set()
        if self.bertscorer is None:
            drop.add("bertscore_f1")
        return tuple(m for m in TEXT_METRICS if m not in drop)

    def score(self, predictions: Sequence[str], references: Sequence[str]) -> list[dict[str, float]]:
        """Per-pair metric dicts (×100), in input order."""
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
        out = []
        for pred, ref in zip(predictions, references):
            hyp_t, ref_t = self.tokenize(pred), self.tokenize(ref)
            row = bleu(hyp_t, ref_t)
            row.update(self._rouge(pred, ref))
            if self.use_meteor:
                row["meteor"] = meteor(hyp_t, ref_t)
            out.append(row)
        if self.bertscorer is not None and predictions:
            f1 = self.bertscorer.score(list(predictions), list(references)).f1
            for row, f in zip(out, f1):
                row["bertscore_f1"] = 100.0 * float(f)
        return out
