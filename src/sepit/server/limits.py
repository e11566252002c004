"""The limits `sepit serve` enforces on every request (all configurable from the command line)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ServerLimits:
    """Input and load limits; a request outside them is refused with 4xx and a one-line ``detail``.

    413 for a too-large body or upload, 422 for out-of-range values, 429 when ``max_concurrent`` generations run and
    ``max_queue`` more wait, 504 when one runs past ``request_timeout_s``.
    """

    max_request_bytes: int = 8 * 1024 * 1024  # whole HTTP body (a base64 upload is 4/3 of the file)
    max_upload_bytes: int = 5 * 1024 * 1024  # one structure file as sent (gzipped or plain)
    max_unpacked_bytes: int = 64 * 1024 * 1024  # a gzipped upload once decompressed (stops gzip bombs)
    max_sequence_length: int = 1022  # residues; ESM-2's positional limit
    max_question_chars: int = 2000
    max_history_turns: int = 16  # earlier chat messages sent back with a question
    max_new_tokens: int = 512
    default_max_new_tokens: int = 128
    min_temperature: float = 0.0
    max_temperature: float = 2.0
    max_concurrent: int = 2  # generations running at once
    max_queue: int = 16  # generations waiting for a slot; beyond that: 429
    request_timeout_s: float = 120.0  # one generation (or one annotate batch), queueing excluded
    max_annotate_proteins: int = 4  # proteins per /v1/annotate request

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0 or (value == 0 and name not in ("min_temperature", "max_temperature", "max_queue")):
                raise ValueError(f"server limit {name} must be positive, got {value}")
        if self.min_temperature > self.max_temperature:
            raise ValueError("min_temperature is above max_temperature")
        if self.default_max_new_tokens > self.max_new_tokens:
            raise ValueError("default_max_new_tokens is above max_new_tokens")

    def describe(self) -> str:
        """The limits as Markdown bullet lines (for the OpenAPI description and the app docstring)."""
        mib = 1024 * 1024
        return "\n".join([
            f"- request body ≤ {self.max_request_bytes / mib:g} MiB (413 above)",
            f"- structure upload ≤ {self.max_upload_bytes / mib:g} MiB as sent, "
            f"≤ {self.max_unpacked_bytes / mib:g} MiB unpacked (413 above); PDB, mmCIF or AlphaFold files, plain or "
            "gzipped",
            f"- sequence ≤ {self.max_sequence_length} residues; question ≤ {self.max_question_chars} characters; "
            f"≤ {self.max_history_turns} earlier chat messages (422 above)",
            f"- max_new_tokens 1–{self.max_new_tokens} (default {self.default_max_new_tokens}); temperature "
            f"{self.min_temperature:g}–{self.max_temperature:g} (0 = greedy) (422 outside)",
            f"- {self.max_concurrent} generations at once, {self.max_queue} more queued; 429 when the queue is full",
            f"- {self.request_timeout_s:g} s per generation (504 after)",
            f"- /v1/annotate: ≤ {self.max_annotate_proteins} proteins per request",
        ])
