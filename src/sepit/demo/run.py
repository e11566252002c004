"""The main job, end to end on the embedded default: models → data → stage 0 → stage 1 → stage 2 → evaluation →
examples → the trained model becomes the default for ``ask``, ``annotate`` and ``serve``.

Every phase is reused when its inputs are unchanged (a second run is quick; an interrupted run continues from the
last finished phase, and a training phase resumes from its last checkpoint). Sizes trade time for quality:

========  =====================================================================================================
smoke     a few steps of each stage on a few hundred proteins (CI: proves every phase runs)
quick     ~10 minutes after set-up on a 2-core CPU
default   takes ~28 minutes on a 2-core CPU (the README's main command)
large     for a GPU: all proteins, more steps; add ``--source`` files (e.g. the full 50k table) to scale further
========  =====================================================================================================
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sepit.demo.phases import Phase, run_phases
from sepit.errors import SepitError
from sepit.log import get_logger
from sepit.paths import configs_dir, sepit_home

log = get_logger(__name__)


@dataclass(frozen=True)
class DemoSize:
    """Steps and data of one demo size (``max_proteins`` 0 = all)."""

    max_proteins: int
    steps: tuple[int, int, int]
    batch: tuple[int, int, int]
    # residues per protein, per stage: stage 0 trains only proteins with a structure, whose pair features cost
    # L² each, so it crops shorter (its denoising and masked-residue losses are local; the caption still pairs)
    max_protein_len: tuple[int, int, int]
    pool: int  # protein tokens per residue group (projector.pool): fewer LLM tokens on a CPU
    eval_yesno: int  # held-out yes/no items (whole yes/no pairs; scored by likelihood, one forward pass each)
    eval_open: int  # held-out open items (generated)
    max_new_tokens: int
    estimate: str


SIZES: dict[str, DemoSize] = {
    "smoke": DemoSize(300, (2, 2, 2), (4, 2, 2), (128, 128, 128), 4, 8, 4, 8, "3–5 min"),
    "quick": DemoSize(1200, (8, 16, 32), (8, 4, 4), (128, 192, 192), 4, 120, 40, 24, "10 min"),
    # stage 0: 45 steps at crop 128 (valid split: all three losses below 30 steps'; the denoising loss ends ~12%
    # below predicting zero; ~+55 s over the 10 steps at crop 256 that learned no denoising). Stages 1–2 at crop 128
    # and 20 / 60 steps: what fits the time aim next to an evaluation of 800 items two ways (the stage-2 learning
    # rate was chosen on the valid split at exactly these 60 steps)
    "default": DemoSize(0, (45, 20, 60), (8, 4, 4), (128, 128, 128), 4, 600, 200, 32, "28 min"),
    # stage 0 at 512: 8 structured proteins a batch keep two passes of (8, L, L, 128) pair features for backward
    "large": DemoSize(0, (2000, 3000, 3000), (8, 4, 4), (512, 1022, 1022), 1, 4000, 2000, 128,
                      "hours on a CPU; use a GPU"),
}


def default_model_link() -> Path:
    return sepit_home() / "default_model"


def _train_phase(stage: int, run_dir: Path, size: DemoSize, data_dir: Path, overrides: list[str]) -> dict[str, Any]:
    from sepit.config import load_config
    from sepit.train.config import TrainConfig
    from sepit.train.loop import latest_checkpoint, train

    out = run_dir / f"stage{stage}"
    if stage > 0:
        _drop_checkpoints(run_dir / f"stage{stage - 1}")
    ov = [f"data.dir={data_dir}", f"out_dir={out}", f"max_steps={size.steps[stage]}",
          f"batch_size={size.batch[stage]}", f"data.max_protein_len={size.max_protein_len[stage]}",
          f"save_every={max(2, size.steps[stage] // 2)}", "keep_checkpoints=1"]
    if stage > 0:
        ov.append(f"init_from={run_dir / f'stage{stage - 1}' / 'final'}")
    else:
        ov.append(f"model_overrides=[projector.pool={size.pool}]")
        if not _structured_captions(data_dir):
            # the demo runs on any --source (and the smoke size's first 300 proteins have no structure): stage 0
            # then trains on every caption, and its denoising term has nothing to score
            log.warning(f"{data_dir}: no training caption's protein has a structure; stage 0 trains on all "
                        "captions, without the denoising loss")
            ov.append("data.require_structure=false")
    cfg = load_config(configs_dir() / "train" / f"stage{stage}_default.yaml", TrainConfig, ov + overrides)
    resume = latest_checkpoint(out) is not None
    if not resume and out.exists():
        shutil.rmtree(out)  # a stage that died before its first checkpoint starts over
    res = train(cfg, resume=resume)
    summary = json.loads((out / "summary.json").read_text())
    return {"final": str(res.final_dir), "steps": res.steps, "first_loss": summary["first_loss"],
            "last_loss": summary["last_loss"], "valid_loss": summary["valid_loss"]}


def _drop_checkpoints(stage_dir: Path) -> None:
    """Delete a finished stage's resume checkpoints (its optimizer state is ~2× the model: 4 of a default demo's
    6.5 GB). Called when the next phase starts, so the stage's phase marker is already on disk: a crash never leaves
    a stage with neither its checkpoints nor a record that it finished."""
    ckpts = stage_dir / "checkpoints"
    if ckpts.is_dir() and (stage_dir / "final").is_dir():
        size = sum(f.stat().st_size for f in ckpts.rglob("*") if f.is_file())
        shutil.rmtree(ckpts)
        log.info(f"{ckpts}: removed ({size / 2**30:.1f} GiB of resume state; {stage_dir / 'final'} is the model)")


def _structured_captions(data_dir: Path) -> int:
    """How many training captions of the dataset have a protein with a structure (what stage 0 trains on)."""
    from sepit.data.dataset import InstructionDataset

    return len(InstructionDataset(data_dir).record_index("train").select(["caption"], structured=True))


def _register(final: Path) -> Path:
    """Point ``$SEPIT_HOME/default_model`` at ``final`` (a symlink swapped in atomically)."""
    link = default_model_link()
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".default_model.{os.getpid()}")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(final.resolve(), target_is_directory=True)
    if link.exists() and not link.is_symlink():
        raise SepitError(f"{link} exists and is not a link made by sepit; move it away to register the demo model")
    os.replace(tmp, link)
    return link


def demo(size: str = "default", run_dir: str | Path | None = None, fresh: bool = False,
         sources: list[str] | None = None, train_overrides: list[str] | None = None) -> dict[str, Any]:
    """Run (or continue) the demo; returns the phase summaries. Prints the results table and examples."""
    from sepit import __version__

    if size not in SIZES:
        raise SepitError(f"unknown demo size {size!r}; sizes: {', '.join(SIZES)}")
    sz = SIZES[size]
    run = Path(run_dir or f"runs/demo-{size}")
    run.mkdir(parents=True, exist_ok=True)
    data_dir = run / "data"
    overrides = list(train_overrides or [])
    log.info(f"demo ({size}, about {sz.estimate}) in {run}; phases already done are reused"
             + (" (--fresh: redoing all)" if fresh else ""))

    def models(_: Path) -> dict[str, Any]:
        from sepit.assets import fetch_models

        return {r.name: r.status for r in fetch_models()}

    def data(_: Path) -> dict[str, Any]:
        from sepit.data.build import build_dataset, default_config
        from sepit.data.config import DataConfig

        cfg = default_config(DataConfig(sources=list(sources or []), max_proteins=sz.max_proteins or None))
        manifest = build_dataset(cfg, data_dir)
        return {"counts": manifest.get("counts", {})}

    def evaluate(_: Path) -> dict[str, Any]:
        from sepit.config import from_dict
        from sepit.eval.config import EvalConfig
        from sepit.eval.pipeline import evaluate_dataset

        _drop_checkpoints(run / "stage2")
        cfg = from_dict(EvalConfig, {"limits": {"yesno": sz.eval_yesno, "open": sz.eval_open}},
                        [f"generation.max_new_tokens={sz.max_new_tokens}", "generation.batch_size=32"])
        results = evaluate_dataset(cfg, data_dir, run / "eval", checkpoint=run / "stage2" / "final",
                                   device=_device())
        return {"report": str(run / "eval" / "report.md"), "systems": list(results.get("systems", {}))}

    def examples(_: Path) -> dict[str, Any]:
        from sepit.demo.examples import show_examples

        return show_examples(run / "stage2" / "final", data_dir, n=3 if size == "smoke" else 4,
                             max_new_tokens=sz.max_new_tokens, out=run / "examples.md")

    def register(_: Path) -> dict[str, Any]:
        return {"default_model": str(_register(run / "stage2" / "final"))}

    key = {"version": __version__, "size": dataclasses.asdict(sz), "sources": sources or [], "overrides": overrides}
    phases = [
        Phase("models", models, {"pins": _pins()}, "seconds; a first download takes ~30 s"),
        Phase("data", data, key, "under a minute"),
        *[Phase(f"stage{s}", lambda r, s=s: _train_phase(s, r, sz, data_dir, overrides), key, f"{sz.steps[s]} steps")
          for s in (0, 1, 2)],
        Phase("evaluate", evaluate, key, f"{sz.eval_yesno} yes/no + {sz.eval_open} open test items + baselines"),
        Phase("examples", examples, key, "a minute"),
        Phase("register", register, {"link": str(default_model_link())}),
    ]
    results = run_phases(run, phases, fresh=fresh)
    report = run / "eval" / "report.md"
    if report.is_file():
        from sepit.eval.report import print_main_table

        print("\n== results (held-out test split; see " + str(report) + ") ==")
        print_main_table(json.loads((run / "eval" / "report.json").read_text()))
    ex = run / "examples.md"
    if ex.is_file():
        print("\n== examples ==\n" + ex.read_text())
    print(f"\nThe trained model is now the default: sepit ask --structure FILE \"What is the function of this "
          f"protein?\"  (model: {results['register']['default_model']})")
    return results


def _pins() -> dict[str, str]:
    from sepit.assets import MODELS

    return {name: spec.sha256 for name, spec in MODELS.items()}


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
