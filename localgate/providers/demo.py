"""The built-in offline model (channel kind ``demo``).

It answers without any network, through the same door as a real upstream:
same input, same output. The answer explains what it is, echoes a short
summary of the last user message and says how to connect a real channel; it
streams word by word at ``options.chunk_delay_ms`` (default 15 ms), honours
``max_tokens`` / ``max_completion_tokens`` and ``n``, calls a tool when
``tool_choice`` forces one, and reports exact usage counted with tiktoken:
input as :func:`localgate.tokens.count_chat_input_tokens` counts the request,
output as the tokens of what it produced (content, or tool name + arguments).
Embeddings are deterministic unit vectors derived from a hash of the input.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import math
import re
import struct
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from localgate import tokens
from localgate.core.pricing import Usage
from localgate.errors import ConfigError, UpstreamError
from localgate.providers.base import (
    Provider,
    ProviderRequest,
    StreamEvent,
    UpstreamResponse,
    UpstreamStream,
)

if TYPE_CHECKING:
    import httpx

    from localgate.config import ChannelSettings

DEFAULT_CHUNK_DELAY_MS = 15
EMBEDDING_DIMS = 256
MAX_CHOICES = 16
SUMMARY_WORDS = 24
FINGERPRINT = "fp_localgate_demo"
JSON_HEADERS = {"content-type": "application/json"}
SSE_HEADERS = {"content-type": "text/event-stream"}
_WORD = re.compile(r"\S+\s*")
_PLACEHOLDERS = {
    "string": "demo",
    "integer": 0,
    "number": 0,
    "boolean": False,
    "array": [],
    "object": {},
    "null": None,
}


def _digest(*parts: object) -> str:
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _text_and_images(content: object) -> tuple[str, int]:
    if isinstance(content, str):
        return content, 0
    texts: list[str] = []
    images = 0
    for part in content if isinstance(content, list) else ():
        if isinstance(part, Mapping):
            if isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif part.get("type") in ("image_url", "input_image", "image"):
                images += 1
    return " ".join(texts), images


def _summary(text: str) -> tuple[str, int]:
    words = text.split()
    short = " ".join(words[:SUMMARY_WORDS]) + (" ..." if len(words) > SUMMARY_WORDS else "")
    return short, len(words)


def compose_answer(messages: object) -> str:
    """The demo's reply to a conversation: a pure function of the messages."""
    history = [m for m in messages if isinstance(m, Mapping)] if isinstance(messages, list) else []
    last = history[-1] if history else {}
    intro = (
        "Hello! I am the offline demo model built into localgate, so this reply "
        "was written on your machine without calling any AI provider."
    )
    if last.get("role") == "tool":
        text, _ = _text_and_images(last.get("content"))
        short, _ = _summary(text)
        echo = f'Your tool answered: "{short}". Thanks, that completes the tool round trip.'
    else:
        user = next((m for m in reversed(history) if m.get("role") == "user"), None)
        if user is None:
            echo = "Your request had no user message, so there is nothing to echo."
        else:
            text, images = _text_and_images(user.get("content"))
            short, count = _summary(text)
            extra = f", {images} image{'s' if images != 1 else ''}" if images else ""
            plural = "s" if count != 1 else ""
            echo = f'You said: "{short}" ({count} word{plural}{extra}).'
    outro = (
        "localgate routed, metered and charged this request like a real one: open "
        "its receipt to see the tokens, the price and the ledger entry. To talk to "
        "a real model, set a provider key such as OPENAI_API_KEY or add a channel "
        "to config.toml, restart localgate, and pick that model."
    )
    return f"{intro} {echo} {outro}"


def _placeholder(schema: object) -> Any:
    """A value that fits a JSON schema, good enough to exercise a tool call."""
    if not isinstance(schema, Mapping):
        return "demo"
    if "default" in schema:
        return schema["default"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        return _arguments(schema)
    return _PLACEHOLDERS.get(kind, "demo") if isinstance(kind, str) else "demo"


def _arguments(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Only the required fields: the smallest call a schema accepts."""
    props = schema.get("properties")
    props = props if isinstance(props, Mapping) else {}
    required = schema.get("required")
    names = [n for n in required if isinstance(n, str)] if isinstance(required, list) else []
    return {name: _placeholder(props.get(name)) for name in names}


def forced_tool(body: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The function a request forces: tool_choice "required" or a named function."""
    tools = body.get("tools")
    tools = [t for t in tools if isinstance(t, Mapping)] if isinstance(tools, list) else []
    functions = [t["function"] for t in tools if isinstance(t.get("function"), Mapping)]
    choice = body.get("tool_choice")
    if not functions or choice in (None, "auto", "none"):
        return None
    if choice == "required":
        return functions[0]
    if isinstance(choice, Mapping):
        named = choice.get("function")
        name = named.get("name") if isinstance(named, Mapping) else choice.get("name")
        return next((f for f in functions if f.get("name") == name), None)
    return None


def _limit(body: Mapping[str, Any]) -> int | None:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None


def truncate(pieces: list[str], limit: int, model: str | None) -> list[str]:
    """The longest word prefix whose token count fits ``limit``."""
    lo, hi = 0, len(pieces)
    while lo < hi:  # binary search: token counts grow with the prefix
        mid = (lo + hi + 1) // 2
        if tokens.count_tokens("".join(pieces[:mid]), model) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return pieces[:lo]


class Reply:
    """One chat answer, computed up front: the demo is deterministic."""

    def __init__(self, body: Mapping[str, Any]) -> None:
        model = body.get("model")
        self.model = model if isinstance(model, str) else "demo"
        n = body.get("n")
        self.n = min(max(n, 1), MAX_CHOICES) if isinstance(n, int) else 1
        self.id = "chatcmpl-demo-" + _digest(
            self.model,
            body.get("messages"),
            body.get("tools"),
            body.get("tool_choice"),
            self.n,
            _limit(body),
        )
        self.created = int(time.time())
        tool = forced_tool(body)
        self.tool_call: dict[str, Any] | None = None
        self.pieces: list[str] = []
        if tool is not None:
            name = str(tool.get("name", "tool"))
            params = tool.get("parameters")
            args = _arguments(params) if isinstance(params, Mapping) else {}
            self.tool_call = {
                "id": "call_demo_" + _digest(self.id, name)[:16],
                "type": "function",
                "function": {"name": name, "arguments": json.dumps(args)},
            }
            self.finish_reason = "tool_calls"
            per_choice = tokens.count_tokens(name, self.model) + tokens.count_tokens(
                self.tool_call["function"]["arguments"], self.model
            )
        else:
            pieces = _WORD.findall(compose_answer(body.get("messages")))
            limit = _limit(body)
            self.pieces = pieces if limit is None else truncate(pieces, limit, self.model)
            self.finish_reason = "length" if len(self.pieces) < len(pieces) else "stop"
            per_choice = tokens.count_tokens("".join(self.pieces), self.model)
        self.usage = Usage(input=tokens.count_chat_input_tokens(body), output=per_choice * self.n)

    def usage_json(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.usage.input,
            "completion_tokens": self.usage.output,
            "total_tokens": self.usage.input + self.usage.output,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0},
        }

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "refusal": None}
        if self.tool_call is not None:
            message.update(content=None, tool_calls=[self.tool_call])
        else:
            message["content"] = "".join(self.pieces)
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": self.finish_reason}
            for i in range(self.n)
        ]
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            "usage": self.usage_json(),
        }

    def chunks(self, include_usage: bool) -> list[tuple[dict[str, Any], bool]]:
        """(chunk, paced) pairs in order; paced chunks wait chunk_delay first."""
        deltas: list[tuple[dict[str, Any], bool]] = []
        if self.tool_call is not None:
            call = self.tool_call
            deltas.append(
                (
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call["id"],
                                "type": "function",
                                "function": {"name": call["function"]["name"], "arguments": ""},
                            }
                        ],
                    },
                    False,
                )
            )
            deltas.append(
                (
                    {
                        "tool_calls": [
                            {"index": 0, "function": {"arguments": call["function"]["arguments"]}}
                        ]
                    },
                    True,
                )
            )
        else:
            deltas.append(({"role": "assistant", "content": "", "refusal": None}, False))
            deltas.extend(({"content": piece}, i > 0) for i, piece in enumerate(self.pieces))
        head = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
        }
        if include_usage:  # as OpenAI does: every chunk says usage null but the last
            head["usage"] = None
        out: list[tuple[dict[str, Any], bool]] = []
        for delta, paced in deltas:
            for i in range(self.n):
                choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": None}
                out.append(({**head, "choices": [choice]}, paced and i == 0))
        for i in range(self.n):
            choice = {
                "index": i,
                "delta": {},
                "logprobs": None,
                "finish_reason": self.finish_reason,
            }
            out.append(({**head, "choices": [choice]}, False))
        if include_usage:
            out.append(({**head, "choices": [], "usage": self.usage_json()}, False))
        return out


class DemoStream(UpstreamStream):
    """Pre-computed chunks, released at the demo's pace."""

    def __init__(self, reply: Reply, *, include_usage: bool, delay: float) -> None:
        super().__init__(status=200, headers=SSE_HEADERS)
        self._chunks = reply.chunks(include_usage)
        self._reply_usage = reply.usage
        self._delay = delay
        self._next = 0
        self._closed = False

    async def __anext__(self) -> StreamEvent:
        if self._closed:
            raise StopAsyncIteration
        index = self._next
        if index == len(self._chunks):
            self._next += 1
            self.completed = True
            # The demo knows its usage even when the client did not ask for it.
            self.usage = self.usage or self._reply_usage
            return StreamEvent(b"data: [DONE]\n\n", False, True)
        if index > len(self._chunks):
            raise StopAsyncIteration
        chunk, paced = self._chunks[index]
        if paced and self._delay:
            await asyncio.sleep(self._delay)
            if self._closed:
                raise StopAsyncIteration
        self._next += 1
        usage_only = self.observe_chunk(chunk)
        return StreamEvent(b"data: " + _dumps(chunk) + b"\n\n", usage_only, False)

    async def aclose(self) -> None:
        self._closed = True


def embed(item: object, dims: int) -> list[float]:
    """A deterministic unit vector for one input (a string or a token array)."""
    data = item.encode() if isinstance(item, str) else _dumps(item)
    raw = hashlib.shake_256(data).digest(2 * dims)
    values = [v / 32767.5 - 1.0 for v in struct.unpack(f"<{dims}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


class DemoProvider(Provider):
    kind: ClassVar[str] = "demo"
    needs_key: ClassVar[bool] = False
    offline: ClassVar[bool] = True
    configurable: ClassVar[bool] = False  # built in: always there, never added by hand

    def __init__(self, channel: ChannelSettings, client: httpx.AsyncClient) -> None:
        super().__init__(channel, client)
        value = channel.options.get("chunk_delay_ms", DEFAULT_CHUNK_DELAY_MS)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(
                f"channel {channel.id}: options.chunk_delay_ms must be a number of "
                f"milliseconds >= 0, got {value!r}"
            )
        self.chunk_delay = value / 1000

    async def complete(self, req: ProviderRequest) -> UpstreamResponse:
        if req.endpoint == "embeddings":
            body = self._embeddings(req.body)
            usage = Usage(input=body["usage"]["prompt_tokens"])
        else:
            reply = Reply(req.body)
            body, usage = reply.completion(), reply.usage
        return UpstreamResponse(
            status=200, headers=JSON_HEADERS, content=_dumps(body), body=body, usage=usage
        )

    async def open_stream(self, req: ProviderRequest) -> UpstreamStream:
        if req.endpoint != "chat":
            raise UpstreamError(f"channel {self.channel.id}: only chat completions stream")
        options = req.body.get("stream_options")
        include_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        return DemoStream(Reply(req.body), include_usage=include_usage, delay=self.chunk_delay)

    def _embeddings(self, body: Mapping[str, Any]) -> dict[str, Any]:
        items = body.get("input")
        # A flat list of ints is one token array, not many inputs.
        if not isinstance(items, list) or (items and all(isinstance(i, int) for i in items)):
            items = [items]
        dims = body.get("dimensions")
        dims = dims if isinstance(dims, int) and 0 < dims <= 4096 else EMBEDDING_DIMS
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, item in enumerate(items):
            vector: Any = embed(item, dims)
            if as_base64:  # what the openai SDK asks for by default
                vector = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": vector})
        used = tokens.count_embedding_input_tokens(body)
        model = body.get("model") if isinstance(body.get("model"), str) else "demo-embedding"
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": used, "total_tokens": used},
        }
