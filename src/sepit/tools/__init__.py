"""Wrappers of external programs (MMseqs2). Each raises :class:`ToolError` with one line when the program is
missing or fails."""

from sepit.errors import SepitError


class ToolError(SepitError):
    """An external program is missing or failed (the message says which, and how to install it)."""


__all__ = ["ToolError"]
