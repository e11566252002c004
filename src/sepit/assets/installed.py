"""What is installed: ``model_path()`` (name or directory → directory) and ``list_models()``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sepit.assets.fetch import is_installed, read_provenance
from sepit.assets.registry import MODELS, ModelSpec
from sepit.errors import SepitError
from sepit.paths import models_dir


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``sepit models list``; ``parameters``/``size_bytes`` are None when the model is missing."""

    name: str
    installed: bool
    path: Path
    parameters: int | None
    size_bytes: int | None
    licence: str
    source: str
    description: str


def model_path(name_or_dir: str | Path, *, registry: dict[str, ModelSpec] | None = None) -> Path:
    """A registered model name → its installed directory; an existing directory → itself (any local HF checkpoint).

    Registered names win over same-named folders in the working directory; write ``./name`` for the folder.
    Raises a one-line SepitError saying to run ``sepit models fetch`` when a registered model is not installed.
    """
    registry = MODELS if registry is None else registry
    key = str(name_or_dir)
    if not isinstance(name_or_dir, Path) and key in registry:
        spec = registry[key]
        path = models_dir() / key
        if not is_installed(spec, path):
            raise SepitError(f"model '{key}' is not installed (expected at {path}): run `sepit models fetch {key}`")
        return path
    path = Path(key).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SepitError(f"{path}: not a Hugging Face model directory (no config.json)")
        return path.resolve()
    raise SepitError(f"'{key}' is neither a registered model ({', '.join(registry)}) nor an existing directory")


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def list_models(*, registry: dict[str, ModelSpec] | None = None) -> list[ModelInfo]:
    """Every registered model with its status, parameter count and size on disk."""
    registry = MODELS if registry is None else registry
    out = []
    for spec in registry.values():
        path = models_dir() / spec.name
        ok = is_installed(spec, path)
        prov = read_provenance(path) if ok else None
        out.append(ModelInfo(
            name=spec.name, installed=ok, path=path,
            parameters=int(prov["parameters"]) if prov and "parameters" in prov else None,
            size_bytes=_dir_size(path) if ok else None,
            licence=spec.licence, source=spec.requirement, description=spec.description,
        ))
    return out
