"""``sepit model info CONFIG_OR_DIR``: parameter counts of a model config, preset or checkpoint (no weights needed)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sepit.cli import add_command, group_parser

EXAMPLE = """example:
  sepit model info default                          # the default preset (dense and MoE columns)
  sepit model info paper llm=meta-llama/Llama-2-7b-chat-hf
  sepit model info src/sepit/configs/model/tiny.yaml --json
  sepit model info runs/stage1/model                 # a saved checkpoint"""


def register(sub: argparse._SubParsersAction) -> None:
    g = group_parser(sub, "model", help="inspect SEPIT models",
                     description="Inspect SEPIT model configs and checkpoints.",
                     epilog="example:\n  sepit model info default")
    p = add_command(g, "info", help="parameter counts: total, per group, trainable per stage, activated per token",
                    description="Count the parameters of a model preset (tiny, default, paper), a `kind: model` "
                    "YAML config or a saved checkpoint directory, dense and with MoE upcycling, on the meta "
                    "device (no weights are loaded or needed).", epilog=EXAMPLE)
    p.add_argument("target", metavar="CONFIG_OR_DIR", help="preset name, model YAML file or checkpoint directory")
    p.add_argument("overrides", nargs="*", help="key=value overrides (not for checkpoints)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_info)


def _fmt(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n:,} ({n / scale:.2f}{unit})"
    return f"{n:,}"


def model_info(target: str, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """Counts for a preset / YAML / checkpoint, dense and MoE: ``{"name", "origin", "dense", "moe"}``."""
    from sepit.config import from_dict, load_config, to_dict
    from sepit.errors import ConfigError
    from sepit.model import PRESETS, ModelConfig, build_skeleton, parameter_counts, with_moe
    from sepit.model.checkpoint import CONFIG, skeleton_from_checkpoint

    path = Path(target)
    if path.is_dir() and (path / CONFIG).is_file():
        if overrides:
            raise ConfigError(f"{path}: overrides cannot change a saved checkpoint")
        counts, origin = {}, {}
        for moe in (False, True):
            model, origin = skeleton_from_checkpoint(path, moe=moe)
            counts["moe" if moe else "dense"] = parameter_counts(model)
        return {"name": str(path), "origin": origin, **counts}
    if target in PRESETS and not path.is_file():
        cfg = from_dict(ModelConfig, to_dict(PRESETS[target]()), overrides)
    else:
        cfg = load_config(path, ModelConfig, overrides)
    out = {"name": " ".join([target, *overrides]), "config": to_dict(cfg)}
    for moe in (False, True):
        model, origin = build_skeleton(with_moe(cfg, moe))
        out["moe" if moe else "dense"] = parameter_counts(model)
        out["origin"] = origin
    return out


def format_info(info: dict) -> str:
    """A Markdown table of :func:`model_info`'s counts (what docs/model.md shows)."""
    d, m = info["dense"], info["moe"]
    experts = m["experts_per_layer"]
    rows = [(f"`{g}`", d["groups"][g], m["groups"][g]) for g in d["groups"]]
    rows.append(("**total**", d["total"], m["total"]))
    for stage, groups in (("stage0", "plm, structure, heads"), ("stage1", "plm, structure, projector, llm"),
                          ("stage2", "projector, llm, experts, router")):
        rows.append((f"trainable {stage} ({groups})", d["trainable"][stage], m["trainable"][stage]))
    rows.append(("LLM parameters", d["llm_total"], m["llm_total"]))
    rows.append(("LLM activated per token (incl. router)", d["activated_per_token"], m["activated_per_token"]))
    rows.append(("LLM activated per token (excl. router)", d["activated_per_token_without_router"],
                 m["activated_per_token_without_router"]))
    lines = [f"Model `{info['name']}` — " + ", ".join(f"{k}: {v}" for k, v in info["origin"].items()), "",
             f"| parameters | dense | MoE ({experts} experts, top-1, {m['moe_layers']} layers) |", "|---|---:|---:|"]
    lines += [f"| {name} | {_fmt(a)} | {_fmt(b)} |" for name, a, b in rows]
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    info = model_info(args.target, args.overrides)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0
