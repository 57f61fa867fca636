"""The APIs callers speak on ``/v1``, and how each reaches an upstream that speaks another.

Each inbound API is an :class:`Inbound` in :data:`INBOUND`: its path, the
dialect its errors use, where its body carries the output limit, and, for a
channel that does not serve it natively, how its request becomes an OpenAI
chat request and how the chat answer (whole or streamed) becomes its answer
again. Chat is the hub: every provider serves it, so any API reaches any
upstream through at most one translation on each side.

A channel that serves the API natively (``Provider.endpoints``) gets the body
as the caller sent it, with only the upstream model id put in.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Protocol

from localgate import tokens
from localgate.core.ids import random_hex
from localgate.core.pricing import Usage
from localgate.dialects import anthropic, responses
from localgate.dialects.anthropic_stream import ChatToAnthropicEvents
from localgate.dialects.anthropic_stream import sse_event as anthropic_event
from localgate.dialects.responses_stream import ChatToResponsesEvents
from localgate.errors import BadRequest, Dialect, LocalgateError, UpstreamError, error_payload
from localgate.providers.base import StreamEvent, UpstreamStream


class Converter(Protocol):
    """A stateful translation of a chat chunk stream into another API's events."""

    def feed(self, chunk: dict[str, Any]) -> list[bytes]: ...
    def finish(self, usage: Usage | None) -> list[bytes]: ...


class Inbound:
    """One API on ``/v1``. The base class is OpenAI chat completions, the hub."""

    endpoint: ClassVar[str] = "chat"  # as providers name it (Provider.endpoints)
    name: ClassVar[str] = "openai-chat"  # as receipts name it
    path: ClassVar[str] = "/v1/chat/completions"
    dialect: ClassVar[Dialect] = "openai"
    required: ClassVar[tuple[str, ...]] = ("model", "messages")
    # The body field with the caller's output limit; None: chat's own two fields.
    output_field: ClassVar[str | None] = None

    def requested_output(self, body: dict[str, Any]) -> int | None:
        """The caller's output limit, 1..MAX_OUTPUT_TOKENS, or None if it set none."""
        from localgate.core.pricing import MAX_OUTPUT_TOKENS

        names = (self.output_field,) if self.output_field else _CHAT_LIMITS
        for name in names:
            value = body.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BadRequest(f"'{name}' must be a positive whole number", param=name)
            if value > MAX_OUTPUT_TOKENS:
                raise BadRequest(
                    f"'{name}' is {value if value < 10**20 else 'a huge number'}; at most "
                    f"{MAX_OUTPUT_TOKENS} output tokens can be requested",
                    param=name,
                )
            return value
        return None

    def is_stream(self, body: dict[str, Any]) -> bool:
        stream = body.get("stream", False)
        if stream is None:
            return False
        if not isinstance(stream, bool):  # "false" is truthy: never guess
            raise BadRequest("'stream' must be true or false", param="stream")
        return stream

    def to_chat(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The request as OpenAI chat, and what the translation left out."""
        return body, []

    def input_tokens(self, chat_body: dict[str, Any]) -> int:
        return tokens.count_chat_input_tokens(chat_body)

    def reply_from_chat(self, completion: dict[str, Any], request: dict[str, Any]) -> bytes:
        return json.dumps(completion).encode()

    def stream_from_chat(
        self, inner: UpstreamStream, request: dict[str, Any], input_tokens: int
    ) -> UpstreamStream:
        return inner


_CHAT_LIMITS = ("max_completion_tokens", "max_tokens")


class Embeddings(Inbound):
    endpoint = "embeddings"
    name = "openai-embeddings"
    path = "/v1/embeddings"
    required = ("model", "input")

    def requested_output(self, body: dict[str, Any]) -> int | None:
        return 0

    def is_stream(self, body: dict[str, Any]) -> bool:
        return False

    def input_tokens(self, chat_body: dict[str, Any]) -> int:
        return tokens.count_embedding_input_tokens(chat_body)


class Messages(Inbound):
    """Anthropic Messages (Claude Code, the anthropic SDK)."""

    endpoint = "messages"
    name = "anthropic-messages"
    path = "/v1/messages"
    dialect = "anthropic"
    required = ("model", "messages")
    output_field = "max_tokens"

    def requested_output(self, body: dict[str, Any]) -> int | None:
        if body.get("max_tokens") is None:
            raise BadRequest("'max_tokens' is required", param="max_tokens")
        return super().requested_output(body)

    def to_chat(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        return anthropic.messages_to_chat(body)

    def reply_from_chat(self, completion: dict[str, Any], request: dict[str, Any]) -> bytes:
        message = anthropic.chat_completion_to_message(completion, model=request["model"])
        return json.dumps(message).encode()

    def stream_from_chat(
        self, inner: UpstreamStream, request: dict[str, Any], input_tokens: int
    ) -> UpstreamStream:
        converter = ChatToAnthropicEvents(request["model"], input_tokens)
        return TranslatedStream(inner, converter, anthropic_error_event)


class Responses(Inbound):
    """OpenAI Responses (Codex CLI, the openai SDK's ``responses``)."""

    endpoint = "responses"
    name = "openai-responses"
    path = "/v1/responses"
    required = ("model",)
    output_field = "max_output_tokens"

    def to_chat(self, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        return responses.responses_to_chat(body)

    def reply_from_chat(self, completion: dict[str, Any], request: dict[str, Any]) -> bytes:
        response = responses.chat_completion_to_response(
            completion, request=request, response_id=new_response_id(), created_at=int(time.time())
        )
        return json.dumps(response).encode()

    def stream_from_chat(
        self, inner: UpstreamStream, request: dict[str, Any], input_tokens: int
    ) -> UpstreamStream:
        converter = ChatToResponsesEvents(request, new_response_id(), int(time.time()))
        return TranslatedStream(inner, converter, converter.error_event)


INBOUND: dict[str, Inbound] = {
    api.endpoint: api for api in (Inbound(), Embeddings(), Messages(), Responses())
}


def new_response_id() -> str:
    return "resp_" + random_hex(24)


def anthropic_error_event(exc: LocalgateError) -> bytes:
    return anthropic_event("error", error_payload(exc, "anthropic"))


class TranslatedStream(UpstreamStream):
    """A chat chunk stream from the upstream, re-spoken in the caller's API.

    Usage, finish and the delivered text come from the inner stream (they are
    what the receipt charges); the events come from ``converter``, the last of
    them marked ``done`` so the relay settles before sending it.
    """

    def __init__(
        self,
        inner: UpstreamStream,
        converter: Converter,
        error_event: Callable[[LocalgateError], bytes],
    ) -> None:
        super().__init__(status=inner.status, headers=inner.headers)
        self._inner = inner
        self._converter = converter
        self._error_event = error_event
        self._out: deque[StreamEvent] = deque()
        self._finished = False
        self._parts = inner._parts  # output_text is the inner stream's

    async def __anext__(self) -> StreamEvent:
        out = self._out
        while not out:
            if self._finished:
                raise StopAsyncIteration
            try:
                event = await self._inner.__anext__()
            except StopAsyncIteration:
                if not self._inner.completed:
                    raise UpstreamError("stream cut: the upstream ended it early") from None
                self._finish()
                continue
            finally:
                self.usage, self.finish_reason = self._inner.usage, self._inner.finish_reason
            if event.done:
                self._finish()
            else:
                chunk = _chunk(event.raw)
                if chunk is not None:
                    out.extend(StreamEvent(block) for block in self._converter.feed(chunk))
        return out.popleft()

    def _finish(self) -> None:
        self._finished = self.completed = True
        blocks = self._converter.finish(self._inner.usage)
        self._out.extend(StreamEvent(block) for block in blocks[:-1])
        if blocks:
            self._out.append(StreamEvent(blocks[-1], done=True))

    def error_event(self, exc: LocalgateError) -> bytes:
        return self._error_event(exc)

    async def aclose(self) -> None:
        await self._inner.aclose()


def _chunk(raw: bytes) -> dict[str, Any] | None:
    """The JSON object of one ``data:`` SSE block, or None (a comment, not JSON)."""
    data = b"".join(line[5:].lstrip() for line in raw.splitlines() if line.startswith(b"data:"))
    if not data:
        return None
    try:
        chunk = json.loads(data)
    except ValueError:
        return None
    return chunk if isinstance(chunk, dict) else None
