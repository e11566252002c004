"""Load and reliability test of `sepit serve` on loopback: errors, latency percentiles, server memory, and whether
one client can stall it.

    python benchmarks/bench_server.py                          # tiny random model: load, then reliability
    python benchmarks/bench_server.py --model runs/demo/model --requests 100 --concurrency 4
    python benchmarks/bench_server.py --concurrency 40         # beyond the queue bound: documented 429s appear
    python benchmarks/bench_server.py --scenario reliability --timeout 2   # only the stall test (#20)

Starts `sepit serve` in a subprocess on 127.0.0.1 (a `tiny` model saved to a temp folder unless --model; a model
with homolog context needs --server-args --no-retrieval for the maximal prompts below to fit), warms it up, then:

load: a mix of requests: 1/3 a sequence, 1/3 an uploaded structure (crambin, gzipped mmCIF), 1/3 streamed (SSE).
Only 200 and the documented 429 count as success; anything else is an error and the exit code is 1. The server's
RSS is read before and after the load (and sampled during it) to show whether memory stays flat.

reliability: 8 maximal requests (the longest protein, a chat history filling the model's context to the last token
with max_new_tokens at its limit, counted by the model's own processor) together with rounds of 8 normal ones: the
normal ones' p95 latency against the same rounds on the idle server (goal: within 3×), how far a generation that
hits the timeout runs past it (``Server-Timing`` of its 504, against the decoding step measured from a streamed
maximal request under the same load; goal: within one step) and the server's RSS; then 20 clients that send a long
request and hang up (goal: the server is idle within 2 s).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
CRAMBIN = REPO / "tests" / "data" / "structures" / "1crn.cif.gz"
# human haemoglobin alpha (UniProt P69905), 142 residues
SEQUENCE = ("MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMFLSFPTTKTYFPHFDLSHGSAQVKGHGKKVADALTNAVAHVDDMPNALSALSDLHAHKLRVDPVNFKLL"
            "SHCLLVTLAAHLPAEFTPAVHASLDKFLASVSTVLTSKYR")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_model(folder: Path) -> Path:
    from sepit.model import build_model, save_model, tiny

    return save_model(build_model(tiny()), folder / "tiny")


def _request(i: int, max_new_tokens: int, b64: str) -> dict:
    kind = i % 3
    body: dict = {"question": "What is the function of this protein?", "max_new_tokens": max_new_tokens}
    if kind == 1:
        body["structure"] = {"filename": "1crn.cif.gz", "content_base64": b64}
    else:
        body["sequence"] = SEQUENCE
    body["stream"] = kind == 2
    return body


async def _one(client: httpx.AsyncClient, body: dict) -> tuple[int, float, str]:
    t0 = time.perf_counter()
    try:
        if body["stream"]:
            async with client.stream("POST", "/v1/ask", json=body) as r:
                text = (await r.aread()).decode()
                status = r.status_code
                if status == 200 and "event: done" not in text:
                    return -1, time.perf_counter() - t0, "stream ended without a done event"
        else:
            r = await client.post("/v1/ask", json=body)
            status = r.status_code
            text = r.text
    except httpx.HTTPError as e:
        return -1, time.perf_counter() - t0, f"{type(e).__name__}: {e}"
    return status, time.perf_counter() - t0, "" if status in (200, 429) else text[:200]


async def _load(url: str, n: int, concurrency: int, max_new_tokens: int, proc: psutil.Process) -> dict:
    b64 = base64.b64encode(CRAMBIN.read_bytes()).decode()
    sem = asyncio.Semaphore(concurrency)
    rss: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            rss.append(proc.memory_info().rss)
            await asyncio.sleep(0.2)

    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        async def bounded(i: int):
            async with sem:
                return await _one(client, _request(i, max_new_tokens, b64))

        sampler = asyncio.create_task(sample())
        t0 = time.perf_counter()
        results = await asyncio.gather(*(bounded(i) for i in range(n)))
        wall = time.perf_counter() - t0
        done.set()
        await sampler
    return {"results": results, "wall": wall, "rss_peak": max(rss) if rss else 0}


# --- reliability: maximal requests beside normal ones, timeouts, clients that hang up -------------------------------

def _maximal_request(model: Path, limits: dict) -> dict:
    """A /v1/ask body at the limits: the longest protein the server takes, max_new_tokens at its limit and a chat
    history that fills the context to its last token, as the model's processor counts it (the server's own count)."""
    from sepit.model import load_model
    from sepit.proteins import conversation, protein_from_sequence

    proc = load_model(model).processor
    n = int(limits["max_new_tokens"])
    room = int(limits["max_context_tokens"]) - n
    sequence = (SEQUENCE * 10)[: int(limits["max_sequence_length"])]
    protein = protein_from_sequence(sequence)
    question = "What is the function of this protein?"
    words = "the enzyme binds a metal ion near its active site and folds into a beta barrel "
    per_message = 4 * int(limits["max_question_chars"])  # the server's cap on one history message
    pairs = max(int(limits["max_history_turns"]) // 2, 1)

    def history(chars: int) -> list[dict]:
        text = (words * (chars // len(words) + 1))[:chars]
        out = []
        for k in range(pairs):
            chunk = text[k * per_message:(k + 1) * per_message]
            if chunk:
                out += [{"role": "user", "content": chunk}, {"role": "assistant", "content": "Noted."}]
        return out

    def tokens(chars: int) -> int:
        conv = conversation(question, history(chars))
        return len(proc.encode_chat(conv, [protein], add_generation_prompt=True).input_ids)

    lo, hi = 0, per_message * pairs  # the most text that fits: bisection on its length
    if tokens(hi) <= room:
        lo = hi
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if tokens(mid) <= room else (lo, mid)
    return {"sequence": sequence, "question": question, "history": history(lo), "max_new_tokens": n,
            "stream": False, "_tokens": tokens(lo) + n}


async def _timed(client: httpx.AsyncClient, body: dict) -> dict:
    """One request: status, seconds, the server's generate time (Server-Timing, ms) and, streamed, token times."""
    t0 = time.perf_counter()
    out: dict = {"status": -1, "seconds": 0.0, "generate_ms": None, "step_ms": None}
    payload = {k: v for k, v in body.items() if not k.startswith("_")}
    try:
        if body["stream"]:
            async with client.stream("POST", "/v1/ask", json=payload) as r:
                out["status"] = r.status_code
                async for line in r.aiter_lines():
                    if line.startswith("event: error"):
                        out["status"] = 504 if r.status_code == 200 else r.status_code
        else:
            r = await client.post("/v1/ask", json=payload)
            out["status"] = r.status_code
            for part in r.headers.get("server-timing", "").split(","):
                name, _, dur = part.strip().partition(";dur=")
                if name in ("generate", "step"):
                    out[f"{name}_ms"] = float(dur)
    except httpx.HTTPError as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["seconds"] = time.perf_counter() - t0
    return out


async def _normal_rounds(client: httpx.AsyncClient, rounds: int, max_new_tokens: int, b64: str) -> list[dict]:
    """``rounds`` rounds of 8 normal requests sent together (the load mix), one round after the other."""
    out: list[dict] = []
    for r in range(rounds):
        out += await asyncio.gather(*(_timed(client, _request(r * 8 + i, max_new_tokens, b64)) for i in range(8)))
    return out


async def _reliability(url: str, maximal: dict, rounds: int, max_new_tokens: int, proc: psutil.Process) -> dict:
    b64 = base64.b64encode(CRAMBIN.read_bytes()).decode()
    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        idle = await _normal_rounds(client, rounds, max_new_tokens, b64)
        alone = await _timed(client, maximal)  # one maximal request on the idle server
        rss_before = proc.memory_info().rss
        heavy = [asyncio.create_task(_timed(client, maximal)) for _ in range(8)]
        await asyncio.sleep(0.5)  # the maximal ones hold their slot and queue before the normal ones come
        loaded = await _normal_rounds(client, rounds, max_new_tokens, b64)
        heavy_done = await asyncio.gather(*heavy)
        rss_after = proc.memory_info().rss
    return {"idle": idle, "loaded": loaded, "heavy": heavy_done, "alone": alone, "rss_before": rss_before,
            "rss_after": rss_after}


async def _hang_ups(url: str, n: int) -> float:
    """``n`` clients send a long non-streamed request and hang up; → seconds until the server is idle again."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"sequence": SEQUENCE, "question": "Describe this protein in detail.",
                       "max_new_tokens": 512}).encode()
    head = (f"POST /v1/ask HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    writers = []
    for _ in range(n):
        _reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(head + body)
        await writer.drain()
        writers.append(writer)
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        await asyncio.sleep(0.5)  # running and queued now
        busy = (await client.get("/health")).json()
        for w in writers:
            w.close()
        t0 = time.perf_counter()
        while True:
            h = (await client.get("/health")).json()
            if h["running"] == 0 and h["queued"] == 0:
                return time.perf_counter() - t0 if busy["running"] else float("nan")
            if time.perf_counter() - t0 > 60:
                return float("inf")
            await asyncio.sleep(0.02)


def _report_reliability(rel: dict, hang_up_s: float, timeout: float, maximal: dict, limits: dict) -> list[str]:
    """Print the reliability table; → the goals missed."""
    missed = []
    mib = 1024 * 1024
    ok = [x["seconds"] for x in rel["idle"] if x["status"] == 200]
    busy = [x["seconds"] for x in rel["loaded"] if x["status"] == 200]
    bad = [x["status"] for x in rel["idle"] + rel["loaded"] if x["status"] != 200]
    p95_idle, p95_busy = (_pct(ok, 95), _pct(busy, 95)) if ok and busy else (float("nan"), float("nan"))
    heavy_codes: dict[int, int] = {}
    for x in rel["heavy"]:
        heavy_codes[x["status"]] = heavy_codes.get(x["status"], 0) + 1
    # how far each 504 ran past the timeout, against its own longest step between two stop checks
    over = [(x["generate_ms"] / 1000 - timeout, x["step_ms"] / 1000) for x in rel["heavy"]
            if x["status"] == 504 and x["generate_ms"] is not None and x["step_ms"] is not None]
    steps = [x["step_ms"] for x in rel["heavy"] if x["step_ms"] is not None]
    print(f"\nreliability — 8 maximal requests ({maximal['_tokens']} of {limits['max_context_tokens']} context "
          f"tokens, max_new_tokens {maximal['max_new_tokens']}) beside {len(rel['loaded'])} normal ones in rounds "
          f"of 8; timeout {timeout:g} s")
    print("| metric | value | goal |\n|---|---|---|")
    ratio = p95_busy / p95_idle
    print(f"| normal requests p95: idle / beside maximal ones | {p95_idle:.3f} / {p95_busy:.3f} s "
          f"(×{ratio:.2f}) | ≤ ×3 |")
    if not ratio <= 3:
        missed.append(f"normal p95 ×{ratio:.2f} of idle")
    if bad:
        missed.append(f"normal requests not 200: {bad[:5]}")
    print(f"| maximal requests | {', '.join(f'{k}: {v}' for k, v in sorted(heavy_codes.items()))}; one alone "
          f"{rel['alone']['seconds']:.2f} s | 200 or 504 |")
    if set(heavy_codes) - {200, 504}:
        missed.append(f"maximal requests answered {heavy_codes}")
    if steps:
        print(f"| longest step between stop checks (prefill included): alone / under load (max) | "
              f"{rel['alone']['step_ms'] or float('nan'):.1f} / {max(steps):.1f} ms | |")
    if over:
        worst = max(over)
        print(f"| run past the timeout (504s: {len(over)}) | max {worst[0] * 1000:.1f} ms (its longest step "
              f"{worst[1] * 1000:.1f} ms), median {statistics.median(o for o, _ in over) * 1000:.1f} ms "
              "| ≤ one step |")
        late = [(o, st) for o, st in over if o > st + 0.025]  # 25 ms: the event loop noticing the thread ended
        if late:
            missed.append(f"{len(late)} generations ran past their timeout by more than a step (e.g. "
                          f"{late[0][0] * 1000:.0f} ms, step {late[0][1] * 1000:.0f} ms)")
    else:
        print("| run past the timeout | no maximal request reached the timeout (lower --timeout) | |")
    d = (rel["rss_after"] - rel["rss_before"]) / mib
    print(f"| server RSS before / after | {rel['rss_before'] / mib:.0f} / {rel['rss_after'] / mib:.0f} MiB "
          f"(Δ {d:+.1f} MiB) | flat |")
    print(f"| 20 clients hanging up (non-streamed): idle after | {hang_up_s:.2f} s | ≤ 2 s |")
    if not hang_up_s <= 2:
        missed.append(f"server idle only {hang_up_s:.2f} s after 20 clients hung up")
    return missed


async def _abort_streams(url: str, n: int) -> int:
    """Open ``n`` long streamed answers and hang up after the first event: their slots must come back."""
    body = {"sequence": SEQUENCE, "question": "Describe this protein.", "max_new_tokens": 256, "stream": True}
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        for _ in range(n):
            async with client.stream("POST", "/v1/ask", json=body) as r:
                async for _chunk in r.aiter_raw():
                    break  # hang up
    await asyncio.sleep(2.0)  # a stopped generation ends at its next token
    return n


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


@contextlib.contextmanager
def _serve(model: Path, extra: list[str]) -> Iterator[tuple[str, psutil.Process]]:
    """`sepit serve` on a free loopback port in a subprocess, ready: → (its URL, its process)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "sepit.cli", "serve", "--model", str(model), "--port", str(port), *extra]
    server = subprocess.Popen(cmd, env={**os.environ, "SEPIT_NO_PROGRESS": "1"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(240):
            if server.poll() is not None:
                raise SystemExit(f"server exited: {server.stderr.read()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        yield url, psutil.Process(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="trained model directory (default: a tiny random model in a temp folder)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--server-args", default="", help="extra `sepit serve` options, e.g. '--max-concurrent 4'")
    ap.add_argument("--scenario", choices=["all", "load", "reliability"], default="all")
    ap.add_argument("--timeout", type=float, default=3.0, help="the reliability server's --request-timeout-s "
                    "(default 3: the maximal requests should reach it; the load test keeps the server's default)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds of 8 normal requests in the reliability test")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sepit-bench-"))
    model = Path(args.model) if args.model else _tiny_model(tmp)
    if args.scenario in ("all", "load"):  # the server's own timeout: load figures are not cut short
        with _serve(model, args.server_args.split()) as (url, proc):
            load_limits = httpx.get(url + "/v1/limits").json()
            warm = asyncio.run(_load(url, 12, args.concurrency, args.max_new_tokens, proc))
            rss_before = proc.memory_info().rss
            run = asyncio.run(_load(url, args.requests, args.concurrency, args.max_new_tokens, proc))
            rss_after = proc.memory_info().rss
            aborted = asyncio.run(_abort_streams(url, 6))
            health = httpx.get(url + "/health").json()
    if args.scenario in ("all", "reliability"):  # a fresh server whose timeout the maximal requests reach
        with _serve(model, ["--request-timeout-s", str(args.timeout), *args.server_args.split()]) as (url, proc):
            limits = httpx.get(url + "/v1/limits").json()
            asyncio.run(_load(url, 12, args.concurrency, args.max_new_tokens, proc))  # warm-up
            maximal = _maximal_request(model, limits)
            rel = asyncio.run(_reliability(url, maximal, args.rounds, args.max_new_tokens, proc))
            hang_up_s = asyncio.run(_hang_ups(url, 20))

    errors: list[tuple[int, str]] = []
    if args.scenario in ("all", "load"):
        errors += _report_load(args, model, load_limits, warm, run, rss_before, rss_after, aborted, health)
    if args.scenario in ("all", "reliability"):
        errors += [(-1, m) for m in _report_reliability(rel, hang_up_s, args.timeout, maximal, limits)]
    for s, msg in errors[:8]:
        print(f"error {s}: {msg}", file=sys.stderr)
    return 1 if errors else 0


def _report_load(args: argparse.Namespace, model: Path, limits: dict, warm: dict, run: dict, rss_before: int,
                 rss_after: int, aborted: int, health: dict) -> list[tuple[int, str]]:
    """Print the load table; → the errors."""
    res = run["results"]
    lat = [t for s, t, _ in res if s == 200]
    codes: dict[int, int] = {}
    for s, _, _ in res:
        codes[s] = codes.get(s, 0) + 1
    errors = [(s, msg) for s, _, msg in res if s not in (200, 429)]
    mib = 1024 * 1024
    print(f"sepit serve load test — {args.requests} requests, {args.concurrency} concurrent, "
          f"max_new_tokens {args.max_new_tokens}, model {'tiny (random)' if not args.model else model}")
    print(f"server limits: {limits['max_concurrent']} running + {limits['max_queue']} queued, "
          f"timeout {limits['request_timeout_s']} s; warm-up {len(warm['results'])} requests")
    print("| metric | value |\n|---|---|")
    print(f"| status codes | {', '.join(f'{k}: {v}' for k, v in sorted(codes.items()))} |")
    print(f"| errors (not 200/429) | {len(errors)} |")
    print(f"| wall time | {run['wall']:.1f} s ({len(res) / run['wall']:.1f} req/s) |")
    if lat:
        print(f"| latency p50 / p90 / p99 / max (200s) | {_pct(lat, 50):.3f} / {_pct(lat, 90):.3f} / "
              f"{_pct(lat, 99):.3f} / {max(lat):.3f} s (mean {statistics.mean(lat):.3f}) |")
    print(f"| server RSS before / after / peak | {rss_before / mib:.0f} / {rss_after / mib:.0f} / "
          f"{run['rss_peak'] / mib:.0f} MiB (Δ {(rss_after - rss_before) / mib:+.1f} MiB) |")
    print(f"| clients hanging up mid-stream | {aborted} cut; afterwards running {health['running']}, "
          f"queued {health['queued']} |")
    if health["running"] or health["queued"]:
        errors.append((-1, "generation slots not released after clients hung up"))
    return errors


if __name__ == "__main__":
    sys.exit(main())
