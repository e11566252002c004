"""The HTTP app of `sepit serve`: one small FastAPI app over the same ``ProteinQA.generate()`` the CLI uses.

Endpoints
  GET  /                 the web page (paste a sequence or drop a structure; 3D view; chat; annotation)
  GET  /health           {"status": "ok", model, running, queued, heavy, parsing, limits}
  GET  /v1/limits        the limits below, as JSON
  GET  /v1/questions     the standard annotation question set
  POST /v1/parse         JSON {sequence | structure{filename, content_base64}, chain?} → {"proteins": the protein
                         chains found, in file order; "default": the index of the one used when no chain is named}
  POST /v1/ask           JSON {sequence | structure, chain?, question, history?, max_new_tokens?, temperature?,
                         stream?} → {"answer", "protein", "model", "seconds", "homologs"?}; with stream=true a
                         text/event-stream: one ``start`` ({"protein", "model"}), one ``homologs`` ({"homologs"})
                         when the model has them, ``token`` events ({"text"}), then one ``done`` ({"answer",
                         "protein", "seconds"}) or ``error`` ({"detail"}) event. A non-streamed answer (and its
                         504) has ``Server-Timing: queue;dur=…, generate;dur=…, step;dur=…`` (ms: waiting for a
                         slot, generating until the thread stopped, the longest step between two stop checks)
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
  request body 8 MiB (413); structure upload 5 MiB as sent and 64 MiB unpacked (413), gzip whole or refused (422);
  sequence ≤ 1022 residues, question ≤ 2000 characters, ≤ 16 history messages (422); max_new_tokens 1–512,
  temperature 0–2 (422); prompt tokens (protein slots + text, homolog context included, counted by the model's
  processor before the request queues) + max_new_tokens ≤ the LLM's context (8192 at most; 413); 2 generations at
  once with 16 queued, 429 beyond, heavy requests (≥ 2048 prompt + answer tokens) on at most one of the two slots;
  2 uploads parsed at once with 16 queued (429 beyond); 120 s per generation (504: it stops at its next decoding
  step or prefill chunk of 512 tokens); ≤ 4 proteins per annotate call.
  Every client error is a 4xx with a one-line ``detail``.

A client that hangs up gives its place back: a queued request leaves the queue and a running generation stops at its
next token (streamed or not). Uploads are decoded in memory and parsed from a fresh private temporary folder under a
name chosen by the server; nothing from a request is ever used as a path.

Where requests may come from (:mod:`sepit.server.guard`): the server binds 127.0.0.1 unless told otherwise; ``Host``
must name it (the bound address, localhost, 127.0.0.1, ::1, or ``--allowed-hosts``; 400 else), a POST with an
``Origin`` must come from the same origin (403 else: no cross-site requests from other pages in the user's browser),
and responses carry nosniff / no-referrer / no-framing headers and, for the page, a Content-Security-Policy.

Layout: the endpoints are plain functions on two routers (``info``: page and server state; ``v1``: proteins and
answers) that take the app's :class:`Service` (model, limits, admission gates, generation and parsing threads) as a
dependency; :func:`create_app` only wires them together and :func:`asgi_app` wraps it in the body limit and the
host guard.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Depends, FastAPI, File, Form, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, ValidationError

from sepit.annotate import Question, annotate_proteins, load_questions
from sepit.api import ProteinQA
from sepit.errors import GenerationStopped, SepitError, UploadTooLarge
from sepit.log import get_logger
from sepit.proteins import Protein, conversation, default_protein, protein_from_sequence, protein_from_upload
from sepit.server.gate import GenerationGate, QueueFull
from sepit.server.guard import PAGE_CSP, HostGuard
from sepit.server.limits import BodyLimit, LimitExceeded, ServerLimits

log = get_logger(__name__)
STATIC = Path(__file__).resolve().parent / "static"
T = TypeVar("T")


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
    """The model behind the app with its limits, question set, admission gates and threads; the endpoints reach it
    through the :func:`service` dependency."""

    def __init__(self, qa: ProteinQA, limits: ServerLimits, questions: list[Question]) -> None:
        self.qa = qa
        self.limits = limits
        self.questions = questions
        self.gate = GenerationGate(limits.max_concurrent, limits.max_queue, max_heavy=limits.max_concurrent - 1)
        self.pool = ThreadPoolExecutor(max_workers=limits.max_concurrent, thread_name_prefix="sepit-gen")
        # Parsing an upload can take seconds and hundreds of MB (64 MiB unpacked): a few at a time, the rest wait.
        self.parse_gate = GenerationGate(limits.max_parsing, limits.max_queue, what="uploads being parsed")
        self.parse_pool = ThreadPoolExecutor(max_workers=limits.max_parsing, thread_name_prefix="sepit-parse")
        self.stop_all = threading.Event()  # set at shutdown: running generations end at their next token

    def close(self) -> None:
        self.stop_all.set()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.parse_pool.shutdown(wait=False, cancel_futures=True)

    # ---- the client
    async def unless_gone(self, request: Request, work: Awaitable[T]) -> T | Response:
        """``work``, given up when the client hangs up first: a queued request leaves the queue, a running
        generation stops at its next token (see :meth:`run`). Streamed answers stop the same way through
        Starlette, which cancels a stream whose client has gone."""
        task = asyncio.ensure_future(work)
        gone = asyncio.ensure_future(_until_disconnected(request))
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():  # the client has gone
                task.cancel()
                await asyncio.wait({task})  # it gives its slot back once its generation thread has stopped
                return Response(status_code=499)  # nobody is listening: nginx's "client closed request"
            return task.result()
        finally:
            gone.cancel()
            if not task.done():  # this request is being cancelled itself (server shutdown)
                task.cancel()

    # ---- inputs
    async def read_protein(self, p: ProteinIn) -> list[Protein]:
        """All chains the input holds (one for a sequence); size and length limits enforced. Uploads are parsed
        on the parsing threads, ``max_parsing`` at a time."""
        if (p.sequence is None) == (p.structure is None):
            raise _fail(422, "give exactly one of 'sequence' or 'structure'")
        if p.sequence is not None:
            self.limits.check_sequence_text(p.sequence)
            try:
                prots = [protein_from_sequence(p.sequence)]
            except SepitError as e:
                raise _fail(422, str(e)) from None
        else:
            self.limits.check_upload_base64(p.structure.content_base64)
            ticket = self.admit(self.parse_gate)
            try:
                async with ticket:
                    loop = asyncio.get_running_loop()
                    prots = await loop.run_in_executor(self.parse_pool, self.parse_upload, p.structure, p.chain)
            finally:
                ticket.release()
        for prot in prots:
            self.limits.check_protein(prot.id, len(prot))
        return prots

    def parse_upload(self, s: StructureIn, chain: str | None) -> list[Protein]:
        """An upload's chains (on a parsing thread): 413 / 422 with a one-line detail for whatever is wrong with
        it, including a parser that breaks on it."""
        data = self.decode_upload(s.content_base64)
        try:
            return protein_from_upload(data, s.filename, chain, max_unpacked_bytes=self.limits.max_unpacked_bytes)
        except UploadTooLarge as e:
            raise LimitExceeded(413, str(e)) from None
        except SepitError as e:
            raise _fail(422, str(e)) from None
        except Exception as e:  # noqa: BLE001 - a hostile file must not become a 500
            log.warning("upload %r broke the parser", s.filename[:80], exc_info=e)
            raise _fail(422, f"{_label(s.filename)}: unreadable file ({type(e).__name__})") from None

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

    def prompt_tokens(self, pairs: Iterable[tuple[Protein, list[dict[str, str]]]]) -> list[int]:
        """Each prompt's length in LLM tokens as the model's processor makes it: the protein's slots (its residues
        after cropping, pooled, with their start / end tokens) and the text tokens of the rendered chat. Empty when
        the model has no processor to ask."""
        proc = getattr(getattr(self.qa, "model", None), "processor", None)
        if proc is None:
            return []
        try:
            return [len(proc.encode_chat(conv, [p], add_generation_prompt=True).input_ids) for p, conv in pairs]
        except SepitError as e:
            raise _fail(422, str(e)) from None

    def check_context(self, pairs: Sequence[tuple[Protein, list[dict[str, str]]]], n: int) -> int:
        """413 unless every prompt + ``n`` new tokens fits the context; → the request's cost in tokens (its prompts
        plus ``n`` new tokens each), which decides its lane."""
        counts = self.prompt_tokens(pairs)
        for c in counts:
            self.limits.check_context(c, n)
        return sum(counts) + n * len(counts)

    async def check_ask(self, protein: Protein, req: AskIn, n: int) -> int:
        """The token check before queueing, on the prompt without homolog context (the generation thread checks
        again once the context is in: :meth:`answer_job`); → the request's cost in tokens."""
        conv = conversation(req.question, [m.model_dump() for m in req.history])
        return await asyncio.to_thread(self.check_context, [(protein, conv)], n)

    # ---- generations
    def admit(self, gate: GenerationGate | None = None, heavy: bool = False) -> Any:
        try:
            return (gate or self.gate).admit(heavy)
        except QueueFull as e:
            raise HTTPException(status_code=429, detail=str(e), headers={"Retry-After": "1"}) from None

    async def run(self, job: Callable[[Callable[[], bool]], Any], stop: _Stopper | None = None) -> Any:
        """Run ``job(should_stop)`` on a generation thread; 504 after the per-request timeout. The slot is kept
        until the thread has stopped (at its next token once told to), also when the client hangs up."""
        loop = asyncio.get_running_loop()
        stop = stop or _Stopper(self.stop_all)
        fut = loop.run_in_executor(self.pool, job, stop)
        timeout = self.limits.request_timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout)
        except TimeoutError:
            stop.set()
            await _settle(fut)  # keep the slot until the thread has really stopped
            raise _fail(504, f"generation took longer than {timeout:g} s") from None
        except asyncio.CancelledError:  # the client hung up
            stop.set()
            await _settle(fut)
            raise
        except GenerationStopped:
            raise _fail(503, "server shutting down") from None
        except SepitError as e:
            raise _fail(422, str(e)) from None
        finally:
            stop.set()

    def answer_job(self, protein: Protein, req: AskIn, n: int, stop: Callable[[], bool],
                   on_homologs: Callable[[list[dict[str, Any]]], None] | None = None,
                   on_text: Callable[[int, str], None] | None = None) -> tuple[str, list[dict[str, Any]] | None]:
        """One answer, on a generation thread: the prompt with the model's homolog context, its token check (413),
        then the generation, which ``stop()`` ends at its next token."""
        conv, homologs = self.prompt(protein, req)
        self.check_context([(protein, conv)], n)
        if homologs is not None and on_homologs is not None:
            on_homologs(homologs)
        if stop():
            raise GenerationStopped("generation stopped before it started")
        choices = getattr(self.qa, "answer_options", None)  # answers chosen among the homologs' (choose_open)
        extra = {"options": choices([protein], [req.question])} if choices is not None else {}
        text = self.qa.generate([protein], [conv], max_new_tokens=n, temperature=req.temperature, on_text=on_text,
                                should_stop=stop, **extra)[0]
        return text, homologs

    async def answer(self, req: AskIn) -> Any:
        n = self.limits.new_tokens(req.max_new_tokens, req.temperature)
        self.check_chat(req)
        protein = await self.one_protein(req)
        cost = await self.check_ask(protein, req, n)
        ticket = self.admit(heavy=self.limits.is_heavy(cost))
        if req.stream:
            return _GatedStream(self.stream_answer(ticket, protein, req, n), ticket)
        t0 = time.perf_counter()
        t1 = t0
        stop = _Stopper(self.stop_all)
        try:
            async with ticket:
                t1 = time.perf_counter()
                text, homologs = await self.run(lambda should_stop: self.answer_job(protein, req, n, should_stop),
                                                stop)
        except HTTPException as e:
            e.headers = {**(e.headers or {}), "Server-Timing": _timing(t0, t1, stop)}
            raise
        finally:
            ticket.release()
        out = {"answer": text, "protein": protein.summary(), "model": self.qa.name,
               "seconds": round(time.perf_counter() - t0, 3)}
        if homologs is not None:
            out["homologs"] = homologs
        return JSONResponse(out, headers={"Server-Timing": _timing(t0, t1, stop)})

    async def stream_answer(self, ticket: Any, protein: Protein, req: AskIn, n: int) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = _Stopper(self.stop_all)
        fut = None
        t0 = time.perf_counter()
        timeout = self.limits.request_timeout_s
        try:
            async with ticket:
                yield _sse("start", {"protein": protein.summary(), "model": self.qa.name})

                def put(kind: str) -> Callable[..., None]:
                    return lambda *val: loop.call_soon_threadsafe(events.put_nowait, (kind, val[-1]))

                # the homologs come before the first token: the page shows them while the answer streams
                fut = loop.run_in_executor(self.pool, self.answer_job, protein, req, n, stop, put("homologs"),
                                           put("text"))

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
                        yield _sse("done", {"answer": fut.result()[0], "protein": protein.summary(),
                                            "seconds": round(time.perf_counter() - t0, 3)})
                    else:
                        yield _sse("error", {"detail": _error_detail(exc)})
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
    return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": PAGE_CSP})


@info.get("/health")
async def health(svc: Svc) -> dict[str, Any]:
    """Liveness and load: generations running and queued, heavy ones running, uploads being parsed or queued."""
    gate = svc.gate
    return {"status": "ok", "model": svc.qa.name, "running": gate.running, "queued": gate.admitted - gate.running,
            "heavy": gate.running_heavy, "parsing": svc.parse_gate.admitted, "limits": asdict(svc.limits)}


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
async def parse(req: ProteinIn, svc: Svc, request: Request) -> Any:
    """Read a sequence or structure upload and list the protein chains in it (no generation)."""
    return await svc.unless_gone(request, _parse(req, svc))


async def _parse(req: ProteinIn, svc: Service) -> dict[str, Any]:
    prots = await svc.read_protein(req)
    chosen = default_protein(prots, f"upload {prots[0].source!r}")
    return {"proteins": [{**p.summary(), "sequence": p.sequence} for p in prots],
            "default": next(i for i, p in enumerate(prots) if p is chosen)}


@v1.post("/ask")
async def ask(req: AskIn, svc: Svc, request: Request) -> Any:
    """Answer a question about a protein (sequence or uploaded structure); optionally streamed (SSE)."""
    return await svc.unless_gone(request, svc.answer(req))


@v1.post("/ask/upload")
async def ask_upload(svc: Svc, request: Request,
                     file: Annotated[UploadFile, File(description="PDB / mmCIF / AlphaFold / FASTA file")],
                     question: Annotated[str, Form()], chain: Annotated[str | None, Form()] = None,
                     max_new_tokens: Annotated[int | None, Form()] = None, temperature: Annotated[float, Form()] = 0.0,
                     stream: Annotated[bool, Form()] = False) -> Any:
    """``/v1/ask`` with the structure as a multipart file part (``curl -F file=@x.pdb -F question=...``)."""
    data = await file.read(svc.limits.max_upload_bytes + 1)
    svc.limits.check_upload_bytes(len(data))
    req = AskIn(structure=StructureIn(filename=file.filename or "upload",
                                      content_base64=base64.b64encode(data).decode()),
                chain=chain or None, question=question, max_new_tokens=max_new_tokens,
                temperature=temperature, stream=stream)  # a field out of bounds: ValidationError → 422
    return await svc.unless_gone(request, svc.answer(req))


@v1.post("/annotate")
async def annotate(req: AnnotateIn, svc: Svc, request: Request) -> Any:
    """The standard question set (or the listed keys) for a few proteins, in one batched generation."""
    return await svc.unless_gone(request, _annotate(req, svc))


async def _annotate(req: AnnotateIn, svc: Service) -> dict[str, Any]:
    svc.limits.check_annotate(len(req.proteins))
    n = svc.limits.new_tokens(req.max_new_tokens, 0.0)
    by_key = {q.key: q for q in svc.questions}
    unknown = [k for k in req.questions or [] if k not in by_key]
    if unknown:
        raise _fail(422, f"unknown question keys {unknown} (known: {', '.join(by_key)})")
    chosen = [by_key[k] for k in req.questions] if req.questions else svc.questions
    proteins = [await svc.one_protein(p) for p in req.proteins]
    # every prompt must fit the context (the yes/no ones need no new tokens); together they decide the lane
    pairs = [(p, conversation(q.question)) for p in proteins for q in chosen]
    news = [n if q.kind == "open" else 0 for _p in proteins for q in chosen]
    counts = await asyncio.to_thread(svc.prompt_tokens, pairs)
    for c, k in zip(counts, news):
        svc.limits.check_context(c, k)
    ticket = svc.admit(heavy=svc.limits.is_heavy(sum(counts) + sum(news)))
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
    return JSONResponse(status_code=422, content={"detail": _one_line(str(exc))})


async def _invalid(_request: Request, exc: RequestValidationError | ValidationError) -> JSONResponse:
    """A request that does not fit its schema (or a value out of a field's bounds): 422, one line."""
    return JSONResponse(status_code=422, content={"detail": _validation_detail(exc.errors())})


# --- the app ----------------------------------------------------------------------------------------------------

def create_app(qa: ProteinQA, limits: ServerLimits | None = None,
               questions: list[Question] | None = None) -> FastAPI:
    """The FastAPI app serving ``qa`` under ``limits`` (see the module docstring for endpoints and limits)."""
    limits = (limits or ServerLimits()).for_model(supports_sampling=qa.supports_sampling,
                                                  max_sequence_length=qa.max_sequence_length,
                                                  context_tokens=_context_tokens(qa))
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
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(ValidationError, _invalid)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def asgi_app(qa: ProteinQA, limits: ServerLimits | None = None, questions: list[Question] | None = None, *,
             host: str = "127.0.0.1", allowed_hosts: Iterable[str] = ()) -> Any:
    """The app behind the host guard and the request-size limit: what ``sepit serve`` runs and tests drive.

    ``host``: the address the server binds (``Host`` may name it, localhost, 127.0.0.1 or ::1); ``allowed_hosts``:
    more names ``Host`` may carry (``*``: any), see :mod:`sepit.server.guard`."""
    app = create_app(qa, limits, questions)
    return HostGuard(BodyLimit(app, app.state.limits.max_request_bytes), host, allowed_hosts)


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


async def _until_disconnected(request: Request) -> None:
    """Return once the client has hung up. The endpoints read the whole body first, so the next message the server
    gives is ``http.disconnect`` (when the client goes, or once the response is complete)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _context_tokens(qa: ProteinQA) -> int | None:
    """The LLM's context in tokens (its position limit), None when the model does not say."""
    config = getattr(getattr(getattr(qa, "model", None), "llm", None), "config", None)
    n = getattr(config, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


class _Stopper:
    """The ``should_stop`` a generation asks once per decoding step and prefill chunk (and once before its prefill):
    true once :meth:`set` (timeout, client gone) or at shutdown. It also keeps the longest wait between two of its
    calls: how late a stop can come (``Server-Timing: step``)."""

    def __init__(self, stop_all: threading.Event) -> None:
        self._stop = threading.Event()
        self._stop_all = stop_all
        self._last: float | None = None
        self.longest = 0.0  # seconds

    def __call__(self) -> bool:
        now = time.perf_counter()
        if self._last is not None:
            self.longest = max(self.longest, now - self._last)
        self._last = now
        return self._stop.is_set() or self._stop_all.is_set()

    def set(self) -> None:
        self._stop.set()


def _timing(t0: float, t1: float, stop: _Stopper) -> str:
    """A ``Server-Timing`` value in ms: time queued (admission → slot), generating (slot → thread stopped) and the
    longest step between two stop checks (the most a generation can run past its timeout)."""
    end = time.perf_counter()
    return (f"queue;dur={(t1 - t0) * 1000:.1f}, generate;dur={(end - t1) * 1000:.1f}, "
            f"step;dur={stop.longest * 1000:.1f}")


def _error_detail(exc: BaseException) -> str:
    """The one-line ``detail`` of an error that ended a streamed answer."""
    if isinstance(exc, LimitExceeded | HTTPException):
        return _one_line(str(exc.detail))
    if isinstance(exc, SepitError):
        return _one_line(str(exc))
    log.error("generation failed", exc_info=exc)
    return f"internal error: {type(exc).__name__}"


def _validation_detail(errors: Sequence[dict[str, Any]]) -> str:
    """Pydantic's errors as one line: ``body.question: Field required; ...``."""
    parts = []
    for e in errors[:5]:
        where = ".".join(str(x) for x in e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return _one_line("; ".join(parts) + more) or "invalid request"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:500]


def _label(filename: str) -> str:
    return (Path(filename or "upload").name or "upload")[:80]


async def _settle(fut: asyncio.Future) -> None:
    """Wait for a generation thread to end (its result or error no longer matters)."""
    try:
        await asyncio.shield(fut)
    except BaseException:  # noqa: BLE001 - the request has already been answered
        pass


def _homolog_row(h: Any) -> dict[str, Any]:
    """One homolog as the API gives it: {"id", "identity", "coverage", "evalue", "annotation"}, and "answers_yes"
    (bool: the hit's own answer to a yes/no question about one candidate value, where one was read); numbers are
    plain floats (numpy scalars are not JSON), null where unknown or not finite (JSON has no inf / NaN)."""
    row = {"id": str(h["id"]), "identity": _number(h.get("identity")), "coverage": _number(h.get("coverage")),
           "evalue": _number(h.get("evalue")), "annotation": str(h.get("annotation") or "")}
    if h.get("answers_yes") is not None:
        row["answers_yes"] = bool(h["answers_yes"])
    return row


def _number(x: Any) -> float | None:
    return float(x) if x is not None and math.isfinite(float(x)) else None


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def _version() -> str:
    from sepit import __version__

    return __version__
