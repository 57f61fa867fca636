"""OpenAI-shaped answers of the fake upstream (tests/upstream.py): chat
completions, stream chunks and embeddings, shaped by a ``Behavior``.

Kept apart from the server so other dialects (Anthropic, Gemini, Responses)
sit beside it as their own modules, each with the same four functions:
``is_stream``, ``answer``, ``events`` and ``error``.

``error_body`` on a 200 stream: the error goes out as a ``data:`` chunk after
the first delta (first of all with ``chunks=0``), followed by ``[DONE]``, as
relays that fail late do.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upstream import Behavior


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _tool_call(behavior: Behavior, body: dict[str, Any]) -> dict[str, Any] | None:
    tools = body.get("tools")
    choice = body.get("tool_choice")
    messages = body.get("messages") or [{}]
    last_role = messages[-1].get("role") if isinstance(messages[-1], dict) else None
    if not (behavior.echo_tools and tools) or choice == "none" or last_role == "tool":
        return None
    name = tools[0].get("function", {}).get("name", "tool")
    if isinstance(choice, dict):
        name = choice.get("function", {}).get("name", name)
    return {"id": "call_fake_0", "type": "function", "function": {"name": name, "arguments": "{}"}}


def _usage(behavior: Behavior, body: dict[str, Any], completion: int) -> dict[str, Any] | None:
    if not behavior.usage:
        return None
    prompt = behavior.prompt_tokens
    if prompt is None:
        prompt = max(1, len(json.dumps(body.get("messages") or body.get("input") or "")) // 4)
    if behavior.completion_tokens is not None:
        completion = behavior.completion_tokens
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if behavior.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": behavior.cached_tokens}
    if behavior.reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": behavior.reasoning_tokens}
    return usage


def completion(behavior: Behavior, body: dict[str, Any]) -> dict[str, Any]:
    call = _tool_call(behavior, body)
    if call is not None:
        message = {"role": "assistant", "content": None, "tool_calls": [call]}
        finish = "tool_calls"
    else:
        message = {"role": "assistant", "content": "".join(_pieces(behavior))}
        finish = "stop"
    answer: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
    }
    usage = _usage(behavior, body, behavior.chunks)
    if usage is not None:
        answer["usage"] = usage
    return answer


def _pieces(behavior: Behavior) -> list[str]:
    return [f"tok{i} " for i in range(behavior.chunks)]


def chunks(behavior: Behavior, body: dict[str, Any]) -> list[bytes]:
    options = body.get("stream_options") or {}
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    head: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
    }
    if include_usage and behavior.usage:
        head["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            {
                **head,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
        )

    call = _tool_call(behavior, body)
    if call is not None:
        first = {
            **call,
            "index": 0,
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        events = [
            chunk({"role": "assistant", "content": None, "tool_calls": [first]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}),
            chunk({}, "tool_calls"),
        ]
    else:
        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in _pieces(behavior)]
        events.append(chunk({}, "stop"))
    if behavior.error_body is not None:
        # A relay that fails late: an error after the first delta, then [DONE] anyway.
        error = behavior.error_body
        if not isinstance(error, dict):
            error = {"error": {"message": str(error), "type": "server_error"}}
        before = events[:2] if behavior.chunks else []  # chunks=0: the error comes first
        return [*before, sse(error), b"data: [DONE]\n\n"]
    usage = _usage(behavior, body, behavior.chunks)
    if include_usage and usage is not None:
        events.append(sse({**head, "choices": [], "usage": usage}))
    events.append(b"data: [DONE]\n\n")
    return events


def embeddings(behavior: Behavior, body: dict[str, Any]) -> dict[str, Any]:
    items = body.get("input")
    if not isinstance(items, list) or (items and isinstance(items[0], int)):
        items = [items]
    data = []
    for index, item in enumerate(items):
        digest = hashlib.sha256(json.dumps(item).encode()).digest()
        vector = [b / 255 for b in digest[:8]]
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack("<8f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    answer: dict[str, Any] = {"object": "list", "data": data, "model": body.get("model", "fake")}
    if behavior.usage:
        prompt = behavior.prompt_tokens
        if prompt is None:
            prompt = sum(len(str(item).split()) for item in items)
        answer["usage"] = {"prompt_tokens": prompt, "total_tokens": prompt}
    return answer


# -- the wire-format interface (tests/upstream.py WIRE_FORMATS) -------------------


def is_stream(path: str, body: dict[str, Any]) -> bool:
    return path.endswith("/chat/completions") and body.get("stream") is True


def answer(behavior: Behavior, path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path.endswith("/embeddings"):
        return embeddings(behavior, body)
    return completion(behavior, body)


def events(behavior: Behavior, path: str, body: dict[str, Any]) -> list[bytes]:
    return chunks(behavior, body)


def error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "fake_error", "param": None, "code": None}}
