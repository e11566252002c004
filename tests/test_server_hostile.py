"""A server that one client cannot stall (#20): hostile requests against the real app, over loopback where the
socket matters (clients that hang up), with the fitted tiny model.

Each test is one item of the issue: prompts limited in tokens against the model's context (homolog context
included), the timeout stopping a real generation at its next decoding step, heavy requests kept to one lane,
clients that hang up giving their place back, bounded upload parsing, gzip uploads whole or refused (as the CLI reads
them), every client error a 4xx with a one-line detail, and the Host / Origin guard with its security headers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from _sepit_qa import ANSWER, CRAMBIN, QUESTION, SEQUENCE, Endless
from fastapi.testclient import TestClient

import sepit
from sepit.api import ProteinQA
from sepit.errors import InputError
from sepit.proteins import conversation, read_proteins
from sepit.server import app as app_module
from sepit.server.app import asgi_app
from sepit.server.gate import GenerationGate, QueueFull
from sepit.server.guard import PAGE_CSP
from sepit.server.limits import ServerLimits

LOCAL = "http://127.0.0.1:8000"
CRAMBIN_PLAIN = gzip.decompress(CRAMBIN.read_bytes())  # 1crn mmCIF, 46 residues in chain A


@pytest.fixture(scope="module")
def qa(fitted_model_dir) -> ProteinQA:
    return sepit.load(fitted_model_dir)


def local(app) -> TestClient:
    return TestClient(app, base_url=LOCAL)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def one_line_4xx(r: httpx.Response, status: int | None = None) -> str:
    """The response is the given 4xx (any 4xx when None) with a one-line string detail; → the detail."""
    assert 400 <= r.status_code < 500 if status is None else r.status_code == status, (r.status_code, r.text)
    detail = r.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail, detail
    return detail


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port, in a thread: → its base URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.025)
    else:  # pragma: no cover
        raise RuntimeError("uvicorn did not start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def send_only(url: str, path: str, body: dict) -> socket.socket:
    """POST ``body`` over a raw socket and read nothing: closing the socket is a client that hangs up."""
    port = int(url.rsplit(":", 1)[1])
    data = json.dumps(body).encode()
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return s


def wait_health(url: str, want: dict, within: float = 20.0) -> None:
    """Wait until /health shows ``want`` (e.g. {"running": 2, "queued": 3})."""
    t0 = time.perf_counter()
    while True:
        h = httpx.get(url + "/health").json()
        if all(h[k] == v for k, v in want.items()):
            return
        assert time.perf_counter() - t0 < within, f"/health never showed {want}: {h}"
        time.sleep(0.02)


def wait_idle(url: str, within: float) -> float:
    """Seconds until /health shows nothing running, queued or parsing; fails after ``within``."""
    t0 = time.perf_counter()
    while True:
        h = httpx.get(url + "/health").json()
        if h["running"] == 0 and h["queued"] == 0 and h["parsing"] == 0:
            return time.perf_counter() - t0
        assert time.perf_counter() - t0 < within, f"server still busy after {within} s: {h}"
        time.sleep(0.05)


class Forever(Endless, ProteinQA):
    """Generates until told to stop (a token every 10 ms), counting the generations still running."""

    def __init__(self, qa: ProteinQA) -> None:
        super().__init__(qa.model, name="forever")
        self.live = 0
        self.started = 0
        self.lock = threading.Lock()

    def on_start(self) -> None:
        with self.lock:
            self.live += 1
            self.started += 1

    def on_end(self) -> None:
        with self.lock:
            self.live -= 1


# ---- 1. prompts are limited in tokens against the model's context -----------------------------------------------

def prompt_tokens(qa: ProteinQA, sequence: str, question: str, history: list[dict]) -> int:
    conv = conversation(question, history)
    return len(qa.model.processor.encode_chat(conv, [sepit.proteins.protein_from_sequence(sequence)],
                                              add_generation_prompt=True).input_ids)


def test_prompt_tokens_are_limited_by_the_model_context_before_queueing(qa) -> None:
    context = qa.model.llm.config.max_position_embeddings
    n = 4
    with local(asgi_app(qa)) as c:
        assert c.get("/v1/limits").json()["max_context_tokens"] == context  # narrowed to the tiny LLM's 4096
        # far over: within every character limit (16 history messages of 8000 characters pass), not in tokens
        history = [{"role": "user", "content": "a" * 6000}, {"role": "assistant", "content": "b"}]
        r = c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "history": history,
                                    "max_new_tokens": n})
        detail = one_line_4xx(r, 413)
        assert f"{context}-token context" in detail and "tokens (protein and text)" in detail
        # exactly at the limit it is answered; one token more is refused (the processor's own count)
        base = prompt_tokens(qa, SEQUENCE, QUESTION, [{"role": "user", "content": ""},
                                                      {"role": "assistant", "content": "b"}])
        fill = context - n - base
        fits = [{"role": "user", "content": "a" * fill}, {"role": "assistant", "content": "b"}]
        assert prompt_tokens(qa, SEQUENCE, QUESTION, fits) + n == context
        r = c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "history": fits, "max_new_tokens": n})
        assert r.status_code == 200, r.text
        over = [{"role": "user", "content": "a" * (fill + 1)}, {"role": "assistant", "content": "b"}]
        one_line_4xx(c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "history": over,
                                             "max_new_tokens": n}), 413)
        # the answer's length counts too: the same prompt with room for fewer new tokens than asked
        one_line_4xx(c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "history": fits,
                                             "max_new_tokens": n + 1}), 413)
    # before queueing: with every slot and queue place taken, an over-long request still gets its 413, not a 429
    slow = Forever(qa)
    app = asgi_app(slow, ServerLimits(max_concurrent=1, max_queue=0))

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL, timeout=30) as c:
            held = asyncio.create_task(c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION}))
            for _ in range(1000):
                if slow.live:
                    break
                await asyncio.sleep(0.01)
            r = await c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "history": history})
            assert r.status_code == 413
            r = await c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION})
            assert r.status_code == 429
            held.cancel()

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(scenario())


class LongContext(ProteinQA):
    """The real model with a homolog context of ``chars`` characters in its prompts (as retrieval adds one)."""

    def __init__(self, qa: ProteinQA, chars: int) -> None:
        super().__init__(qa.model, name="long-context")
        self.chars = chars

    def conversations(self, proteins, questions, histories=None):
        hist = histories or [()] * len(questions)
        return [conversation(q, h, "Homologs: " + "h" * self.chars) for q, h in zip(questions, hist)]

    def homologs(self, protein, question=""):
        return []


def test_the_homolog_context_counts_against_the_context(qa) -> None:
    context = qa.model.llm.config.max_position_embeddings
    with local(asgi_app(LongContext(qa, context))) as c:  # short question, but the retrieved context is too long
        detail = one_line_4xx(c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION}), 413)
        assert "context limit" in detail and c.get("/health").json()["running"] == 0
        events = [b for b in c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION,
                                                     "stream": True}).text.split("\n\n") if b]
        assert events[0].startswith("event: start") and events[-1].startswith("event: error")
        assert "context limit" in events[-1]
    with local(asgi_app(LongContext(qa, 100))) as c:  # a context that fits is answered
        assert c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "max_new_tokens": 4}
                      ).status_code == 200


# ---- 2. the timeout stops a real generation at its next decoding step -------------------------------------------

class Stepped(ProteinQA):
    """The real model, each decoding step made to last at least ``step`` s; records when each step ended."""

    def __init__(self, qa: ProteinQA, step: float) -> None:
        super().__init__(qa.model, name="stepped")
        self.step = step
        self.steps: list[float] = []
        self.ended = threading.Event()

    def generate(self, proteins, conversations, *, should_stop=None, **kw):
        def slow_stop() -> bool:
            time.sleep(self.step)
            self.steps.append(time.perf_counter())
            return bool(should_stop and should_stop())

        try:
            return super().generate(proteins, conversations, should_stop=slow_stop, **kw)
        finally:
            self.ended.set()


def test_the_timeout_stops_a_real_generation_between_decoding_steps(qa) -> None:
    model = Stepped(qa, step=0.1)  # the answer is 14 tokens: it cannot end before the timeout
    timeout = 0.5
    with local(asgi_app(model, ServerLimits(request_timeout_s=timeout))) as c:
        r = c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "max_new_tokens": 512})
        assert r.status_code == 504 and model.ended.is_set()
        timing = {k: float(v) / 1000 for k, v in (p.strip().split(";dur=") for p in r.headers["server-timing"]
                                                  .split(","))}
        gaps = [b - a for a, b in zip(model.steps, model.steps[1:])]
        assert 3 <= len(model.steps) < 14  # it ran for a while, and not to the end
        assert timing["step"] >= max(gaps) - 0.01  # the server's own longest step between stop checks
        # stopped at the step after the deadline: over it by at most one step (plus scheduling slack)
        assert timeout <= timing["generate"] <= timeout + timing["step"] + 0.3, timing
        assert c.get("/health").json()["running"] == 0


# ---- 3. heavy requests keep to one lane -----------------------------------------------------------------------

def test_heavy_jobs_leave_a_slot_for_short_ones() -> None:
    async def scenario() -> None:
        gate = GenerationGate(2, 4, max_heavy=1)
        order: list[str] = []

        async def job(name: str, heavy: bool, hold: asyncio.Event) -> None:
            ticket = gate.admit(heavy)
            try:
                async with ticket:
                    order.append(name)
                    await hold.wait()
            finally:
                ticket.release()

        long_done, short_done = asyncio.Event(), asyncio.Event()
        tasks = [asyncio.create_task(job("heavy1", True, long_done)),
                 asyncio.create_task(job("heavy2", True, long_done))]
        await asyncio.sleep(0.01)
        assert order == ["heavy1"] and gate.running == 1 and gate.admitted == 2  # heavy2 waits for the heavy slot
        tasks.append(asyncio.create_task(job("short", False, short_done)))
        await asyncio.sleep(0.01)
        assert order == ["heavy1", "short"] and gate.running_heavy == 1  # the short one passed the waiting heavy one
        waiting = asyncio.create_task(job("cancelled", False, short_done))
        await asyncio.sleep(0.01)
        waiting.cancel()  # a waiting ticket given up (its client hung up) leaves the queue
        await asyncio.sleep(0.01)
        assert gate.admitted == 3
        short_done.set()
        await asyncio.sleep(0.01)
        long_done.set()
        await asyncio.gather(*tasks)
        assert order == ["heavy1", "short", "heavy2"] and (gate.running, gate.admitted) == (0, 0)
        g = GenerationGate(1, 0)
        g.admit()
        with pytest.raises(QueueFull):
            g.admit()

    asyncio.run(scenario())


def test_heavy_requests_hold_at_most_one_of_two_slots(qa) -> None:
    slow = Forever(qa)
    app = asgi_app(slow, ServerLimits(heavy_tokens=1000, request_timeout_s=20))
    long_history = [{"role": "user", "content": "a" * 1500}, {"role": "assistant", "content": "b"}]

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL, timeout=30) as c:
            heavy = [asyncio.create_task(c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION,
                                                                  "history": long_history})) for _ in range(3)]
            await asyncio.sleep(0.5)
            h = (await c.get("/health")).json()
            assert (h["running"], h["heavy"], h["queued"]) == (1, 1, 2)
            short = asyncio.create_task(c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION}))
            await asyncio.sleep(0.5)
            h = (await c.get("/health")).json()
            assert (h["running"], h["heavy"], h["queued"]) == (2, 1, 2)  # the short one runs beside the heavy one
            for t in [*heavy, short]:
                t.cancel()

    with contextlib.suppress(asyncio.CancelledError):
        asyncio.run(scenario())


# ---- 4. a client that hangs up gives its place back -----------------------------------------------------------

def test_clients_that_hang_up_stop_their_generations(qa) -> None:
    slow = Forever(qa)
    with serving(asgi_app(slow, ServerLimits(max_concurrent=2, max_queue=4))) as url:
        body = {"sequence": SEQUENCE, "question": QUESTION, "max_new_tokens": 512}
        clients = [send_only(url, "/v1/ask", body) for _ in range(5)]
        wait_health(url, {"running": 2, "queued": 3})  # two generating, three queued
        for s in clients:  # all of them hang up
            s.close()
        assert wait_idle(url, within=2.0) < 2.0
        assert slow.live == 0 and slow.started == 2  # the queued ones never started
        # streamed ones too (Starlette cancels a stream whose client has gone)
        s = send_only(url, "/v1/ask", {**body, "stream": True})
        wait_health(url, {"running": 1})
        s.close()
        assert wait_idle(url, within=2.0) < 2.0 and slow.live == 0
        # and the server still answers
        r = httpx.post(url + "/v1/annotate", json={"proteins": [{"sequence": SEQUENCE}], "questions": ["is_enzyme"]})
        assert r.status_code == 200, r.text


def test_an_upload_being_parsed_for_a_client_that_left_frees_its_place(qa, monkeypatch) -> None:
    release = threading.Event()
    real = app_module.protein_from_upload

    def stuck(*a, **kw):
        release.wait(10)
        return real(*a, **kw)

    monkeypatch.setattr(app_module, "protein_from_upload", stuck)
    with serving(asgi_app(qa, ServerLimits(max_parsing=1, max_queue=2))) as url:
        body = {"structure": {"filename": "1crn.cif.gz", "content_base64": b64(CRAMBIN.read_bytes())}}
        clients = [send_only(url, "/v1/parse", body) for _ in range(3)]
        wait_health(url, {"parsing": 3})  # one parsing, two waiting
        for s in clients:
            s.close()
        wait_health(url, {"parsing": 0}, within=2.0)  # the waiting ones left with their clients
        release.set()
        wait_idle(url, within=5.0)


# ---- 5. upload parsing is admission-controlled ------------------------------------------------------------------

def test_upload_parsing_is_bounded(qa, monkeypatch) -> None:
    release = threading.Event()
    lock = threading.Lock()
    now = peak = 0
    real = app_module.protein_from_upload

    def counting(*a, **kw):
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        try:
            release.wait(10)
            return real(*a, **kw)
        finally:
            with lock:
                now -= 1

    monkeypatch.setattr(app_module, "protein_from_upload", counting)
    app = asgi_app(qa, ServerLimits(max_parsing=2, max_queue=2))
    body = {"structure": {"filename": "1crn.cif.gz", "content_base64": b64(CRAMBIN.read_bytes())}}

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=LOCAL, timeout=30) as c:
            tasks = [asyncio.create_task(c.post("/v1/parse", json=body)) for _ in range(6)]
            for _ in range(200):
                if sum(t.done() for t in tasks) == 2:
                    break
                await asyncio.sleep(0.02)
            h = (await c.get("/health")).json()
            assert h["parsing"] == 4 and peak == 2  # 2 parsing, 2 waiting, the other 2 refused
            release.set()
            return [r.status_code for r in await asyncio.gather(*tasks)]

    codes = asyncio.run(scenario())
    assert sorted(codes) == [200] * 4 + [429] * 2 and peak == 2


# ---- 6. gzip uploads are read whole, as the CLI reads them, or refused ------------------------------------------

def two_members(data: bytes, cut: int) -> bytes:
    return gzip.compress(data[:cut]) + gzip.compress(data[cut:])


@pytest.mark.parametrize("make, ok", [
    (lambda d: gzip.compress(d)[:-200], False),  # truncated download
    (lambda d: gzip.compress(d)[: len(gzip.compress(d)) // 2], False),
    (lambda d: gzip.compress(d) + b"trailing garbage", False),
    (lambda d: two_members(d, len(d) // 3), True),  # concatenated members: the whole file, like `gzip -d`
    (lambda d: gzip.compress(d) + b"\0" * 64, True),  # zero padding after the last member
], ids=["truncated-end", "truncated-half", "trailing-garbage", "two-members", "zero-padding"])
def test_gzip_uploads_are_whole_or_refused_like_the_cli(qa, tmp_path, make, ok) -> None:
    data = make(CRAMBIN_PLAIN)
    path = tmp_path / "x.cif.gz"
    path.write_bytes(data)
    with local(asgi_app(qa)) as c:
        r = c.post("/v1/parse", json={"structure": {"filename": "x.cif.gz", "content_base64": b64(data)}})
        if ok:
            assert r.status_code == 200 and r.json()["proteins"][0]["length"] == 46  # every residue
            assert [len(p) for p in read_proteins(path)] == [46]  # as the CLI reads the same file
        else:
            assert "gzip" in one_line_4xx(r, 422)
            with pytest.raises(InputError):
                read_proteins(path)


# ---- 7. every client error is a 4xx with a one-line detail ------------------------------------------------------

def test_a_long_multipart_filename_and_bad_form_fields_are_4xx(qa) -> None:
    with local(asgi_app(qa)) as c:
        r = c.post("/v1/ask/upload", files={"file": ("x" * 300 + ".pdb", CRAMBIN.read_bytes())},
                   data={"question": QUESTION, "max_new_tokens": "2"})
        assert "255" in one_line_4xx(r, 422)
        r = c.post("/v1/ask/upload", files={"file": ("a" * 70_000, CRAMBIN.read_bytes())},
                   data={"question": QUESTION, "max_new_tokens": "2"})
        one_line_4xx(r)  # over Starlette's multipart header limit: 400
        for data in [{"question": QUESTION, "chain": "ABCDEFGHIJ"}, {"question": QUESTION, "max_new_tokens": "x"},
                     {"question": QUESTION, "temperature": "nan"}, {"question": QUESTION, "stream": "maybe"},
                     {"question": ""}, {}]:
            r = c.post("/v1/ask/upload", files={"file": ("x.cif.gz", CRAMBIN.read_bytes())}, data=data)
            one_line_4xx(r, 422)
        one_line_4xx(c.post("/v1/ask/upload", data={"question": QUESTION}), 422)  # no file part
        one_line_4xx(c.post("/v1/ask/upload", content=b"--x\r\nbroken", headers={
            "content-type": "multipart/form-data; boundary=x"}))
        r = c.post("/v1/ask/upload", files={"file": ("../../etc/passwd.cif.gz", CRAMBIN.read_bytes())},
                   data={"question": QUESTION, "max_new_tokens": "2"})
        assert r.status_code == 200 and r.json()["protein"]["source"] == "passwd.cif.gz"


def test_a_parser_that_breaks_on_an_upload_gives_422(qa, monkeypatch) -> None:
    def broken(*a, **kw):
        raise ZeroDivisionError("parser bug")

    monkeypatch.setattr(app_module, "protein_from_upload", broken)
    with local(asgi_app(qa)) as c:
        r = c.post("/v1/ask/upload", files={"file": ("x.pdb", b"ATOM")}, data={"question": QUESTION})
        assert "unreadable file" in one_line_4xx(r, 422)
        r = c.post("/v1/parse", json={"structure": {"filename": "x.pdb", "content_base64": b64(b"ATOM")}})
        assert "unreadable file" in one_line_4xx(r, 422)


ASK_ONLY = [  # wrong in what only /v1/ask reads
    {"sequence": SEQUENCE, "question": QUESTION, "history": "no"},
    {"sequence": SEQUENCE, "question": QUESTION, "history": [{"role": "system", "content": "x"}]},
    {"sequence": SEQUENCE, "question": QUESTION, "max_new_tokens": "many"},
    {"sequence": SEQUENCE, "question": QUESTION, "max_new_tokens": 1e30},
    {"sequence": SEQUENCE, "question": QUESTION, "temperature": "NaN"},
]
BOTH = [  # wrong as a protein: /v1/ask and /v1/parse
    {}, [], "x", 3, {"question": QUESTION}, {"sequence": 5, "question": QUESTION},
    {"sequence": SEQUENCE, "question": QUESTION, "chain": "x" * 50},
    {"structure": {"filename": "x" * 256, "content_base64": "QQ=="}, "question": QUESTION},
    {"structure": {"filename": "x.pdb", "content_base64": ""}, "question": QUESTION},
    {"structure": {"filename": "x.pdb.gz", "content_base64": b64(b"\x1f\x8b\x08garbage")}, "question": QUESTION},
    {"structure": {"filename": "x.pdb", "content_base64": b64(b"\xff\xfe\x00" * 100)}, "question": QUESTION},
    {"structure": {"filename": "", "content_base64": b64(b"data_x\n_atom_site.id 1\n")}, "question": QUESTION},
    {"sequence": "", "question": QUESTION}, {"sequence": ">only a header", "question": QUESTION},
]


@pytest.mark.parametrize("body, paths", [(b, ["/v1/ask"]) for b in ASK_ONLY]
                         + [(b, ["/v1/ask", "/v1/parse"]) for b in BOTH], ids=lambda x: json.dumps(x)[:40])
def test_malformed_requests_get_a_4xx_with_one_line(qa, body, paths) -> None:
    with local(asgi_app(qa)) as c:
        for path in paths:
            one_line_4xx(c.post(path, json=body))


def test_malformed_json_and_annotate_bodies_get_one_line(qa) -> None:
    with local(asgi_app(qa)) as c:
        one_line_4xx(c.post("/v1/ask", content=b"{not json", headers={"content-type": "application/json"}), 422)
        one_line_4xx(c.post("/v1/ask", content=b"\xff\xfe", headers={"content-type": "application/json"}), 422)
        one_line_4xx(c.post("/v1/annotate", json={"proteins": "none"}), 422)
        one_line_4xx(c.post("/v1/annotate", json={"proteins": [{"sequence": SEQUENCE}] * 9}), 422)
        one_line_4xx(c.get("/v1/nothing"), 404)
        one_line_4xx(c.put("/v1/ask", json={}), 405)


# ---- 8. Host / Origin guard and security headers ----------------------------------------------------------------

def test_only_this_server_s_host_names_are_served(qa) -> None:
    app = asgi_app(qa)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c:
        for host in ["127.0.0.1:8000", "localhost", "LOCALHOST:9", "[::1]:8000", "127.0.0.1"]:
            assert c.get("/health", headers={"host": host}).status_code == 200, host
        for host in ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhost.", "0.0.0.0:8000",
                     "[::2]:8000", ""]:
            r = c.get("/health", headers={"host": host})
            assert "Host header" in one_line_4xx(r, 400), host
            assert r.headers["x-content-type-options"] == "nosniff"
        # DNS rebinding: the page and the API under a foreign name are refused, reads and writes alike
        assert c.get("/", headers={"host": "rebind.attacker.example:8000"}).status_code == 400
        assert c.post("/v1/ask", headers={"host": "rebind.attacker.example:8000"},
                      json={"sequence": SEQUENCE, "question": QUESTION}).status_code == 400
    # more names by configuration; a server bound to every interface takes IP addresses (not names) too
    with TestClient(asgi_app(qa, allowed_hosts=["sepit.example.org"]), base_url="http://sepit.example.org") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"host": "other.example.org"}).status_code == 400
    with TestClient(asgi_app(qa, host="0.0.0.0"), base_url="http://192.0.2.7:8000") as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"host": "[2001:db8::1]:8000"}).status_code == 200
        assert c.get("/health", headers={"host": "evil.example"}).status_code == 400
    with TestClient(asgi_app(qa, host="10.1.2.3", allowed_hosts=["*"]), base_url="http://anything.example") as c:
        assert c.get("/health").status_code == 200


def test_cross_origin_posts_are_refused(qa) -> None:
    with local(asgi_app(qa)) as c:
        body = {"sequence": SEQUENCE, "question": QUESTION, "max_new_tokens": 24}
        for origin in ["http://evil.example", "http://127.0.0.1:9999", "https://127.0.0.1:8000.evil.example",
                       "null", "http://localhost:8000"]:
            r = c.post("/v1/ask", json=body, headers={"origin": origin})
            assert "cross-origin" in one_line_4xx(r, 403), origin
        r = c.post("/v1/ask/upload", files={"file": ("x.cif.gz", CRAMBIN.read_bytes())},
                   data={"question": QUESTION}, headers={"origin": "http://evil.example"})  # a plain HTML form
        assert r.status_code == 403
        r = c.post("/v1/ask", content=json.dumps(body), headers={"origin": "http://evil.example",
                                                                 "content-type": "text/plain"})  # no preflight
        assert r.status_code == 403
        # the page's own requests (same origin) and clients that send no Origin (curl) are answered
        r = c.post("/v1/ask", json=body, headers={"origin": LOCAL})
        assert r.status_code == 200 and r.json()["answer"] == ANSWER
        assert c.post("/v1/ask", json=body).status_code == 200
        assert c.get("/health", headers={"origin": "http://evil.example"}).status_code == 200  # reads: Host guards


def test_security_headers_and_the_page_s_content_security_policy(qa) -> None:
    with local(asgi_app(qa)) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-security-policy"] == PAGE_CSP
        assert "script-src 'self';" in PAGE_CSP and "frame-ancestors 'none'" in PAGE_CSP
        for r in [page, c.get("/health"), c.get("/static/app.js"), c.post("/v1/ask", json={}),
                  c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "max_new_tokens": 2})]:
            assert r.headers["x-content-type-options"] == "nosniff"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["x-frame-options"] == "DENY"
        assert "content-security-policy" not in c.get("/docs").headers  # Swagger UI loads its own scripts
        # the page has no inline script for the policy to block (its one <style> block is allowed)
        assert "<script>" not in page.text and not re.search(r"\son[a-z]+\s*=", page.text)
