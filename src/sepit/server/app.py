"""The HTTP app of `sepit serve`: one small FastAPI app over the same ``ProteinQA.generate()`` the CLI uses.

Endpoints
  GET  /                 the web page (paste a sequence or drop a structure; 3D view; chat; annotation)
  GET  /health           {"status": "ok", model, running, queued, limits}
  GET  /v1/limits        the limits below, as JSON
  GET  /v1/questions     the standard annotation question set
  POST /v1/parse         JSON {sequence | structure{filename, content_base64}, chain?} → the protein chains found
  POST /v1/ask           JSON {sequence | structure, chain?, question, history?, max_new_tokens?, temperature?,
                         stream?} → {"answer", ...}; with stream=true a text/event-stream of ``token`` events
                         ({"text"}) then one ``done`` ({"answer", ...}) or ``error`` ({"detail"}) event
  POST /v1/ask/upload    the same as multipart form fields with a ``file`` part (for curl -F)
  POST /v1/annotate      JSON {proteins: [{sequence | structure, chain?}], questions?: [keys], max_new_tokens?}
  GET  /docs, /openapi.json   OpenAPI documentation

Limits (defaults; ``sepit serve --help`` changes them; see :class:`~sepit.server.limits.ServerLimits`)
  request body 8 MiB (413); structure upload 5 MiB as sent and 64 MiB unpacked (413); sequence ≤ 1022 residues,
  question ≤ 2000 characters, ≤ 16 history messages (422); max_new_tokens 1–512, temperature 0–2 (422);
  2 generations at once with 16 queued, 429 beyond; 120 s per generation (504); ≤ 4 proteins per annotate call.

Uploads are decoded in memory and parsed from a fresh private temporary folder under a name chosen by the server;
nothing from a request is ever used as a path. The server binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from sepit.annotate import Question, annotate_proteins, load_questions
from sepit.api import (
    GenerationStopped,
    Protein,
    ProteinQA,
    UploadTooLarge,
    clean_sequence,
    conversation,
    protein_from_upload,
)
from sepit.errors import SepitError
from sepit.log import get_logger
from sepit.server.gate import GenerationGate, QueueFull
from sepit.server.limits import ServerLimits

log = get_logger(__name__)
STATIC = Path(__file__).resolve().parent / "static"


# --- request bodies ---------------------------------------------------------------------------------------------

class StructureIn(BaseModel):
    filename: str = Field(..., max_length=255, description="the file's name; only its suffix is used, to tell the "
                          "format (.pdb, .ent, .cif, .mmcif, .fasta; .gz allowed)")
    content_base64: str = Field(..., description="the file's bytes, base64-encoded")


class ProteinIn(BaseModel):
    sequence: str | None = Field(None, description="amino-acid sequence (one-letter codes)")
    structure: StructureIn | None = Field(None, description="an uploaded PDB / mmCIF / AlphaFold file")
    chain: str | None = Field(None, max_length=8, description="chain of the structure (default: the first)")


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class AskIn(ProteinIn):
    question: str = Field(..., description="the question about the protein")
    history: list[Message] = Field(default_factory=list, description="earlier turns of this chat, oldest first")
    max_new_tokens: int | None = Field(None, description="answer length cap in tokens (server default if null)")
    temperature: float = Field(0.0, description="0 = greedy (deterministic); higher = more varied")
    stream: bool = Field(False, description="answer as a text/event-stream of tokens")


class AnnotateIn(BaseModel):
    proteins: list[ProteinIn]
    questions: list[str] | None = Field(None, description="keys of the standard questions (default: all)")
    max_new_tokens: int | None = None


# --- body size limit (pure ASGI, so it also covers chunked bodies without Content-Length) ------------------------

class BodyLimit:
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


# --- the app ----------------------------------------------------------------------------------------------------

def create_app(qa: ProteinQA, limits: ServerLimits | None = None,
               questions: list[Question] | None = None) -> FastAPI:
    """The FastAPI app serving ``qa`` under ``limits`` (see the module docstring for endpoints and limits)."""
    limits = limits or ServerLimits()
    if not qa.supports_sampling and limits.max_temperature > 0:
        log.info("the model decodes greedily only: temperature limited to 0")
        limits = replace(limits, min_temperature=0.0, max_temperature=0.0)
    if qa.max_sequence_length and qa.max_sequence_length < limits.max_sequence_length:
        limits = replace(limits, max_sequence_length=qa.max_sequence_length)
    qset = questions if questions is not None else load_questions(None)
    gate = GenerationGate(limits.max_concurrent, limits.max_queue)
    pool = ThreadPoolExecutor(max_workers=limits.max_concurrent, thread_name_prefix="sepit-gen")

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        stop_all.set()
        pool.shutdown(wait=False, cancel_futures=True)

    stop_all = threading.Event()  # set at shutdown: running generations end at their next token
    app = FastAPI(
        lifespan=lifespan,
        title="sepit",
        version=_version(),
        summary="Ask a structure-aware protein LLM (SEPIT) about proteins.",
        description="Limits enforced on every request:\n\n" + limits.describe(),
    )
    app.state.qa, app.state.limits, app.state.gate = qa, limits, gate

    # ---- helpers closed over the app's limits
    def fail(status: int, detail: str) -> HTTPException:
        return HTTPException(status_code=status, detail=detail)

    def check_generation(max_new_tokens: int | None, temperature: float) -> int:
        n = limits.default_max_new_tokens if max_new_tokens is None else max_new_tokens
        if not 1 <= n <= limits.max_new_tokens:
            raise fail(422, f"max_new_tokens must be 1–{limits.max_new_tokens}, got {n}")
        if not limits.min_temperature <= temperature <= limits.max_temperature:
            raise fail(422, f"temperature must be {limits.min_temperature:g}–{limits.max_temperature:g}, "
                            f"got {temperature:g}")
        return n

    async def read_protein(p: ProteinIn) -> list[Protein]:
        """All chains the input holds (one for a sequence); size and length limits enforced."""
        if (p.sequence is None) == (p.structure is None):
            raise fail(422, "give exactly one of 'sequence' or 'structure'")
        try:
            if p.sequence is not None:
                if len(p.sequence) > 4 * limits.max_sequence_length + 1000:  # before cleaning whitespace
                    raise fail(422, f"sequence longer than {limits.max_sequence_length} residues")
                prots = [Protein("query", clean_sequence(p.sequence))]
            else:
                data = decode_upload(p.structure.content_base64)
                prots = await asyncio.to_thread(protein_from_upload, data, p.structure.filename, p.chain,
                                                max_unpacked_bytes=limits.max_unpacked_bytes)
        except UploadTooLarge as e:
            raise fail(413, str(e)) from None
        except SepitError as e:
            raise fail(422, str(e)) from None
        for prot in prots:
            if len(prot) > limits.max_sequence_length:
                raise fail(422, f"{prot.id}: {len(prot)} residues, over the {limits.max_sequence_length}-residue "
                                "limit")
        return prots

    def decode_upload(b64: str) -> bytes:
        if len(b64) > (limits.max_upload_bytes + 2) // 3 * 4 + 4:
            raise fail(413, f"structure upload over the {limits.max_upload_bytes}-byte limit")
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise fail(422, "structure.content_base64 is not valid base64") from None
        if not data:
            raise fail(422, "structure upload is empty")
        return data

    def build_conversation(req: AskIn) -> list[dict[str, str]]:
        if len(req.question) > limits.max_question_chars:
            raise fail(422, f"question longer than {limits.max_question_chars} characters")
        if len(req.history) > limits.max_history_turns:
            raise fail(422, f"more than {limits.max_history_turns} history messages")
        if any(len(m.content) > limits.max_question_chars * 4 for m in req.history):
            raise fail(422, "a history message is too long")
        try:
            return conversation(req.question, [m.model_dump() for m in req.history])
        except SepitError as e:
            raise fail(422, str(e)) from None

    def admit():
        try:
            return gate.admit()
        except QueueFull as e:
            raise HTTPException(status_code=429, detail=str(e), headers={"Retry-After": "1"}) from None

    async def run_in_pool(job: Callable[[Callable[[], bool]], Any]) -> Any:
        """Run ``job(should_stop)`` on a generation thread; 504 after the per-request timeout."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        fut = loop.run_in_executor(pool, job, lambda: stop.is_set() or stop_all.is_set())
        try:
            return await asyncio.wait_for(asyncio.shield(fut), limits.request_timeout_s)
        except TimeoutError:
            stop.set()
            await _settle(fut)  # keep the slot until the thread has really stopped
            raise fail(504, f"generation took longer than {limits.request_timeout_s:g} s") from None
        except GenerationStopped:
            raise fail(503, "server shutting down") from None
        except SepitError as e:
            raise fail(422, str(e)) from None
        finally:
            stop.set()

    # ---- endpoints
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness and load: generations running and queued."""
        return {"status": "ok", "model": qa.name, "running": gate.running, "queued": gate.admitted - gate.running,
                "limits": asdict(limits)}

    @app.get("/v1/limits")
    async def get_limits() -> dict[str, Any]:
        """The limits this server enforces."""
        return asdict(limits)

    @app.get("/v1/questions")
    async def get_questions() -> dict[str, Any]:
        """The standard annotation question set."""
        return {"questions": [asdict(q) for q in qset]}

    @app.post("/v1/parse")
    async def parse(req: ProteinIn) -> dict[str, Any]:
        """Read a sequence or structure upload and list the protein chains in it (no generation)."""
        prots = await read_protein(req)
        return {"proteins": [{**p.summary(), "sequence": p.sequence} for p in prots]}

    async def answer(req: AskIn) -> Any:
        n = check_generation(req.max_new_tokens, req.temperature)
        conv = build_conversation(req)
        protein = (await read_protein(req))[0]
        ticket = admit()
        if req.stream:
            return _GatedStream(stream_answer(ticket, protein, conv, n, req.temperature), ticket)
        t0 = time.perf_counter()
        try:
            async with ticket:
                text = (await run_in_pool(lambda stop: qa.generate(
                    [protein], [conv], max_new_tokens=n, temperature=req.temperature, should_stop=stop)))[0]
        finally:
            ticket.release()
        return {"answer": text, "protein": protein.summary(), "model": qa.name,
                "seconds": round(time.perf_counter() - t0, 3)}

    async def stream_answer(ticket: Any, protein: Protein, conv: list[dict[str, str]], n: int,
                            temperature: float) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        fut = None
        t0 = time.perf_counter()
        try:
            async with ticket:
                yield _sse("start", {"protein": protein.summary(), "model": qa.name})

                def job() -> str:
                    return qa.generate([protein], [conv], max_new_tokens=n, temperature=temperature,
                                       on_text=lambda _i, t: loop.call_soon_threadsafe(events.put_nowait, ("text", t)),
                                       should_stop=lambda: stop.is_set() or stop_all.is_set())[0]

                fut = loop.run_in_executor(pool, job)
                def finished(f: asyncio.Future) -> None:
                    events.put_nowait(("end", None))
                    if not f.cancelled():
                        f.exception()  # retrieved here: after a client hangs up nobody else looks at it

                fut.add_done_callback(finished)
                deadline = loop.time() + limits.request_timeout_s
                while True:
                    try:
                        kind, val = await asyncio.wait_for(events.get(), max(deadline - loop.time(), 0.0))
                    except TimeoutError:
                        stop.set()
                        yield _sse("error", {"detail": f"generation took longer than {limits.request_timeout_s:g} s"})
                        break
                    if kind == "text":
                        yield _sse("token", {"text": val})
                        continue
                    exc = fut.exception()
                    if exc is None:
                        yield _sse("done", {"answer": fut.result(), "protein": protein.summary(),
                                            "seconds": round(time.perf_counter() - t0, 3)})
                    else:
                        detail = str(exc) if isinstance(exc, SepitError) else f"internal error: {type(exc).__name__}"
                        if not isinstance(exc, SepitError):
                            log.error("generation failed", exc_info=exc)
                        yield _sse("error", {"detail": detail})
                    break
                stop.set()
                if fut is not None:
                    await _settle(fut)
        finally:
            stop.set()
            ticket.release()

    @app.post("/v1/ask")
    async def ask(req: AskIn) -> Any:
        """Answer a question about a protein (sequence or uploaded structure); optionally streamed (SSE)."""
        return await answer(req)

    @app.post("/v1/ask/upload")
    async def ask_upload(file: UploadFile = File(..., description="PDB / mmCIF / AlphaFold / FASTA file"),
                         question: str = Form(...), chain: str | None = Form(None),
                         max_new_tokens: int | None = Form(None), temperature: float = Form(0.0),
                         stream: bool = Form(False)) -> Any:
        """``/v1/ask`` with the structure as a multipart file part (``curl -F file=@x.pdb -F question=...``)."""
        data = await file.read(limits.max_upload_bytes + 1)
        if len(data) > limits.max_upload_bytes:
            raise fail(413, f"structure upload over the {limits.max_upload_bytes}-byte limit")
        req = AskIn(structure=StructureIn(filename=file.filename or "upload",
                                          content_base64=base64.b64encode(data).decode()),
                    chain=chain or None, question=question, max_new_tokens=max_new_tokens,
                    temperature=temperature, stream=stream)
        return await answer(req)

    @app.post("/v1/annotate")
    async def annotate(req: AnnotateIn) -> dict[str, Any]:
        """The standard question set (or the listed keys) for a few proteins, in one batched generation."""
        if not req.proteins:
            raise fail(422, "no proteins given")
        if len(req.proteins) > limits.max_annotate_proteins:
            raise fail(422, f"at most {limits.max_annotate_proteins} proteins per request")
        n = check_generation(req.max_new_tokens, 0.0)
        by_key = {q.key: q for q in qset}
        unknown = [k for k in req.questions or [] if k not in by_key]
        if unknown:
            raise fail(422, f"unknown question keys {unknown} (known: {', '.join(by_key)})")
        chosen = [by_key[k] for k in req.questions] if req.questions else qset
        proteins = [(await read_protein(p))[0] for p in req.proteins]
        ticket = admit()
        t0 = time.perf_counter()
        try:
            async with ticket:
                rows = await run_in_pool(lambda stop: annotate_proteins(qa, proteins, chosen, max_new_tokens=n,
                                                                        should_stop=stop))
        finally:
            ticket.release()
        return {"results": rows, "model": qa.name, "seconds": round(time.perf_counter() - t0, 3)}

    @app.exception_handler(SepitError)
    async def sepit_error(_request: Request, exc: SepitError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": str(exc)})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    wrapped = BodyLimit(app, limits.max_request_bytes)
    app.state.asgi = wrapped
    return app


def asgi_app(qa: ProteinQA, limits: ServerLimits | None = None, questions: list[Question] | None = None) -> Any:
    """The app wrapped in the request-size limit: what ``sepit serve`` runs and tests drive."""
    return create_app(qa, limits, questions).state.asgi


class _GatedStream(StreamingResponse):
    """An SSE response that gives its admission ticket back however it ends (even if it never starts streaming)."""

    def __init__(self, content: AsyncIterator[str], ticket: Any) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._ticket = ticket

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._ticket.release()


async def _settle(fut: asyncio.Future) -> None:
    """Wait for a generation thread to end (its result or error no longer matters)."""
    try:
        await asyncio.shield(fut)
    except BaseException:  # noqa: BLE001 - the request has already been answered
        pass


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _version() -> str:
    from sepit import __version__

    return __version__
