"""Time to first byte of streamed answers: a small raw-socket HTTP/1.1 client.

wrk measures whole responses; a streaming client cares about the first event.
This client keeps ``concurrency`` keep-alive connections, each sending the
same POST in a loop, and for every response records

- ``headers``: the status line and headers have arrived,
- ``ttfb``: the first byte of the body (the first SSE event, after chunked
  decoding) has arrived,
- ``total``: the whole response has arrived.

It is plain asyncio (uvloop when installed) with httptools parsing, so it costs
tens of microseconds per response: fine at concurrency 1 and 10, where the
server under test is far slower than that. At higher concurrency the Python
client itself becomes a bottleneck, so the benchmark does not use it there.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import httptools


@dataclass
class Samples:
    headers: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.total)


class _Response:
    """httptools callbacks for one response."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.headers_at: float | None = None
        self.first_body_at: float | None = None
        self.done_at: float | None = None
        self.status = 0
        self.keep_alive = True

    def on_headers_complete(self) -> None:
        self.headers_at = time.perf_counter()

    def on_body(self, body: bytes) -> None:
        if self.first_body_at is None and body:
            self.first_body_at = time.perf_counter()

    def on_message_complete(self) -> None:
        self.done_at = time.perf_counter()


def build_request(host: str, port: int, path: str, body: bytes, key: str | None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "User-Agent: localgate-bench (ttfb)",
        "Content-Type: application/json",
        "Accept: text/event-stream",
        f"Content-Length: {len(body)}",
    ]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def _worker(
    host: str, port: int, request: bytes, deadline: float, out: Samples, timeout: float
) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while time.perf_counter() < deadline:
        if writer is None:
            reader, writer = await asyncio.open_connection(host, port)
        assert reader is not None
        response = _Response(time.perf_counter())
        parser = httptools.HttpResponseParser(response)
        writer.write(request)
        try:
            async with asyncio.timeout(timeout):
                while response.done_at is None:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError("the server closed the connection")
                    parser.feed_data(data)
        except (OSError, TimeoutError, httptools.HttpParserError):
            out.errors += 1
            writer.close()
            writer = None
            continue
        status = parser.get_status_code()
        if status != 200:
            out.statuses[status] = out.statuses.get(status, 0) + 1
            out.errors += 1
        else:
            assert response.headers_at is not None and response.done_at is not None
            first = response.first_body_at or response.done_at
            out.headers.append(response.headers_at - response.started)
            out.ttfb.append(first - response.started)
            out.total.append(response.done_at - response.started)
        if not parser.should_keep_alive():
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


async def measure(
    host: str,
    port: int,
    path: str,
    body: bytes,
    *,
    key: str | None,
    concurrency: int,
    duration: float,
    timeout: float = 10.0,
) -> Samples:
    request = build_request(host, port, path, body, key)
    out = Samples()
    started = time.perf_counter()
    deadline = started + duration
    await asyncio.gather(
        *(_worker(host, port, request, deadline, out, timeout) for _ in range(concurrency))
    )
    out.elapsed = time.perf_counter() - started
    return out


def run(
    host: str,
    port: int,
    path: str,
    body: bytes,
    *,
    key: str | None,
    concurrency: int,
    duration: float,
) -> Samples:
    coro = measure(host, port, path, body, key=key, concurrency=concurrency, duration=duration)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return asyncio.run(coro)
    return uvloop.run(coro)
