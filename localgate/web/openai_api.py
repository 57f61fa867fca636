"""``/v1``: the OpenAI- and Anthropic-compatible surface, as a plain ASGI app mounted in Litestar.

It is the hot path, so it reads the body, answers and streams with the ASGI
primitives directly; errors use the OpenAI shape from ``web.errors``. A
streaming response watches for the client's disconnect and cancels the relay,
which closes the upstream call and settles what was delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from litestar import asgi
from litestar.types import Receive, Scope, Send

from localgate.core.ids import random_hex
from localgate.core.keys import check_usable
from localgate.errors import (
    BadRequest,
    InternalError,
    LocalgateError,
    MethodNotAllowed,
    NotFound,
    ShuttingDown,
    TooLarge,
    error_payload,
    is_shutdown,
)
from localgate.services.inbound import INBOUND, Messages
from localgate.services.proxy import Caller, Gateway, Reply
from localgate.web.api import decode_json_object
from localgate.web.errors import dialect

JSON = b"application/json"
API_BY_PATH = {api.path: api for api in INBOUND.values()}
COUNT_TOKENS = "/v1/messages/count_tokens"
# Client headers passed on to an upstream that speaks the same API.
FORWARDED = frozenset({"anthropic-beta"})
log = logging.getLogger(__name__)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}


def _token(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key") or None


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise BadRequest("the client disconnected while sending the request")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge(
                f"request body too large: the limit is {limit} bytes (server.max_body_bytes)"
            )
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


def parse_json_object(raw: bytes, required: tuple[str, ...]) -> dict[str, Any]:
    data = decode_json_object(raw)
    for name in required:
        if name not in data or data[name] in (None, ""):
            raise BadRequest(f"missing required field '{name}'", param=name)
    if not isinstance(data["model"], str):
        raise BadRequest("'model' must be a string", param="model")
    return data


async def send_bytes(
    send: Send, status: int, body: bytes, headers: dict[str, str], content_type: bytes = JSON
) -> None:
    raw = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in headers.items()
        if k != "content-type"
    ]
    raw.append((b"content-type", headers.get("content-type", "").encode() or content_type))
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, path: str, exc: LocalgateError) -> None:
    body = error_payload(exc, dialect(path))
    await send_bytes(send, exc.http_status, json.dumps(body).encode(), exc.response_headers())


async def send_stream(reply: Reply, send: Send, receive: Receive) -> None:
    assert reply.relay is not None
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers.items()]
    await send({"type": "http.response.start", "status": reply.status, "headers": raw})
    task = asyncio.current_task()
    assert task is not None

    async def watch_disconnect() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                task.cancel()
                return

    async def write(chunk: bytes) -> None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})

    watcher = asyncio.create_task(watch_disconnect())
    try:
        await reply.relay.pump(write)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if watcher.done():  # the client went away: the relay has settled; nothing to send
            task.uncancel()
            return
        raise
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


@asgi("/v1", is_mount=True, copy_scope=False)
async def openai_app(scope: Scope, receive: Receive, send: Send) -> None:
    raw_path = scope.get("raw_path") or b""
    path = raw_path.decode("latin-1").split("?", 1)[0] or "/v1" + scope["path"]
    path = path.rstrip("/") or "/"
    gateway: Gateway = scope["app"].state.gateway
    try:
        await _dispatch(scope, receive, send, gateway, path)
    except LocalgateError as exc:
        await send_error(send, path, exc)
    except Exception as exc:  # a bug: answer in the caller's dialect, keep the traceback
        log.exception("unexpected error on %s %s", scope["method"], path)
        internal = InternalError(f"internal error in localgate ({type(exc).__name__}); see its log")
        await send_error(send, path, internal)


async def _dispatch(
    scope: Scope, receive: Receive, send: Send, gateway: Gateway, path: str
) -> None:
    method = scope["method"]
    headers = _headers(scope)
    caller = Caller(
        _token(headers),
        headers.get("user-agent", ""),
        headers.get("x-request-id") or "req_" + random_hex(8),
        {k: v for k, v in headers.items() if k in FORWARDED},
    )
    api = API_BY_PATH.get(path)
    if api is not None or path == COUNT_TOKENS:
        if method != "POST":
            raise MethodNotAllowed(f"use POST for {path}")
        limit = scope["app"].state.settings.get("server.max_body_bytes")
        raw = await read_body(receive, limit)
        if api is None:  # count_tokens: an estimate, no upstream call and no money
            body = parse_json_object(raw, Messages.required)
            data = {"input_tokens": gateway.count_tokens(INBOUND["messages"], body, caller)}
            await send_bytes(send, 200, json.dumps(data).encode(), {})
            return
        body = parse_json_object(raw, api.required)
        try:
            reply = await gateway.handle(api.endpoint, body, caller)
        except asyncio.CancelledError as exc:
            if not is_shutdown(exc):
                raise
            # Stopping, not a client gone: the caller is still there to be told.
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            raise ShuttingDown("localgate is restarting or stopping; retry shortly") from None
        if reply.relay is not None:
            await send_stream(reply, send, receive)
        else:
            await send_bytes(send, reply.status, reply.content or b"", reply.headers)
        return
    if path == "/v1/models" or path.startswith("/v1/models/"):
        if method != "GET":
            raise MethodNotAllowed(f"use GET for {path}")
        policy = gateway.keys.authenticate(caller.token)
        check_usable(policy, time.time())
        if path == "/v1/models":
            data = {"object": "list", "data": gateway.visible_models(policy)}
        else:
            data = gateway.find_model(policy, path.removeprefix("/v1/models/"))
        await send_bytes(send, 200, json.dumps(data).encode(), {})
        return
    raise NotFound(f"unknown endpoint {method} {path}", code="unknown_url")
