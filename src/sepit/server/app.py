"""The HTTP app of `sepit serve`: one small FastAPI app over the same ``ProteinQA.generate()`` the CLI uses.

Endpoints
  GET  /                 the web page (paste a sequence or drop a structure; 3D view; chat; annotation)
  GET  /health           {"status": "ok", model, running, queued, limits}
  GET  /v1/limits        the limits below, as JSON
  GET  /v1/questions     the standard annotation question set
  POST /v1/parse         JSON {sequence | structure{filename, content_base64}, chain?} → {"proteins": the protein
                         chains found, in file order; "default": the index of the one used when no chain is named}
  POST /v1/ask           JSON {sequence | structure, chain?, question, history?, max_new_tokens?, temperature?,
                         stream?} → {"answer", "protein", "model", "seconds", "homologs"?}; with stream=true a
                         text/event-stream: one ``start`` ({"protein", "model"}), one ``homologs`` ({"homologs"})
                         when the model has them, ``token`` events ({"text"}), then one ``done`` ({"answer",
                         "protein", "seconds"}) or ``error`` ({"detail"}) event
  POST /v1/ask/upload    the same as multipart form fields with a ``file`` part (for curl -F)
  POST /v1/annotate      JSON {proteins: [{sequence | structure, chain?}], questions?: [keys], max_new_tokens?}
  GET  /docs, /openapi.json   OpenAPI documentation

A structure upload without ``chain`` stands for its longest protein chain (ties: the first in file order), chosen by
:func:`sepit.proteins.default_protein` as in the API and CLI. The prompt is ``ProteinQA.conversations`` (with the
model's homolog context, where it has one) and ``homologs`` lists the retrieved homologs whose annotations went into
it (``ProteinQA.homologs``): each {"id", "identity" and "coverage" (fractions 0–1), "evalue", "annotation"}, null
where unknown. An empty list means retrieval found none; the field (and the ``homologs`` event) is absent when the
model answers without homolog context.

Limits (defaults; ``sepit serve --help`` changes them; every limit and its check is in :mod:`sepit.server.limits`)
  request body 8 MiB (413); structure upload 5 MiB as sent and 64 MiB unpacked (413); sequence ≤ 1022 residues,
  question ≤ 2000 characters, ≤ 16 history messages (422); max_new_tokens 1–512, temperature 0–2 (422);
  2 generations at once with 16 queued, 429 beyond; 120 s per generation (504); ≤ 4 proteins per annotate call.

Uploads are decoded in memory and parsed from a fresh private temporary folder under a name chosen by the server;
nothing from a request is ever used as a path. The server binds 127.0.0.1 unless told otherwise.

Layout: the endpoints are plain functions on two routers (``info``: page and server state; ``v1``: proteins and
answers) that take the app's :class:`Service` (model, limits, admission gate, generation threads) as a dependency;
:func:`create_app` only wires them together.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from sepit.annotate import Question, annotate_proteins, load_questions
from sepit.api import ProteinQA
from sepit.errors import GenerationStopped, SepitError, UploadTooLarge
from sepit.log import get_logger
from sepit.proteins import Protein, conversation, default_protein, protein_from_sequence, protein_from_upload
from sepit.server.gate import GenerationGate, QueueFull
from sepit.server.limits import BodyLimit, LimitExceeded, ServerLimits

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
    chain: str | None = Field(None, max_length=8, description="chain of the structure (default: the longest "
                              "protein chain, the first of equally long ones)")


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


# --- what the endpoints share -----------------------------------------------------------------------------------

def _fail(status: int, detail: str) -> HTTPException:
    return HTTPException(status_code=status, detail=detail)


class Service:
    """The model behind the app with its limits, question set, admission gate and generation threads; the
    endpoints reach it through the :func:`service` dependency."""

    def __init__(self, qa: ProteinQA, limits: ServerLimits, questions: list[Question]) -> None:
        self.qa = qa
        self.limits = limits
        self.questions = questions
        self.gate = GenerationGate(limits.max_concurrent, limits.max_queue)
        self.pool = ThreadPoolExecutor(max_workers=limits.max_concurrent, thread_name_prefix="sepit-gen")
        self.stop_all = threading.Event()  # set at shutdown: running generations end at their next token

    def close(self) -> None:
        self.stop_all.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # ---- inputs
    async def read_protein(self, p: ProteinIn) -> list[Protein]:
        """All chains the input holds (one for a sequence); size and length limits enforced."""
        if (p.sequence is None) == (p.structure is None):
            raise _fail(422, "give exactly one of 'sequence' or 'structure'")
        try:
            if p.sequence is not None:
                self.limits.check_sequence_text(p.sequence)
                prots = [protein_from_sequence(p.sequence)]
            else:
                data = self.decode_upload(p.structure.content_base64)
                prots = await asyncio.to_thread(protein_from_upload, data, p.structure.filename, p.chain,
                                                max_unpacked_bytes=self.limits.max_unpacked_bytes)
        except UploadTooLarge as e:
            raise LimitExceeded(413, str(e)) from None
        except SepitError as e:
            raise _fail(422, str(e)) from None
        for prot in prots:
            self.limits.check_protein(prot.id, len(prot))
        return prots

    async def one_protein(self, p: ProteinIn) -> Protein:
        """The protein a request stands for: the named chain, else :func:`default_protein` (the longest chain)."""
        prots = await self.read_protein(p)
        return default_protein(prots, f"upload {prots[0].source!r}")

    def decode_upload(self, b64: str) -> bytes:
        self.limits.check_upload_base64(b64)
        try:
            data = base64.b64decode(b64, validate=True)
        except (binascii.Error, ValueError):
            raise _fail(422, "structure.content_base64 is not valid base64") from None
        if not data:
            raise _fail(422, "structure upload is empty")
        return data

    def check_chat(self, req: AskIn) -> None:
        """422 for a question or history over the limits or malformed (before the request waits for a slot)."""
        self.limits.check_chat(req.question, [m.content for m in req.history])
        try:
            conversation(req.question, [m.model_dump() for m in req.history])
        except SepitError as e:
            raise _fail(422, str(e)) from None

    def prompt(self, protein: Protein, req: AskIn) -> tuple[list[dict[str, str]], list[dict[str, Any]] | None]:
        """The chat the model answers and the homologs whose annotations are in it, as JSON-ready rows (None when
        the model answers without homolog context). Runs on a generation thread: retrieval searches an index."""
        history = [m.model_dump() for m in req.history]
        build = getattr(self.qa, "conversations", None)  # with the model's homolog context, where it has one
        conv = (build([protein], [req.question], [history])[0] if build is not None
                else conversation(req.question, history))
        find = getattr(self.qa, "homologs", None)
        found = find(protein, req.question) if find is not None else None
        return conv, (None if found is None else [_homolog_row(h) for h in found])

    # ---- generations
    def admit(self) -> Any:
        try:
            return self.gate.admit()
        except QueueFull as e:
            raise HTTPException(status_code=429, detail=str(e), headers={"Retry-After": "1"}) from None

    async def run(self, job: Callable[[Callable[[], bool]], Any]) -> Any:
        """Run ``job(should_stop)`` on a generation thread; 504 after the per-request timeout."""
        loop = asyncio.get_running_loop()
        stop = threading.Event()
        fut = loop.run_in_executor(self.pool, job, lambda: stop.is_set() or self.stop_all.is_set())
        timeout = self.limits.request_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            stop.set()
            await _settle(fut)  # keep the slot until the thread has really stopped
            raise _fail(504, f"generation took longer than {timeout:g} s") from None
        except GenerationStopped:
            raise _fail(503, "server shutting down") from None
        except SepitError as e:
            raise _fail(422, str(e)) from None
        finally:
            stop.set()

    async def answer(self, req: AskIn) -> Any:
        n = self.limits.new_tokens(req.max_new_tokens, req.temperature)
        self.check_chat(req)
        protein = await self.one_protein(req)
        ticket = self.admit()
        if req.stream:
            return _GatedStream(self.stream_answer(ticket, protein, req, n), ticket)

        def job(stop: Callable[[], bool]) -> tuple[str, list[dict[str, Any]] | None]:
            conv, homologs = self.prompt(protein, req)
            text = self.qa.generate([protein], [conv], max_new_tokens=n, temperature=req.temperature,
                                    should_stop=stop)[0]
            return text, homologs

        t0 = time.perf_counter()
        try:
            async with ticket:
                text, homologs = await self.run(job)
        finally:
            ticket.release()
        out = {"answer": text, "protein": protein.summary(), "model": self.qa.name,
               "seconds": round(time.perf_counter() - t0, 3)}
        if homologs is not None:
            out["homologs"] = homologs
        return out

    async def stream_answer(self, ticket: Any, protein: Protein, req: AskIn, n: int) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        fut = None
        t0 = time.perf_counter()
        timeout = self.limits.request_timeout_s
        try:
            async with ticket:
                yield _sse("start", {"protein": protein.summary(), "model": self.qa.name})

                def job() -> str:
                    conv, homologs = self.prompt(protein, req)
                    if homologs is not None:  # before the first token: the page shows them while the answer streams
                        loop.call_soon_threadsafe(events.put_nowait, ("homologs", homologs))
                    return self.qa.generate(
                        [protein], [conv], max_new_tokens=n, temperature=req.temperature,
                        on_text=lambda _i, t: loop.call_soon_threadsafe(events.put_nowait, ("text", t)),
                        should_stop=lambda: stop.is_set() or self.stop_all.is_set())[0]

                fut = loop.run_in_executor(self.pool, job)

                def finished(f: asyncio.Future) -> None:
                    events.put_nowait(("end", None))
                    if not f.cancelled():
                        f.exception()  # retrieved here: after a client hangs up nobody else looks at it

                fut.add_done_callback(finished)
                deadline = loop.time() + timeout
                while True:
                    try:
                        kind, val = await asyncio.wait_for(events.get(), max(deadline - loop.time(), 0.0))
                    except TimeoutError:
                        stop.set()
                        yield _sse("error", {"detail": f"generation took longer than {timeout:g} s"})
                        break
                    if kind == "text":
                        yield _sse("token", {"text": val})
                        continue
                    if kind == "homologs":
                        yield _sse("homologs", {"homologs": val})
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


def service(request: Request) -> Service:
    """The dependency every endpoint takes: the app's :class:`Service`."""
    return request.app.state.service


Svc = Annotated[Service, Depends(service)]


# --- endpoints: the page and the server's state ------------------------------------------------------------------

info = APIRouter()


@info.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@info.get("/health")
async def health(svc: Svc) -> dict[str, Any]:
    """Liveness and load: generations running and queued."""
    gate = svc.gate
    return {"status": "ok", "model": svc.qa.name, "running": gate.running, "queued": gate.admitted - gate.running,
            "limits": asdict(svc.limits)}


@info.get("/v1/limits")
async def get_limits(svc: Svc) -> dict[str, Any]:
    """The limits this server enforces."""
    return asdict(svc.limits)


@info.get("/v1/questions")
async def get_questions(svc: Svc) -> dict[str, Any]:
    """The standard annotation question set."""
    return {"questions": [asdict(q) for q in svc.questions]}


# --- endpoints: proteins and answers -----------------------------------------------------------------------------

v1 = APIRouter(prefix="/v1")


@v1.post("/parse")
async def parse(req: ProteinIn, svc: Svc) -> dict[str, Any]:
    """Read a sequence or structure upload and list the protein chains in it (no generation)."""
    prots = await svc.read_protein(req)
    chosen = default_protein(prots, f"upload {prots[0].source!r}")
    return {"proteins": [{**p.summary(), "sequence": p.sequence} for p in prots],
            "default": next(i for i, p in enumerate(prots) if p is chosen)}


@v1.post("/ask")
async def ask(req: AskIn, svc: Svc) -> Any:
    """Answer a question about a protein (sequence or uploaded structure); optionally streamed (SSE)."""
    return await svc.answer(req)


@v1.post("/ask/upload")
async def ask_upload(svc: Svc, file: Annotated[UploadFile, File(description="PDB / mmCIF / AlphaFold / FASTA file")],
                     question: Annotated[str, Form()], chain: Annotated[str | None, Form()] = None,
                     max_new_tokens: Annotated[int | None, Form()] = None, temperature: Annotated[float, Form()] = 0.0,
                     stream: Annotated[bool, Form()] = False) -> Any:
    """``/v1/ask`` with the structure as a multipart file part (``curl -F file=@x.pdb -F question=...``)."""
    data = await file.read(svc.limits.max_upload_bytes + 1)
    svc.limits.check_upload_bytes(len(data))
    req = AskIn(structure=StructureIn(filename=file.filename or "upload",
                                      content_base64=base64.b64encode(data).decode()),
                chain=chain or None, question=question, max_new_tokens=max_new_tokens,
                temperature=temperature, stream=stream)
    return await svc.answer(req)


@v1.post("/annotate")
async def annotate(req: AnnotateIn, svc: Svc) -> dict[str, Any]:
    """The standard question set (or the listed keys) for a few proteins, in one batched generation."""
    svc.limits.check_annotate(len(req.proteins))
    n = svc.limits.new_tokens(req.max_new_tokens, 0.0)
    by_key = {q.key: q for q in svc.questions}
    unknown = [k for k in req.questions or [] if k not in by_key]
    if unknown:
        raise _fail(422, f"unknown question keys {unknown} (known: {', '.join(by_key)})")
    chosen = [by_key[k] for k in req.questions] if req.questions else svc.questions
    proteins = [await svc.one_protein(p) for p in req.proteins]
    ticket = svc.admit()
    t0 = time.perf_counter()
    try:
        async with ticket:
            rows = await svc.run(lambda stop: annotate_proteins(svc.qa, proteins, chosen, max_new_tokens=n,
                                                                should_stop=stop))
    finally:
        ticket.release()
    return {"results": rows, "model": svc.qa.name, "seconds": round(time.perf_counter() - t0, 3)}


async def _limit_exceeded(_request: Request, exc: LimitExceeded) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"detail": exc.detail})


async def _sepit_error(_request: Request, exc: SepitError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": str(exc)})


# --- the app ----------------------------------------------------------------------------------------------------

def create_app(qa: ProteinQA, limits: ServerLimits | None = None,
               questions: list[Question] | None = None) -> FastAPI:
    """The FastAPI app serving ``qa`` under ``limits`` (see the module docstring for endpoints and limits)."""
    limits = (limits or ServerLimits()).for_model(supports_sampling=qa.supports_sampling,
                                                  max_sequence_length=qa.max_sequence_length)
    svc = Service(qa, limits, questions if questions is not None else load_questions(None))

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        svc.close()

    app = FastAPI(
        lifespan=lifespan,
        title="sepit",
        version=_version(),
        summary="Ask a structure-aware protein LLM (SEPIT) about proteins.",
        description="Limits enforced on every request:\n\n" + limits.describe(),
    )
    app.state.service = svc
    app.state.qa, app.state.limits, app.state.gate = qa, limits, svc.gate
    app.include_router(info)
    app.include_router(v1)
    app.add_exception_handler(LimitExceeded, _limit_exceeded)
    app.add_exception_handler(SepitError, _sepit_error)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.state.asgi = BodyLimit(app, limits.max_request_bytes)
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


def _homolog_row(h: Any) -> dict[str, Any]:
    """One homolog as the API gives it: {"id", "identity", "coverage", "evalue", "annotation"}; numbers are plain
    floats (numpy scalars are not JSON), null where unknown or not finite (JSON has no inf / NaN)."""
    return {"id": str(h["id"]), "identity": _number(h.get("identity")), "coverage": _number(h.get("coverage")),
            "evalue": _number(h.get("evalue")), "annotation": str(h.get("annotation") or "")}


def _number(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _version() -> str:
    from sepit import __version__

    return __version__
