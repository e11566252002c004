"""User-facing errors: one line, naming the file and the problem. The CLI prints them without a traceback."""

from __future__ import annotations

from pathlib import Path


class SepitError(Exception):
    """An error the user can act on; its message is shown as one line (no traceback unless --debug)."""


class ConfigError(SepitError):
    """A config file or override is wrong (unknown key, wrong type, missing value)."""


class InputError(SepitError):
    """An input file is unusable (malformed, empty, wrong format)."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class CheckpointError(SepitError):
    """A checkpoint directory is missing, corrupt, or made with different options."""


class UploadTooLarge(InputError):
    """An upload (or what it unpacks to) is over the size limit."""


class GenerationStopped(SepitError):
    """A generation was ended early by its ``should_stop`` (timeout, client gone, shutdown)."""
