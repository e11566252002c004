"""Wrappers of external programs (MMseqs2, DIAMOND). Each raises :class:`ToolError` with one line when the program is
missing or fails."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from sepit.errors import SepitError
from sepit.log import get_logger

log = get_logger(__name__)


class ToolError(SepitError):
    """An external program is missing or failed (the message says which, and how to install it)."""


def find_binary(name: str, env_var: str, install_hint: str) -> str:
    """Path of program ``name``: ``$env_var`` if set, else the PATH; ToolError (with ``install_hint``) if none."""
    env = os.environ.get(env_var)
    if env:
        if not (Path(env).is_file() and os.access(env, os.X_OK)):
            raise ToolError(f"{env_var}={env} is not an executable file; {install_hint}")
        return env
    found = shutil.which(name)
    if not found:
        raise ToolError(f"{name} not found on PATH; {install_hint}")
    return found


def run_tool(name: str, cmd: list[str], install_hint: str, cwd: str | Path | None = None) -> str:
    """Run ``cmd`` (``cmd[1]`` is the subcommand of program ``name``) → its stdout; ToolError with the most telling
    line of its output when it cannot start or exits non-zero."""
    log.debug("running %s", " ".join(cmd))
    try:
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as e:
        raise ToolError(f"cannot run {cmd[0]}: {e.strerror or e}; {install_hint}") from None
    if r.returncode != 0:
        lines = [ln for ln in (r.stderr + "\n" + r.stdout).splitlines() if ln.strip()]
        err = next((ln for ln in reversed(lines) if "rror" in ln), lines[-1] if lines else "no output")
        raise ToolError(f"{name} {cmd[1]} failed (exit {r.returncode}): {err.strip()}")
    return r.stdout


__all__ = ["ToolError", "find_binary", "run_tool"]
