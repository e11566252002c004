"""``sepit eval CHECKPOINT DATASET -o OUT`` and ``sepit eval compare A B``: evaluate a model against baselines."""

from __future__ import annotations

import argparse
from pathlib import Path

from sepit.cli import add_command
from sepit.errors import SepitError
from sepit.precisions import PRECISIONS as _PRECISIONS

PRECISIONS = ("fp32", *(p for p in _PRECISIONS if p != "fp32"))  # eval's default first in --help

EPILOG = """examples:
  sepit eval runs/demo/stage2/final runs/demo/data -o runs/demo/eval
  sepit eval runs/demo/stage2/final runs/demo/data -o runs/eval2 --other dense=runs/demo/stage1/final limit=200
  sepit eval --baselines-only runs/demo/data -o runs/eval-baselines
  sepit eval runs/demo/stage2/final runs/demo/data -o runs/eval-bf16 --precision auto   # faster on bf16 hardware
  sepit eval compare runs/demo/eval/report.json runs/eval2/report.json
  sepit eval questions src/sepit/resources/example_questions.jsonl runs/demo-default/stage2/final -o runs/my-qs
The report (report.json, report.md, PNG plots) compares the model, its sequence-only run, the nearest-homolog
(MMseqs2 top hit) and prior baselines, per task type and per identity bin to the training set.
`eval questions FILE MODEL` scores your own questions, one JSON object a line:
  {"sequence": "MKT...", "question": "...", "answer": "yes"}                      yes/no: P(yes), no generation
  {"structure": "x.cif", "question": "...", "options": ["A", "B"], "answer": "A"}  multiple choice: likelihood
  {"sequence": "...", "question": "...", "answer": "free text"}                    open: generated, BLEU/ROUGE/...
(optional keys: "id", "task", "chain"; structure paths are relative to FILE)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "eval", help="evaluate a checkpoint on a dataset split against baselines; compare reports",
                    epilog=EPILOG)
    p.add_argument("args", nargs="+", metavar="ARG",
                   help="CHECKPOINT DATASET [key=value ...], or DATASET with --baselines-only, or compare A B, or "
                        "questions FILE.jsonl MODEL")
    p.add_argument("-o", "--out", help="output directory for the report (required unless comparing)")
    p.add_argument("--config", help="eval config YAML (kind: eval); key=value arguments override it")
    p.add_argument("--other", action="append", default=[], metavar="NAME=CHECKPOINT",
                   help="another checkpoint evaluated on the same items (e.g. the dense or sequence-only ablation)")
    p.add_argument("--baselines-only", action="store_true", help="no model: only the baselines")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="the models' weights: fp32 (default, so reports stay comparable), auto = bf16 where the "
                        "hardware runs it natively (else fp32), or bf16; recorded in the report")
    p.add_argument("--no-retrieval", action="store_true",
                   help="evaluate a model trained with homolog context without it only (default: with the "
                        "dataset's own training-split index, and without it as an ablation row)")
    p.set_defaults(func=_run, _extra_dest='args')


def _eval_config(path: str | None, overrides: list[str]):
    """The eval config: ``--config`` YAML (or the defaults) with ``key=value`` overrides."""
    from sepit.config import from_dict, load_config
    from sepit.eval.config import EvalConfig

    return load_config(path, EvalConfig, overrides) if path else from_dict(EvalConfig, {}, overrides)


def _run(args: argparse.Namespace) -> int:
    if args.args[0] == "compare":
        from sepit.eval.report import compare_reports

        if len(args.args) != 3:
            raise SepitError("usage: sepit eval compare REPORT_A REPORT_B")
        print(compare_reports(args.args[1], args.args[2]))
        return 0
    positional = [a for a in args.args if "=" not in a]
    overrides = [a for a in args.args if "=" in a]
    if positional[0] == "questions":
        return _questions(args, positional[1:], overrides)
    want = 1 if args.baselines_only else 2
    if len(positional) != want:
        raise SepitError("expected DATASET with --baselines-only" if args.baselines_only
                         else "expected CHECKPOINT DATASET (or --baselines-only DATASET, or compare A B)")
    if not args.out:
        raise SepitError("-o/--out OUT_DIR is required")
    checkpoint = None if args.baselines_only else positional[0]
    dataset = positional[-1]
    if checkpoint is not None and not (Path(checkpoint) / "sepit_config.json").is_file():
        final = Path(checkpoint) / "final"
        if (final / "sepit_config.json").is_file():
            checkpoint = str(final)
        else:
            raise SepitError(f"{checkpoint}: not a sepit model directory (no sepit_config.json)")
    cfg = _eval_config(args.config, overrides)
    others = {}
    for spec in args.other:
        if "=" not in spec:
            raise SepitError(f"--other {spec!r}: expected NAME=CHECKPOINT")
        name, path = spec.split("=", 1)
        others[name] = path
    import torch

    from sepit.eval.pipeline import evaluate_dataset
    from sepit.eval.report import print_main_table

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = evaluate_dataset(cfg, dataset, args.out, checkpoint=checkpoint, others=others, device=device,
                               precision=args.precision, retrieval=not args.no_retrieval)
    print_main_table(results)
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0


def _questions(args: argparse.Namespace, positional: list[str], overrides: list[str]) -> int:
    """``sepit eval questions FILE.jsonl MODEL -o OUT``: score a model on the user's own questions."""
    if len(positional) != 2:
        raise SepitError("usage: sepit eval questions FILE.jsonl MODEL -o OUT [key=value ...]")
    if not args.out:
        raise SepitError("-o/--out OUT_DIR is required")
    cfg = _eval_config(args.config, overrides)
    from sepit.api import load
    from sepit.eval.questions import read_questions, score_questions
    from sepit.eval.report import print_main_table

    questions, proteins = read_questions(positional[0])  # a bad file fails before the model loads
    qa = load(positional[1], device=args.device, precision=args.precision, retrieval=not args.no_retrieval)
    results = score_questions(qa, questions, proteins, cfg, out_dir=args.out,
                              meta={"checkpoint": positional[1], "questions": positional[0]})
    print_main_table(results)
    print(f"report: {Path(args.out) / 'report.md'}")
    return 0
