"""Evaluation: the paper's text metrics, closed-set (likelihood) scoring, baselines, breakdowns and the report.

Everything here works on plain data — predicted strings, ``P(yes)`` floats, instruction records as dicts — so any
system (a checkpoint, a baseline, a second checkpoint) is scored by the same code:

- :mod:`sepit.eval.items`       ``EvalItem`` (one test question) and ``Prediction`` (one system's answer)
- :mod:`sepit.eval.text`        tokenisers for BLEU/METEOR (WordPiece or regex) and the yes/no answer parser
- :mod:`sepit.eval.metrics`     BLEU-1..4, ROUGE-1/2/L, METEOR, yes/no accuracy; ``TextScorer`` bundles them
- :mod:`sepit.eval.bertscore`   BERTScore F1 (greedy matching, no idf, no rescaling) over a local HF encoder
- :mod:`sepit.eval.closed_set`  accuracy, AUROC, ECE and calibration curve from ``P(yes)``
- :mod:`sepit.eval.baselines`   prior/majority answer per task, nearest-homolog answer copying, top-k vote
- :mod:`sepit.eval.bootstrap`   95% intervals over proteins and paired differences to the baselines
- :mod:`sepit.eval.breakdown`   score a system and break it down per task, identity bin (and best hit at any
                                coverage) and structure
- :mod:`sepit.eval.predictions` ``PredictionLog``: JSONL predictions written as they come; reruns skip done items
- :mod:`sepit.eval.report`      ``write_report``, ``format_main_table``, ``compare_reports``
- :mod:`sepit.eval.config`      ``EvalConfig`` (``kind: eval``)
- :mod:`sepit.eval.run`         the model's predictions (greedy; yes/no by likelihood; with or without homolog
                                context; resumable) and ``evaluate()``
- :mod:`sepit.eval.pipeline`    ``evaluate_dataset()``: checkpoint(s) + baselines on a built dataset's split

Heavy libraries (nltk, rouge-score, transformers, matplotlib) are imported inside the functions that need them.
"""
