"""Anthropic-shaped answers of the fake upstream (tests/upstream.py): ``POST /v1/messages``,
stream or not, shaped by a ``Behavior`` like the OpenAI module.

The answer is ``chunks`` text pieces ("tok0 ", "tok1 ", ...), or, when the
request offers tools (``echo_tools``, the last turn not a tool result,
tool_choice not ``none``), one ``tool_use`` block whose input streams as
``input_json_delta`` fragments. ``reasoning_tokens`` set: a thinking block
first. Usage: ``prompt_tokens`` is Anthropic's ``input_tokens`` (uncached),
``cached_tokens`` its ``cache_read_input_tokens``, ``cache_write_tokens`` its
``cache_creation_input_tokens``, ``completion_tokens`` (else ``chunks``) its
``output_tokens``; ``usage=False`` leaves usage out.

The stream is the real event sequence: message_start, a ping, then per block
content_block_start / content_block_delta... / content_block_stop, then
message_delta (stop reason, cumulative usage) and message_stop. An error
inside a 200 stream needs no new knob: with ``error_body`` set on a 200
stream, it goes out as ``event: error`` right after the first content delta,
and the stream ends there (as Anthropic's does). A string ``error_body``
becomes the message of an ``overloaded_error``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upstream import Behavior

TOOL_INPUT_FRAGMENTS = ("", '{"query": ', '"tok', '0"}')
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _tool_name(behavior: Behavior, body: dict[str, Any]) -> str | None:
    tools = body.get("tools")
    choice = body.get("tool_choice") or {}
    messages = body.get("messages") or [{}]
    last = messages[-1] if isinstance(messages[-1], dict) else {}
    content = last.get("content")
    answered = isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )
    if not (behavior.echo_tools and tools) or choice.get("type") == "none" or answered:
        return None
    if choice.get("type") == "tool":
        return str(choice.get("name"))
    return str(tools[0].get("name", "tool"))


def _usage(behavior: Behavior, body: dict[str, Any], output: int) -> dict[str, Any] | None:
    if not behavior.usage:
        return None
    prompt = behavior.prompt_tokens
    if prompt is None:
        prompt = max(1, len(json.dumps(body.get("messages") or "")) // 4)
    return {
        "input_tokens": prompt,
        "cache_creation_input_tokens": behavior.cache_write_tokens or 0,
        "cache_read_input_tokens": behavior.cached_tokens or 0,
        "output_tokens": behavior.completion_tokens
        if behavior.completion_tokens is not None
        else output,
    }


def _pieces(behavior: Behavior) -> list[str]:
    return [f"tok{i} " for i in range(behavior.chunks)]


def message(behavior: Behavior, body: dict[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if behavior.reasoning_tokens is not None:
        content.append({"type": "thinking", "thinking": "fake thinking", "signature": "sig"})
    name = _tool_name(behavior, body)
    if name is not None:
        arguments = json.loads("".join(TOOL_INPUT_FRAGMENTS))
        content.append({"type": "tool_use", "id": "toolu_fake_0", "name": name, "input": arguments})
    else:
        content.append({"type": "text", "text": "".join(_pieces(behavior))})
    answer: dict[str, Any] = {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake"),
        "content": content,
        "stop_reason": "end_turn" if name is None else "tool_use",
        "stop_sequence": None,
    }
    usage = _usage(behavior, body, behavior.chunks)
    if usage is not None:
        answer["usage"] = usage
    return answer


def _block(index: int, start: dict[str, Any], deltas: list[dict[str, Any]]) -> list[bytes]:
    events = [sse("content_block_start", {"type": "content_block_start", "index": index, **start})]
    events += [
        sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
        for d in deltas
    ]
    events.append(sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def _error_event(error_body: Any) -> bytes:
    if isinstance(error_body, dict):
        return sse("error", error_body)
    text = error_body.decode() if isinstance(error_body, bytes) else str(error_body)
    return sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": text}})


def stream_events(behavior: Behavior, body: dict[str, Any]) -> list[bytes]:
    answer = message(behavior, body)
    usage = answer.get("usage")
    start_usage = {**usage, "output_tokens": 1} if usage else None
    start = {**answer, "content": [], "stop_reason": None}
    if start_usage is None:
        start.pop("usage", None)
    else:
        start["usage"] = start_usage
    events = [sse("message_start", {"type": "message_start", "message": start})]
    events.append(sse("ping", {"type": "ping"}))
    blocks: list[list[bytes]] = []
    for index, block in enumerate(answer["content"]):
        if block["type"] == "thinking":
            deltas = [{"type": "thinking_delta", "thinking": block["thinking"]}]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
            empty = {"type": "thinking", "thinking": "", "signature": ""}
        elif block["type"] == "tool_use":
            deltas = [{"type": "input_json_delta", "partial_json": f} for f in TOOL_INPUT_FRAGMENTS]
            empty = {**block, "input": {}}
        else:
            deltas = [{"type": "text_delta", "text": piece} for piece in _pieces(behavior)]
            empty = {"type": "text", "text": ""}
        blocks.append(_block(index, {"content_block": empty}, deltas))
    for block_events in blocks:
        if behavior.error_body is not None and len(block_events) > 2:
            # Cut after the first content delta: the start, one delta, then the error.
            return [*events, *block_events[:2], _error_event(behavior.error_body)]
        events += block_events
    delta: dict[str, Any] = {
        "type": "message_delta",
        "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
    }
    if usage:
        delta["usage"] = usage
    events.append(sse("message_delta", delta))
    events.append(sse("message_stop", {"type": "message_stop"}))
    return events


# -- the wire-format interface (tests/upstream.py WIRE_FORMATS) -------------------


def is_stream(path: str, body: dict[str, Any]) -> bool:
    return body.get("stream") is True


def answer(behavior: Behavior, path: str, body: dict[str, Any]) -> dict[str, Any]:
    return message(behavior, body)


def events(behavior: Behavior, path: str, body: dict[str, Any]) -> list[bytes]:
    return stream_events(behavior, body)


def error(status: int, message: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}
