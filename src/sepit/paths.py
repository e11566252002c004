"""Where sepit keeps things: ``$SEPIT_HOME`` (default ``~/.cache/sepit``)."""

from __future__ import annotations

import os
from pathlib import Path


def sepit_home() -> Path:
    """Root of sepit's cache: models, the default trained model, demo runs."""
    return Path(os.environ.get("SEPIT_HOME", Path.home() / ".cache" / "sepit")).expanduser()


def models_dir() -> Path:
    """Converted pretrained models live in ``$SEPIT_HOME/models/<name>``."""
    return sepit_home() / "models"


def package_dir() -> Path:
    """The installed ``sepit`` package folder (shipped configs and resources live inside it)."""
    return Path(__file__).resolve().parent


def configs_dir() -> Path:
    """Shipped YAML configs (``sepit/configs``)."""
    return package_dir() / "configs"


def resources_dir() -> Path:
    """Vendored data (embedded default dataset, templates, viewer assets)."""
    return package_dir() / "resources"
