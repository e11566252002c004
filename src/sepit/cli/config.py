"""``sepit config validate FILE [key=value ...]``: check a YAML config against its typed schema."""

from __future__ import annotations

import argparse

import yaml

from sepit.cli import add_command, group_parser
from sepit.config import load_config, to_dict


def register(sub: argparse._SubParsersAction) -> None:
    g = group_parser(sub, "config", help="check configs", description="Check YAML configs against their schemas.",
                     epilog="example:\n  sepit config validate src/sepit/configs/model/tiny.yaml")
    p = add_command(g, "validate", help="check a config file (and overrides); print the resolved config",
                    epilog="example:\n  sepit config validate src/sepit/configs/model/tiny.yaml llm.num_layers=4")
    p.add_argument("file", help="YAML config with a top-level 'kind:' key")
    p.add_argument("overrides", nargs="*", help="key=value overrides (dotted keys for sections)")
    p.add_argument("--quiet", action="store_true", help="only report OK / the error")
    p.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    cfg = load_config(args.file, None, args.overrides)
    if not args.quiet:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip())
    print(f"OK: {args.file} is a valid {type(cfg).__name__}")
    return 0
