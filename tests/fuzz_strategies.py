"""Hypothesis strategies for hostile ``/v1`` requests, in every dialect localgate speaks.

Each dialect has a strategy for a valid body (OpenAI chat completions and
embeddings, Anthropic messages and count_tokens, OpenAI Responses), and
:func:`mutated` turns a valid body into a mostly-valid one: a few values
swapped for hostile ones (wrong types, huge numbers, lone surrogates, deep
nesting), fields dropped or unknown fields added. What goes on the wire is
:func:`encode`'s bytes, so the fuzz can send what no JSON library would write:
lone surrogate escapes, ``NaN``, nesting deeper than any parser's recursion
limit, bytes that are not UTF-8.

A :class:`V1Request` is one generated request: method, path, body bytes and
which credentials it carries (the test maps ``auth`` to real headers).
"""

from __future__ import annotations

import copy
import json
import re
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

LONE_SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")
HUGE_INTEGERS = (2**31, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**30, -(10**30), 10**4000)
# Names the dialects give meaning to: an added field may land on one in the wrong place.
FIELD_NAMES = (
    *("model", "messages", "input", "stream", "stream_options", "max_tokens", "tools"),
    *("max_completion_tokens", "max_output_tokens", "system", "instructions", "content"),
    *("role", "type", "text", "tool_choice", "n", "include_usage", "thinking"),
)
# A value that encode() replaces by raw JSON nesting this deep (no encoder writes it).
DEEP_MARK = "\x00deep:"


class V1Request:
    """One request; its repr is what hypothesis prints for a failing example."""

    def __init__(self, method: str, path: str, body: bytes, auth: str) -> None:
        self.method = method
        self.path = path
        self.body = body
        self.auth = auth  # "key" (the valid key as a Bearer token), "x-api-key", "none", "bogus"

    def __repr__(self) -> str:
        body = self.body if len(self.body) <= 2000 else self.body[:2000] + b"..."
        return f"V1Request({self.method!r}, {self.path!r}, {body!r}, auth={self.auth!r})"


# -- hostile values ----------------------------------------------------------------

plain_text = st.text(st.characters(codec="utf-8"), max_size=40)
surrogate_text = st.builds(
    lambda head, lone, tail: head + lone + tail,
    st.text(max_size=5),
    st.sampled_from(LONE_SURROGATES),
    st.text(max_size=5),
)
deep = st.integers(min_value=2, max_value=5000).map(lambda depth: f"{DEEP_MARK}{depth}")
floats = st.floats(allow_nan=True, allow_infinity=True)


def hostile_values() -> st.SearchStrategy[Any]:
    """A value in the wrong place: wrong types, extremes, broken text, nesting."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.sampled_from(HUGE_INTEGERS),
        floats,
        plain_text,
        surrogate_text,
        st.sampled_from(["", " ", "-1", "1e999", "NaN", "１２３", "1_000", "\x00", "a" * 5000]),
    )
    return st.one_of(
        scalars,
        deep,
        st.lists(scalars, max_size=4),
        st.dictionaries(plain_text, scalars, max_size=4),
    )


# -- valid bodies ------------------------------------------------------------------

roles = st.sampled_from(["user", "system", "assistant"])
small_limit = st.integers(min_value=1, max_value=64)


def _optional(draw: st.DrawFn, body: dict[str, Any], name: str, values: Any) -> None:
    if draw(st.booleans()):
        body[name] = draw(values)


def chat_content() -> st.SearchStrategy[Any]:
    part = st.one_of(
        st.builds(lambda t: {"type": "text", "text": t}, plain_text),
        st.just({"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}),
    )
    return st.one_of(plain_text, st.lists(part, min_size=1, max_size=3))


WEATHER_FUNCTION = {
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@st.composite
def chat_body(draw: st.DrawFn, models: tuple[str, ...]) -> dict[str, Any]:
    messages = draw(
        st.lists(
            st.builds(lambda r, c: {"role": r, "content": c}, roles, chat_content()),
            min_size=1,
            max_size=3,
        )
    )
    body: dict[str, Any] = {"model": draw(st.sampled_from(models)), "messages": messages}
    _optional(draw, body, "stream", st.booleans())
    _optional(draw, body, "stream_options", st.fixed_dictionaries({"include_usage": st.booleans()}))
    _optional(
        draw, body, draw(st.sampled_from(["max_tokens", "max_completion_tokens"])), small_limit
    )
    _optional(draw, body, "temperature", st.floats(min_value=0, max_value=2))
    _optional(draw, body, "tools", st.just([{"type": "function", "function": WEATHER_FUNCTION}]))
    _optional(draw, body, "user", plain_text)
    return body


@st.composite
def embeddings_body(draw: st.DrawFn, models: tuple[str, ...]) -> dict[str, Any]:
    text_input = st.one_of(plain_text, st.lists(plain_text, min_size=1, max_size=3))
    token_input = st.lists(st.integers(min_value=0, max_value=100_000), min_size=1, max_size=8)
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(models)),
        "input": draw(st.one_of(text_input, token_input)),
    }
    _optional(draw, body, "encoding_format", st.sampled_from(["float", "base64"]))
    _optional(draw, body, "dimensions", small_limit)
    return body


def anthropic_content() -> st.SearchStrategy[Any]:
    block = st.builds(lambda t: {"type": "text", "text": t}, plain_text)
    return st.one_of(plain_text, st.lists(block, min_size=1, max_size=3))


@st.composite
def messages_body(
    draw: st.DrawFn, models: tuple[str, ...], *, count_tokens: bool = False
) -> dict[str, Any]:
    turns = draw(st.lists(anthropic_content(), min_size=1, max_size=3))
    messages = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": c} for i, c in enumerate(turns)
    ]
    body: dict[str, Any] = {"model": draw(st.sampled_from(models)), "messages": messages}
    if not count_tokens:
        body["max_tokens"] = draw(small_limit)
        _optional(draw, body, "stream", st.booleans())
    _optional(draw, body, "system", anthropic_content())
    _optional(draw, body, "temperature", st.floats(min_value=0, max_value=1))
    _optional(draw, body, "stop_sequences", st.lists(plain_text, max_size=2))
    _optional(draw, body, "metadata", st.fixed_dictionaries({"user_id": plain_text}))
    tool = {"name": "get_weather", "input_schema": WEATHER_FUNCTION["parameters"]}
    _optional(draw, body, "tools", st.just([tool]))
    return body


@st.composite
def responses_body(draw: st.DrawFn, models: tuple[str, ...]) -> dict[str, Any]:
    part = st.builds(lambda t: {"type": "input_text", "text": t}, plain_text)
    item = st.builds(
        lambda r, c: {"role": r, "content": c},
        st.sampled_from(["user", "system", "developer"]),
        st.one_of(plain_text, st.lists(part, min_size=1, max_size=2)),
    )
    body: dict[str, Any] = {
        "model": draw(st.sampled_from(models)),
        "input": draw(st.one_of(plain_text, st.lists(item, min_size=1, max_size=3))),
    }
    _optional(draw, body, "instructions", plain_text)
    _optional(draw, body, "max_output_tokens", small_limit)
    _optional(draw, body, "stream", st.booleans())
    _optional(draw, body, "store", st.booleans())
    tool = {"type": "function", **WEATHER_FUNCTION}
    _optional(draw, body, "tools", st.just([tool]))
    return body


# -- mutations ----------------------------------------------------------------------


def _places(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a body (dict keys, list indexes), the body itself first."""
    out = [path]
    if isinstance(value, dict):
        for key, item in value.items():
            out += _places(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            out += _places(item, (*path, index))
    return out


def _at(body: Any, path: tuple[Any, ...]) -> Any:
    for step in path:
        body = body[step]
    return body


@st.composite
def _mutate_once(draw: st.DrawFn, body: dict[str, Any]) -> None:
    path = draw(st.sampled_from(_places(body)))
    target = _at(body, path)
    action = draw(st.sampled_from(["replace", "drop", "add", "wrap"]))
    if not path or action == "add":
        container = target if isinstance(target, dict) else body
        key = draw(st.one_of(plain_text, surrogate_text, st.sampled_from(FIELD_NAMES)))
        container[key] = draw(hostile_values())
        return
    parent, last = _at(body, path[:-1]), path[-1]
    if action == "drop":
        del parent[last]
    elif action == "wrap":  # a right value in the wrong shape
        parent[last] = draw(st.sampled_from([[target], {"value": target}, json.dumps(target)]))
    else:
        parent[last] = draw(hostile_values())


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A valid body with up to three hostile edits (a third of them left valid)."""
    body = copy.deepcopy(draw(valid))  # edits must not reach shared values (st.just)
    for _ in range(draw(st.sampled_from([0, 1, 1, 2, 3]))):
        draw(_mutate_once(body))
    return body


# -- the wire -----------------------------------------------------------------------


def encode(body: Any) -> bytes:
    """JSON as localgate may receive it: lone surrogates escaped, NaN and Infinity
    as Python writes them, ``DEEP_MARK`` strings replaced by raw nesting."""
    text = json.dumps(body, allow_nan=True)
    return _DEEP.sub(lambda m: "[" * int(m[1]) + "]" * int(m[1]), text).encode()


_DEEP = re.compile(re.escape(json.dumps(DEEP_MARK)[:-1]) + r'(\d+)"')


not_json = st.one_of(
    st.binary(max_size=40),
    st.sampled_from([b"", b"null", b"[]", b'"x"', b"{", b'{"model": "m-relay"', b"\xff\xfe{}"]),
)
auth = st.sampled_from(["key"] * 6 + ["x-api-key", "none", "bogus"])


def v1_requests(
    path: str, valid: st.SearchStrategy[dict[str, Any]]
) -> st.SearchStrategy[V1Request]:
    """POSTs to one /v1 endpoint: mostly mutated bodies, now and then not JSON at all."""
    body = st.one_of(mutated(valid).map(encode), mutated(valid).map(encode), not_json)
    return _requests(st.just("POST"), st.just(path), body)


def odd_requests() -> st.SearchStrategy[V1Request]:
    """The rest of /v1: the model list, a model by (hostile) name, wrong methods, unknown paths."""
    quoted = st.one_of(plain_text, surrogate_text).map(
        lambda n: quote(n.encode("utf-8", "surrogatepass"), safe="")
    )
    name = st.one_of(quoted, st.sampled_from(["m-relay", "%00", "%ff", "..", "a/b", "%2e%2e"]))
    path = st.one_of(
        st.just("/v1/models"),
        name.map(lambda n: "/v1/models/" + n),
        st.sampled_from(["/v1/chat/completions", "/v1/messages", "/v1/nope", "/v1/", "/v1"]),
    )
    method = st.sampled_from(["GET", "GET", "POST", "PUT", "DELETE"])
    return _requests(method, path, st.one_of(st.just(b""), not_json))


@st.composite
def _requests(
    draw: st.DrawFn,
    method: st.SearchStrategy[str],
    path: st.SearchStrategy[str],
    body: st.SearchStrategy[bytes],
) -> V1Request:
    # A composite, not st.builds: hypothesis prints a built object's arguments
    # (here, strategies' internals), a drawn one by its repr.
    return V1Request(draw(method), draw(path), draw(body), draw(auth))
