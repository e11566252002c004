"""The ``sepit`` command: a thin dispatcher to typed functions in the library.

Each command group lives in its own module (``sepit/cli/<group>.py``) exposing ``register(subparsers)``; the module
adds its parser(s) and sets ``func`` to a callable taking the parsed ``argparse.Namespace`` and returning an exit code.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import traceback

from sepit import __version__
from sepit.errors import SepitError
from sepit.log import get_logger, setup_logging

# Command modules, in the order `sepit --help` lists them. A module is listed only once its commands work.
COMMAND_MODULES: tuple[str, ...] = (
    "sepit.cli.demo",
    "sepit.cli.models",
    "sepit.cli.config",
    "sepit.cli.model",
    "sepit.cli.train",
    "sepit.cli.eval",
    "sepit.cli.ask",
    "sepit.cli.serve",
    "sepit.cli.data",
    "sepit.cli.index",
)

EPILOG = """examples:
  sepit models fetch                      # download + convert the default pretrained models (once)
  sepit models list                       # what is installed, sizes and licences
  sepit config validate configs/model/tiny.yaml
Run `sepit COMMAND --help` for the options and a worked example of each command."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples in epilogs as written."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sepit",
        description="sepit: ask questions about proteins with a structure-aware protein LLM (SEPIT), "
        "build its instruction data, train and evaluate it.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"sepit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options (`sepit eval CKPT DATA -o OUT limit=10`); a command that takes them
    # names its list with set_defaults(_extra_dest=...). Anything else unknown is an error as usual.
    dest = getattr(args, "_extra_dest", None)
    if extra and dest and all("=" in e and not e.startswith("-") for e in extra):
        getattr(args, dest).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    setup_logging(verbose=args.verbose)
    if not getattr(args, "func", None):
        # A group without a subcommand (e.g. `sepit models`) prints its own help.
        (getattr(args, "_parser", None) or parser).print_help()
        return 0 if args.command is None else 2
    debug = args.debug or os.environ.get("SEPIT_DEBUG") == "1"
    try:
        return int(args.func(args) or 0)
    except SepitError as e:
        if debug:
            traceback.print_exc()
        print(f"sepit: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `sepit data show DIR | head`: the reader went away, that is fine
        with contextlib.suppress(Exception):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep Python from failing at exit on the closed pipe
        return 0
    except KeyboardInterrupt:
        print("sepit: interrupted (finished work is kept; re-run to continue)", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - last line of defence: one line, traceback on --debug
        if debug:
            traceback.print_exc()
        else:
            get_logger("cli").debug("unexpected error", exc_info=True)
        print(f"sepit: internal error: {type(e).__name__}: {e} (re-run with --debug for the traceback)",
              file=sys.stderr)
        return 1


def group_parser(sub: argparse._SubParsersAction, name: str, help: str, description: str,
                 epilog: str) -> argparse._SubParsersAction:
    """Add a command group (e.g. ``sepit models``) and return its own subparsers."""
    p = sub.add_parser(name, help=help, description=description, epilog=epilog, formatter_class=HelpFormatter)
    p.set_defaults(_parser=p)
    return p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")


def add_command(sub: argparse._SubParsersAction, name: str, help: str, epilog: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """Add one command whose --help ends with ``epilog`` (a worked example)."""
    return sub.add_parser(name, help=help, description=description or help, epilog=epilog,
                          formatter_class=HelpFormatter)
