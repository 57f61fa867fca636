"""Channels of kind ``anthropic``: Claude through Anthropic's Messages API.

Anthropic clients (``/v1/messages``) pass through natively: the body goes up
as is and the events come back verbatim. OpenAI-dialect clients (``chat``)
are translated both ways by :mod:`localgate.dialects.anthropic`. Transport
and status errors are classified by the OpenAI adapter's helpers (they read
Anthropic's error shape too; 529 "overloaded" is a 5xx, so retryable).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from localgate import __version__
from localgate.dialects.anthropic import chat_usage, usage_from_anthropic
from localgate.dialects.anthropic_stream import AnthropicToChatChunks, sse_event
from localgate.dialects.anthropic_upstream import chat_to_messages, message_to_chat_completion
from localgate.errors import LocalgateError, UpstreamError, error_payload
from localgate.providers.base import Provider, ProviderRequest, StreamEvent, UpstreamResponse
from localgate.providers.openai import (
    OpenAIStream,
    dumps,
    error_detail,
    open_events,
    redact,
    status_error,
    transport_error,
)

if TYPE_CHECKING:
    from localgate.config import ChannelSettings
    from localgate.providers.sse import SSEEvent

DEFAULT_VERSION = "2023-06-01"
# Output limit for a chat request that names none and got none from the gateway.
DEFAULT_MAX_TOKENS = 4096


class AnthropicEventStream(OpenAIStream):
    """Anthropic's named SSE events, read as they arrive (the reading and
    closing are OpenAIStream's). Complete only at ``message_stop``; an
    ``error`` event raises, retryable only if nothing reached the caller yet."""

    def __init__(self, response: httpx.Response, channel_id: str) -> None:
        super().__init__(response, channel_id)
        self._events = AnthropicToChatChunks()
        self._out: deque[StreamEvent] = deque()

    async def __anext__(self) -> StreamEvent:
        out, pending = self._out, self._pending
        while not out:
            while not pending:
                if self._closed:
                    raise StopAsyncIteration
                if self._eof:
                    await self._end()
                await self._read()
            try:
                out.extend(self._translate(pending.popleft()))
            except UpstreamError as exc:
                await self.aclose()
                exc.message = f"channel {self._channel_id}: {exc.message}"
                exc.retryable = self._seen == 0
                raise
        self._seen += 1
        return out.popleft()

    async def _end(self) -> None:
        await self.aclose()
        if self.completed:
            raise StopAsyncIteration
        raise UpstreamError(
            f"channel {self._channel_id}: stream cut: the upstream ended it before message_stop",
            retryable=self._seen == 0,
        )

    def _feed(self, event: SSEEvent) -> list[dict[str, Any]]:
        """Run one event through the Anthropic state; the chunks it becomes."""
        if event.data is None:
            return []
        try:
            data = json.loads(event.data)
        except ValueError:
            return []
        if not isinstance(data, dict):
            return []
        name = event.event.decode("utf-8", "replace") if event.event else ""
        chunks = self._events.feed(name, data)
        self.usage = self._events.usage
        return chunks

    def _translate(self, event: SSEEvent) -> list[StreamEvent]:
        raise NotImplementedError


class NativeStream(AnthropicEventStream):
    """``/v1/messages`` passed through: every block relayed verbatim."""

    def _translate(self, event: SSEEvent) -> list[StreamEvent]:
        for chunk in self._feed(event):
            self.observe_chunk(chunk)  # output text for estimates
        self.finish_reason = self._events.stop_reason
        if self._events.done and not self.completed:
            self.completed = True
            return [StreamEvent(event.raw, False, True)]
        return [StreamEvent(event.raw)]

    def error_event(self, exc: LocalgateError) -> bytes:
        return sse_event("error", error_payload(exc, "anthropic"))


class ChatStream(AnthropicEventStream):
    """An Anthropic stream re-told as OpenAI ``chat.completion.chunk`` events."""

    def _translate(self, event: SSEEvent) -> list[StreamEvent]:
        out = []
        for chunk in self._feed(event):
            self.observe_chunk(chunk)
            out.append(StreamEvent(b"data: " + dumps(chunk) + b"\n\n"))
        if self._events.done and not self.completed:
            self.completed = True
            if self.usage is not None:
                usage_chunk = {**self._events.head, "choices": [], "usage": chat_usage(self.usage)}
                out.append(StreamEvent(b"data: " + dumps(usage_chunk) + b"\n\n", True))
            out.append(StreamEvent(b"data: [DONE]\n\n", False, True))
        return out


class AnthropicProvider(Provider):
    kind: ClassVar[str] = "anthropic"
    needs_key: ClassVar[bool] = True
    endpoints: ClassVar[frozenset[str]] = frozenset({"chat", "messages"})
    output_limit_field: ClassVar[str] = "max_tokens"
    key_headers: ClassVar[Mapping[str, str]] = {
        "x-api-key": "{key}",
        "anthropic-version": DEFAULT_VERSION,
    }

    def __init__(self, channel: ChannelSettings, client: httpx.AsyncClient) -> None:
        super().__init__(channel, client)
        self._url = channel.base_url.rstrip("/") + "/messages"
        self._timeout = httpx.Timeout(channel.timeout, connect=channel.connect_timeout)
        headers = {
            "content-type": "application/json",
            "user-agent": f"localgate/{__version__}",
            "anthropic-version": str(channel.options.get("anthropic_version") or DEFAULT_VERSION),
        }
        if channel.api_key:
            headers["x-api-key"] = channel.api_key
        headers.update({k.lower(): v for k, v in channel.headers.items()})
        self._headers = headers
        limit = channel.options.get("max_tokens")
        self._max_tokens = DEFAULT_MAX_TOKENS
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            self._max_tokens = limit

    def _request(self, req: ProviderRequest, *, stream: bool) -> tuple[bytes, dict[str, str]]:
        headers = dict(self._headers)
        if stream:
            headers["accept"] = "text/event-stream"
        if req.endpoint == "messages":
            beta = req.client_headers.get("anthropic-beta")
            if beta:  # Claude Code turns features on with it; only native calls carry it
                headers["anthropic-beta"] = beta
            return dumps(req.body), headers
        if req.endpoint != "chat":
            raise UpstreamError(f"channel {self.channel.id}: anthropic serves no {req.endpoint}")
        body = chat_to_messages(req.body, max_tokens=self._max_tokens)
        return dumps(body), headers

    async def complete(self, req: ProviderRequest) -> UpstreamResponse:
        channel_id, key = self.channel.id, self.channel.api_key
        content, headers = self._request(req, stream=False)
        try:
            resp = await self.client.post(
                self._url, content=content, headers=headers, timeout=self._timeout
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(channel_id, exc) from exc
        if not 200 <= resp.status_code < 300:
            raise status_error(
                channel_id, resp.status_code, resp.content, secret=key, headers=resp.headers
            )
        try:
            body = json.loads(resp.content)
        except ValueError:
            body = None
        if not isinstance(body, dict) or body.get("type") == "error":
            raise UpstreamError(
                f"channel {channel_id}: upstream answered HTTP {resp.status_code} without "
                f"a message: {error_detail(redact(resp.content, key))}",
                status=resp.status_code,
                retryable=True,
                body=redact(resp.content, key),
            )
        usage = usage_from_anthropic(body.get("usage"))
        if req.endpoint == "messages":
            return UpstreamResponse(resp.status_code, resp.headers, resp.content, body, usage)
        completion = message_to_chat_completion(body)
        return UpstreamResponse(
            resp.status_code, resp.headers, dumps(completion), completion, usage
        )

    async def open_stream(self, req: ProviderRequest) -> AnthropicEventStream:
        channel_id, key = self.channel.id, self.channel.api_key
        content, headers = self._request(req, stream=True)
        resp = await open_events(
            self.client,
            self._url,
            content,
            headers,
            self._timeout,
            channel_id=channel_id,
            secret=key,
        )
        cls = NativeStream if req.endpoint == "messages" else ChatStream
        return cls(resp, channel_id)
