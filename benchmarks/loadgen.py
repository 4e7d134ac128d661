"""An open-loop load generator for POST /r/{token}, in a process of its own: requests leave on a fixed
schedule (``--rate`` a second) whether or not earlier ones were answered, so a slow server shows up as
latency and a lower achieved rate instead of being hidden by a waiting client.

``python -m benchmarks.loadgen --links FILE --rate 500 --seconds 10`` prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit


def form_post(path: str, host: str, port: int, fields: dict[str, str]) -> bytes:
    return _request(path, host, port, "application/x-www-form-urlencoded", urlencode(fields).encode())


def json_post(path: str, host: str, port: int, data: object) -> bytes:
    return _request(path, host, port, "application/json", json.dumps(data).encode())


def _request(path: str, host: str, port: int, content_type: str, body: bytes) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def open_loop(
    host: str,
    port: int,
    requests: list[bytes],
    rate: float,
    connections: int = 64,
    refused: dict[int, bytes] | None = None,
) -> tuple[list[float], list[float], list[int]]:
    """Send ``requests`` at ``rate`` a second over keep-alive connections, open loop. Raw HTTP/1.1 on
    asyncio streams: an HTTP client library costs more CPU per request than the server under test on a
    2-core machine, and would measure itself. Returns per request: the wall-clock time it was due,
    its latency counted from then (so waiting for a free connection counts), and its status; the body
    of each answer other than 200 goes into ``refused`` (request index → body) when given."""
    n = len(requests)
    due_at, latency, status = [0.0] * n, [0.0] * n, [0] * n
    queue: asyncio.Queue[int] = asyncio.Queue()
    offset = time.time() - time.perf_counter()

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        while (i := await queue.get()) >= 0:
            writer.write(requests[i])
            status_line = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length)
            latency[i] = time.perf_counter() - due_at[i]
            parts = status_line.split()
            status[i] = int(parts[1]) if len(parts) > 1 else 0
            if refused is not None and status[i] != 200:
                refused[i] = body
        writer.close()

    workers = [asyncio.create_task(connection()) for _ in range(connections)]
    await asyncio.sleep(0.2)
    start = time.perf_counter()
    for i in range(n):
        due_at[i] = start + i / rate
        delay = due_at[i] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(i)
    for _ in workers:
        queue.put_nowait(-1)
    await asyncio.gather(*workers)
    return [d + offset for d in due_at], latency, status


async def run(links: list[str], rate: float, seconds: float, score: str) -> dict[str, Any]:
    total = min(len(links), int(rate * seconds))
    first = urlsplit(links[0])
    host, port = first.hostname or "127.0.0.1", first.port or 80
    requests = [
        form_post(urlsplit(link).path, host, port, {"score": score, "comment": "load"})
        for link in links[:total]
    ]
    start = time.perf_counter()
    due, latency, status = await open_loop(host, port, requests, rate)
    elapsed = time.perf_counter() - start - 0.2
    errors = sum(1 for s in status if s != 200)
    # p99 second by second (by the time each request was due): shows a slow start or a stall.
    per_second: dict[int, list[float]] = {}
    for d, lat in zip(due, latency, strict=True):
        per_second.setdefault(int(d - due[0]), []).append(lat)
    by_second = [
        round(1000 * sorted(v)[min(len(v) - 1, int(0.99 * len(v)))], 1) for _, v in sorted(per_second.items())
    ]
    latency.sort()
    return {
        "p99_ms_by_second": by_second,
        "rate": rate,
        "requests": total,
        "errors": errors,
        "achieved": total / elapsed,
        "p50_ms": 1000 * latency[len(latency) // 2],
        "p99_ms": 1000 * latency[min(len(latency) - 1, int(0.99 * len(latency)))],
        "max_ms": 1000 * latency[-1],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen")
    parser.add_argument("--links", type=Path, required=True, help="one survey link a line")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--score", default="3")
    args = parser.parse_args(argv)
    links = [ln for ln in args.links.read_text().splitlines() if ln]
    print(json.dumps(asyncio.run(run(links, args.rate, args.seconds, args.score))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
