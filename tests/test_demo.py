"""The main job end to end at its smallest size with the real default models, then `sepit ask` with the model it
registered. Slow (minutes): it trains all three stages for a few steps and evaluates."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sepit.paths import models_dir

pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    real_models = models_dir()
    if not (real_models / "smollm2_135m_instruct" / "sepit_model.json").is_file():
        pytest.fail(f"default models missing in {real_models}: run `sepit models fetch` (make setup does)")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "models").exists():
        (home / "models").symlink_to(real_models, target_is_directory=True)
    return {**os.environ, "SEPIT_HOME": str(home), "SEPIT_NO_PROGRESS": "1"}


def _sepit(args: list[str], env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sepit.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_demo_smoke_then_ask(tmp_path, repo_root) -> None:
    env = _env(tmp_path / "home")
    run = tmp_path / "run"
    r = _sepit(["demo", "--smoke", "--run-dir", str(run)], env, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "== results" in r.stdout and "nearest homolog" in r.stdout and "prior" in r.stdout
    report = json.loads((run / "eval" / "report.json").read_text())
    systems = report["systems"]
    assert {"model", "prior", "nearest homolog"} <= set(systems)
    n = systems["model"]["n"]
    assert n == 12  # the smoke size's evaluation items, every one scored by every system
    for name, summary in systems.items():
        assert summary["n"] == n, name
        overall = summary["overall"]
        assert overall["n_text"] + overall["n_yesno"] == n and overall["n_text"] > 0 and overall["n_yesno"] > 0, name
    for stage in (0, 1, 2):
        assert (run / f"stage{stage}" / "final" / "sepit_config.json").is_file()
        # a finished stage's resume state (optimizer moments: ~2x the model) is removed once the next phase starts
        assert not (run / f"stage{stage}" / "checkpoints").exists(), stage
    assert json.loads((run / "stage2" / "final" / "sepit_config.json").read_text())  # loadable config
    link = tmp_path / "home" / "default_model"
    assert link.resolve() == (run / "stage2" / "final").resolve()

    again = _sepit(["demo", "--smoke", "--run-dir", str(run)], env, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count(": done before (") == 8  # every phase reused: nothing retrained

    structure = repo_root / "tests" / "data" / "structures" / "1crn.cif.gz"
    ask = _sepit(["ask", "--structure", str(structure), "--max-new-tokens", "12", "What does this protein do?"],
                 env, timeout=600)
    assert ask.returncode == 0, ask.stderr[-2000:]
    answer = ask.stdout.strip()
    assert answer and "error" not in answer.lower()
    # the registered default is the demo's stage-2 model: naming it gives the same greedy answer
    named = _sepit(["ask", "--model", str(run / "stage2" / "final"), "--structure", str(structure),
                    "--max-new-tokens", "12", "What does this protein do?"], env, timeout=600)
    assert named.returncode == 0 and named.stdout.strip() == answer, named.stderr[-2000:]
    p_yes = _sepit(["ask", "--structure", str(structure), "--yes-no", "Is this protein located in the membrane?"],
                   env, timeout=600)
    assert p_yes.returncode == 0, p_yes.stderr[-2000:]
    assert 0.0 < float(p_yes.stdout.strip()) < 1.0  # a probability, not a yes/no word
