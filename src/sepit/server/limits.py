"""The limits `sepit serve` enforces on every request (all configurable from the command line), and their checks.

Every input limit is a field of :class:`ServerLimits` and is checked by one of its methods (or, for the request body,
by :class:`BodyLimit`); a check that fails raises :class:`LimitExceeded`, which the app answers with its status and
a one-line ``detail``. The load limits (``max_concurrent``, ``max_queue``, ``heavy_tokens``, ``max_parsing``) are
kept by :class:`~sepit.server.gate.GenerationGate`, the per-generation timeout by the app's generation runner.
No FastAPI here: ``sepit serve --help`` reads the defaults without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from sepit.log import get_logger

log = get_logger(__name__)


class LimitExceeded(Exception):
    """A request outside the limits: answered with ``status`` (413 too large, 422 out of range) and ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class ServerLimits:
    """Input and load limits; a request outside them is refused with 4xx and a one-line ``detail``.

    413 for a too-large body, upload or prompt, 422 for out-of-range values, 429 when ``max_concurrent`` generations
    run and ``max_queue`` more wait (or ``max_parsing`` uploads are parsed and ``max_queue`` more wait), 504 when one
    runs past ``request_timeout_s``.

    A prompt is counted in tokens as the model's processor counts them (the protein's slots plus the text tokens of
    the rendered chat, homolog context included); with ``max_new_tokens`` it must fit ``max_context_tokens``, which
    :meth:`for_model` narrows to the LLM's context. A generation stops at the first decoding step or prefill chunk
    (512 prompt tokens) after its timeout. A generation of
    ``heavy_tokens`` or more (prompt + answer, summed over the prompts of a request) is *heavy*: heavy ones hold at
    most ``max_concurrent`` − 1 of the running slots (all of them when there is one), so a short question never
    waits behind heavy ones alone.
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
    max_context_tokens: int = 8192  # prompt tokens + max_new_tokens; narrowed to the LLM's context (413 above)
    heavy_tokens: int = 2048  # a request's prompt + answer tokens from which it runs in the heavy lane
    max_parsing: int = 2  # structure uploads parsed at once; more wait (in the max_queue bound), beyond that: 429

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0 or (value == 0 and name not in ("min_temperature", "max_temperature", "max_queue")):
                raise ValueError(f"server limit {name} must be positive, got {value}")
        if self.min_temperature > self.max_temperature:
            raise ValueError("min_temperature is above max_temperature")
        if self.default_max_new_tokens > self.max_new_tokens:
            raise ValueError("default_max_new_tokens is above max_new_tokens")

    def for_model(self, *, supports_sampling: bool, max_sequence_length: int | None,
                  context_tokens: int | None = None) -> ServerLimits:
        """These limits narrowed to what the model can do: temperature 0 for a greedy-only model, no longer
        sequences than the model takes, and no more prompt + answer tokens than the LLM's context."""
        limits = self
        if not supports_sampling and limits.max_temperature > 0:
            log.info("the model decodes greedily only: temperature limited to 0")
            limits = replace(limits, min_temperature=0.0, max_temperature=0.0)
        if max_sequence_length and max_sequence_length < limits.max_sequence_length:
            limits = replace(limits, max_sequence_length=max_sequence_length)
        if context_tokens and context_tokens < limits.max_context_tokens:
            limits = replace(limits, max_context_tokens=context_tokens)
        return limits

    # ---- the checks (each raises LimitExceeded) -------------------------------------------------------------------
    def new_tokens(self, max_new_tokens: int | None, temperature: float) -> int:
        """The answer length to use (the default when None); 422 when it or ``temperature`` is out of range."""
        n = self.default_max_new_tokens if max_new_tokens is None else max_new_tokens
        if not 1 <= n <= self.max_new_tokens:
            raise LimitExceeded(422, f"max_new_tokens must be 1–{self.max_new_tokens}, got {n}")
        if not self.min_temperature <= temperature <= self.max_temperature:
            raise LimitExceeded(422, f"temperature must be {self.min_temperature:g}–{self.max_temperature:g}, "
                                     f"got {temperature:g}")
        return n

    def check_sequence_text(self, text: str) -> None:
        """A sequence as sent, before whitespace is cleaned out of it: far too long is refused before parsing."""
        if len(text) > 4 * self.max_sequence_length + 1000:
            raise LimitExceeded(422, f"sequence longer than {self.max_sequence_length} residues")

    def check_protein(self, protein_id: str, length: int) -> None:
        """A parsed protein chain's residue count."""
        if length > self.max_sequence_length:
            raise LimitExceeded(422, f"{protein_id}: {length} residues, over the {self.max_sequence_length}-residue "
                                     "limit")

    def check_upload_base64(self, b64: str) -> None:
        """A base64-encoded upload, by its encoded length (before decoding it)."""
        if len(b64) > (self.max_upload_bytes + 2) // 3 * 4 + 4:
            raise self._upload_too_large()

    def check_upload_bytes(self, size: int) -> None:
        """An upload's size in bytes as sent (gzipped or plain)."""
        if size > self.max_upload_bytes:
            raise self._upload_too_large()

    def _upload_too_large(self) -> LimitExceeded:
        return LimitExceeded(413, f"structure upload over the {self.max_upload_bytes}-byte limit")

    def check_chat(self, question: str, history: Sequence[str]) -> None:
        """A question and the contents of the earlier chat messages sent with it."""
        if len(question) > self.max_question_chars:
            raise LimitExceeded(422, f"question longer than {self.max_question_chars} characters")
        if len(history) > self.max_history_turns:
            raise LimitExceeded(422, f"more than {self.max_history_turns} history messages")
        if any(len(m) > self.max_question_chars * 4 for m in history):
            raise LimitExceeded(422, "a history message is too long")

    def check_context(self, prompt_tokens: int, max_new_tokens: int) -> None:
        """A prompt's token count (protein slots + text tokens, as the model's processor counts them) with the
        answer it may grow: 413 when they do not fit ``max_context_tokens``."""
        if prompt_tokens + max_new_tokens > self.max_context_tokens:
            raise LimitExceeded(413, f"prompt of {prompt_tokens} tokens (protein and text) + max_new_tokens "
                                     f"{max_new_tokens} is over the {self.max_context_tokens}-token context limit")

    def is_heavy(self, tokens: int) -> bool:
        """Whether a request of ``tokens`` (prompt + answer tokens, summed over its prompts) runs in the heavy lane."""
        return tokens >= self.heavy_tokens

    def check_annotate(self, n_proteins: int) -> None:
        """The number of proteins in one annotate request."""
        if not n_proteins:
            raise LimitExceeded(422, "no proteins given")
        if n_proteins > self.max_annotate_proteins:
            raise LimitExceeded(422, f"at most {self.max_annotate_proteins} proteins per request")

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
            f"- prompt tokens (protein + text, homolog context included) + max_new_tokens ≤ "
            f"{self.max_context_tokens} (413 above)",
            f"- {self.max_concurrent} generations at once, {self.max_queue} more queued; 429 when the queue is full; "
            f"requests of ≥ {self.heavy_tokens} prompt + answer tokens hold at most {max(self.max_concurrent - 1, 1)} "
            "of the running slots",
            f"- {self.max_parsing} structure uploads parsed at once, {self.max_queue} more queued (429 beyond)",
            f"- {self.request_timeout_s:g} s per generation (504 after; it stops at its next decoding step)",
            f"- /v1/annotate: ≤ {self.max_annotate_proteins} proteins per request",
        ])


# --- the request body limit (pure ASGI, so it also covers chunked bodies without Content-Length) -----------------

class BodyLimit:
    """ASGI middleware: a body over ``max_bytes`` (by its Content-Length, or as it streams in) gets 413."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.max_bytes:
                return await _too_large(send, self.max_bytes)
        seen = 0
        refused = False

        async def limited() -> dict:
            # Over the limit: answer 413 now and tell the app the client has gone (whatever it sends is dropped).
            nonlocal seen, refused
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_bytes:
                    if not refused:
                        refused = True
                        await _too_large(send, self.max_bytes)
                    return {"type": "http.disconnect"}
            return msg

        async def guarded_send(msg: dict) -> None:
            if not refused:
                await send(msg)

        try:
            await self.app(scope, limited, guarded_send)
        except Exception:
            if not refused:
                raise


async def _too_large(send: Callable, limit: int) -> None:
    body = json.dumps({"detail": f"request body over the {limit}-byte limit"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
