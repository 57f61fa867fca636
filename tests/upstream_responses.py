"""OpenAI Responses answers of the fake upstream (tests/upstream.py): ``POST /v1/responses``,
a ``response`` object or, with ``"stream": true``, the real event sequence.

Written apart from localgate's own translation (localgate/dialects/) so tests
compare two independent readings of the API. Knobs, as for chat completions:

- ``chunks``: the number of ``output_text.delta`` events ("tok0 ", "tok1 ", ...)
  and the default output tokens;
- ``usage=False``: ``usage`` is null; ``prompt_tokens``, ``completion_tokens``,
  ``cached_tokens``, ``cache_write_tokens`` and ``reasoning_tokens`` set the
  usage numbers;
- ``echo_tools``: a ``function_call`` item answers when function tools are
  offered, ``tool_choice`` is not "none" and the last input item is not a
  ``function_call_output``;
- ``error_body`` on a 200 stream: an ``error`` event (its message from the
  body) right after the first delta, and nothing after it, as when OpenAI fails
  mid-answer; ``cut_after`` is handled by the server.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upstream import Behavior

RESPONSE_ID = "resp_fake"


def sse(kind: str, data: dict[str, Any]) -> bytes:
    payload = json.dumps({"type": kind, **data}, separators=(",", ":"))
    return f"event: {kind}\ndata: {payload}\n\n".encode()


def _call(behavior: Behavior, body: dict[str, Any]) -> dict[str, Any] | None:
    tools = [t for t in body.get("tools") or () if t.get("type") == "function"]
    items = body.get("input")
    last = items[-1] if isinstance(items, list) and items else {}
    choice = body.get("tool_choice")
    if not (behavior.echo_tools and tools) or choice == "none":
        return None
    if isinstance(last, dict) and last.get("type") == "function_call_output":
        return None
    name = choice["name"] if isinstance(choice, dict) and "name" in choice else tools[0]["name"]
    return {
        "id": "fc_fake_0",
        "type": "function_call",
        "status": "completed",
        "call_id": "call_fake_0",
        "name": name,
        "arguments": "{}",
    }


def _usage(behavior: Behavior, body: dict[str, Any]) -> dict[str, Any] | None:
    if not behavior.usage:
        return None
    prompt = behavior.prompt_tokens
    if prompt is None:
        prompt = max(1, len(json.dumps(body.get("input") or "")) // 4)
    output = behavior.chunks if behavior.completion_tokens is None else behavior.completion_tokens
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": behavior.cached_tokens or 0,
            "cache_write_tokens": behavior.cache_write_tokens or 0,
        },
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": behavior.reasoning_tokens or 0},
        "total_tokens": prompt + output,
    }


def _pieces(behavior: Behavior) -> list[str]:
    return [f"tok{i} " for i in range(behavior.chunks)]


def _message(text: str) -> dict[str, Any]:
    return {
        "id": "msg_fake_0",
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


def _response(body: dict[str, Any], status: str, output: list[Any], usage: Any) -> dict[str, Any]:
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body.get("model", "fake"),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": body.get("previous_response_id"),
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": 1.0,
        "usage": usage,
        "metadata": {},
    }


def _events(behavior: Behavior, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(type, data) pairs in the order OpenAI sends them, sequence numbers aside."""
    started = _response(body, "in_progress", [], None)
    events = [("response.created", {"response": started})]
    events.append(("response.in_progress", {"response": started}))
    call = _call(behavior, body)
    if call is not None:
        ids = {"output_index": 0, "item_id": call["id"]}
        events.append(("response.output_item.added", {"output_index": 0, "item": call}))
        events.append(("response.function_call_arguments.delta", {**ids, "delta": "{}"}))
        events.append(("response.function_call_arguments.done", {**ids, "arguments": "{}"}))
        item = call
    else:
        ids = {"output_index": 0, "item_id": "msg_fake_0", "content_index": 0}
        part = {"type": "output_text", "text": "", "annotations": []}
        added = {**_message(""), "status": "in_progress", "content": []}
        events.append(("response.output_item.added", {"output_index": 0, "item": added}))
        events.append(("response.content_part.added", {**ids, "part": part}))
        for piece in _pieces(behavior):
            events.append(("response.output_text.delta", {**ids, "delta": piece, "logprobs": []}))
        text = "".join(_pieces(behavior))
        events.append(("response.output_text.done", {**ids, "text": text, "logprobs": []}))
        events.append(("response.content_part.done", {**ids, "part": {**part, "text": text}}))
        item = _message(text)
    events.append(("response.output_item.done", {"output_index": 0, "item": item}))
    done = _response(body, "completed", [item], _usage(behavior, body))
    events.append(("response.completed", {"response": done}))
    return events


def _error_event(error_body: Any) -> tuple[str, dict[str, Any]]:
    message = error_body
    if isinstance(error_body, dict):
        error = error_body.get("error", error_body)
        message = error.get("message", "fake upstream failed") if isinstance(error, dict) else error
    if isinstance(message, bytes):
        message = message.decode()
    return "error", {"code": "server_error", "message": str(message), "param": None}


# -- the wire-format interface (tests/upstream.py WIRE_FORMATS) -------------------


def is_stream(path: str, body: dict[str, Any]) -> bool:
    return body.get("stream") is True


def answer(behavior: Behavior, path: str, body: dict[str, Any]) -> dict[str, Any]:
    call = _call(behavior, body)
    item = call if call is not None else _message("".join(_pieces(behavior)))
    return _response(body, "completed", [item], _usage(behavior, body))


def events(behavior: Behavior, path: str, body: dict[str, Any]) -> list[bytes]:
    pairs = _events(behavior, body)
    if behavior.error_body is not None:
        first_delta = next(i for i, (kind, _) in enumerate(pairs) if kind.endswith(".delta"))
        pairs = [*pairs[: first_delta + 1], _error_event(behavior.error_body)]
    return [sse(kind, {**data, "sequence_number": n}) for n, (kind, data) in enumerate(pairs)]


def error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "fake_error", "param": None, "code": None}}


# -- a check the tests share ---------------------------------------------------------


def validate_sdk_event(data: dict[str, Any]) -> Any:
    """Validate one event payload with the openai SDK's model for its type (strict
    pydantic validation, unlike the SDK's own lenient parsing); return the model."""
    import typing

    from openai.types.responses import ResponseStreamEvent

    union = typing.get_args(ResponseStreamEvent)[0]
    models = {
        typing.get_args(m.model_fields["type"].annotation)[0]: m for m in typing.get_args(union)
    }
    return models[data["type"]].model_validate(data)
