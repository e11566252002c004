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
    assert report  # written by the evaluation phase
    for stage in (0, 1, 2):
        assert (run / f"stage{stage}" / "final" / "sepit_config.json").is_file()
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
    assert ask.stdout.strip()  # an answer from the registered default model
