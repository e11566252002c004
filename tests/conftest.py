"""Shared fixtures. Tests never touch the network or ../shared; they use vendored resources and tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("SEPIT_NO_PROGRESS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def fitted_model_dir(tmp_path_factory) -> Path:
    """The tiny model fitted to one answer (tests/_sepit_qa.py), built once per test session and shared read-only by
    the API, server and web tests (fitting it takes seconds; each module used to fit its own)."""
    from _sepit_qa import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("fitted-tiny") / "model")
