"""Bounded load test of `sepit serve` on loopback: errors, latency percentiles, server memory before and after.

    python benchmarks/bench_server.py                          # tiny random model, 200 requests, 8 concurrent
    python benchmarks/bench_server.py --model runs/demo/model --requests 100 --concurrency 4
    python benchmarks/bench_server.py --concurrency 40         # beyond the queue bound: documented 429s appear

Starts `sepit serve` in a subprocess on 127.0.0.1 (a `tiny` model saved to a temp folder unless --model), warms it
up, then sends a mix of requests: 1/3 a sequence, 1/3 an uploaded structure (crambin, gzipped mmCIF), 1/3 streamed
(SSE). Only 200 and the documented 429 count as success; anything else is an error and the exit code is 1. The
server's RSS is read before and after the load (and sampled during it) to show whether memory stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="trained model directory (default: a tiny random model in a temp folder)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--server-args", default="", help="extra `sepit serve` options, e.g. '--max-concurrent 4'")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sepit-bench-"))
    model = Path(args.model) if args.model else _tiny_model(tmp)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "sepit.cli", "serve", "--model", str(model), "--port", str(port),
           *args.server_args.split()]
    server = subprocess.Popen(cmd, env={**os.environ, "SEPIT_NO_PROGRESS": "1"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(240):
            if server.poll() is not None:
                print(f"server exited: {server.stderr.read()}", file=sys.stderr)
                return 1
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        proc = psutil.Process(server.pid)
        limits = httpx.get(url + "/v1/limits").json()
        warm = asyncio.run(_load(url, 12, args.concurrency, args.max_new_tokens, proc))
        rss_before = proc.memory_info().rss
        run = asyncio.run(_load(url, args.requests, args.concurrency, args.max_new_tokens, proc))
        rss_after = proc.memory_info().rss
        aborted = asyncio.run(_abort_streams(url, 6))
        health = httpx.get(url + "/health").json()
    finally:
        server.terminate()
        server.wait(timeout=30)

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
    for s, msg in errors[:5]:
        print(f"error {s}: {msg}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
