"""Offline token counting with tiktoken, for holds and estimated usage.

tiktoken downloads its BPE rank files on first use; localgate runs without
network, so it ships them gzip-compressed in ``localgate/data/`` and builds the
``tiktoken.Encoding`` objects itself. ``tiktoken.get_encoding`` is never called.

The chat and embedding counters take request bodies straight from clients and
never raise on odd shapes: they count what is countable and skip the rest.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import tiktoken

from localgate import resources
from localgate.errors import LocalgateError

O200K = "o200k_base"
CL100K = "cl100k_base"

# OpenAI cookbook ("How to count tokens with tiktoken"): every message costs 3
# tokens of framing, a name 1 more, and every reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3
# Images are priced by size and detail; a request body has only a URL, so use
# OpenAI's figures for a 1024x1024 image: 85 base + 4 tiles x 170 at high/auto
# detail, the flat 85 at low detail.
IMAGE_TOKENS_HIGH = 765
IMAGE_TOKENS_LOW = 85

_IMAGE_PART_TYPES = ("image_url", "input_image", "image")
# Models tokenized with cl100k; every other model (gpt-4o, gpt-4.1, gpt-5,
# o-series, and non-OpenAI models, for which any estimate will do) uses o200k.
_CL100K_PREFIXES = (
    "gpt-4-",
    "gpt-4:",
    "gpt-3.5",
    "gpt-35",
    "text-embedding-",
    "davinci-002",
    "babbage-002",
)

_ENDOFTEXT = "<|endoftext|>"
_ENDOFPROMPT = "<|endofprompt|>"


@dataclass(frozen=True)
class _Spec:
    filename: str
    sha256: str  # of the uncompressed file: the hash tiktoken itself checks
    pat_str: str
    special_tokens: dict[str, int]


# pat_str and special tokens copied verbatim from tiktoken_ext.openai_public
# (tiktoken 0.14): it defines them only inside functions that also download the
# ranks, so they cannot be imported without network. A test compares them.
_SPECS = {
    O200K: _Spec(
        filename="o200k_base.tiktoken.gz",
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str="|".join(
            [
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
                r"""\p{N}{1,3}""",
                r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
                r"""\s*[\r\n]+""",
                r"""\s+(?!\S)""",
                r"""\s+""",
            ]
        ),
        special_tokens={_ENDOFTEXT: 199999, _ENDOFPROMPT: 200018},
    ),
    CL100K: _Spec(
        filename="cl100k_base.tiktoken.gz",
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s""",
        special_tokens={
            _ENDOFTEXT: 100257,
            "<|fim_prefix|>": 100258,
            "<|fim_middle|>": 100259,
            "<|fim_suffix|>": 100260,
            _ENDOFPROMPT: 100276,
        },
    ),
}

# One lock per encoding: loading o200k takes about a second, and a thread that
# wants cl100k meanwhile should not wait for it.
_locks = {name: threading.Lock() for name in _SPECS}
_encodings: dict[str, tiktoken.Encoding] = {}


def get_encoding(name: str) -> tiktoken.Encoding:
    """The bundled encoding ``o200k_base`` or ``cl100k_base``, loaded once."""
    encoding = _encodings.get(name)
    if encoding is not None:
        return encoding
    if name not in _SPECS:
        raise ValueError(f"no bundled tiktoken encoding {name!r} (have {', '.join(_SPECS)})")
    with _locks[name]:
        encoding = _encodings.get(name)
        if encoding is None:
            spec = _SPECS[name]
            encoding = tiktoken.Encoding(
                name,
                pat_str=spec.pat_str,
                mergeable_ranks=_load_ranks(spec),
                special_tokens=spec.special_tokens,
            )
            _encodings[name] = encoding
    return encoding


def _load_ranks(spec: _Spec) -> dict[bytes, int]:
    path = resources.data_path(spec.filename)
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as exc:
        raise _corrupt(path, f"cannot be decompressed ({exc})") from exc
    if hashlib.sha256(raw).hexdigest() != spec.sha256:
        raise _corrupt(path, "does not match its expected sha256")
    ranks: dict[bytes, int] = {}
    try:
        # The tiktoken format: one "<base64 token> <rank>" per line.
        for line in raw.splitlines():
            if line:
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    except (ValueError, binascii.Error) as exc:
        raise _corrupt(path, f"has a malformed line ({exc})") from exc
    return ranks


def _corrupt(path: object, problem: str) -> LocalgateError:
    return LocalgateError(
        f"bundled tokenizer file {path} {problem}; reinstall localgate",
        code="bundled_data_corrupt",
    )


def encoding_name_for_model(model: str | None) -> str:
    if not isinstance(model, str):
        return O200K
    # "openai/gpt-4", "ft:gpt-4-0613:org::id" -> the base model name.
    name = model.strip().lower().rsplit("/", 1)[-1].removeprefix("ft:")
    if name == "gpt-4" or name.startswith(_CL100K_PREFIXES):
        return CL100K
    return O200K


def encoding_for_model(model: str | None) -> tiktoken.Encoding:
    """cl100k for gpt-4 / gpt-3.5 / text-embedding-*; o200k for everything else."""
    return get_encoding(encoding_name_for_model(model))


def count_tokens(text: str, model: str | None = None) -> int:
    """Tokens in ``text``. Special-token strings such as ``<|endoftext|>`` in
    client text are counted as ordinary text, never rejected."""
    if not isinstance(text, str) or not text:
        return 0
    return _count(encoding_for_model(model), text)


def _count(encoding: tiktoken.Encoding, text: str) -> int:
    return len(encoding.encode_ordinary(text)) if text else 0


def _json_tokens(encoding: tiktoken.Encoding, value: object) -> int:
    if value is None:
        return 0
    if isinstance(value, str):
        return _count(encoding, value)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return 0
    return _count(encoding, text)


# --- chat completions ------------------------------------------------------


def count_chat_input_tokens(body: Mapping[str, Any]) -> int:
    """Estimated prompt tokens of an OpenAI chat completions request body."""
    if not isinstance(body, Mapping):
        return 0
    model = body.get("model")
    encoding = encoding_for_model(model if isinstance(model, str) else None)
    total = REPLY_PRIMING
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                total += _message_tokens(encoding, message)
    # Tool and function definitions reach the model as text; count their JSON.
    for key in ("tools", "functions"):
        if body.get(key):
            total += _json_tokens(encoding, body[key])
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        total += _json_tokens(encoding, response_format.get("json_schema"))
    return total


def _message_tokens(encoding: tiktoken.Encoding, message: Mapping[str, Any]) -> int:
    total = TOKENS_PER_MESSAGE
    for key, value in message.items():
        if key == "content":
            total += _content_tokens(encoding, value)
        elif key == "tool_calls":
            if isinstance(value, list):
                total += sum(_call_tokens(encoding, call) for call in value)
        elif key == "function_call":
            total += _call_tokens(encoding, {"function": value})
        elif isinstance(value, str):
            # role, name, tool_call_id...: the cookbook counts every string field.
            total += _count(encoding, value)
            if key == "name":
                total += TOKENS_PER_NAME
    return total


def _content_tokens(encoding: tiktoken.Encoding, content: object) -> int:
    if isinstance(content, str):
        return _count(encoding, content)
    if isinstance(content, Mapping):
        return _part_tokens(encoding, content)
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, str):
                total += _count(encoding, part)
            elif isinstance(part, Mapping):
                total += _part_tokens(encoding, part)
        return total
    return 0


def _part_tokens(encoding: tiktoken.Encoding, part: Mapping[str, Any]) -> int:
    if part.get("type") in _IMAGE_PART_TYPES:
        image = part.get("image_url")
        detail = part.get("detail")
        if isinstance(image, Mapping):
            detail = image.get("detail", detail)
        return IMAGE_TOKENS_LOW if detail == "low" else IMAGE_TOKENS_HIGH
    # text parts, and refusal parts in assistant history; audio and file parts
    # carry base64 payloads whose text length says nothing about tokens.
    for key in ("text", "refusal"):
        value = part.get(key)
        if isinstance(value, str):
            return _count(encoding, value)
    return 0


def _call_tokens(encoding: tiktoken.Encoding, call: object) -> int:
    if not isinstance(call, Mapping):
        return 0
    function = call.get("function") or call.get("custom")
    if not isinstance(function, Mapping):
        return 0
    return sum(_json_tokens(encoding, value) for value in function.values())


# --- embeddings --------------------------------------------------------------


def count_embedding_input_tokens(body: Mapping[str, Any]) -> int:
    """Tokens of an OpenAI embeddings request: ``input`` as a string, a list of
    strings, a token array, or a list of token arrays."""
    if not isinstance(body, Mapping):
        return 0
    model = body.get("model")
    encoding = encoding_for_model(model if isinstance(model, str) else None)
    items = body.get("input")
    if not isinstance(items, list):
        items = [items]
    total = 0
    for item in items:
        if isinstance(item, str):
            total += _count(encoding, item)
        elif _is_token(item):
            total += 1  # one element of a single token array
        elif isinstance(item, list):
            total += sum(1 for token in item if _is_token(token))
    return total


def _is_token(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def count_completion_tokens(body: Mapping[str, Any], model: str | None = None) -> int:
    """Output tokens of a non-stream chat completion (message text and tool calls),
    for when the upstream reported no usage. Odd shapes count as nothing."""
    return count_tokens(_completion_text(body), model)


def _completion_text(body: Mapping[str, Any]) -> str:
    """The text an upstream produced, for estimating output when it reported no usage."""
    parts: list[str] = []
    choices = body.get("choices") if isinstance(body, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        if isinstance(message.get("content"), str):
            parts.append(message["content"])
        calls = message.get("tool_calls")
        for call in calls if isinstance(calls, list) else ():
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict):
                parts.extend(str(function.get(k) or "") for k in ("name", "arguments"))
    return "".join(parts)
