"""Gemini-shaped answers of the fake upstream (tests/upstream.py):
``POST .../models/{model}:generateContent`` and ``:streamGenerateContent``.

The same knobs as the OpenAI module, read the way localgate normalises usage:
``chunks`` text pieces (one stream fragment each, the last carrying
``finishReason`` and ``usageMetadata``), ``prompt_tokens`` ->
``promptTokenCount`` (cached tokens included, as Gemini counts them),
``cached_tokens`` -> ``cachedContentTokenCount``, ``reasoning_tokens`` ->
``thoughtsTokenCount``, and ``completion_tokens`` (default ``chunks``) all
billed output, so ``candidatesTokenCount`` is what is left once the thoughts
are taken out: the same knobs give the same Usage as the OpenAI module.
``echo_tools`` answers with a ``functionCall`` part (carrying a
``thoughtSignature``, as Gemini 3 does) when tools are offered, calling is not
turned off and the last turn is not a ``functionResponse``. Stream events end
with ``\\r\\n\\r\\n``, as Google's servers send them.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from upstream import Behavior

# Base64 with "+" and "/" in it, so the adapter's id encoding is exercised.
SIGNATURE = base64.b64encode(b"\xfb\xef\xbe fake thought signature \xff").decode()
GOOGLE_STATUSES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def sse(obj: Any) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\r\n\r\n"


def model_of(path: str) -> str:
    return path.rsplit("/", 1)[-1].partition(":")[0]


def _function_call(behavior: Behavior, body: dict[str, Any]) -> dict[str, Any] | None:
    declarations = [
        d for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()
    ]
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    contents = body.get("contents") or [{}]
    last_parts = contents[-1].get("parts") or [{}]
    answered = any("functionResponse" in part for part in last_parts)
    if not (behavior.echo_tools and declarations) or config.get("mode") == "NONE" or answered:
        return None
    name = (config.get("allowedFunctionNames") or [declarations[0]["name"]])[0]
    return {"functionCall": {"name": name, "args": {}}, "thoughtSignature": SIGNATURE}


def _usage(behavior: Behavior, body: dict[str, Any]) -> dict[str, Any] | None:
    if not behavior.usage:
        return None
    prompt = behavior.prompt_tokens
    if prompt is None:
        prompt = max(1, len(json.dumps(body.get("contents") or "")) // 4)
    thoughts = behavior.reasoning_tokens or 0
    output = behavior.chunks if behavior.completion_tokens is None else behavior.completion_tokens
    candidates = max(output - thoughts, 0)
    meta: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
    }
    if behavior.cached_tokens is not None:
        meta["cachedContentTokenCount"] = behavior.cached_tokens
    if behavior.reasoning_tokens is not None:
        meta["thoughtsTokenCount"] = thoughts
    return meta


def _response(
    path: str, parts: list[dict[str, Any]], finish: str | None, usage: dict[str, Any] | None
) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
    if finish:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        out["usageMetadata"] = usage
    out["modelVersion"] = model_of(path)
    out["responseId"] = "fake-response-0"
    return out


def _pieces(behavior: Behavior) -> list[str]:
    return [f"tok{i} " for i in range(behavior.chunks)]


# -- the wire-format interface (tests/upstream.py WIRE_FORMATS) -------------------


def is_stream(path: str, body: dict[str, Any]) -> bool:
    return path.endswith(":streamGenerateContent")


def answer(behavior: Behavior, path: str, body: dict[str, Any]) -> dict[str, Any]:
    call = _function_call(behavior, body)
    parts = [call] if call else [{"text": "".join(_pieces(behavior))}]
    return _response(path, parts, "STOP", _usage(behavior, body))


def events(behavior: Behavior, path: str, body: dict[str, Any]) -> list[bytes]:
    usage = _usage(behavior, body)
    call = _function_call(behavior, body)
    if call is not None:
        return [sse(_response(path, [call], "STOP", usage))]
    pieces = _pieces(behavior) or [""]
    out = [sse(_response(path, [{"text": piece}], None, None)) for piece in pieces[:-1]]
    out.append(sse(_response(path, [{"text": pieces[-1]}], "STOP", usage)))
    return out


def error(status: int, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": message,
            "status": GOOGLE_STATUSES.get(status, "UNKNOWN"),
        }
    }
