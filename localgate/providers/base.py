"""The provider interface: one door for every upstream, built-in demo included.

A provider takes a request for one endpoint (:class:`ProviderRequest`) and
answers in that endpoint's dialect: :meth:`Provider.complete` returns an
:class:`UpstreamResponse`, :meth:`Provider.open_stream` an
:class:`UpstreamStream` of :class:`StreamEvent` s. Every provider serves
``chat`` (OpenAI chat completions), translating when its upstream speaks
another dialect (Anthropic, Gemini); ``Provider.endpoints`` lists what else it
serves natively (``messages``: Anthropic Messages, ``responses``: OpenAI
Responses, ``embeddings``), which the gateway then passes through as is.
Usage is always reported normalised (:class:`~localgate.core.pricing.Usage`).

Every failure leaves a provider as :class:`~localgate.errors.UpstreamError`,
classified there, once: ``retryable`` says whether another route may fix it
(connect errors, timeouts, 408, 429, 5xx, a 200 that carries an error);
routing decides from that alone.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from localgate.core.pricing import Usage, token_count
from localgate.errors import ConfigError, LocalgateError, error_payload

if TYPE_CHECKING:
    import httpx

    from localgate.config import ChannelSettings

Endpoint = Literal["chat", "embeddings", "messages", "responses"]


@dataclass(slots=True)
class ProviderRequest:
    endpoint: Endpoint
    body: dict[str, Any]  # in the endpoint's dialect, already carrying the upstream model id
    stream: bool = False
    client_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: Mapping[str, str]
    content: bytes  # the body to relay unchanged (transfer/content encoding already undone)
    body: dict[str, Any]
    usage: Usage | None  # None when the upstream did not report it


class StreamEvent(NamedTuple):
    raw: bytes  # one complete SSE block, ending with b"\n\n", to relay verbatim
    usage_only: bool = False  # the include_usage chunk: no choices, only usage
    # The stream's last event (`data: [DONE]`, Anthropic's `message_stop`, the
    # Responses `response.completed`): the relay settles before sending it.
    done: bool = False


def usage_from_openai(data: object) -> Usage | None:
    """Map an OpenAI ``usage`` object (chat or embeddings) to :class:`Usage`.

    Upstreams, routed pools especially, sometimes report odd numbers; they are
    clamped into a valid Usage rather than failing a request that succeeded.
    """
    if not isinstance(data, dict):
        return None
    num = token_count
    prompt = num(data, "prompt_tokens")
    output = num(data, "completion_tokens")
    cached = min(num(data.get("prompt_tokens_details"), "cached_tokens"), prompt)
    reasoning = min(num(data.get("completion_tokens_details"), "reasoning_tokens"), output)
    return Usage(input=prompt, cached_input=cached, output=output, reasoning=reasoning)


class UpstreamStream(ABC):
    """An async iterator of :class:`StreamEvent` from one upstream call.

    While iterating it accumulates ``usage``, ``output_text`` (for token
    estimation when usage is missing), ``finish_reason`` and ``completed``.
    Iteration raises UpstreamError when the stream breaks. ``aclose()`` ends
    the upstream call promptly; it is safe to call more than once.
    """

    def __init__(self, *, status: int = 200, headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.headers: Mapping[str, str] = headers or {}
        self.usage: Usage | None = None
        self.finish_reason: str | None = None
        self.completed = False
        self._parts: list[str] = []

    @property
    def output_text(self) -> str:
        return "".join(self._parts)

    def __aiter__(self) -> UpstreamStream:
        return self

    @abstractmethod
    async def __anext__(self) -> StreamEvent: ...

    @abstractmethod
    async def aclose(self) -> None:
        """Stop the upstream call (the upstream must see the connection close)."""

    async def __aenter__(self) -> UpstreamStream:
        return self

    def error_event(self, exc: LocalgateError) -> bytes:
        """An SSE block that ends this stream with ``exc``, in the stream's dialect.
        This is the OpenAI chat one; streams of other dialects override it."""
        return b"data: " + json.dumps(error_payload(exc, "openai")).encode() + b"\n\n"

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def observe_chunk(self, chunk: dict[str, Any]) -> bool:
        """Account one OpenAI ``chat.completion.chunk``; True if it is usage-only."""
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if usage:
            self.usage = usage_from_openai(usage)
        if not choices:
            return bool(usage)
        parts = self._parts
        for choice in choices:
            delta = choice.get("delta")
            if delta:
                # Everything the upstream bills as output counts for the estimate.
                for key in ("content", "refusal", "reasoning_content"):
                    text = delta.get(key)
                    if text:
                        parts.append(text)
                for call in delta.get("tool_calls") or ():
                    function = call.get("function") or {}
                    if function.get("name"):
                        parts.append(function["name"])
                    if function.get("arguments"):
                        parts.append(function["arguments"])
            reason = choice.get("finish_reason")
            if reason:
                self.finish_reason = reason
        return False


class Provider(ABC):
    """Base class of upstream adapters; concrete kinds register in PROVIDERS."""

    kind: ClassVar[str] = ""
    needs_key: ClassVar[bool] = True
    # Endpoints served natively; "chat" is always served (translated if need be).
    endpoints: ClassVar[frozenset[str]] = frozenset({"chat", "embeddings"})
    # The chat-body field that carries the output limit for this upstream.
    output_limit_field: ClassVar[str] = "max_tokens"
    # Answers without an upstream: no base_url, no key, nothing to reach.
    offline: ClassVar[bool] = False
    # Offered on the Settings page's add-channel form.
    configurable: ClassVar[bool] = True
    # The headers that carry the key, "{key}" standing for it (the connection test sends them).
    key_headers: ClassVar[Mapping[str, str]] = {"authorization": "Bearer {key}"}

    def __init__(self, channel: ChannelSettings, client: httpx.AsyncClient) -> None:
        if self.needs_key and not channel.api_key:
            raise ConfigError(
                f"No key for channel {channel.id}: set the variable named by its api_key_env "
                "in the environment or in secrets.toml"
            )
        self.channel = channel
        self.client = client

    @abstractmethod
    async def complete(self, req: ProviderRequest) -> UpstreamResponse:
        """One non-stream call; raise UpstreamError on any failure."""

    @abstractmethod
    async def open_stream(self, req: ProviderRequest) -> UpstreamStream:
        """Return once the upstream answered 200 with headers; raise UpstreamError
        (``retryable`` for connect errors, timeouts, 429 and 5xx) otherwise."""
