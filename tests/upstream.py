"""A fake OpenAI upstream: a real HTTP/1.1 server on 127.0.0.1, for tests and the benchmark.

A raw asyncio protocol (httptools parses requests) runs on its own event loop
in a background thread, so sync and async tests can use it alike and it can do
what an ASGI app cannot: reset a connection, cut a chunked stream, and see the
moment a client goes away. It answers ``POST /v1/chat/completions`` (stream or
not, ``stream_options.include_usage``), ``POST /v1/embeddings`` and
``GET /v1/models``.

Behaviour comes from ``upstream.default`` (set with ``upstream.set(**knobs)``)
unless a queued one is waiting (``upstream.push(status=503)``, consumed one per
request). Every request is recorded in ``upstream.requests``::

    with FakeUpstream(chunks=3) as upstream:
        upstream.push(status=503)            # first request fails, then default
        ... call upstream.base_url ...
        assert upstream.requests[-1].body["model"] == "gpt-4o-mini"

    upstream = FakeUpstream.fixture()         # in a test module: a fixture named upstream

``python tests/upstream.py --port 9100 --chunks 20`` serves in the foreground
(for the benchmark).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any

import httptools
import pytest

try:
    import uvloop
except ImportError:  # pragma: no cover - Windows
    uvloop = None


@dataclass(frozen=True)
class Behavior:
    """How the fake answers one request."""

    status: int = 200  # != 200: an OpenAI-shaped error body (or error_body)
    latency: float = 0.0  # seconds before the status line
    chunk_delay: float = 0.0  # seconds between SSE events
    chunks: int = 5  # content chunks ("tok0 ", "tok1 ", ...); the completion tokens
    reset: bool = False  # send a TCP RST instead of an answer
    cut_after: int | None = None  # close the socket after this many SSE events, no [DONE]
    usage: bool = True  # False: report no usage at all
    prompt_tokens: int | None = None  # None: about len(json(messages)) / 4
    completion_tokens: int | None = None  # None: chunks
    cached_tokens: int | None = None  # set: prompt_tokens_details.cached_tokens
    reasoning_tokens: int | None = None  # set: completion_tokens_details.reasoning_tokens
    cache_write_tokens: int | None = None  # set: prompt tokens written to a cache (Anthropic)
    echo_tools: bool = True  # answer with a tool call when the request offers tools
    error_body: Any = None  # body for an error status (dict -> JSON, str/bytes as is)
    headers: Mapping[str, str] = field(default_factory=dict)  # extra response headers


@dataclass
class Recorded:
    """One request as the fake saw it; times are ``time.monotonic()``."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or None
    raw_body: bytes
    received_at: float
    behavior: Behavior | None = None
    stream: bool = False
    events_sent: int = 0
    finished_at: float | None = None  # the whole answer was written
    disconnected_at: float | None = None  # the client left before that
    server_closed: bool = False  # the fake itself reset or cut the connection

    @property
    def client_disconnected(self) -> bool:
        return self.disconnected_at is not None


# Path suffix -> the module that speaks that wire format. Each module has
# is_stream(path, body), answer(behavior, path, body), events(behavior, path,
# body) (whole SSE blocks) and error(status, message); see upstream_openai.
WIRE_FORMATS = (
    ("/chat/completions", "upstream_openai"),
    ("/embeddings", "upstream_openai"),
    ("/messages", "upstream_anthropic"),
    ("/responses", "upstream_responses"),
    (":generateContent", "upstream_gemini"),
    (":streamGenerateContent", "upstream_gemini"),
)


def wire_format(path: str) -> Any:
    """The wire-format module answering ``path``, or None for an unknown path."""
    for suffix, name in WIRE_FORMATS:
        if path.endswith(suffix):
            try:
                return importlib.import_module(name)
            except ImportError:  # imported as tests.upstream (e.g. from bench/)
                return importlib.import_module(f"tests.{name}")
    return None


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:  # e.g. Anthropic's 529 Overloaded
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _json_response(status: int, obj: Any, extra: Mapping[str, str]) -> bytes:
    body = (
        obj
        if isinstance(obj, bytes)
        else (obj.encode() if isinstance(obj, str) else json.dumps(obj).encode())
    )
    headers = {"content-type": "application/json", "content-length": str(len(body)), **extra}
    return _head(status, headers) + body


class _Connection(asyncio.Protocol):
    def __init__(self, upstream: FakeUpstream) -> None:
        self.upstream = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[tuple[str, str, dict[str, str], bytes, bool]] = deque()
        self.task: asyncio.Task[None] | None = None
        self.current: Recorded | None = None
        self.closed = False
        self._url = b""
        self._headers: dict[str, str] = {}
        self._body = bytearray()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.upstream._connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(
                _json_response(400, {"error": {"message": "bad request"}}, {"connection": "close"})
            )
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        current = self.current
        if current is not None and current.finished_at is None and not current.server_closed:
            current.disconnected_at = time.monotonic()
        if self.task is not None:
            self.task.cancel()
        self.upstream._connections.discard(self)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, bytearray()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        self.pending.append(
            (
                method,
                self._url.decode(),
                self._headers,
                bytes(self._body),
                self.parser.should_keep_alive(),
            )
        )
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._serve())

    # serving
    def write(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    async def _serve(self) -> None:
        try:
            while self.pending and not self.closed:
                method, path, headers, body, keep_alive = self.pending.popleft()
                await self.upstream._handle(self, method, path, headers, body)
                if not keep_alive:
                    self.transport.close()
        except asyncio.CancelledError:
            pass  # the client went away
        except Exception as exc:  # a bug in the fake: keep it for the test to see
            self.upstream.errors.append(exc)
            self.transport.close()
        finally:
            self.task = None

    def reset(self) -> None:
        sock = self.transport.get_extra_info("socket")
        # Linger 0: close() sends RST instead of FIN, which is what a crashed peer does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()


class FakeUpstream:
    """The fake server; see the module docstring."""

    def __init__(self, **knobs: Any) -> None:
        self.default = Behavior(**knobs)
        self.requests: list[Recorded] = []
        self.errors: list[Exception] = []
        self.models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
        self.port = 0
        self._queue: deque[Behavior] = deque()
        self._connections: set[_Connection] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._thread: threading.Thread | None = None

    # knobs
    def set(self, **knobs: Any) -> None:
        """Change the default behaviour for the requests that follow."""
        self.default = replace(self.default, **knobs)

    def push(self, *behaviors: Behavior, **knobs: Any) -> None:
        """Queue behaviours for the next requests (knobs: one more, over the default)."""
        self._queue.extend(behaviors)
        if knobs:
            self._queue.append(replace(self.default, **knobs))

    def push_statuses(self, *statuses: int) -> None:
        """E.g. ``push_statuses(503, 200)``: one request each, in order."""
        for status in statuses:
            self.push(status=status)

    # what happened
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def last(self) -> Recorded:
        return self.requests[-1]

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    async def async_wait_until(self, predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    # lifecycle
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> asyncio.Server:
        self._loop = asyncio.get_running_loop()
        self._server = await self._loop.create_server(
            lambda: _Connection(self), host, port, backlog=1024
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self._server

    def start(self) -> FakeUpstream:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()
            try:
                loop.run_until_complete(self.serve())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
                tasks = asyncio.all_tasks(loop)
                for task in tasks:
                    task.cancel()
                if tasks:
                    loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            self._server.close()
            for conn in list(self._connections):
                conn.transport.abort()
            await self._server.wait_closed()
            asyncio.get_running_loop().stop()

        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(shutdown()))
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @staticmethod
    def fixture(name: str = "upstream", **knobs: Any) -> Any:
        """A pytest fixture (function scope) yielding a running FakeUpstream."""

        @pytest.fixture(name=name)
        def _fixture() -> Iterator[FakeUpstream]:
            with FakeUpstream(**knobs) as upstream:
                yield upstream

        return _fixture

    # answers
    async def _handle(
        self, conn: _Connection, method: str, url: str, headers: dict[str, str], raw: bytes
    ) -> None:
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        path = url.partition("?")[0].rstrip("/")
        rec = Recorded(method, path, headers, body, raw, time.monotonic())
        self.requests.append(rec)
        conn.current = rec
        if method == "GET" and path.endswith("/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models
            ]
            conn.write(_json_response(200, {"object": "list", "data": data}, {}))
            rec.finished_at = time.monotonic()
            return
        behavior = self._queue.popleft() if self._queue else self.default
        rec.behavior = behavior
        body = body if isinstance(body, dict) else {}
        wire = wire_format(path)
        rec.stream = wire is not None and wire.is_stream(path, body)
        if behavior.latency:
            await asyncio.sleep(behavior.latency)
        if behavior.reset:
            rec.server_closed = True
            conn.reset()
            return
        if wire is None:
            conn.write(_json_response(404, {"error": {"message": f"no route {path}"}}, {}))
        elif behavior.status != 200:
            error = behavior.error_body or wire.error(
                behavior.status, f"fake upstream: HTTP {behavior.status}"
            )
            extra = {"retry-after": "1"} if behavior.status == 429 else {}
            conn.write(_json_response(behavior.status, error, {**extra, **behavior.headers}))
        else:
            try:
                reply = (wire.events if rec.stream else wire.answer)(behavior, path, body)
            except (AttributeError, TypeError, KeyError, ValueError, IndexError) as exc:
                # A body the fake cannot read: a real upstream answers 400, not a reset.
                error = wire.error(400, f"fake upstream: malformed request ({exc})")
                conn.write(_json_response(400, error, {}))
            else:
                if rec.stream:
                    await self._stream(conn, rec, behavior, reply)
                    if rec.finished_at is None:
                        return  # cut
                else:
                    conn.write(_json_response(200, reply, behavior.headers))
        rec.finished_at = time.monotonic()

    async def _stream(
        self, conn: _Connection, rec: Recorded, behavior: Behavior, events: list[bytes]
    ) -> None:
        head = _head(
            200,
            {
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                "transfer-encoding": "chunked",
                **behavior.headers,
            },
        )
        frames = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
        if not behavior.chunk_delay and behavior.cut_after is None:
            # One write: the benchmark wants the fake to cost as little as possible.
            conn.write(head + b"".join(frames) + b"0\r\n\r\n")
            rec.events_sent = len(frames)
            rec.finished_at = time.monotonic()
            return
        conn.write(head)
        for i, frame in enumerate(frames):
            if behavior.cut_after is not None and i >= behavior.cut_after:
                rec.server_closed = True
                conn.transport.close()  # FIN mid-body: the chunked message never ends
                return
            if behavior.chunk_delay and i:
                await asyncio.sleep(behavior.chunk_delay)
            conn.write(frame)
            rec.events_sent += 1
        conn.write(b"0\r\n\r\n")
        rec.finished_at = time.monotonic()


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the fake OpenAI upstream.")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--chunks", type=int, default=20)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    args = parser.parse_args()
    upstream = FakeUpstream(chunks=args.chunks, chunk_delay=args.chunk_delay)
    upstream.requests = _Discard()  # a long benchmark run must not grow memory

    async def run() -> None:
        server = await upstream.serve(port=args.port)
        print(f"fake upstream on {upstream.base_url}", flush=True)
        await server.serve_forever()

    (uvloop.run if uvloop else asyncio.run)(run())


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: object) -> None:
        pass


if __name__ == "__main__":
    main()
