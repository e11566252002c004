"""The HTTP app (`sepit serve`): endpoints, streaming, limits, uploads and the 429 bound, with a fitted tiny model."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest
from _sepit_qa import ANSWER, CRAMBIN, QUESTION, SEQUENCE, Endless
from _two_chains import pdb_text
from fastapi.testclient import TestClient

import sepit
from sepit.api import ProteinQA
from sepit.server.app import asgi_app
from sepit.server.limits import LimitExceeded, ServerLimits

B64_CRAMBIN = base64.b64encode(CRAMBIN.read_bytes()).decode()
LOCAL = "http://127.0.0.1:8000"  # the Host a browser on this machine sends (the app refuses other names)


def local(app) -> TestClient:
    """A test client that talks to ``app`` as a page on this machine would (Host 127.0.0.1:8000)."""
    return TestClient(app, base_url=LOCAL)


@pytest.fixture(scope="module")
def qa(fitted_model_dir) -> ProteinQA:
    return sepit.load(fitted_model_dir)


@pytest.fixture(scope="module")
def client(qa):
    with local(asgi_app(qa)) as c:
        yield c


def ask(client, **body):
    return client.post("/v1/ask", json={"question": QUESTION, "max_new_tokens": 24, **body})


def sse_events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


# ---- endpoints ------------------------------------------------------------------------------------------------

def test_health_limits_questions_docs_and_page(client) -> None:
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["running"] == 0 and h["limits"]["max_concurrent"] == 2
    assert client.get("/v1/limits").json()["max_sequence_length"] == 1022
    assert len(client.get("/v1/questions").json()["questions"]) >= 12
    schema = client.get("/openapi.json").json()
    assert {"/v1/ask", "/v1/annotate", "/v1/parse", "/health"} <= set(schema["paths"])
    assert "429 when the queue is full" in schema["info"]["description"]
    assert "swagger" in client.get("/docs").text.lower()
    page = client.get("/")
    assert page.status_code == 200 and "3Dmol-min.js" in page.text
    assert client.get("/static/vendor/3dmol/3Dmol-min.js").status_code == 200
    assert "BSD" in client.get("/static/vendor/3dmol/LICENSE").text


def test_ask_with_a_sequence(client) -> None:
    r = ask(client, sequence=SEQUENCE)
    assert r.status_code == 200, r.text
    assert r.json()["answer"] == ANSWER and r.json()["protein"]["length"] == len(SEQUENCE)


def test_ask_with_an_uploaded_structure(client) -> None:
    r = ask(client, structure={"filename": "1crn.cif.gz", "content_base64": B64_CRAMBIN}, chain="A")
    assert r.status_code == 200, r.text
    p = r.json()["protein"]
    assert p == {"id": "1crn:A", "length": 46, "has_structure": True, "residues_with_coords": 46,
                 "source": "1crn.cif.gz"} and r.json()["answer"]


def test_multipart_upload(client) -> None:
    r = client.post("/v1/ask/upload", files={"file": ("1crn.cif.gz", CRAMBIN.read_bytes())},
                    data={"question": QUESTION, "max_new_tokens": "8"})
    assert r.status_code == 200, r.text
    assert r.json()["protein"]["has_structure"]


def test_streamed_answer_is_server_sent_events(client) -> None:
    with client.stream("POST", "/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "stream": True,
                                                "max_new_tokens": 24}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = sse_events(r.read().decode())
    kinds = [k for k, _ in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("token") > 3
    assert "".join(d["text"] for k, d in events if k == "token") == events[-1][1]["answer"] == ANSWER


def test_chat_history_is_accepted(client) -> None:
    r = ask(client, sequence=SEQUENCE, history=[{"role": "user", "content": QUESTION},
                                                {"role": "assistant", "content": ANSWER}])
    assert r.status_code == 200 and isinstance(r.json()["answer"], str)


def test_parse_lists_chains(client) -> None:
    r = client.post("/v1/parse", json={"structure": {"filename": "x.cif.gz", "content_base64": B64_CRAMBIN}})
    [p] = r.json()["proteins"]
    assert p["id"] == "x:A" and p["sequence"].startswith("TTCCPS")


def test_a_complex_defaults_to_its_longest_chain(client) -> None:
    """Short chain A first, longer chain B second: parse lists both in file order and names B as the default, which
    ask uses unless a chain is named (the page preselects the same one)."""
    two = {"filename": "two.pdb", "content_base64": base64.b64encode(pdb_text().encode()).decode()}
    r = client.post("/v1/parse", json={"structure": two}).json()
    assert [p["id"] for p in r["proteins"]] == ["two:A", "two:B"] and r["default"] == 1
    assert client.post("/v1/parse", json={"structure": two, "chain": "A"}).json()["default"] == 0
    assert ask(client, structure=two, max_new_tokens=2).json()["protein"]["id"] == "two:B"
    assert ask(client, structure=two, chain="A", max_new_tokens=2).json()["protein"]["id"] == "two:A"
    r = client.post("/v1/ask/upload", files={"file": ("two.pdb", pdb_text().encode())},
                    data={"question": QUESTION, "max_new_tokens": "2"})
    assert r.json()["protein"]["id"] == "two:B"


def test_annotate_a_small_batch(client) -> None:
    r = client.post("/v1/annotate", json={"proteins": [{"sequence": SEQUENCE},
                                                       {"structure": {"filename": "c.cif.gz",
                                                                      "content_base64": B64_CRAMBIN}}],
                                          "questions": ["function", "is_enzyme"], "max_new_tokens": 24})
    assert r.status_code == 200, r.text
    a, b = r.json()["results"]
    assert a["answers"] == {"function": ANSWER} and 0 <= a["yes_no"]["is_enzyme"] <= 1 and b["has_structure"]


# ---- provenance: the homologs in the model's prompt ------------------------------------------------------------

HOMOLOGS = [{"id": "P69905", "identity": np.float32(0.5), "coverage": 0.875, "evalue": 1e-30,
             "annotation": "Hemoglobin subunit alpha <b>oxygen transport</b>"},
            {"id": "UniRef50_X", "identity": 0.25, "coverage": None, "evalue": float("inf"), "annotation": ""}]


class WithHomologs(ProteinQA):
    """The real model, as if it retrieved homologs (``found``) into its prompt; records what it was asked and which
    prompts it built (the server must answer with the model's own prompt, the one the homologs went into)."""

    def __init__(self, qa: ProteinQA, found: list | None) -> None:
        super().__init__(qa.model, name="with-homologs")
        self.found, self.calls, self.prompts = found, [], []

    def homologs(self, protein, question):
        self.calls.append((protein.id, question))
        return self.found

    def conversations(self, proteins, questions, histories=None):
        self.prompts.append(list(questions))
        return super().conversations(proteins, questions, histories)


class WithoutHomologs(ProteinQA):
    homologs = None  # as if ProteinQA had no homologs method (a model without retrieval)


def test_ask_reports_the_homologs_in_the_prompt(qa) -> None:
    fake = WithHomologs(qa, HOMOLOGS)
    with local(asgi_app(fake)) as c:
        r = ask(c, sequence=SEQUENCE)
        assert r.status_code == 200, r.text
        assert r.json()["answer"] == ANSWER
        assert r.json()["homologs"] == [
            {"id": "P69905", "identity": 0.5, "coverage": 0.875, "evalue": 1e-30,
             "annotation": "Hemoglobin subunit alpha <b>oxygen transport</b>"},
            {"id": "UniRef50_X", "identity": 0.25, "coverage": None, "evalue": None, "annotation": ""}]
        assert fake.calls == [("query", QUESTION)] and fake.prompts == [[QUESTION]]
        events = sse_events(c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "stream": True,
                                                     "max_new_tokens": 24}).text)
        kinds = [k for k, _ in events]
        assert kinds[:2] == ["start", "homologs"] and kinds[-1] == "done" and kinds.count("homologs") == 1
        assert events[1][1] == {"homologs": r.json()["homologs"]}
        assert events[-1][1]["answer"] == ANSWER

        # a yes/no question's candidate value checked against a hit: the verdict the model was shown
        fake.found = [HOMOLOGS[0], {**HOMOLOGS[1], "answers_yes": np.bool_(False)}]
        rows = ask(c, sequence=SEQUENCE).json()["homologs"]
        assert "answers_yes" not in rows[0] and rows[1]["answers_yes"] is False

        fake.found = []  # retrieval on, no hits: an empty list, not an absent field
        assert ask(c, sequence=SEQUENCE).json()["homologs"] == []


@pytest.mark.parametrize("make", [lambda qa: WithHomologs(qa, None), lambda qa: WithoutHomologs(qa.model)],
                         ids=["returns-None", "no-method"])
def test_no_homolog_context_means_no_field(qa, make) -> None:
    with local(asgi_app(make(qa))) as c:
        r = ask(c, sequence=SEQUENCE)
        assert r.status_code == 200 and r.json()["answer"] == ANSWER and "homologs" not in r.json()
        events = sse_events(c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "stream": True,
                                                     "max_new_tokens": 24}).text)
        assert "homologs" not in [k for k, _ in events] and events[-1][0] == "done"


# ---- invalid and oversize input -------------------------------------------------------------------------------

@pytest.mark.parametrize("body, status, detail", [
    ({}, 422, "exactly one of 'sequence' or 'structure'"),
    ({"sequence": SEQUENCE, "structure": {"filename": "a.pdb", "content_base64": "QQ=="}}, 422, "exactly one"),
    ({"sequence": "MKT1A"}, 422, "unexpected characters '1'"),
    ({"sequence": "A" * 1023}, 422, "over the 1022-residue limit"),
    ({"sequence": SEQUENCE, "max_new_tokens": 0}, 422, "max_new_tokens must be 1–512"),
    ({"sequence": SEQUENCE, "max_new_tokens": 513}, 422, "max_new_tokens must be 1–512"),
    ({"sequence": SEQUENCE, "temperature": -1}, 422, "temperature must be"),
    ({"sequence": SEQUENCE, "temperature": 9}, 422, "temperature must be"),
    ({"sequence": SEQUENCE, "question": "x" * 2001}, 422, "question longer than 2000"),
    ({"sequence": SEQUENCE, "question": "  "}, 422, "empty question"),
    ({"structure": {"filename": "a.pdb", "content_base64": "not base64!"}}, 422, "not valid base64"),
    ({"structure": {"filename": "a.pdb", "content_base64": base64.b64encode(b"junk\nmore junk\n").decode()}},
     422, "a.pdb: "),
    ({"structure": {"filename": "a.cif.gz", "content_base64": B64_CRAMBIN}, "chain": "Z"}, 422,
     "no protein chain 'Z'"),
])
def test_invalid_requests_get_one_line_errors(client, body, status, detail) -> None:
    r = client.post("/v1/ask", json={"question": QUESTION, **body})
    assert r.status_code == status, r.text
    assert detail in r.json()["detail"] and "\n" not in r.json()["detail"]


def test_malformed_json_and_missing_fields(client) -> None:
    r = client.post("/v1/ask", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert client.post("/v1/ask", json={"sequence": SEQUENCE}).status_code == 422  # no question


def test_oversize_requests_are_refused(qa) -> None:
    small = ServerLimits(max_request_bytes=20_000, max_upload_bytes=10_000, max_unpacked_bytes=50_000)
    with local(asgi_app(qa, small)) as c:
        big = base64.b64encode(b"x" * 12_000).decode()
        r = c.post("/v1/ask", json={"question": QUESTION, "structure": {"filename": "a.pdb", "content_base64": big}})
        assert r.status_code == 413 and "10000-byte limit" in r.json()["detail"]
        r = c.post("/v1/ask", json={"question": QUESTION, "sequence": "A" * 30_000})
        assert r.status_code == 413 and "request body" in r.json()["detail"]
        bomb = base64.b64encode(gzip.compress(b"ATOM  " * 20_000)).decode()  # ~1 kB packed, 120 kB unpacked
        r = c.post("/v1/ask", json={"question": QUESTION, "structure": {"filename": "a.pdb.gz",
                                                                         "content_base64": bomb}})
        assert r.status_code == 413 and "unpacks to more than" in r.json()["detail"]
        assert c.post("/v1/annotate", json={"proteins": [{"sequence": SEQUENCE}] * 5}).status_code == 422
        r = c.post("/v1/annotate", json={"proteins": [{"sequence": SEQUENCE}], "questions": ["nope"]})
        assert r.status_code == 422 and "unknown question keys" in r.json()["detail"]


def test_chunked_body_over_the_limit_is_refused(qa) -> None:
    with local(asgi_app(qa, ServerLimits(max_request_bytes=1000))) as c:
        def chunks():
            for _ in range(10):
                yield b" " * 500

        r = c.post("/v1/ask", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413


def test_uploads_never_land_at_a_requested_path(client, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "owned.cif.gz"
    for name in ["../owned.cif.gz", str(target), "owned.cif.gz"]:
        r = ask(client, structure={"filename": name, "content_base64": B64_CRAMBIN}, max_new_tokens=2)
        assert r.status_code == 200
    assert list(tmp_path.iterdir()) == []


# ---- load: the bounded queue and the timeout ------------------------------------------------------------------

class Blocking(ProteinQA):
    """The real model, but each generation first waits for ``release`` (so requests pile up deterministically)."""

    def __init__(self, qa: ProteinQA) -> None:
        super().__init__(qa.model, name="blocking")
        self.release = threading.Event()

    def generate(self, *args, **kwargs):
        assert self.release.wait(30)
        return super().generate(*args, **kwargs)


def test_requests_beyond_the_bound_get_429(qa) -> None:
    slow = Blocking(qa)
    app = asgi_app(slow, ServerLimits(max_concurrent=1, max_queue=2))

    async def scenario() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", timeout=60) as c:
            tasks = [asyncio.create_task(c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION,
                                                                  "max_new_tokens": 4})) for _ in range(7)]
            for _ in range(200):  # the 4 refused requests come back while 3 are held
                if sum(t.done() for t in tasks) == 4:
                    break
                await asyncio.sleep(0.05)
            early = [t.result().status_code for t in tasks if t.done()]
            health = (await c.get("/health")).json()
            slow.release.set()
            rest = await asyncio.gather(*tasks)
            after = (await c.get("/health")).json()
            assert health["running"] == 1 and health["queued"] == 2
            assert after["running"] == 0 and after["queued"] == 0
            refused = [r for r in rest if r.status_code == 429]
            assert all("server busy" in r.json()["detail"] and r.headers["retry-after"] == "1" for r in refused)
            return early, [r.status_code for r in rest]

    early, codes = asyncio.run(scenario())
    assert early == [429] * 4
    assert sorted(codes) == [200] * 3 + [429] * 4


class Slow(Endless, ProteinQA):
    """Generates forever (a token every 10 ms) until told to stop."""

    def __init__(self, qa: ProteinQA) -> None:
        super().__init__(qa.model, name="slow")
        self.finished = threading.Event()

    def on_end(self) -> None:
        self.finished.set()


def test_timeout_gives_504_and_frees_the_slot(qa) -> None:
    slow = Slow(qa)
    with local(asgi_app(slow, ServerLimits(request_timeout_s=0.3))) as c:
        t0 = time.perf_counter()
        r = c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION})
        assert r.status_code == 504 and "longer than 0.3 s" in r.json()["detail"]
        assert time.perf_counter() - t0 < 10 and slow.finished.is_set()
        assert c.get("/health").json()["running"] == 0
        slow.finished.clear()
        r = c.post("/v1/ask", json={"sequence": SEQUENCE, "question": QUESTION, "stream": True})
        kinds = [k for k, _ in sse_events(r.text)]
        assert kinds[0] == "start" and kinds[-1] == "error" and "token" in kinds
        assert slow.finished.wait(5) and c.get("/health").json()["running"] == 0


class GreedyOnly(ProteinQA):
    """The real model, served as if it could only decode greedily."""

    supports_sampling = False


def test_temperature_limit_follows_the_model(qa) -> None:
    assert qa.supports_sampling
    with local(asgi_app(qa, replace(ServerLimits(), max_temperature=2.0))) as c:
        r = ask(c, sequence=SEQUENCE, temperature=0.5)
        assert c.get("/v1/limits").json()["max_temperature"] == 2.0 and r.status_code == 200
    # a greedy-only model: the documented range shrinks to 0 and a temperature is refused
    with local(asgi_app(GreedyOnly(qa.model), replace(ServerLimits(), max_temperature=2.0))) as c:
        assert c.get("/v1/limits").json()["max_temperature"] == 0.0
        r = ask(c, sequence=SEQUENCE, temperature=0.5)
        assert r.status_code == 422 and "temperature must be 0–0" in r.json()["detail"]
        assert ask(c, sequence=SEQUENCE).json()["answer"] == ANSWER


def test_the_limits_checks_in_one_place() -> None:
    lim = ServerLimits(max_sequence_length=10, max_upload_bytes=30, max_annotate_proteins=2)
    assert lim.new_tokens(None, 0.0) == lim.default_max_new_tokens
    for check, args, status in [(lim.new_tokens, (0, 0.0), 422), (lim.check_protein, ("p", 11), 422),
                                (lim.check_upload_bytes, (31,), 413), (lim.check_upload_base64, ("A" * 48,), 413),
                                (lim.check_annotate, (3,), 422), (lim.check_annotate, (0,), 422),
                                (lim.check_chat, ("q", ["a"] * 17), 422), (lim.check_context, (8000, 193), 413)]:
        with pytest.raises(LimitExceeded) as e:
            check(*args)
        assert e.value.status == status and "\n" not in e.value.detail
    lim.check_protein("p", 10)
    lim.check_upload_base64("A" * 44)
    lim.check_context(8000, 192)  # 8192 tokens in all: the default context limit, reached exactly
    assert lim.is_heavy(lim.heavy_tokens) and not lim.is_heavy(lim.heavy_tokens - 1)
    narrowed = lim.for_model(supports_sampling=False, max_sequence_length=8, context_tokens=2048)
    assert (narrowed.max_temperature, narrowed.max_sequence_length, narrowed.max_context_tokens) == (0.0, 8, 2048)
    assert lim.for_model(supports_sampling=True, max_sequence_length=None) == lim
    assert lim.for_model(supports_sampling=True, max_sequence_length=None, context_tokens=32768) == lim
