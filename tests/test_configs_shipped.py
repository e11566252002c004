"""Every YAML config the package ships loads against its typed schema and refers to things that exist."""

from __future__ import annotations

from pathlib import Path

import pytest

from sepit.config import load_config, read_yaml
from sepit.data.config import DataConfig
from sepit.model.build import PRESETS
from sepit.model.config import ModelConfig
from sepit.model.params import STAGE_GROUPS
from sepit.train.config import TrainConfig

CONFIGS = Path(__file__).resolve().parents[1] / "src" / "sepit" / "configs"
SHIPPED = sorted(CONFIGS.rglob("*.yaml"))


def test_the_shipped_set_is_complete() -> None:
    """9 training configs (3 stages × tiny/default/paper), 3 model configs, 2 data configs — no more, no fewer, so a
    new config cannot slip past the checks below."""
    by_folder = {d: sorted(p.stem for p in SHIPPED if p.parent.name == d) for d in ("train", "model", "data")}
    assert by_folder["train"] == sorted(f"stage{s}_{size}" for s in (0, 1, 2) for size in ("tiny", "default", "paper"))
    assert by_folder["model"] == ["default", "paper", "tiny"]
    assert by_folder["data"] == ["default", "sprot2014_50k"]
    assert len(SHIPPED) == 14


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_is_valid(path: Path) -> None:
    cfg = load_config(path)  # the class its `kind:` names; unknown keys, bad types and bad values raise
    command = path.read_text().splitlines()[0]
    runs = {"train": ("# sepit train ", "# torchrun "), "model": ("# sepit model info ",),
            "data": ("# sepit data build ",)}[path.parent.name]
    rel = path.relative_to(CONFIGS.parents[2]).as_posix()
    assert command.startswith(runs) and rel in command, f"{path}: the first line is not the command that runs it"
    expected = {"train": TrainConfig, "model": ModelConfig, "data": DataConfig}[path.parent.name]
    assert type(cfg) is expected
    if isinstance(cfg, TrainConfig):
        assert cfg.model in PRESETS, f"{path}: model {cfg.model!r} is not a preset"
        assert path.stem.startswith(f"stage{cfg.stage}_")
        assert path.stem.endswith(f"_{cfg.model}"), f"{path}: a {path.stem.split('_')[1]} config builds {cfg.model}"
        assert set(cfg.lr) <= set(STAGE_GROUPS[f"stage{cfg.stage}"]), (path, sorted(cfg.lr))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_shipped_model_config_is_its_preset(name: str) -> None:
    """`model: default` in a training config builds the Python preset; the YAML beside it is what users read and
    copy, so the two must not drift apart (the demo once trained without a setting the YAML had)."""
    assert load_config(CONFIGS / "model" / f"{name}.yaml") == PRESETS[name]()


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_config_names_no_machine_path(path: Path) -> None:
    """A shipped config works on any machine: no absolute or home paths (users pass theirs as overrides)."""
    absolute = [s for s in _strings(read_yaml(path)) if s.startswith(("/", "~")) or ":\\" in s]
    assert not absolute, f"{path}: machine paths {absolute}"
