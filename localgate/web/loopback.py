"""Requests to this very gateway's ``/v1``, made in-process through the whole ASGI app.

The playground and the Keys page's *Send a test request* use it, so their
requests take exactly the path a tool's request takes — the Host check, the
``/v1`` mount, key authentication, routing, hold, upstream call, settle,
receipt — without a network hop and without knowing which port the server
listens on. Streams come through chunk by chunk; closing the call early is a
client disconnect, which the gateway settles as ``client_canceled``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio

from localgate import __version__
from localgate.errors import LocalgateError, LoopbackFailed

USER_AGENT = f"localgate-playground/{__version__}"
_END: dict[str, Any] = {"type": "localgate.end"}


class V1Call:
    """One POST to ``/v1/...`` through ``app``. Use as ``async with``."""

    def __init__(
        self,
        app: Any,
        path: str,
        body: dict[str, Any],
        *,
        token: str | None,
        host: str,
        user_agent: str = USER_AGENT,
    ) -> None:
        self._app = app
        self._body = json.dumps(body).encode()
        headers = {
            "host": host,
            "content-type": "application/json",
            "content-length": str(len(self._body)),
            "user-agent": user_agent,
        }
        if token:
            headers["authorization"] = f"Bearer {token}"
        self._scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
        }
        self._body_sent = False
        self._gone = asyncio.Event()
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._ended = False
        self.status = 0
        self.headers: dict[str, str] = {}

    async def _receive(self) -> dict[str, Any]:
        if not self._body_sent:
            self._body_sent = True
            return {"type": "http.request", "body": self._body, "more_body": False}
        await self._gone.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        await self._events.put(message)

    async def _run(self) -> None:
        try:
            await self._app(self._scope, self._receive, self._send)
        finally:
            self._events.put_nowait(_END)

    async def __aenter__(self) -> V1Call:
        self._task = asyncio.create_task(self._run())
        message = await self._events.get()
        if message is _END:
            await self._task  # re-raises what the app raised
            raise LoopbackFailed("the gateway sent no response")
        self.status = message["status"]
        self.headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in message.get("headers", ())
        }
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The response body as the gateway sends it."""
        while not self._ended:
            message = await self._events.get()
            if message is _END:
                self._ended = True
                return
            if message["type"] == "http.response.body":
                if message.get("body"):
                    yield message["body"]
                if not message.get("more_body"):
                    self._ended = True
                    return

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])

    def json(self, raw: bytes) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def aclose(self) -> None:
        """Stop reading. Before the end this is a client disconnect: the gateway
        closes the upstream call and settles what was delivered."""
        self._gone.set()
        task = self._task
        if task is None:
            return
        # Shielded: we may be here because the browser went away and our own
        # task is being cancelled; the gateway still has to finish settling.
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(TimeoutError, LocalgateError):
                await asyncio.wait_for(asyncio.shield(task), timeout=30)


def error_message(data: dict[str, Any], status: int) -> str:
    """The message of an OpenAI-shaped error body."""
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return f"the gateway answered HTTP {status}"
