"""The inference precisions a user may ask for, torch-free so that the command line's ``--help`` imports no torch.
What each one means on which hardware is :mod:`sepit.model.precision`'s business."""

from __future__ import annotations

from sepit.errors import ConfigError

#: ``auto`` (bf16 where the hardware runs it natively, else fp32), ``fp32`` or ``bf16``; never fp16.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16")


def check_precision(precision: str) -> str:
    """``precision`` itself when it is one of :data:`PRECISIONS`, else a one-line ConfigError."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision
