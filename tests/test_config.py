from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sepit.config import apply_overrides, from_dict, load_config, to_dict
from sepit.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class Cfg:
    name: str
    steps: int = 10
    precision: str = "fp32"
    out: Path | None = None
    optim: Optim = field(default_factory=Optim)
    groups: dict[str, float] = field(default_factory=dict)


def test_yaml_and_overrides(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\noptim:\n  lr: 1e-5\ngroups: {plm: 1.0e-6}\n")
    cfg = load_config(p, Cfg, ["steps=3", "optim.betas=[0.8, 0.9]", "out=/tmp/o"])
    assert cfg.name == "x" and cfg.steps == 3
    assert cfg.optim.lr == pytest.approx(1e-5)  # YAML reads "1e-5" as a string; the loader makes it a float
    assert cfg.optim.betas == [0.8, 0.9]
    assert cfg.out == Path("/tmp/o") and cfg.groups == {"plm": 1e-6}
    assert to_dict(cfg)["out"] == "/tmp/o"


def test_unknown_key_is_named_with_suggestion(tmp_path: Path) -> None:
    p = tmp_path / "c.yaml"
    p.write_text("name: x\noptim:\n  lrr: 1\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'optim.lrr' \(did you mean 'lr'\?\)"):
        load_config(p, Cfg)


@pytest.mark.parametrize(
    ("override", "message"),
    [("steps=ten", "steps: expected an integer"), ("optim.lr=fast", "optim.lr: expected a number"),
     ("nosuch=1", "unknown key 'nosuch'"), ("steps", "not of the form key=value")],
)
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_dict(Cfg, {"name": "x"}, [override])


def test_missing_required_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required key"):
        from_dict(Cfg, {})
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: not valid YAML"):
        load_config(bad, Cfg)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml", Cfg)
    with pytest.raises(ConfigError, match="is a folder, not a config file"):
        load_config(tmp_path, Cfg)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("name: Müller\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.yaml: not UTF-8 text \(byte 7\)"):
        load_config(latin1, Cfg)


def test_apply_overrides_does_not_mutate() -> None:
    base = {"a": {"b": 1}}
    out = apply_overrides(base, ["a.b=2", "a.c=x"])
    assert base == {"a": {"b": 1}} and out == {"a": {"b": 2, "c": "x"}}
