"""``sepit train CONFIG [key=value ...] [--resume] [--dry-run]``: run one training stage."""

from __future__ import annotations

import argparse
import json

from sepit.cli import add_command

EPILOG = """examples:
  sepit train src/sepit/configs/train/stage1_tiny.yaml data.dir=runs/data out_dir=runs/s1 --dry-run
  sepit train src/sepit/configs/train/stage1_default.yaml data.dir=runs/data out_dir=runs/s1 max_steps=200
  sepit train src/sepit/configs/train/stage1_default.yaml data.dir=runs/data out_dir=runs/s1 --resume
  torchrun --nproc_per_node 4 -m sepit.cli train src/sepit/configs/train/stage1_paper.yaml data.dir=... out_dir=...
Stages: 0 warm-up (contrastive + denoising + masked residues), 1 captions, 2 MoE QA (init_from = previous stage)."""


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "train", help="train one SEPIT stage from a YAML config", epilog=EPILOG)
    p.add_argument("config", help="training config (kind: train)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. max_steps=100 lr.projector=2e-4")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in out_dir")
    p.add_argument("--dry-run", action="store_true", help="print the plan (data, steps, trainable set) and exit")
    p.set_defaults(func=_run, _extra_dest='overrides')


def _run(args: argparse.Namespace) -> int:
    from sepit.config import load_config
    from sepit.train.config import TrainConfig
    from sepit.train.distributed import cleanup, is_main
    from sepit.train.loop import train

    cfg = load_config(args.config, TrainConfig, args.overrides)
    result = train(cfg, resume=args.resume, dry_run=args.dry_run)
    main = is_main()  # print once, not once per process
    # Under torchrun, leave the process group before exit (else gloo/NCCL may abort at interpreter exit). Only after
    # success, as torchtitan does: after an error another process may still sit in a collective, and destroying the
    # group then can hang; torchrun stops the other processes when this one exits with an error.
    cleanup()
    if not main:
        return 0
    if args.dry_run:
        trainable = result.pop("trainable")
        print(json.dumps(result, indent=2))
        print(trainable)
        return 0
    print(f"done: {result.steps} steps; final model: {result.final_dir}; metrics: {result.metrics_file}")
    return 0
