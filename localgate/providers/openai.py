"""Channels that speak the OpenAI API: kind ``openai`` and ``openai_compatible``.

One class does both; the compatible kind (routed pools, OpenRouter-style
relays, the hosted gateway) only differs in class attributes. Requests go out
through the app's shared ``httpx.AsyncClient`` (pooled connections); httpx
exceptions and HTTP error statuses become :class:`UpstreamError` here, once.
"""

from __future__ import annotations

import contextlib
import json
from collections import deque
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from localgate import __version__
from localgate.errors import UpstreamError
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

PATHS = {"chat": "/chat/completions", "embeddings": "/embeddings"}
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
    channel_id: str, status: int, content: bytes, *, secret: str | None = None
) -> UpstreamError:
    text = redact(content, secret)
    detail = error_detail(text) or "(empty body)"
    return UpstreamError(
        f"channel {channel_id}: upstream answered HTTP {status}: {detail}",
        status=status,
        retryable=is_retryable_status(status),
        body=text,
    )


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


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


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

    async def __anext__(self) -> StreamEvent:
        pending = self._pending
        while not pending:
            if self._closed:
                raise StopAsyncIteration
            if self._eof:
                await self._end()
            await self._read()
        return self._classify(pending.popleft())

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
            raise transport_error(self._channel_id, exc, mid_stream=True) from exc
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
            "[DONE] or a finish_reason"
        )

    def _classify(self, event: SSEEvent) -> StreamEvent:
        data = event.data
        if data is None:  # a comment or keep-alive: relay, nothing to account
            return StreamEvent(event.raw)
        if data.startswith(b"[DONE]"):
            self.completed = True
            return StreamEvent(event.raw, False, True)
        try:
            usage_only = self.observe_chunk(json.loads(data))
        except (ValueError, TypeError, AttributeError):
            usage_only = False  # not an OpenAI chunk: relay it, account nothing
        return StreamEvent(event.raw, usage_only)

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


class OpenAIProvider(Provider):
    kind: ClassVar[str] = "openai"
    needs_key: ClassVar[bool] = True
    # OpenAI's own API wants the newer field (its reasoning models refuse max_tokens).
    output_limit_field: ClassVar[str] = "max_completion_tokens"
    # The official API always honours stream_options.include_usage.
    reports_stream_usage: ClassVar[bool] = True

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
            raise status_error(channel_id, resp.status_code, content, secret=self.channel.api_key)
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
            usage=usage_from_openai(body.get("usage")),
        )

    async def open_stream(self, req: ProviderRequest) -> UpstreamStream:
        channel_id = self.channel.id
        if req.endpoint != "chat":
            raise UpstreamError(f"channel {self.channel.id}: only chat completions stream")
        try:
            request = self.client.build_request(
                "POST",
                self._urls[req.endpoint],
                content=dumps(req.body),
                headers=self._stream_headers,
                timeout=self._timeout,
            )
            resp = await self.client.send(request, stream=True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(channel_id, exc) from exc
        is_json = resp.headers.get("content-type", "").startswith("application/json")
        if resp.status_code == 200 and not is_json:
            return OpenAIStream(resp, channel_id)
        try:
            content = await resp.aread()
        except httpx.HTTPError:
            content = b""
        finally:
            await resp.aclose()
        if resp.status_code != 200:
            raise status_error(channel_id, resp.status_code, content, secret=self.channel.api_key)
        # Relays that fail late answer 200 with a JSON error instead of a stream.
        # Nothing reached the client yet, so another route may still be tried.
        text = redact(content, self.channel.api_key)
        raise UpstreamError(
            f"channel {channel_id}: upstream answered a stream request with JSON "
            f"instead of events: {error_detail(text)}",
            status=200,
            retryable=True,
            body=text,
        )


class OpenAICompatibleProvider(OpenAIProvider):
    """Routed pools and relays: a key is optional, stream usage may be missing."""

    kind: ClassVar[str] = "openai_compatible"
    needs_key: ClassVar[bool] = False
    output_limit_field: ClassVar[str] = "max_tokens"
    reports_stream_usage: ClassVar[bool] = False
