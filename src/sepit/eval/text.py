"""Tokenisers for BLEU/METEOR and the yes/no answer parser.

The research code tokenised both prediction and reference with the BERTScore model's WordPiece tokenizer
(PubMedBERT, uncased) before BLEU and METEOR. Offline, sepit's default is the WordPiece tokenizer shipped with the
default text encoder (all-MiniLM-L6-v2 = the bert-base-uncased vocabulary, lower-cased): the same algorithm with a
general-domain vocabulary, so absolute numbers differ slightly from a PubMedBERT vocabulary. Any local HF tokenizer
directory can be named instead (e.g. a PubMedBERT download). ``regex`` needs nothing: lower-cased words and single
punctuation marks.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from sepit.errors import SepitError

Tokenize = Callable[[str], list[str]]

_WORD_RE = re.compile(r"\w+|[^\w\s]")
_YESNO_RE = re.compile(r"\byes\b|\bno\b", re.IGNORECASE)


def regex_tokenize(text: str) -> list[str]:
    """Lower-cased words (``\\w+``) and single punctuation marks: ``"ATP-binding."`` → ``atp - binding .``"""
    return _WORD_RE.findall(text.lower())


def resolve_model_dir(name_or_dir: str | Path) -> Path:
    """A registered model name (e.g. ``minilm_l6_v2``) → its installed directory; a local directory passes through.

    Registered names go through :func:`sepit.assets.model_path` (which says to run ``sepit models fetch`` when the
    model is missing); a directory without ``config.json`` (a tokenizer-only folder) is accepted as is.
    """
    p = Path(name_or_dir).expanduser()
    if p.is_dir() and not (p / "config.json").is_file():
        return p
    from sepit.assets import model_path

    return Path(model_path(name_or_dir))


def load_hf_tokenizer(name_or_dir: str | Path):
    """A local Hugging Face tokenizer (never the hub)."""
    from transformers import AutoTokenizer

    d = resolve_model_dir(name_or_dir)
    try:
        return AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    except (OSError, ValueError) as e:
        raise SepitError(f"{d}: cannot load a tokenizer from this directory ({type(e).__name__})") from None


def wordpiece_tokenizer(name_or_dir: str | Path) -> Tokenize:
    """``tokenizer.tokenize(text)`` of a local HF tokenizer (WordPiece sub-words such as ``kinase ##s``)."""
    tok = load_hf_tokenizer(name_or_dir)

    def tokenize(text: str) -> list[str]:
        return list(tok.tokenize(text))

    tokenize.__name__ = f"wordpiece[{Path(str(name_or_dir)).name}]"
    return tokenize


def make_tokenizer(kind: str = "wordpiece", path: str | Path = "minilm_l6_v2") -> Tokenize:
    """The tokeniser used for BLEU and METEOR: ``wordpiece`` (a local HF tokenizer at ``path``) or ``regex``."""
    if kind == "regex":
        return regex_tokenize
    if kind == "wordpiece":
        return wordpiece_tokenizer(path)
    raise SepitError(f"unknown tokenizer kind {kind!r} (use 'wordpiece' or 'regex')")


def last_yes_no(text: str) -> str | None:
    """The last standalone "yes"/"no" word of ``text``, lower-cased; None when there is none (counted wrong)."""
    found = _YESNO_RE.findall(text or "")
    return found[-1].lower() if found else None
