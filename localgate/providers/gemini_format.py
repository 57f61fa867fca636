"""What localgate sends Gemini: an OpenAI chat request as a ``generateContent`` body.

Pure functions, no I/O: :func:`to_gemini` builds the body (contents,
systemInstruction, tools, toolConfig, generationConfig), :func:`gemini_schema`
reduces a JSON schema to the subset Gemini accepts, and :func:`new_call_id` /
:func:`signature_from_id` carry a function call's thoughtSignature through the
OpenAI tool-call id and back. Answers are translated by the adapter,
:mod:`localgate.providers.gemini`. What is translated and what is dropped, and
why: docs/gemini.md.
"""

from __future__ import annotations

import base64
import json
import secrets
import urllib.parse
from typing import Any

ROLES = {"user": "user", "assistant": "model", "tool": "user", "function": "user"}
SYSTEM_ROLES = frozenset({"system", "developer"})
TOOL_CHOICES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
# Thinking budgets for OpenAI's reasoning_effort, as Google's own
# OpenAI-compatible endpoint maps them. "none" turns thinking off, which
# Gemini 2.5 Pro refuses (its minimum budget is 128).
THINKING_BUDGETS = {"none": 0, "minimal": 1024, "low": 1024, "medium": 8192, "high": 24576}
# Gemini does not guess a file's type from a URL; image_url parts default to JPEG.
MIME_BY_SUFFIX = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".heic": "image/heic",
    ".heif": "image/heif",
    ".pdf": "application/pdf",
}
DEFAULT_IMAGE_MIME = "image/jpeg"
# A Gemini 3 function call carries a thoughtSignature that must come back with
# it on the next turn. OpenAI clients only echo the call id, so the signature
# rides in the id (URL-safe base64, no padding: ids stay [A-Za-z0-9_-]).
CALL_PREFIX = "call_"
CALL_TOKEN_HEX = 24
SIGNATURE_MARK = "_ts_"


class NotTranslatable(ValueError):
    """A chat request that cannot be expressed as a Gemini request."""


# -- request ----------------------------------------------------------------------


def to_gemini(body: dict[str, Any]) -> dict[str, Any]:
    """The ``generateContent`` body for an OpenAI chat request (model excluded:
    it goes in the URL)."""
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for message in body.get("messages") or ():
        if not isinstance(message, dict):
            raise NotTranslatable("every message must be an object")
        role = message.get("role")
        if not isinstance(role, str):
            raise NotTranslatable(f"a message role must be a string, not {role!r}")
        if role in SYSTEM_ROLES:
            system.extend(_parts(message.get("content"), role))
            continue
        if role not in ROLES:
            raise NotTranslatable(f"unknown message role {role!r}")
        parts = _message_parts(message, call_names)
        if not parts:
            continue  # Gemini refuses a turn without parts
        if contents and contents[-1]["role"] == ROLES[role]:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": ROLES[role], "parts": parts})
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    tools = _tools(body.get("tools"))
    if tools:
        out["tools"] = tools
        config = _tool_config(body.get("tool_choice"))
        if config:
            out["toolConfig"] = config
    generation = generation_config(body)
    if generation:
        out["generationConfig"] = generation
    return out


def _message_parts(message: dict[str, Any], call_names: dict[str, str]) -> list[dict[str, Any]]:
    role = message["role"]
    if role == "tool":
        call_id = message.get("tool_call_id")
        name = call_names.get(call_id) if isinstance(call_id, str) else None
        name = name or message.get("name")
        if not name:
            raise NotTranslatable(f"tool message answers no earlier tool call ({call_id!r})")
        return [_function_response(name, message.get("content"))]
    if role == "function":  # the legacy single-function dialect
        return [_function_response(message.get("name") or "function", message.get("content"))]
    parts = _parts(message.get("content"), role)
    if role == "assistant":
        for call in message.get("tool_calls") or ():
            parts.append(_function_call(call, call_names))
    return parts


def _function_call(call: Any, call_names: dict[str, str]) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not function.get("name"):
        raise NotTranslatable("a tool call without a function name")
    call_id = call.get("id")
    if isinstance(call_id, str):
        call_names[call_id] = function["name"]
    arguments = function.get("arguments")
    try:
        args = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
    except ValueError:
        args = {}  # the model wrote broken JSON; Gemini only takes an object
    part: dict[str, Any] = {
        "functionCall": {"name": function["name"], "args": args if isinstance(args, dict) else {}}
    }
    signature = signature_from_id(call_id)
    if signature:
        part["thoughtSignature"] = signature
    return part


def _function_response(name: str, content: Any) -> dict[str, Any]:
    text = content if isinstance(content, str) else _joined_text(content)
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _joined_text(content: Any) -> str:
    if not isinstance(content, list):
        return "" if content is None else str(content)
    texts = [p.get("text") for p in content if isinstance(p, dict)]
    return "".join(t for t in texts if isinstance(t, str))


def _parts(content: Any, role: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    if not isinstance(content, list):
        raise NotTranslatable(f"{role} message content must be a string or a list of parts")
    parts = []
    for item in content:
        part = _part(item)
        if part is not None:
            parts.append(part)
    return parts


def _part(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        raise NotTranslatable("every content part must be an object")
    kind = item.get("type")
    if kind in ("text", "refusal", "input_text"):
        text = item.get(kind if kind == "refusal" else "text")
        return {"text": text} if isinstance(text, str) and text else None
    if kind == "image_url":
        image = item.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        if not isinstance(url, str):
            raise NotTranslatable("image_url part without a url")
        return _media(url)
    if kind == "input_audio":
        audio = item.get("input_audio") or {}
        fmt = audio.get("format") or "wav"
        return {"inlineData": {"mimeType": f"audio/{fmt}", "data": audio.get("data") or ""}}
    if kind == "file":
        data = (item.get("file") or {}).get("file_data")
        if not isinstance(data, str) or not data.startswith("data:"):
            raise NotTranslatable("file parts need file_data as a data: URL (no file ids)")
        return _media(data)
    raise NotTranslatable(f"content part type {kind!r} has no Gemini equivalent")


def _media(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, comma, payload = url[5:].partition(",")
        if not comma:
            raise NotTranslatable("malformed data: URL")
        mime, _, params = header.partition(";")
        if "base64" not in params.split(";"):
            payload = base64.b64encode(urllib.parse.unquote_to_bytes(payload)).decode()
        return {"inlineData": {"mimeType": mime or DEFAULT_IMAGE_MIME, "data": payload}}
    path = urllib.parse.urlsplit(url).path.lower()
    suffix = path[path.rfind(".") :] if "." in path.rsplit("/", 1)[-1] else ""
    return {
        "fileData": {"fileUri": url, "mimeType": MIME_BY_SUFFIX.get(suffix, DEFAULT_IMAGE_MIME)}
    }


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools and not isinstance(tools, list):
        raise NotTranslatable("tools must be a list of function tools")
    declarations = []
    for tool in tools or ():
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            kind = tool.get("type") if isinstance(tool, dict) else tool
            raise NotTranslatable(f"tool type {kind!r} has no Gemini equivalent")
        function = tool.get("function") or {}
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise NotTranslatable("a function tool needs an object with a name")
        if not isinstance(function.get("parameters"), dict | None):
            raise NotTranslatable("a function tool's parameters must be a JSON schema object")
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        parameters = gemini_schema(function.get("parameters"))
        # Gemini refuses an OBJECT schema without properties: a function that
        # takes nothing declares no parameters at all.
        if parameters and (parameters.get("properties") or parameters.get("type") != "object"):
            declaration["parameters"] = parameters
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}] if declarations else []


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if isinstance(choice, str) and choice in TOOL_CHOICES:
        return {"functionCallingConfig": {"mode": TOOL_CHOICES[choice]}}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if name:
            return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}
    return None


def generation_config(body: dict[str, Any]) -> dict[str, Any]:
    """``generationConfig`` from the sampling, limit and format fields."""
    out: dict[str, Any] = {}
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    pairs = (
        ("maxOutputTokens", limit),
        ("temperature", body.get("temperature")),
        ("topP", body.get("top_p")),
        ("candidateCount", body.get("n")),
        ("presencePenalty", body.get("presence_penalty")),
        ("frequencyPenalty", body.get("frequency_penalty")),
        ("seed", body.get("seed")),
    )
    out.update((key, value) for key, value in pairs if value is not None)
    stop = body.get("stop")
    if stop:
        out["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        out["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if fmt["type"] == "json_schema" and isinstance(schema, dict):
            out["responseSchema"] = gemini_schema(schema)
    effort = body.get("reasoning_effort")
    if isinstance(effort, str) and effort in THINKING_BUDGETS:
        out["thinkingConfig"] = {
            "thinkingBudget": THINKING_BUDGETS[effort],
            "includeThoughts": False,
        }
    return out


# -- JSON schema ------------------------------------------------------------------

# Gemini's Schema is an OpenAPI subset; it refuses unknown keys (strict,
# $schema, additionalProperties, ...) instead of ignoring them, so only these pass.
SCHEMA_KEYS = frozenset(
    {
        "type",
        "format",
        "title",
        "description",
        "nullable",
        "enum",
        "items",
        "properties",
        "required",
        "minItems",
        "maxItems",
        "minProperties",
        "maxProperties",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "anyOf",
        "propertyOrdering",
        "example",
    }
)
SCHEMA_FORMATS = frozenset({"enum", "date-time", "int32", "int64", "float", "double"})
MAX_REF_DEPTH = 8


def gemini_schema(schema: Any, defs: dict[str, Any] | None = None, depth: int = 0) -> Any:
    """A JSON schema reduced to what Gemini accepts: local $refs inlined,
    oneOf read as anyOf, ``type: [x, "null"]`` and const rewritten, the rest of
    the keys it refuses dropped."""
    if not isinstance(schema, dict):
        return schema
    if defs is None:
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if not isinstance(target, dict) or depth >= MAX_REF_DEPTH:
            return {"type": "object", "description": schema.get("description", ref)}
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return gemini_schema(merged, defs, depth + 1)
    for nested in schema.get("allOf") or ():  # pydantic wraps a described $ref this way
        schema = {**gemini_schema(nested, defs, depth), **schema}
    schema = {**schema}
    if "oneOf" in schema and "anyOf" not in schema:
        schema["anyOf"] = schema["oneOf"]
    if "const" in schema and "enum" not in schema:
        schema["enum"] = [schema["const"]]
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key not in SCHEMA_KEYS:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: gemini_schema(sub, defs, depth) for name, sub in value.items()}
        elif key == "items":
            out[key] = gemini_schema(value, defs, depth)
        elif key == "anyOf" and isinstance(value, list):
            _any_of(out, [gemini_schema(sub, defs, depth) for sub in value])
        elif key == "type" and isinstance(value, list):
            _type_list(out, value)
        elif key == "enum" and isinstance(value, list):
            if None in value:
                out["nullable"] = True
            if all(isinstance(v, str) for v in value if v is not None):
                out[key] = [v for v in value if v is not None]  # Gemini enums are strings
        elif key != "format" or value in SCHEMA_FORMATS:
            out[key] = value
    return out


def _any_of(out: dict[str, Any], options: list[Any]) -> None:
    kept = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
    if len(kept) < len(options):
        out["nullable"] = True
    if len(kept) == 1 and isinstance(kept[0], dict):
        out.update(kept[0])
    elif kept:
        out["anyOf"] = kept


def _type_list(out: dict[str, Any], types: list[Any]) -> None:
    kept = [t for t in types if t != "null"]
    if len(kept) < len(types):
        out["nullable"] = True
    if len(kept) == 1:
        out["type"] = kept[0]
    elif kept:
        out["anyOf"] = [{"type": t} for t in kept]


# -- tool call ids ----------------------------------------------------------------


def new_call_id(signature: str | None = None) -> str:
    call_id = CALL_PREFIX + secrets.token_hex(CALL_TOKEN_HEX // 2)
    if signature:
        safe = signature.replace("+", "-").replace("/", "_").rstrip("=")
        call_id += SIGNATURE_MARK + safe
    return call_id


def signature_from_id(call_id: Any) -> str | None:
    """The thoughtSignature :func:`new_call_id` put in an id, if any."""
    if not isinstance(call_id, str) or not call_id.startswith(CALL_PREFIX):
        return None
    mark = len(CALL_PREFIX) + CALL_TOKEN_HEX
    if call_id[mark : mark + len(SIGNATURE_MARK)] != SIGNATURE_MARK:
        return None
    safe = call_id[mark + len(SIGNATURE_MARK) :]
    return safe.replace("-", "+").replace("_", "/") + "=" * (-len(safe) % 4)
