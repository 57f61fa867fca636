"""Channels that speak the OpenAI API: kind ``openai`` and ``openai_compatible``.

One class does both; the compatible kind (routed pools, OpenRouter-style
relays, the hosted gateway) only differs in class attributes, and does not
serve the Responses API natively (a relay may lack /responses). Requests go out
through the app's shared ``httpx.AsyncClient`` (pooled connections); httpx
exceptions and HTTP error statuses become :class:`UpstreamError` here, once.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from localgate import __version__
from localgate.dialects.responses import usage_from_responses
from localgate.dialects.responses_stream import error_event
from localgate.errors import LocalgateError, UpstreamError
from localgate.providers.base import (
    Provider,
    ProviderRequest,
    StreamEvent,
    UpstreamResponse,
    UpstreamStream,
    usage_from_openai,
)
from localgate.providers.sse import SSEDecoder, SSEEvent

if TYPE_CHECKING:
    from localgate.config import ChannelSettings

PATHS = {"chat": "/chat/completions", "embeddings": "/embeddings", "responses": "/responses"}
USAGE_PARSERS = {
    "chat": usage_from_openai,
    "embeddings": usage_from_openai,
    "responses": usage_from_responses,
}
# 408 is the upstream's own timeout: as retryable as ours.
RETRYABLE_STATUSES = frozenset({408, 429})


def is_retryable_status(status: int) -> bool:
    return status >= 500 or status in RETRYABLE_STATUSES


def error_detail(text: str) -> str:
    """The readable part of an upstream error body (OpenAI shape or not)."""
    text = text.strip()
    try:
        data = json.loads(text)
    except ValueError:
        return text[:300]
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"][:300]
    if isinstance(error, str):
        return error[:300]
    return text[:300]


def redact(content: bytes, secret: str | None) -> str:
    text = content.decode("utf-8", "replace")
    if secret and secret in text:  # some upstreams echo the key they refused
        text = text.replace(secret, "***")
    return text


def status_error(
    channel_id: str,
    status: int,
    content: bytes,
    *,
    secret: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> UpstreamError:
    text = redact(content, secret)
    detail = error_detail(text) or "(empty body)"
    error = UpstreamError(
        f"channel {channel_id}: upstream answered HTTP {status}: {detail}",
        status=status,
        retryable=is_retryable_status(status),
        body=text,
    )
    error.retry_after = retry_after_seconds((headers or {}).get("retry-after"))
    return error


def retry_after_seconds(value: str | None) -> int | None:
    """An upstream's ``Retry-After`` in whole seconds (delta form; a date is ignored)."""
    if value is None or not value.strip().isdigit() or len(value.strip()) > 9:
        return None
    return int(value.strip())


def transport_error(channel_id: str, exc: Exception, *, mid_stream: bool = False) -> UpstreamError:
    """Translate an httpx exception. Mid-stream errors are never retryable:
    bytes may already have reached the client."""
    timeout = isinstance(exc, httpx.TimeoutException)
    if isinstance(exc, httpx.ConnectTimeout):
        what = "connect timed out"
    elif timeout:
        what = "timed out waiting for the upstream"
    elif isinstance(exc, httpx.ConnectError):
        what = "could not connect"
    elif isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError | httpx.ProxyError):
        what = "the connection broke"
    else:
        # Bad URL, unsupported scheme, undecodable body: retrying will not help.
        what = "request failed"
    retryable = not mid_stream and what != "request failed"
    if mid_stream:
        what = f"stream cut: {what}"
    detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return UpstreamError(
        f"channel {channel_id}: {what} ({detail})", retryable=retryable, timeout=timeout
    )


async def open_events(
    client: httpx.AsyncClient,
    url: str,
    content: bytes,
    headers: Mapping[str, str],
    timeout: httpx.Timeout,
    *,
    channel_id: str,
    secret: str | None,
    on_status: Callable[..., UpstreamError] = status_error,
) -> httpx.Response:
    """POST a stream request; the response once the upstream answers 200 with
    events. Anything else is raised as the UpstreamError it amounts to,
    classified here for every adapter: ``on_status`` reads an error status, and
    a 200 that carries JSON instead of events (relays that fail late do this) is
    retryable, since nothing has reached the client yet."""
    try:
        request = client.build_request(
            "POST", url, content=content, headers=headers, timeout=timeout
        )
        resp = await client.send(request, stream=True)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        raise transport_error(channel_id, exc) from exc
    is_json = resp.headers.get("content-type", "").startswith("application/json")
    if resp.status_code == 200 and not is_json:
        return resp
    try:
        body = await resp.aread()
    except httpx.HTTPError:
        body = b""
    finally:
        await resp.aclose()
    if resp.status_code != 200:
        raise on_status(channel_id, resp.status_code, body, secret=secret, headers=resp.headers)
    text = redact(body, secret)
    raise UpstreamError(
        f"channel {channel_id}: upstream answered a stream request with JSON "
        f"instead of events: {error_detail(text)}",
        status=200,
        retryable=True,
        body=text,
    )


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def event_text(data: dict[str, Any]) -> str:
    return json.dumps(data)[:2000]


# The Responses events that end a stream -> the chat finish_reason they mean
# (None: read it from incomplete_details).
TERMINAL_EVENTS: dict[str, str | None] = {
    "response.completed": "stop",
    "response.incomplete": None,
    "response.failed": None,
}
INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}


class OpenAIStream(UpstreamStream):
    """SSE events of one streamed chat completion, read as they arrive."""

    def __init__(self, response: httpx.Response, channel_id: str) -> None:
        super().__init__(status=response.status_code, headers=response.headers)
        self._response = response
        self._chunks = response.aiter_bytes()
        self._decoder = SSEDecoder()
        self._pending: deque[SSEEvent] = deque()
        self._channel_id = channel_id
        self._eof = False
        self._closed = False
        self._seen = 0  # events handed on: before the first, a failure is retryable

    async def __anext__(self) -> StreamEvent:
        pending = self._pending
        while not pending:
            if self._closed:
                raise StopAsyncIteration
            if self._eof:
                await self._end()
            await self._read()
        event = self._classify(pending.popleft())
        self._seen += 1
        return event

    async def _read(self) -> None:
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._eof = True
            self._pending.extend(self._decoder.flush())
        except (httpx.HTTPError, httpx.StreamError) as exc:
            # StreamError: aclose() ran from another task while this one read.
            closed_here = self._closed
            await self.aclose()
            if self.completed or closed_here:  # nothing lost: [DONE] arrived, or we hung up
                return
            raise transport_error(self._channel_id, exc, mid_stream=self._seen > 0) from exc
        else:
            self._pending.extend(self._decoder.feed(chunk))

    async def _end(self) -> None:
        """At a clean end of body: done if [DONE] or a finish_reason was seen."""
        await self.aclose()
        if self.completed or self.finish_reason is not None:
            self.completed = True
            raise StopAsyncIteration
        raise UpstreamError(
            f"channel {self._channel_id}: stream cut: the upstream ended it before "
            "[DONE] or a finish_reason",
            retryable=self._seen == 0,
        )

    def _classify(self, event: SSEEvent) -> StreamEvent:
        data = event.data
        if data is None:  # a comment or keep-alive: relay, nothing to account
            return StreamEvent(event.raw)
        if data.startswith(b"[DONE]"):
            self.completed = True
            return StreamEvent(event.raw, False, True)
        try:
            chunk = json.loads(data)
            if isinstance(chunk, dict) and "error" in chunk and not chunk.get("choices"):
                raise self._error_chunk(chunk["error"])
            usage_only = self.observe_chunk(chunk)
        except (ValueError, TypeError, AttributeError):
            usage_only = False  # not an OpenAI chunk: relay it, account nothing
        return StreamEvent(event.raw, usage_only)

    def _error_chunk(self, error: object) -> UpstreamError:
        """An error sent inside the stream (relays do this when they fail late):
        the stream failed, whatever follows it ([DONE] included)."""
        detail = error.get("message") if isinstance(error, dict) else error
        return UpstreamError(
            f"channel {self._channel_id}: the upstream sent an error in the stream: "
            f"{str(detail)[:300]}",
            retryable=self._seen == 0,
        )

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Closing an unfinished response closes its connection (it cannot go
        # back to the pool), which is what tells the upstream to stop.
        await self._response.aclose()
        # RuntimeError: still running in another task; the response is closed anyway.
        with contextlib.suppress(RuntimeError):
            await self._chunks.aclose()


class ResponsesStream(OpenAIStream):
    """SSE events of one streamed OpenAI Responses call, relayed verbatim.

    Usage comes from the terminal event (``response.completed``,
    ``response.incomplete``, or ``response.failed``); an ``error`` event or
    ``response.failed`` ends the stream with an UpstreamError once the events
    before it were relayed.
    """

    def __init__(self, response: httpx.Response, channel_id: str) -> None:
        super().__init__(response, channel_id)
        self._sequence = -1  # the upstream's last sequence_number

    def error_event(self, exc: LocalgateError) -> bytes:
        return error_event(exc, self._sequence + 1)

    async def __anext__(self) -> StreamEvent:
        try:
            return await super().__anext__()
        except UpstreamError:
            await self.aclose()  # a failure event: the upstream is done with us
            raise

    async def _end(self) -> None:
        await self.aclose()
        if self.completed:
            raise StopAsyncIteration
        raise UpstreamError(
            f"channel {self._channel_id}: stream cut: the upstream ended it before "
            "response.completed",
            retryable=self._seen == 0,
        )

    def _classify(self, event: SSEEvent) -> StreamEvent:
        try:
            data = json.loads(event.data) if event.data is not None else None
        except ValueError:
            data = None
        if not isinstance(data, dict) or not isinstance(data.get("type"), str):
            return StreamEvent(event.raw)  # a comment, keep-alive or stray line: relay only
        kind: str = data["type"]
        if isinstance(data.get("sequence_number"), int):
            self._sequence = data["sequence_number"]
        delta = data.get("delta")
        if kind.endswith(".delta") and isinstance(delta, str) and kind != "response.audio.delta":
            self._parts.append(delta)  # text, arguments, reasoning: all billed output
        elif kind in TERMINAL_EVENTS or kind == "error":
            self._settle(kind, data)
        return StreamEvent(event.raw, False, self.completed)

    def _settle(self, kind: str, data: dict[str, Any]) -> None:
        response = data.get("response")
        response = response if isinstance(response, dict) else {}
        if response.get("usage"):
            self.usage = usage_from_responses(response["usage"])
        if kind in ("response.completed", "response.incomplete"):
            self.completed = True
            details = response.get("incomplete_details") or {}
            reason = str(details.get("reason")) if isinstance(details, dict) else ""
            self.finish_reason = TERMINAL_EVENTS[kind] or INCOMPLETE_REASONS.get(reason, "length")
            return
        error = data if kind == "error" else response.get("error") or {}
        message = error.get("message") if isinstance(error, dict) else None
        raise UpstreamError(
            f"channel {self._channel_id}: the upstream failed the response: {message or kind}",
            status=200,
            # Nothing relayed yet: the caller saw nothing, another route may answer.
            retryable=self._seen == 0,
            body=event_text(data),
        )


class OpenAIProvider(Provider):
    kind: ClassVar[str] = "openai"
    needs_key: ClassVar[bool] = True
    endpoints: ClassVar[frozenset[str]] = frozenset({"chat", "embeddings", "responses"})
    # OpenAI's own API wants the newer field (its reasoning models refuse max_tokens).
    output_limit_field: ClassVar[str] = "max_completion_tokens"

    def __init__(self, channel: ChannelSettings, client: httpx.AsyncClient) -> None:
        super().__init__(channel, client)
        base = channel.base_url.rstrip("/")
        self._urls = {endpoint: base + path for endpoint, path in PATHS.items()}
        self._timeout = httpx.Timeout(channel.timeout, connect=channel.connect_timeout)
        # Client headers (user-agent and the like) are not forwarded: the
        # upstream sees localgate, and nothing about the local tools.
        headers = {"content-type": "application/json", "user-agent": f"localgate/{__version__}"}
        if channel.api_key:
            headers["authorization"] = f"Bearer {channel.api_key}"
        headers.update({k.lower(): v for k, v in channel.headers.items()})
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}

    async def complete(self, req: ProviderRequest) -> UpstreamResponse:
        channel_id = self.channel.id
        try:
            resp = await self.client.post(
                self._urls[req.endpoint],
                content=dumps(req.body),
                headers=self._headers,
                timeout=self._timeout,
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(channel_id, exc) from exc
        content = resp.content
        if not 200 <= resp.status_code < 300:
            raise status_error(
                channel_id,
                resp.status_code,
                content,
                secret=self.channel.api_key,
                headers=resp.headers,
            )
        try:
            body = json.loads(content)
        except ValueError as exc:
            body = None
            cause: Exception | None = exc
        else:
            cause = None
        if not isinstance(body, dict):
            raise UpstreamError(
                f"channel {channel_id}: upstream answered HTTP {resp.status_code} "
                "with a body that is not a JSON object",
                status=resp.status_code,
                retryable=True,
                body=redact(content, self.channel.api_key),
            ) from cause
        return UpstreamResponse(
            status=resp.status_code,
            headers=resp.headers,
            content=content,
            body=body,
            usage=USAGE_PARSERS[req.endpoint](body.get("usage")),
        )

    async def open_stream(self, req: ProviderRequest) -> UpstreamStream:
        channel_id = self.channel.id
        stream_class = STREAMS.get(req.endpoint)
        if stream_class is None:
            raise UpstreamError(f"channel {channel_id}: only chat completions and responses stream")
        resp = await open_events(
            self.client,
            self._urls[req.endpoint],
            dumps(req.body),
            self._stream_headers,
            self._timeout,
            channel_id=channel_id,
            secret=self.channel.api_key,
        )
        return stream_class(resp, channel_id)


class OpenAICompatibleProvider(OpenAIProvider):
    """Routed pools and relays: a key is optional, stream usage may be missing."""

    kind: ClassVar[str] = "openai_compatible"
    endpoints: ClassVar[frozenset[str]] = frozenset({"chat", "embeddings"})
    needs_key: ClassVar[bool] = False
    output_limit_field: ClassVar[str] = "max_tokens"


STREAMS: dict[str, type[OpenAIStream]] = {"chat": OpenAIStream, "responses": ResponsesStream}
