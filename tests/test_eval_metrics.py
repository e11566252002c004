"""Text metrics pinned on hand-checked pairs (expected values worked out in the comments, not by the code)."""

from __future__ import annotations

import math

import pytest
import torch

from sepit.errors import SepitError
from sepit.eval import metrics
from sepit.eval.bertscore import BertScorer
from sepit.eval.metrics import RougeScorer, TextScorer, bleu, meteor, yes_no_correct
from sepit.eval.text import last_yes_no, make_tokenizer, regex_tokenize

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "protein", "bind", "atp", "and", "dna", "is", "a",
         "kinase", "##s", "in", "nucleus", ".", ",", "yes", "no", "zinc", "cell"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A random 2-layer BERT (hidden 32) + a WordPiece tokenizer over VOCAB, saved as a local HF directory."""
    from transformers import BertConfig, BertModel, BertTokenizer

    d = tmp_path_factory.mktemp("tiny_bert")
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(VOCAB)}, do_lower_case=True, model_max_length=512)
    tok.save_pretrained(d)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg, add_pooling_layer=False).save_pretrained(d)
    return d


# ---------------------------------------------------------------------------------------------------- BLEU


def test_bleu_hand_checked():
    # hyp: the cat sat on the mat | ref: the cat is on the mat (6 tokens each, so brevity penalty 1)
    # 1-grams: the×2, cat, on, mat match (clipped) → 5/6
    # 2-grams: "the cat", "on the", "the mat" of 5 → 3/5
    # 3-grams: "on the mat" of 4 → 1/4;  4-grams: none of 3 → BLEU-4 = 0 (no smoothing)
    s = bleu(regex_tokenize("the cat sat on the mat"), regex_tokenize("the cat is on the mat"))
    assert s["bleu1"] == pytest.approx(100 * 5 / 6)
    assert s["bleu2"] == pytest.approx(100 * math.sqrt(5 / 6 * 3 / 5))  # = 100·√0.5 = 70.71
    # the research code's BLEU-3 weights are 0.33 (not 1/3): (5/6 · 3/5 · 1/4)^0.33 = 0.125^0.33 = 0.50348
    assert s["bleu3"] == pytest.approx(50.3478, abs=1e-3)
    assert s["bleu4"] == pytest.approx(0.0, abs=1e-12)


def test_bleu_brevity_penalty_and_no_match():
    # hyp "the cat" (c=2) vs a 6-token reference: p1 = p2 = 1, BP = exp(1 - 6/2) = e^-2 = 0.135335
    s = bleu(["the", "cat"], regex_tokenize("the cat sat on the mat"))
    assert s["bleu1"] == pytest.approx(100 * math.exp(-2))
    assert s["bleu2"] == pytest.approx(100 * math.exp(-2))
    # no unigram in common → every BLEU is exactly 0; an empty prediction too
    assert bleu(["dog"], ["cat"]) == {"bleu1": 0.0, "bleu2": 0.0, "bleu3": 0.0, "bleu4": 0.0}
    assert bleu([], ["cat"])["bleu1"] == 0.0


def test_wordpiece_tokens_change_bleu(tiny_bert):
    # WordPiece: "kinases bind" → kinase ##s bind ; "kinase binds" → kinase bind ##s
    # all three pieces match as unigrams (BLEU-1 = 100) but no bigram does (BLEU-2 = 0);
    # on whole words only "bind" vs "binds" differ: 0 of 2 unigrams match after "kinases"≠"kinase" → 0.
    tok = make_tokenizer("wordpiece", tiny_bert)
    assert tok("Kinases bind") == ["kinase", "##s", "bind"]
    s = bleu(tok("Kinases bind"), tok("kinase binds"))
    assert s["bleu1"] == pytest.approx(100.0)
    assert s["bleu2"] == pytest.approx(0.0, abs=1e-12)
    assert bleu(regex_tokenize("Kinases bind"), regex_tokenize("kinase binds"))["bleu1"] == 0.0


def test_regex_tokenizer():
    assert regex_tokenize("ATP-binding, Zn2+.") == ["atp", "-", "binding", ",", "zn2", "+", "."]


def test_unknown_tokenizer_kind():
    with pytest.raises(SepitError, match="unknown tokenizer kind"):
        make_tokenizer("spacy")


# --------------------------------------------------------------------------------------------------- ROUGE


def test_rouge_with_stemming():
    # "The cats sat" vs "the cat sat down"; the Porter stemmer maps cats → cat, so
    # ROUGE-1: overlap 3, P = 3/3, R = 3/4, F = 2·1·0.75/1.75 = 0.857142
    # ROUGE-2: bigrams (the cat)(cat sat) both in the reference's 3 → P = 1, R = 2/3, F = 0.8
    # ROUGE-L: LCS = the cat sat = 3 → same as ROUGE-1. Without stemming ROUGE-1 would be 2/3·1/2 → 0.5714.
    s = RougeScorer()("The cats sat", "the cat sat down")
    assert s["rouge1"] == pytest.approx(100 * 6 / 7)
    assert s["rouge2"] == pytest.approx(80.0)
    assert s["rougeL"] == pytest.approx(100 * 6 / 7)


# -------------------------------------------------------------------------------------------------- METEOR


def test_meteor_exact_stem_and_synonym():
    t = regex_tokenize
    # identical 6 tokens: P = R = 1, one chunk → penalty 0.5·(1/6)^3 = 1/432 → 1 - 0.0023148
    assert meteor(t("the cat sat on the mat"), t("the cat sat on the mat")) == pytest.approx(100 * (1 - 0.5 / 216))
    # stem match cats~cat: 3 matches in one chunk → 1 - 0.5·(1/3)^3 = 1 - 1/54
    assert meteor(t("the cats sat"), t("the cat sat")) == pytest.approx(100 * (1 - 0.5 / 27))
    # WordNet synonym begin~start (begin.v.01 has the lemma "start"): same as above, 1 - 1/54
    assert meteor(t("we begin now"), t("we start now")) == pytest.approx(100 * (1 - 0.5 / 27))
    # nothing in common
    assert meteor(["dog"], ["cat"]) == 0.0


def test_missing_wordnet_is_one_clear_line(monkeypatch):
    import nltk.corpus

    class NoWordNet:  # what NLTK's lazy loader does when corpora/wordnet is not on nltk.data.path
        def synsets(self, *a, **k):
            raise LookupError("Resource wordnet not found.")

    monkeypatch.setattr(nltk.corpus, "wordnet", NoWordNet())
    monkeypatch.setattr(metrics, "_WORDNET_OK", False)
    with pytest.raises(SepitError) as e:
        metrics.require_wordnet()
    msg = str(e.value)
    assert "\n" not in msg and "wordnet-base" in msg and "nltk_data/corpora/wordnet" in msg
    with pytest.raises(SepitError):
        TextScorer(regex_tokenize)  # METEOR on → WordNet checked up front
    TextScorer(regex_tokenize, use_meteor=False)  # METEOR off → not needed


# -------------------------------------------------------------------------------------------------- yes/no


@pytest.mark.parametrize("text,expected", [
    ("Yes, it does.", "yes"), ("No. Actually, yes", "yes"), ("NO!", "no"), ("I don't know", None),
    ("Nothing suggests yesterday", None), ("", None), ("It is not; no.", "no"),
])
def test_last_yes_no(text, expected):
    assert last_yes_no(text) == expected


def test_yes_no_correct():
    assert yes_no_correct("Yes, it binds zinc.", "yes") == 1.0
    assert yes_no_correct("Yes.", "No, it does not.") == 0.0  # the reference's own last yes/no word is "no"
    assert yes_no_correct("I cannot tell.", "no") == 0.0       # no yes/no word → wrong
    assert yes_no_correct("no", "No, that is not right.") == 1.0


# ----------------------------------------------------------------------------------------------- BERTScore


def _naive_bertscore(model, tok, cand: str, ref: str):
    """Independent loop version: cosine of last-layer states, greedy max, [CLS]/[SEP] weighted 0."""
    def states(text):
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            h = model(input_ids=ids).last_hidden_state[0]
        return ids[0].tolist(), h

    ci, ch = states(cand)
    ri, rh = states(ref)
    special = {tok.cls_token_id, tok.sep_token_id}

    def cos(a, b):
        return float(a @ b / (a.norm() * b.norm()))

    p_terms = [max(cos(ch[i], rh[j]) for j in range(len(ri))) for i in range(len(ci)) if ci[i] not in special]
    r_terms = [max(cos(ch[i], rh[j]) for i in range(len(ci))) for j in range(len(ri)) if ri[j] not in special]
    p, r = sum(p_terms) / len(p_terms), sum(r_terms) / len(r_terms)
    return p, r, 2 * p * r / (p + r)


def test_bertscore_matches_naive_greedy_matching(tiny_bert):
    from transformers import AutoModel, AutoTokenizer

    scorer = BertScorer(tiny_bert, batch_size=2)
    cands = ["the protein bind atp", "a kinase", "zinc", "the protein is in the nucleus"]
    refs = ["the protein bind dna", "a kinase in the nucleus", "zinc", "nucleus"]
    got = scorer.score(cands, refs)
    model = AutoModel.from_pretrained(str(tiny_bert)).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_bert))
    for k, (c, r) in enumerate(zip(cands, refs)):
        p, rr, f = _naive_bertscore(model, tok, c, r)
        assert got.precision[k] == pytest.approx(p, abs=1e-5)
        assert got.recall[k] == pytest.approx(rr, abs=1e-5)
        assert got.f1[k] == pytest.approx(f, abs=1e-5)
    assert got.f1[2] == pytest.approx(1.0, abs=1e-6)  # identical single-token texts


def test_bertscore_equals_bert_score_library(tiny_bert):
    from bert_score import BERTScorer

    # (bert_score 0.3.12 cannot encode an empty text under transformers 5; empty texts are tested elsewhere)
    cands = ["the protein bind atp", "a kinase", "the protein is in the nucleus"]
    refs = ["the protein bind dna", "a kinase in the nucleus", "nucleus"]
    ours = BertScorer(tiny_bert).score(cands, refs)
    P, R, F = BERTScorer(model_type=str(tiny_bert), num_layers=2).score(cands, refs)
    assert ours.f1 == pytest.approx(F.numpy(), abs=1e-5)
    assert ours.precision == pytest.approx(P.numpy(), abs=1e-5)
    assert ours.recall == pytest.approx(R.numpy(), abs=1e-5)


def test_bertscore_bad_layers(tiny_bert):
    with pytest.raises(SepitError, match="num_layers=5"):
        BertScorer(tiny_bert, num_layers=5)


# ---------------------------------------------------------------------------------------------- TextScorer


def test_text_scorer_combines_metrics(tiny_bert):
    scorer = TextScorer(regex_tokenize, bertscorer=BertScorer(tiny_bert))
    rows = scorer.score(["the cat sat on the mat", ""], ["the cat is on the mat", "zinc"])
    assert set(rows[0]) == set(metrics.TEXT_METRICS)
    assert rows[0]["bleu2"] == pytest.approx(100 * math.sqrt(0.5))
    assert rows[1]["bleu1"] == rows[1]["meteor"] == rows[1]["rouge1"] == rows[1]["bertscore_f1"] == 0.0
    no_meteor = TextScorer(regex_tokenize, use_meteor=False)
    assert "meteor" not in no_meteor.metric_names and "bertscore_f1" not in no_meteor.metric_names
    assert "meteor" not in no_meteor.score(["a"], ["a"])[0]


@pytest.mark.slow
def test_default_metrics_with_real_minilm():
    """The shipped defaults: WordPiece from MiniLM and BERTScore with MiniLM (needs `sepit models fetch`)."""
    from sepit.assets import model_path

    try:
        model_path("minilm_l6_v2")
    except SepitError as e:
        pytest.fail(f"the default text encoder is needed: {e}")
    tok = make_tokenizer("wordpiece", "minilm_l6_v2")
    assert tok("Kinases bind ATP.") == ["kinase", "##s", "bind", "atp", "."]
    scorer = TextScorer(tok, bertscorer=BertScorer("minilm_l6_v2"))
    same, diff = scorer.score(["This protein binds ATP.", "This protein binds ATP."],
                              ["This protein binds ATP.", "A zinc finger transcription factor in the nucleus."])
    assert same["bleu4"] == pytest.approx(100.0) and same["bertscore_f1"] == pytest.approx(100.0, abs=1e-3)
    assert diff["bertscore_f1"] < same["bertscore_f1"] and diff["bleu2"] < 1.0
