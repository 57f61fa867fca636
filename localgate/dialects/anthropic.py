"""Anthropic Messages <-> OpenAI chat completions: requests, answers and usage.

This half serves Anthropic clients (Claude Code, the anthropic SDK) routed to
an OpenAI-chat upstream: :func:`messages_to_chat` turns their request into a
chat request (and lists what it had to drop), and
:func:`chat_completion_to_message` turns the answer back; the usage helpers
are shared. The other direction, OpenAI-dialect clients on a channel of kind
``anthropic``, is :mod:`localgate.dialects.anthropic_upstream`; the stream
halves of both live in :mod:`localgate.dialects.anthropic_stream`.
docs/anthropic.md lists every mapping and every choice.

Pure: no I/O, nothing but the standard library, ``Usage`` and our errors.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from localgate.core.pricing import Usage, token_count
from localgate.errors import BadRequest

# Anthropic stop_reason -> OpenAI finish_reason (pause_turn: a server tool
# paused the turn; to an OpenAI client that is a normal stop).
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}
STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
OPENAI_MAX_STOP = 4  # OpenAI refuses more stop sequences than this
# Fields of an Anthropic request that the translation reads; any other is dropped.
MESSAGES_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stop_sequences",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "stream",
        "metadata",
    }
)


# --- small helpers -------------------------------------------------------------------


def _note(notes: list[str], note: str) -> None:
    if note not in notes:
        notes.append(note)


def _collapse(parts: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One plain text part becomes a string (what every OpenAI upstream takes)."""
    if len(parts) == 1 and parts[0].get("type") == "text":
        return str(parts[0]["text"])
    return parts


def parse_arguments(raw: object) -> dict[str, Any]:
    """Tool-call arguments (a JSON string) as the object Anthropic wants.

    Empty arguments are ``{}``; arguments that are not a JSON object are kept
    whole under ``_unparsed_arguments`` so the model still sees what it sent.
    """
    if isinstance(raw, dict):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {"_unparsed_arguments": raw}
    return value if isinstance(value, dict) else {"_unparsed_arguments": raw}


# --- usage ---------------------------------------------------------------------------


def usage_from_anthropic(usage: dict[str, Any] | None) -> Usage | None:
    """Map an Anthropic ``usage`` object to :class:`Usage`.

    Anthropic's ``input_tokens`` excludes cache reads and writes; ours counts
    every prompt token. Thinking is already inside ``output_tokens``.
    """
    if not isinstance(usage, dict):
        return None
    read = token_count(usage, "cache_read_input_tokens")
    write = token_count(usage, "cache_creation_input_tokens")
    return Usage(
        input=token_count(usage, "input_tokens") + read + write,
        cached_input=read,
        cache_write=write,
        output=token_count(usage, "output_tokens"),
    )


def chat_usage(usage: Usage) -> dict[str, Any]:
    """A :class:`Usage` in OpenAI's ``usage`` shape (cache writes count as prompt)."""
    out: dict[str, Any] = {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input},
    }
    if usage.reasoning:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning}
    return out


def anthropic_usage(usage: Usage) -> dict[str, int]:
    """A :class:`Usage` in Anthropic's shape: input_tokens without the cache parts."""
    return {
        "input_tokens": usage.uncached_input,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached_input,
        "output_tokens": usage.output,
    }


def usage_from_chat(data: object) -> Usage | None:
    """An OpenAI ``usage`` object as :class:`Usage`, odd numbers clamped."""
    if not isinstance(data, dict):
        return None
    prompt = token_count(data, "prompt_tokens")
    output = token_count(data, "completion_tokens")
    return Usage(
        input=prompt,
        cached_input=min(token_count(data.get("prompt_tokens_details"), "cached_tokens"), prompt),
        output=output,
        reasoning=min(
            token_count(data.get("completion_tokens_details"), "reasoning_tokens"), output
        ),
    )


# --- Anthropic request -> OpenAI chat request ----------------------------------------


def _block_type(block: object, path: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise BadRequest(f"{path}: a content block must be an object with a type", param=path)
    return str(block["type"])


def text_of(block: dict[str, Any], path: str, key: str = "text") -> str:
    text = block.get(key)
    if not isinstance(text, str):
        raise BadRequest(f"{path}.{key}: must be a string", param=f"{path}.{key}")
    return text


def _image_part(block: dict[str, Any], path: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        media = text_of(source, f"{path}.source", "media_type")
        data = text_of(source, f"{path}.source", "data")
        url = f"data:{media};base64,{data}"
    elif kind == "url" and isinstance(source, dict):
        url = text_of(source, f"{path}.source", "url")
    else:
        raise BadRequest(
            f"{path}.source: an image needs a base64 or url source", param=f"{path}.source"
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _document_part(block: dict[str, Any], path: str, notes: list[str]) -> dict[str, Any] | None:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "text" and isinstance(source, dict):
        return {"type": "text", "text": text_of(source, f"{path}.source", "data")}
    if kind == "base64" and isinstance(source, dict):
        media = text_of(source, f"{path}.source", "media_type")
        data = text_of(source, f"{path}.source", "data")
        name = block.get("title") if isinstance(block.get("title"), str) else "document.pdf"
        return {
            "type": "file",
            "file": {"filename": name, "file_data": f"data:{media};base64,{data}"},
        }
    _note(notes, f"dropped document source {kind}")
    return None


def _tool_message(block: dict[str, Any], path: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A tool_result block -> an OpenAI tool message, plus the images it carried
    (a tool message holds text only; the images move to the next user message)."""
    call_id = text_of(block, path, "tool_use_id")
    content = block.get("content", "")
    images: list[dict[str, Any]] = []
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for k, part in enumerate(content):
            where = f"{path}.content.{k}"
            kind = _block_type(part, where)
            if kind == "text":
                texts.append(text_of(part, where))
            elif kind == "image":
                images.append(_image_part(part, where))
        text = "\n".join(texts)
    else:
        raise BadRequest(f"{path}.content: must be a string or a list", param=f"{path}.content")
    if block.get("is_error") is True:
        text = f"[tool error] {text}"
    return {"role": "tool", "tool_call_id": call_id, "content": text}, images


def _user_turn(content: list[Any], path: str, notes: list[str]) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    moved: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{path}.content.{j}"
        kind = _block_type(block, where)
        if kind == "text":
            parts.append({"type": "text", "text": text_of(block, where)})
        elif kind == "image":
            parts.append(_image_part(block, where))
        elif kind == "document":
            part = _document_part(block, where, notes)
            if part is not None:
                parts.append(part)
        elif kind == "tool_result":
            message, images = _tool_message(block, where)
            tool_messages.append(message)
            if images:
                _note(notes, "moved tool_result images into a user message")
                moved.extend(images)
        elif kind not in ("thinking", "redacted_thinking"):
            _note(notes, f"dropped content block {kind}")
    user = moved + parts
    if user:
        tool_messages.append({"role": "user", "content": _collapse(user)})
    return tool_messages


def _assistant_turn(content: list[Any], path: str, notes: list[str]) -> dict[str, Any]:
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{path}.content.{j}"
        kind = _block_type(block, where)
        if kind == "text":
            parts.append({"type": "text", "text": text_of(block, where)})
        elif kind == "tool_use":
            arguments = block.get("input", {})
            if not isinstance(arguments, dict):
                raise BadRequest(f"{where}.input: must be an object", param=f"{where}.input")
            calls.append(
                {
                    "id": text_of(block, where, "id"),
                    "type": "function",
                    "function": {
                        "name": text_of(block, where, "name"),
                        "arguments": json.dumps(arguments, ensure_ascii=False),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            _note(notes, "dropped thinking blocks")
        else:
            _note(notes, f"dropped content block {kind}")
    message: dict[str, Any] = {"role": "assistant", "content": _collapse(parts) if parts else ""}
    if calls:
        message["tool_calls"] = calls
        if not parts:
            message["content"] = None
    return message


def _chat_message_list(body: dict[str, Any], notes: list[str]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: must be a non-empty list", param="messages")
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if isinstance(system, str):
        if system:
            out.append({"role": "system", "content": system})
    elif isinstance(system, list):
        parts = []
        for j, block in enumerate(system):
            if _block_type(block, f"system.{j}") != "text":
                raise BadRequest(f"system.{j}: system blocks must be text", param=f"system.{j}")
            parts.append({"type": "text", "text": text_of(block, f"system.{j}")})
        if parts:
            out.append({"role": "system", "content": _collapse(parts)})
    elif system is not None:
        raise BadRequest("system: must be a string or a list of text blocks", param="system")
    for i, message in enumerate(messages):
        path = f"messages.{i}"
        if not isinstance(message, dict):
            raise BadRequest(f"{path}: must be an object", param=path)
        role, content = message.get("role"), message.get("content")
        if role not in ("user", "assistant"):
            raise BadRequest(f"{path}.role: must be user or assistant", param=f"{path}.role")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
        elif not isinstance(content, list):
            raise BadRequest(
                f"{path}.content: must be a string or a list of blocks", param=f"{path}.content"
            )
        elif role == "user":
            out.extend(_user_turn(content, path, notes))
        else:
            out.append(_assistant_turn(content, path, notes))
    return out


def _chat_tools(body: dict[str, Any], chat: dict[str, Any], notes: list[str]) -> None:
    tools = body.get("tools")
    if tools is None:
        return
    if not isinstance(tools, list):
        raise BadRequest("tools: must be a list", param="tools")
    functions = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools.{i}: must be an object", param=f"tools.{i}")
        kind = tool.get("type")
        if kind not in (None, "custom"):
            _note(notes, f"dropped tool type {kind}")
            continue
        schema = tool.get("input_schema", {"type": "object", "properties": {}})
        if not isinstance(schema, dict):
            raise BadRequest(f"tools.{i}.input_schema: must be an object", param=f"tools.{i}")
        function: dict[str, Any] = {
            "name": text_of(tool, f"tools.{i}", "name"),
            "parameters": schema,
        }
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        functions.append({"type": "function", "function": function})
    if functions:
        chat["tools"] = functions
    _chat_tool_choice(body.get("tool_choice"), chat, notes)


def _chat_tool_choice(choice: object, chat: dict[str, Any], notes: list[str]) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise BadRequest("tool_choice: must be an object with a type", param="tool_choice")
    if "tools" not in chat:
        _note(notes, "dropped tool_choice (no tool OpenAI can run)")
        return
    kind = choice["type"]
    if kind == "tool":
        name = text_of(choice, "tool_choice", "name")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif isinstance(kind, str) and kind in TOOL_CHOICES:
        chat["tool_choice"] = TOOL_CHOICES[kind]
    else:
        raise BadRequest(f"tool_choice.type: unknown {kind!r}", param="tool_choice.type")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        chat["parallel_tool_calls"] = False


def messages_to_chat(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """An Anthropic Messages request -> (an OpenAI chat request, what was dropped).

    Raises BadRequest for what Anthropic itself would refuse; drops, with a
    note, what an OpenAI upstream cannot carry (server tools, thinking, top_k).
    """
    notes: list[str] = []
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest("max_tokens: must be an integer of at least 1", param="max_tokens")
    chat: dict[str, Any] = {}
    if isinstance(body.get("model"), str):
        chat["model"] = body["model"]
    chat["messages"] = _chat_message_list(body, notes)
    chat["max_tokens"] = max_tokens
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise BadRequest("stop_sequences: must be a list of strings", param="stop_sequences")
        if len(stops) > OPENAI_MAX_STOP:
            _note(notes, f"dropped stop_sequences past the first {OPENAI_MAX_STOP}")
        if stops:
            chat["stop"] = stops[:OPENAI_MAX_STOP]
    for key in ("temperature", "top_p"):
        value = body.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise BadRequest(f"{key}: must be a number", param=key)
            chat[key] = value
    _chat_tools(body, chat, notes)
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        chat["user"] = metadata["user_id"]
    for key in body:
        if key not in MESSAGES_FIELDS:
            _note(notes, f"dropped field {key}")
    return chat, notes


# --- answers ---------------------------------------------------------------------------


def message_id(chat_id: object) -> str:
    """An Anthropic-looking ``msg_`` id, derived from the chat id when there is one."""
    if isinstance(chat_id, str) and chat_id:
        return "msg_" + chat_id.removeprefix("chatcmpl-")
    return f"msg_{uuid.uuid4().hex}"


def chat_completion_to_message(completion: dict[str, Any], *, model: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` -> an Anthropic ``message`` (first choice)."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    reasoning = reply.get("reasoning_content") or reply.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    text = reply.get("content")
    if isinstance(text, list):  # some upstreams answer in parts
        text = "".join(str(p.get("text") or "") for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": str(text)})
    for call in reply.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_{uuid.uuid4().hex[:24]}"),
                "name": function.get("name") or "",
                "input": parse_arguments(function.get("arguments")),
            }
        )
    reason = choice.get("finish_reason")
    stop = STOP_REASONS.get(reason or "", "end_turn")
    if stop == "end_turn" and any(block["type"] == "tool_use" for block in content):
        stop = "tool_use"
    usage = usage_from_chat(completion.get("usage")) or Usage()
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": anthropic_usage(usage),
    }
