"""Channels of kind ``gemini``: Google Gemini through its native API.

The gateway hands this adapter OpenAI chat requests (endpoint ``chat``); they
go out as ``POST {base_url}/models/{model}:generateContent`` (or
``:streamGenerateContent?alt=sse``) with the key in ``x-goog-api-key``, the
body built by :func:`~localgate.providers.gemini_format.to_gemini`. Answers
come back translated here into a ``chat.completion`` or
``chat.completion.chunk`` events ending with ``data: [DONE]``, and
``usageMetadata`` into a normalised Usage (thoughts billed as output, cached
content inside the input). The native API is used, not Google's
OpenAI-compatible one, for the exact ``usageMetadata``. What is translated and
what is dropped: docs/gemini.md.
"""

from __future__ import annotations

import json
import secrets
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import httpx

from localgate import __version__
from localgate.core.pricing import Usage, token_count
from localgate.errors import UpstreamError
from localgate.providers.base import (
    Provider,
    ProviderRequest,
    StreamEvent,
    UpstreamResponse,
    UpstreamStream,
)
from localgate.providers.gemini_format import NotTranslatable, new_call_id, to_gemini
from localgate.providers.openai import (
    OpenAIStream,
    dumps,
    error_detail,
    open_events,
    redact,
    status_error,
    transport_error,
)
from localgate.providers.sse import SSEEvent

if TYPE_CHECKING:
    from localgate.config import ChannelSettings

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
}
JSON_HEADERS = {"content-type": "application/json"}
DONE = b"data: [DONE]\n\n"


# -- response ---------------------------------------------------------------------


def usage_from_gemini(meta: Any) -> Usage | None:
    """Normalise ``usageMetadata``: thoughts are billed as output, cached
    content is part of the prompt, odd numbers are clamped."""
    if not isinstance(meta, dict):
        return None

    def num(key: str) -> int:
        return token_count(meta, key)

    prompt = num("promptTokenCount") + num("toolUsePromptTokenCount")
    thoughts = num("thoughtsTokenCount")
    return Usage(
        input=prompt,
        cached_input=min(num("cachedContentTokenCount"), prompt),
        output=num("candidatesTokenCount") + thoughts,
        reasoning=thoughts,
    )


def openai_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def _split_parts(candidate: dict[str, Any]) -> tuple[str, str, list[dict[str, Any]]]:
    """(content, reasoning, tool calls) of one candidate's parts."""
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or ():
        if not isinstance(part, dict):
            continue
        call = part.get("functionCall")
        if isinstance(call, dict):
            calls.append(
                {
                    "id": new_call_id(part.get("thoughtSignature")),
                    "type": "function",
                    "function": {
                        "name": call.get("name", ""),
                        "arguments": json.dumps(call.get("args") or {}, ensure_ascii=False),
                    },
                }
            )
        elif isinstance(part.get("text"), str):
            (thoughts if part.get("thought") else texts).append(part["text"])
    return "".join(texts), "".join(thoughts), calls


def finish_reason(gemini_reason: str, has_calls: bool) -> str:
    reason = FINISH_REASONS.get(gemini_reason, "stop")
    return "tool_calls" if reason == "stop" and has_calls else reason


def block_refusal(data: dict[str, Any]) -> str | None:
    """The refusal text when Gemini blocked the prompt and answered nothing."""
    reason = (data.get("promptFeedback") or {}).get("blockReason")
    if data.get("candidates") or not reason:
        return None
    return f"Gemini blocked the prompt ({reason})"


def from_gemini(data: dict[str, Any], model: str) -> dict[str, Any]:
    """A ``chat.completion`` for a non-stream ``GenerateContentResponse``."""
    choices = []
    message: dict[str, Any]
    refusal = block_refusal(data)
    if refusal:
        message = {"role": "assistant", "content": None, "refusal": refusal}
        choices.append({"index": 0, "message": message, "finish_reason": "content_filter"})
    for position, candidate in enumerate(data.get("candidates") or ()):
        content, reasoning, calls = _split_parts(candidate)
        message = {"role": "assistant", "content": content if content or not calls else None}
        if reasoning:
            message["reasoning_content"] = reasoning
        if calls:
            message["tool_calls"] = calls
        reason = finish_reason(candidate.get("finishReason") or "STOP", bool(calls))
        index = candidate.get("index", position)
        choices.append({"index": index, "message": message, "finish_reason": reason})
    answer: dict[str, Any] = {
        "id": "chatcmpl-" + (data.get("responseId") or secrets.token_hex(12)),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("modelVersion") or model,
        "choices": choices,
    }
    usage = usage_from_gemini(data.get("usageMetadata"))
    if usage is not None:
        answer["usage"] = openai_usage(usage)
    return answer


class StreamTranslator:
    """Stream fragments in, ``chat.completion.chunk`` dicts out.

    A function call arrives whole in one fragment, so it becomes one
    tool_call delta. ``finished`` turns true at the first finishReason (or a
    blocked prompt); ``usage`` follows the last ``usageMetadata``.
    """

    def __init__(self, model: str) -> None:
        self.model = model
        self.usage: Usage | None = None
        self.finished = False
        self._head: dict[str, Any] | None = None
        self._started: set[int] = set()
        self._calls: dict[int, int] = {}  # candidate index -> tool calls so far

    def feed(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        if self._head is None:
            self._head = {
                "id": "chatcmpl-" + (data.get("responseId") or secrets.token_hex(12)),
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": data.get("modelVersion") or self.model,
            }
        usage = usage_from_gemini(data.get("usageMetadata"))
        if usage is not None:
            self.usage = usage
        refusal = block_refusal(data)
        if refusal:
            self.finished = True
            delta = {"role": "assistant", "content": None, "refusal": refusal}
            return [self._chunk(0, delta, "content_filter")]
        chunks = []
        for position, candidate in enumerate(data.get("candidates") or ()):
            chunks.extend(self._candidate(candidate.get("index", position), candidate))
        return chunks

    def _candidate(self, index: int, candidate: dict[str, Any]) -> list[dict[str, Any]]:
        content, reasoning, calls = _split_parts(candidate)
        delta: dict[str, Any] = {}
        if index not in self._started:
            self._started.add(index)
            delta = {"role": "assistant", "content": None if calls and not content else ""}
        if content:
            delta["content"] = content
        if reasoning:
            delta["reasoning_content"] = reasoning
        if calls:
            first = self._calls.get(index, 0)
            self._calls[index] = first + len(calls)
            delta["tool_calls"] = [{"index": first + i, **call} for i, call in enumerate(calls)]
        chunks = [self._chunk(index, delta)] if delta else []
        reason = candidate.get("finishReason")
        if reason:
            self.finished = True
            chunks.append(self._chunk(index, {}, finish_reason(reason, index in self._calls)))
        return chunks

    def usage_chunk(self) -> dict[str, Any] | None:
        if self.usage is None:
            return None
        return {**self._header(), "choices": [], "usage": openai_usage(self.usage)}

    def _header(self) -> dict[str, Any]:
        if self._head is None:
            return {"id": "chatcmpl-" + secrets.token_hex(12), "model": self.model}
        return self._head

    def _chunk(
        self, index: int, delta: dict[str, Any], reason: str | None = None
    ) -> dict[str, Any]:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {**self._header(), "choices": [choice]}


# -- the adapter ------------------------------------------------------------------


def gemini_status_error(
    channel_id: str,
    status: int,
    content: bytes,
    *,
    secret: str | None,
    headers: Mapping[str, str] | None = None,
) -> UpstreamError:
    """status_error, after unwrapping the one-element array some Gemini
    endpoints wrap their ``{"error": {"code", "message", "status"}}`` in."""
    try:
        data = json.loads(content)
    except ValueError:
        data = None
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], dict):
        content = json.dumps(data[0]).encode()
    return status_error(channel_id, status, content, secret=secret, headers=headers)


class GeminiStream(OpenAIStream):
    """Gemini stream fragments read as they arrive, relayed as OpenAI chunks.

    Gemini sends no [DONE]: a clean end of body after a finishReason is a
    complete answer, which gets the usage-only chunk (when asked for) and
    ``data: [DONE]`` here; a clean end without one is a cut.
    """

    def __init__(
        self,
        response: httpx.Response,
        channel_id: str,
        model: str,
        include_usage: bool,
        secret: str | None,
    ) -> None:
        super().__init__(response, channel_id)
        self._secret = secret
        self._translator = StreamTranslator(model)
        self._include_usage = include_usage
        self._out: deque[StreamEvent] = deque()

    async def __anext__(self) -> StreamEvent:
        out = self._out
        while not out:
            if self._closed:
                raise StopAsyncIteration
            if self._pending:
                await self._translate(self._pending.popleft())
            elif self._eof:
                await self._end()
            else:
                await self._read()
        self._seen += 1
        return out.popleft()

    async def _translate(self, event: SSEEvent) -> None:
        if event.data is None:
            return  # a comment or keep-alive: nothing to translate
        try:
            fragment = json.loads(event.data)
        except ValueError:
            fragment = None
        if not isinstance(fragment, dict) or "error" in fragment:
            await self.aclose()
            text = redact(event.data, self._secret)
            raise UpstreamError(
                f"channel {self._channel_id}: upstream sent an error instead of an answer: "
                f"{error_detail(text)}",
                status=200,
                retryable=self._seen == 0,
                body=text,
            )
        for chunk in self._translator.feed(fragment):
            self._emit(chunk)
        self.usage = self._translator.usage

    def _emit(self, chunk: dict[str, Any]) -> None:
        usage_only = self.observe_chunk(chunk)
        self._out.append(StreamEvent(b"data: " + dumps(chunk) + b"\n\n", usage_only))

    async def _end(self) -> None:
        await self.aclose()
        if not self._translator.finished:
            raise UpstreamError(
                f"channel {self._channel_id}: stream cut: the upstream ended it before "
                "a finishReason",
                retryable=self._seen == 0,
            )
        usage_chunk = self._translator.usage_chunk() if self._include_usage else None
        if usage_chunk is not None:
            self._emit(usage_chunk)
        self._out.append(StreamEvent(DONE, False, True))
        self.completed = True


class GeminiProvider(Provider):
    kind: ClassVar[str] = "gemini"
    needs_key: ClassVar[bool] = True
    # Embeddings and the other dialects are not served: the gateway sends chat only.
    endpoints: ClassVar[frozenset[str]] = frozenset({"chat"})
    # Read by to_gemini either way; max_tokens is what the gateway sets.
    output_limit_field: ClassVar[str] = "max_tokens"
    key_headers: ClassVar[Mapping[str, str]] = {"x-goog-api-key": "{key}"}

    def __init__(self, channel: ChannelSettings, client: httpx.AsyncClient) -> None:
        super().__init__(channel, client)
        self._base = channel.base_url.rstrip("/")
        self._timeout = httpx.Timeout(channel.timeout, connect=channel.connect_timeout)
        headers = {"content-type": "application/json", "user-agent": f"localgate/{__version__}"}
        if channel.api_key:
            headers["x-goog-api-key"] = channel.api_key
        headers.update({k.lower(): v for k, v in channel.headers.items()})
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}

    def _prepare(self, req: ProviderRequest, method: str) -> tuple[str, str, bytes]:
        """(model, url, body) of the Gemini call for ``req``."""
        if req.endpoint != "chat":
            raise self._refused(f"a gemini channel serves chat completions, not {req.endpoint}")
        model = str(req.body.get("model") or "").removeprefix("models/")
        if not model:
            raise self._refused("the request names no model")
        try:
            body = to_gemini(req.body)
        except NotTranslatable as exc:
            raise self._refused(str(exc)) from exc
        url = f"{self._base}/models/{urllib.parse.quote(model, safe='')}:{method}"
        return model, url, dumps(body)

    def _refused(self, message: str) -> UpstreamError:
        """A request Gemini cannot take: the caller's to fix, no other route tried."""
        error = {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        return UpstreamError(
            f"channel {self.channel.id}: cannot send this request to Gemini: {message}",
            status=400,
            retryable=False,
            body=json.dumps({"error": error}),
        )

    async def complete(self, req: ProviderRequest) -> UpstreamResponse:
        channel_id = self.channel.id
        model, url, content = self._prepare(req, "generateContent")
        try:
            resp = await self.client.post(
                url, content=content, headers=self._headers, timeout=self._timeout
            )
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise transport_error(channel_id, exc) from exc
        if not 200 <= resp.status_code < 300:
            raise gemini_status_error(
                channel_id,
                resp.status_code,
                resp.content,
                secret=self.channel.api_key,
                headers=resp.headers,
            )
        try:
            data = json.loads(resp.content)
        except ValueError:
            data = None
        if not isinstance(data, dict) or "error" in data:
            text = redact(resp.content, self.channel.api_key)
            raise UpstreamError(
                f"channel {channel_id}: upstream answered HTTP {resp.status_code} "
                f"without an answer: {error_detail(text)}",
                status=resp.status_code,
                retryable=True,
                body=text,
            )
        answer = from_gemini(data, model)
        return UpstreamResponse(
            status=resp.status_code,
            headers=JSON_HEADERS,
            content=dumps(answer),
            body=answer,
            usage=usage_from_gemini(data.get("usageMetadata")),
        )

    async def open_stream(self, req: ProviderRequest) -> UpstreamStream:
        channel_id = self.channel.id
        model, url, content = self._prepare(req, "streamGenerateContent?alt=sse")
        resp = await open_events(
            self.client,
            url,
            content,
            self._stream_headers,
            self._timeout,
            channel_id=channel_id,
            secret=self.channel.api_key,
            on_status=gemini_status_error,
        )
        options = req.body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return GeminiStream(resp, channel_id, model, include_usage, self.channel.api_key)
