"""``sepit demo``: the main job — train and evaluate a real SEPIT end to end on the embedded default."""

from __future__ import annotations

import argparse

from sepit.cli import add_command

EPILOG = """examples:
  sepit demo                     # default size: ~28 min on a 2-core CPU; rerun to reuse finished phases
  sepit demo --quick             # same phases, smaller (~10 min)
  sepit demo --size large --source sprot2014_go_50k.tsv.xz   # on a GPU: more data and steps
  sepit demo --fresh             # redo every phase
Phases: models → data (homology-aware split) → stage 0 → stage 1 → stage 2 (MoE) → evaluation vs nearest-homolog
and prior baselines → examples → the model becomes the default for `sepit ask`, `annotate` and `serve`."""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "demo", help="train and evaluate a real SEPIT end to end on the embedded default data",
                    epilog=EPILOG)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--size", choices=("smoke", "quick", "default", "large"), default="default")
    size.add_argument("--quick", dest="size", action="store_const", const="quick", help="same as --size quick")
    size.add_argument("--smoke", dest="size", action="store_const", const="smoke",
                      help="a few steps per stage (CI)")
    p.add_argument("--run-dir", help="where everything goes (default: runs/demo-SIZE)")
    p.add_argument("--fresh", action="store_true", help="redo every phase")
    p.add_argument("--source", action="append", default=[],
                   help="protein files to build the dataset from instead of the embedded default")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every training stage (e.g. precision=bf16)")
    p.set_defaults(func=_run, _extra_dest="overrides")


def _run(args: argparse.Namespace) -> int:
    from sepit.demo.run import demo

    demo(args.size, args.run_dir, fresh=args.fresh, sources=args.source, train_overrides=args.overrides)
    return 0
