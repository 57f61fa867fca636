"""OpenAI chat -> Anthropic Messages: what localgate sends a channel of kind ``anthropic``.

:func:`chat_to_messages` turns an OpenAI chat request into an Anthropic one and
:func:`message_to_chat_completion` turns Anthropic's answer back into a chat
completion. The reverse direction (Anthropic clients) is
:mod:`localgate.dialects.anthropic`; docs/anthropic.md lists every mapping.

Pure: no I/O, nothing but the standard library, ``Usage`` and our errors.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from localgate.dialects.anthropic import (
    FINISH_REASONS,
    chat_usage,
    parse_arguments,
    text_of,
    usage_from_anthropic,
)
from localgate.errors import BadRequest

CHAT_TOOL_CHOICES = {"auto": "auto", "required": "any", "none": "none"}
# reasoning_effort -> thinking.budget_tokens. Anthropic's minimum budget is
# 1024 and it must stay below max_tokens; "minimal"/"none" turn thinking off.
THINKING_BUDGETS = {"low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}
NO_THINKING = frozenset({"minimal", "none"})
MIN_THINKING_BUDGET = 1024


# --- OpenAI chat request -> Anthropic request ----------------------------------------


def _cached(block: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    if isinstance(part.get("cache_control"), dict):
        block["cache_control"] = part["cache_control"]
    return block


def _text_blocks(content: object, path: str) -> list[dict[str, Any]]:
    """Text content (a string or text parts) as text blocks; empty ones go (Anthropic
    refuses them)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise BadRequest(f"{path}.content: must be a string or a list", param=f"{path}.content")
    blocks = []
    for j, part in enumerate(content):
        where = f"{path}.content.{j}"
        if not isinstance(part, dict) or part.get("type") not in ("text", "refusal"):
            raise BadRequest(f"{where}: only text parts are allowed here", param=where)
        text = text_of(part, where, str(part["type"]))
        if text:
            blocks.append(_cached({"type": "text", "text": text}, part))
    return blocks


def _image_source(url: str, path: str) -> dict[str, Any]:
    if url.startswith("data:"):
        head, comma, data = url[5:].partition(",")
        media, _, encoding = head.partition(";")
        if comma and encoding == "base64" and media:
            return {"type": "base64", "media_type": media, "data": data}
    elif url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise BadRequest(f"{path}: an image must be a base64 data URL or an http(s) URL", param=path)


def _user_blocks(content: object, path: str) -> list[dict[str, Any]]:
    if not isinstance(content, list):
        return _text_blocks(content, path)
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        where = f"{path}.content.{j}"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            blocks += _text_blocks([part], path)
        elif kind == "image_url":
            image = part["image_url"]
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                raise BadRequest(f"{where}.image_url.url: must be a string", param=where)
            blocks.append(_cached({"type": "image", "source": _image_source(url, where)}, part))
        elif kind == "file" and isinstance(part.get("file"), dict):
            data = part["file"].get("file_data")
            source = _image_source(data, where) if isinstance(data, str) else None
            if source is None or source["type"] != "base64":
                raise BadRequest(f"{where}: only inline file_data reaches Anthropic", param=where)
            blocks.append(_cached({"type": "document", "source": source}, part))
        else:
            raise BadRequest(f"{where}: Anthropic cannot take a {kind} part", param=where)
    return blocks


def _assistant_blocks(message: dict[str, Any], path: str) -> list[dict[str, Any]]:
    # Continue and others send content "" or None beside tool calls: no empty block.
    blocks = _text_blocks(message.get("content"), path)
    calls = message.get("tool_calls") or []
    if not isinstance(calls, list):
        raise BadRequest(f"{path}.tool_calls: must be a list", param=f"{path}.tool_calls")
    for k, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            where = f"{path}.tool_calls.{k}"
            raise BadRequest(f"{where}: a tool call needs a function name", param=where)
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{k}"),
                "name": function["name"],
                "input": parse_arguments(function.get("arguments")),
            }
        )
    return blocks


def _tool_result(message: dict[str, Any], path: str) -> dict[str, Any]:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str):
        raise BadRequest(f"{path}.tool_call_id: must be a string", param=f"{path}.tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
    content = message.get("content")
    if isinstance(content, list):
        block["content"] = _text_blocks(content, path)
    elif content:
        block["content"] = str(content)
    return block


def _turns(messages: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating turns): system and developer messages go to
    ``system`` wherever they stand (aider sends one last); same-role turns merge."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system += _text_blocks(message.get("content"), path)
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), path)
        elif role == "assistant":
            blocks = _assistant_blocks(message, path)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, path)]
        else:
            raise BadRequest(f"{path}.role: unknown role {role!r}", param=f"{path}.role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:  # tool results must open their user turn
        turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    if turns and turns[-1]["role"] == "assistant":
        _trim_prefill(turns[-1])
    return system, turns


def _trim_prefill(turn: dict[str, Any]) -> None:
    """Anthropic refuses a final assistant turn ending in whitespace."""
    last = turn["content"][-1]
    if last["type"] == "text":
        last["text"] = last["text"].rstrip()
        if not last["text"]:
            turn["content"].pop()


def _limit(body: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    return default


def _anthropic_tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if not tools:
        return
    if not isinstance(tools, list):
        raise BadRequest("tools must be a list of function tools", param="tools")
    converted = []
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if (
            not isinstance(tool, dict)
            or tool.get("type") != "function"
            or not isinstance(function, dict)
        ):
            raise BadRequest(f"tools.{i}: only function tools reach Anthropic", param=f"tools.{i}")
        entry: dict[str, Any] = {
            "name": text_of(function, f"tools.{i}.function", "name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if isinstance(function.get("description"), str):
            entry["description"] = function["description"]
        converted.append(_cached(entry, tool))
    out["tools"] = converted
    choice = body.get("tool_choice")
    mapped: dict[str, Any] | None = None
    if isinstance(choice, str) and choice in CHAT_TOOL_CHOICES:
        mapped = {"type": CHAT_TOOL_CHOICES[choice]}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        mapped = {"type": "tool", "name": text_of(choice["function"], "tool_choice", "name")}
    elif choice is not None:
        raise BadRequest("tool_choice: unknown value", param="tool_choice")
    if body.get("parallel_tool_calls") is False and (mapped or {}).get("type") != "none":
        mapped = {**(mapped or {"type": "auto"}), "disable_parallel_tool_use": True}
    if mapped is not None:
        out["tool_choice"] = mapped


def _thinking(body: dict[str, Any], max_tokens: int) -> dict[str, Any] | None:
    effort = body.get("reasoning_effort")
    if effort is None or (isinstance(effort, str) and effort in NO_THINKING):
        return None
    if not isinstance(effort, str) or effort not in THINKING_BUDGETS:
        raise BadRequest(f"reasoning_effort: unknown {effort!r}", param="reasoning_effort")
    budget = min(THINKING_BUDGETS[effort], max_tokens - 1)
    if budget < MIN_THINKING_BUDGET:
        return None  # the output limit leaves no room for Anthropic's smallest budget
    return {"type": "enabled", "budget_tokens": budget}


def chat_to_messages(body: dict[str, Any], *, max_tokens: int) -> dict[str, Any]:
    """An OpenAI chat request -> an Anthropic Messages request.

    ``max_tokens`` is the output limit when the body names none (Anthropic
    requires one). What Anthropic cannot do at all (n > 1, audio) is refused.
    """
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: must be a non-empty list", param="messages")
    n = body.get("n")
    if n is not None and n != 1:
        raise BadRequest("n: Anthropic models answer one choice at a time", param="n")
    system, turns = _turns(messages)
    if not turns:
        raise BadRequest("messages: needs a user or assistant message", param="messages")
    limit = _limit(body, max_tokens)
    out: dict[str, Any] = {"model": body.get("model"), "max_tokens": limit, "messages": turns}
    if system:
        out["system"] = system
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    # Anthropic refuses whitespace-only stop sequences.
    stops = [s for s in stops if isinstance(s, str) and s.strip()]
    if stops:
        out["stop_sequences"] = stops
    thinking = _thinking(body, limit)
    if thinking is not None:
        out["thinking"] = thinking  # with thinking on, Anthropic fixes temperature and top_p
    else:
        if isinstance(body.get("temperature"), int | float):
            out["temperature"] = min(max(body["temperature"], 0), 1)  # OpenAI goes up to 2
        if isinstance(body.get("top_p"), int | float):
            out["top_p"] = body["top_p"]
    _anthropic_tools(body, out)
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    if body.get("stream") is True:
        out["stream"] = True
    return out


def message_to_chat_completion(message: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic ``message`` -> an OpenAI ``chat.completion``."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text") or ""))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking") or ""))
        elif kind == "tool_use":
            arguments = json.dumps(block.get("input") or {}, ensure_ascii=False)
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        reply["tool_calls"] = calls
        reply["content"] = reply["content"] or None
    if thinking:
        reply["reasoning_content"] = "".join(thinking)
    completion: dict[str, Any] = {
        "id": message.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
            }
        ],
    }
    usage = usage_from_anthropic(message.get("usage"))
    if usage is not None:
        completion["usage"] = chat_usage(usage)
    return completion
