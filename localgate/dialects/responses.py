"""OpenAI Responses <-> OpenAI chat completions, for routes without a native /responses.

A Responses request (``POST /v1/responses``: Codex CLI, the openai SDK's
``responses.create``) becomes a chat-completions request with
:func:`responses_to_chat`; the chat answer comes back as a Responses
``response`` object (:func:`chat_completion_to_response`) or, streamed, as the
Responses event sequence (``responses_stream.ChatToResponsesEvents``). What cannot be
carried over (hosted tools, reasoning items, stored conversations) is dropped
with a note or refused; docs/responses.md lists every choice.

Pure: no I/O, nothing but the standard library, ``Usage`` and our errors.
"""

from __future__ import annotations

from typing import Any

from localgate.core.pricing import Usage, token_count
from localgate.errors import BadRequest

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
TEXT_PARTS = frozenset({"input_text", "output_text", "text"})
# Items of tools that only exist on OpenAI's side (or need them): no chat equivalent.
DROPPED_ITEMS = frozenset(
    {
        "reasoning",
        "custom_tool_call",
        "custom_tool_call_output",
        "local_shell_call",
        "local_shell_call_output",
        "shell_call",
        "shell_call_output",
        "apply_patch_call",
        "apply_patch_call_output",
        "web_search_call",
        "file_search_call",
        "computer_call",
        "computer_call_output",
        "image_generation_call",
        "code_interpreter_call",
        "mcp_list_tools",
        "mcp_approval_request",
        "mcp_approval_response",
        "mcp_call",
        "compaction",
    }
)
# Request fields with no chat meaning that change nothing about the answer.
IGNORED_FIELDS = frozenset(
    {"metadata", "store", "include", "truncation", "service_tier", "prompt_cache_key"}
    | {"prompt_cache_retention", "background", "stream_options"}
)
# Stored server-side state a translated route does not have.
STATEFUL_FIELDS = {
    "previous_response_id": "send the full conversation as input items",
    "conversation": "send the full conversation as input items",
    "prompt": "send the prompt's text as instructions and input",
}
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def responses_to_chat(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A Responses request -> (an OpenAI chat request, notes on what was dropped)."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    for name, fix in STATEFUL_FIELDS.items():
        if body.get(name) is not None:
            raise BadRequest(f"{name} is not supported on a translated route: {fix}", param=name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("model is required (a string)", param="model")
    notes: list[str] = []
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise BadRequest("instructions must be a string", param="instructions")
        messages.append({"role": "system", "content": instructions})
    messages += _input_messages(body.get("input"), notes)
    chat: dict[str, Any] = {"model": model, "messages": messages}
    _map_tools(body, chat, notes)
    _map_options(body, chat, notes)
    return chat, notes


def _note(notes: list[str], text: str) -> None:
    if text not in notes:
        notes.append(text)


def _input_messages(value: Any, notes: list[str]) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list):
        raise BadRequest("input is required: a string or a list of input items", param="input")
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise BadRequest(f"{param} must be an object", param=param)
        kind = item.get("type") or ("message" if "role" in item else None)
        if not isinstance(kind, str | None):
            raise BadRequest(f"{param}.type must be a string", param=f"{param}.type")
        if kind == "message":
            messages.append(_message(item, param, notes))
        elif kind == "function_call":
            _function_call(item, param, messages)
        elif kind == "function_call_output":
            call_id = _string(item, "call_id", param)
            content = _tool_output(item.get("output"), f"{param}.output", notes)
            messages.append({"role": "tool", "tool_call_id": call_id, "content": content})
        elif kind in DROPPED_ITEMS:
            _note(notes, f"input items of type {kind} dropped: no chat equivalent")
        else:
            raise BadRequest(
                f"{param}.type {kind!r} is not supported on a translated route", param=param
            )
    return messages


def _string(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str):
        raise BadRequest(f"{param}.{key} must be a string", param=f"{param}.{key}")
    return value


def _message(item: dict[str, Any], param: str, notes: list[str]) -> dict[str, Any]:
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise BadRequest(
            f"{param}.role must be one of user, assistant, system, developer (got {role!r})",
            param=f"{param}.role",
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": ROLES[role], "content": content}
    if not isinstance(content, list):
        raise BadRequest(
            f"{param}.content must be a string or a list of parts", param=f"{param}.content"
        )
    mapped = (_part(part, f"{param}.content[{j}]", notes) for j, part in enumerate(content))
    parts = [part for part in mapped if part is not None]
    texts = [part["text"] for part in parts if part["type"] == "text"]
    if role != "user" or len(texts) == len(parts) <= 1:
        if len(texts) != len(parts):
            _note(notes, f"images in {role} messages dropped: only user turns carry images")
        return {"role": ROLES[role], "content": "\n\n".join(texts)}
    return {"role": "user", "content": parts}


def _part(part: Any, param: str, notes: list[str]) -> dict[str, Any] | None:
    if not isinstance(part, dict):
        raise BadRequest(f"{param} must be an object", param=param)
    kind = part.get("type")
    if not isinstance(kind, str):
        raise BadRequest(f"{param}.type must be a string", param=f"{param}.type")
    if kind in TEXT_PARTS:
        return {"type": "text", "text": _string(part, "text", param)}
    if kind == "refusal":
        return {"type": "text", "text": _string(part, "refusal", param)}
    if kind == "input_image":
        url = part.get("image_url")
        if not isinstance(url, str):
            _note(notes, "input_image parts by file_id dropped: files are stored on OpenAI")
            return None
        image: dict[str, Any] = {"url": url}
        if part.get("detail") in ("low", "high", "auto"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        _note(notes, "input_file parts dropped: chat upstreams take no files")
        return None
    raise BadRequest(f"{param}.type {kind!r} is not a known content part", param=param)


def _function_call(item: dict[str, Any], param: str, messages: list[dict[str, Any]]) -> None:
    arguments = item.get("arguments", "")
    if not isinstance(arguments, str):
        raise BadRequest(f"{param}.arguments must be a string", param=f"{param}.arguments")
    call = {
        "id": _string(item, "call_id", param),
        "type": "function",
        "function": {"name": _string(item, "name", param), "arguments": arguments},
    }
    last = messages[-1] if messages else None
    # Chat puts the calls of one turn (and its text) in one assistant message.
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
        if not last.get("content"):
            last["content"] = None
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_output(value: Any, param: str, notes: list[str]) -> str:
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise BadRequest(f"{param} must be a string or a list of parts", param=param)
    parts = [_part(part, f"{param}[{j}]", notes) for j, part in enumerate(value)]
    if any(part is not None and part["type"] != "text" for part in parts):
        _note(notes, "images in function_call_output dropped: chat tool results are text")
    return "\n\n".join(part["text"] for part in parts if part and part["type"] == "text")


def _map_tools(body: dict[str, Any], chat: dict[str, Any], notes: list[str]) -> None:
    tools = body.get("tools")
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise BadRequest("tools must be a list", param="tools")
    chat_tools = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict):
            raise BadRequest(f"tools[{i}] must be an object", param=f"tools[{i}]")
        if tool.get("type") != "function":
            _note(notes, f"tool {tool.get('name') or tool.get('type')!r} dropped: not a function")
            continue
        function = {"name": _string(tool, "name", f"tools[{i}]")}
        for key in ("description", "parameters", "strict"):
            if tool.get(key) is not None:
                function[key] = tool[key]
        chat_tools.append({"type": "function", "function": function})
    if not chat_tools:
        return  # chat refuses tool_choice and parallel_tool_calls without tools
    chat["tools"] = chat_tools
    choice = body.get("tool_choice")
    if choice in ("auto", "none", "required"):
        chat["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function":
        name = _string(choice, "name", "tool_choice")
        chat["tool_choice"] = {"type": "function", "function": {"name": name}}
    elif choice is not None:
        _note(notes, f"tool_choice {choice!r} dropped: the model chooses")
    if isinstance(body.get("parallel_tool_calls"), bool):
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]


def _map_options(body: dict[str, Any], chat: dict[str, Any], notes: list[str]) -> None:
    _copy_number(body, chat, "max_output_tokens", "max_tokens")
    _copy_number(body, chat, "temperature", "temperature")
    _copy_number(body, chat, "top_p", "top_p")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    text = body.get("text")
    if isinstance(text, dict):
        _map_format(text.get("format"), chat)
        if text.get("verbosity") is not None:
            _note(notes, "text.verbosity dropped: not a chat-completions option")
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str):
        chat["user"] = user
    known = {"model", "input", "instructions", "tools", "tool_choice", "parallel_tool_calls"}
    known |= {"max_output_tokens", "temperature", "top_p", "reasoning", "text", "stream"}
    known |= {"user", "safety_identifier"} | IGNORED_FIELDS | set(STATEFUL_FIELDS)
    for key in body:
        if key not in known:
            _note(notes, f"field {key} ignored: no chat equivalent")


def _copy_number(body: dict[str, Any], chat: dict[str, Any], key: str, chat_key: str) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{key} must be a number", param=key)
    chat[chat_key] = value


def _map_format(fmt: Any, chat: dict[str, Any]) -> None:
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return
    if fmt["type"] == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt["type"] == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        raise BadRequest(f"text.format.type {fmt['type']!r} is not known", param="text.format")


# -- answers ---------------------------------------------------------------------


def usage_from_responses(usage: dict[str, Any] | None) -> Usage | None:
    """A Responses ``usage`` object -> :class:`Usage`, odd values clamped."""
    if not isinstance(usage, dict):
        return None
    prompt = token_count(usage, "input_tokens")
    output = token_count(usage, "output_tokens")
    details = usage.get("input_tokens_details")
    cached = min(token_count(details, "cached_tokens"), prompt)
    written = min(token_count(details, "cache_write_tokens"), prompt - cached)
    reasoning = min(token_count(usage.get("output_tokens_details"), "reasoning_tokens"), output)
    return Usage(prompt, cached, written, output, reasoning)


def _responses_usage(usage: Usage | None) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {
            "cached_tokens": usage.cached_input,
            "cache_write_tokens": usage.cache_write,
        },
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.input + usage.output,
    }


def chat_usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt = token_count(usage, "prompt_tokens")
    output = token_count(usage, "completion_tokens")
    cached = min(token_count(usage.get("prompt_tokens_details"), "cached_tokens"), prompt)
    reasoning = min(token_count(usage.get("completion_tokens_details"), "reasoning_tokens"), output)
    return Usage(input=prompt, cached_input=cached, output=output, reasoning=reasoning)


def item_id(prefix: str, response_id: str, index: int) -> str:
    return f"{prefix}_{response_id.removeprefix('resp_')}_{index}"


def response_object(
    request: dict[str, Any],
    response_id: str,
    created_at: int,
    *,
    status: str = "in_progress",
    output: list[dict[str, Any]] | None = None,
    usage: Usage | None = None,
    model: str | None = None,
    incomplete_reason: str | None = None,
) -> dict[str, Any]:
    """A Responses ``response`` object echoing the request, as the API returns it."""
    text = request.get("text") if isinstance(request.get("text"), dict) else None
    return {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": incomplete_reason} if incomplete_reason else None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "model": model or request.get("model") or "",
        "output": output or [],
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "previous_response_id": None,
        "reasoning": request.get("reasoning"),
        "temperature": request.get("temperature"),
        "text": text or {"format": {"type": "text"}},
        "tool_choice": request.get("tool_choice") or "auto",
        "tools": request.get("tools") or [],
        "top_p": request.get("top_p"),
        "truncation": request.get("truncation") or "disabled",
        "usage": _responses_usage(usage),
        "user": request.get("user"),
        "metadata": request.get("metadata") or {},
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": []}
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [part],
    }


def reasoning_item(item_id: str, text: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": "completed",
    }


def call_item(item_id: str, call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": "completed",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def chat_completion_to_response(
    completion: dict[str, Any], *, request: dict[str, Any], response_id: str, created_at: int
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` -> the Responses ``response`` object."""
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    output: list[dict[str, Any]] = []

    def next_id(prefix: str) -> str:
        return item_id(prefix, response_id, len(output))

    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        output.append(reasoning_item(next_id("rs"), reasoning))
    calls = [call for call in message.get("tool_calls") or () if isinstance(call, dict)]
    content = message.get("content")
    if message.get("refusal"):
        part = {"type": "refusal", "refusal": message["refusal"]}
        output.append({**message_item(next_id("msg"), ""), "content": [part]})
    elif (isinstance(content, str) and content) or (content is not None and not calls):
        output.append(message_item(next_id("msg"), content if isinstance(content, str) else ""))
    for i, call in enumerate(calls):
        function = call.get("function") or {}
        call_id = call.get("id") or item_id("call", response_id, i)
        name, arguments = function.get("name") or "", function.get("arguments") or ""
        output.append(call_item(next_id("fc"), call_id, name, arguments))
    reason = INCOMPLETE_REASONS.get(choice.get("finish_reason") or "")
    return response_object(
        request,
        response_id,
        created_at,
        status="incomplete" if reason else "completed",
        output=output,
        usage=chat_usage(completion.get("usage")),
        model=completion.get("model"),
        incomplete_reason=reason,
    )
