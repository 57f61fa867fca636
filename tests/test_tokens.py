"""Offline token counting: bundled BPE files, known counts, odd client bodies."""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from localgate import resources, tokens
from localgate.errors import LocalgateError

REPO = Path(__file__).resolve().parent.parent
TIKTOKEN_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}
SAMPLES = [
    "hello world",
    "",
    " ",
    "Hello, 世界! 🌍 naïve café",
    "def f(x):\n    return x ** 2\n",
    "   many   spaces\n\n\ttabs\r\n",
    "1234567890 3.14159",
    "<|endoftext|> is ordinary text here",
    "I'm sure they'll've DONE it",
    "Ωμέγα Привет مرحبا नमस्ते",
]


class NetworkUsed(AssertionError):
    pass


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Any download attempt fails the test; tiktoken's cache dir is empty."""

    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network used: {args!r}")

    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(tiktoken.load, "read_file", refuse)
    monkeypatch.setattr(tiktoken, "get_encoding", refuse)
    monkeypatch.setattr(tiktoken.registry, "get_encoding", refuse)
    return cache


def test_encodings_load_from_bundled_files_without_network(monkeypatch, no_network):
    monkeypatch.setattr(tokens, "_encodings", {})  # force a real load under the block
    o200k = tokens.get_encoding("o200k_base")
    cl100k = tokens.get_encoding("cl100k_base")
    assert (o200k.name, o200k.n_vocab) == ("o200k_base", 200019)
    assert (cl100k.name, cl100k.n_vocab) == ("cl100k_base", 100277)
    assert list(no_network.iterdir()) == [], "nothing written to tiktoken's cache"
    assert tokens.get_encoding("o200k_base") is o200k, "cached"


def test_shipped_files_are_gzip_with_tiktokens_hashes():
    for name, spec in tokens._SPECS.items():
        path = resources.data_path(spec.filename)
        assert path.name == f"{name}.tiktoken.gz"
        assert hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest() == spec.sha256


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_specs_match_tiktokens_own_definitions(monkeypatch, name):
    monkeypatch.setattr(openai_public, "load_tiktoken_bpe", lambda *a, **k: {})
    reference = getattr(openai_public, name)()
    assert tokens._SPECS[name].pat_str == reference["pat_str"]
    assert tokens._SPECS[name].special_tokens == reference["special_tokens"]


@pytest.mark.parametrize("name", ["o200k_base", "cl100k_base"])
def test_same_tokens_as_tiktokens_own_loader(no_network, name):
    """Hand the same rank file to tiktoken through its cache (its documented
    offline path): both encodings must agree token for token."""
    raw = gzip.decompress(resources.data_path(tokens._SPECS[name].filename).read_bytes())
    key = hashlib.sha1(TIKTOKEN_URLS[name].encode()).hexdigest()
    (no_network / key).write_bytes(raw)
    reference = tiktoken.Encoding(**getattr(openai_public, name)())
    ours = tokens.get_encoding(name)
    assert ours.special_tokens_set == reference.special_tokens_set
    for text in SAMPLES:
        assert ours.encode_ordinary(text) == reference.encode_ordinary(text), text


def test_known_token_values():
    assert tokens.get_encoding("o200k_base").encode_ordinary("hello world") == [24912, 2375]
    assert tokens.get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]
    assert tokens.count_tokens("hello world") == 2
    assert tokens.count_tokens("hello world", "gpt-4") == 2
    assert tokens.count_tokens("") == 0
    assert tokens.count_tokens("<|endoftext|>") > 1, "special tokens count as plain text"
    assert tokens.count_tokens("lone \ud800 surrogate") > 0


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-4.5-preview", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-5.4-mini", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("claude-sonnet-4-5", "o200k_base"),
        ("gemini-2.5-pro", "o200k_base"),
        ("localgate-demo", "o200k_base"),
        (None, "o200k_base"),
        ("", "o200k_base"),
        ("ft:gpt-4o-mini:org::abc", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("GPT-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("openai/gpt-4", "cl100k_base"),
        ("ft:gpt-4-0613:org::abc", "cl100k_base"),
    ],
)
def test_encoding_for_model(model, encoding):
    assert tokens.encoding_for_model(model).name == encoding


def test_unknown_encoding_name_is_refused():
    with pytest.raises(ValueError, match="p50k_base"):
        tokens.get_encoding("p50k_base")


# --- chat bodies -------------------------------------------------------------

# The worked example of OpenAI's cookbook "How to count tokens with tiktoken".
COOKBOOK = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that "
        "translates corporate jargon into plain English.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "New synergies will help drive top-line growth.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on "
        "opportunities for increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean "
        "for the client deliverable.",
    },
]


@pytest.mark.parametrize(
    ("model", "expected"),
    [("gpt-4", 129), ("gpt-3.5-turbo", 129), ("gpt-4o", 124), ("gpt-4o-mini", 124)],
)
def test_chat_count_matches_the_cookbook(model, expected):
    assert tokens.count_chat_input_tokens({"model": model, "messages": COOKBOOK}) == expected


def test_chat_message_overhead():
    one = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]}
    # 3 priming + 3 per message + "user" (1) + "hello world" (2)
    assert tokens.count_chat_input_tokens(one) == 9
    named = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "name": "bob", "content": "hello world"}],
    }
    assert tokens.count_chat_input_tokens(named) == 9 + tokens.count_tokens("bob") + 1


def text_plus(*parts):
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": list(parts)}]}


def test_content_parts_text_and_images():
    base = tokens.count_chat_input_tokens(text_plus({"type": "text", "text": "hello world"}))
    assert base == 9
    url = "data:image/png;base64," + "A" * 10_000  # the payload is not counted as text
    for detail, extra in [("low", 85), ("high", 765), ("auto", 765), (None, 765)]:
        image = {"type": "image_url", "image_url": {"url": url}}
        if detail:
            image["image_url"]["detail"] = detail
        body = text_plus({"type": "text", "text": "hello world"}, image)
        assert tokens.count_chat_input_tokens(body) == base + extra, detail
    responses_style = {"type": "input_image", "image_url": url, "detail": "low"}
    assert tokens.count_chat_input_tokens(text_plus(responses_style)) == 7 + 85
    audio = {"type": "input_audio", "input_audio": {"data": "A" * 5000, "format": "wav"}}
    assert tokens.count_chat_input_tokens(text_plus(audio)) == 7


def test_tools_and_tool_calls_count_as_json_text():
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    plain = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    with_tools = {**plain, "tools": tools}
    assert tokens.count_chat_input_tokens(with_tools) == tokens.count_chat_input_tokens(
        plain
    ) + tokens.count_tokens(json.dumps(tools))

    args = json.dumps({"city": "Paris", "unit": "celsius"})
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": args},
            }
        ],
    }
    body = {"model": "gpt-4o", "messages": [call]}
    expected = (
        3
        + 3
        + tokens.count_tokens("assistant")
        + tokens.count_tokens("get_weather")
        + tokens.count_tokens(args)
    )
    assert tokens.count_chat_input_tokens(body) == expected

    result = {"role": "tool", "tool_call_id": "call_1", "content": "18C and sunny"}
    assert tokens.count_chat_input_tokens({"messages": [result]}) == (
        3 + 3 + sum(tokens.count_tokens(t) for t in ("tool", "call_1", "18C and sunny"))
    )


def test_json_schema_response_format_is_counted():
    schema = {"name": "x", "schema": {"type": "object"}}
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    body = {**plain, "response_format": {"type": "json_schema", "json_schema": schema}}
    assert tokens.count_chat_input_tokens(body) == (
        tokens.count_chat_input_tokens(plain) + tokens.count_tokens(json.dumps(schema))
    )


def _circular():
    loop: list = []
    loop.append(loop)
    return loop


def _deep(depth: int):
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "text",
        42,
        {},
        {"messages": "hello"},
        {"messages": None},
        {"model": 5},
        {"messages": [None, 1, "x", [], {"content": 5}, {"content": {"text": "hi"}}]},
        {
            "messages": [
                {
                    "content": [
                        None,
                        1,
                        {"type": "image_url"},
                        {"type": "text", "text": None},
                        {"type": "image_url", "image_url": "not-a-dict"},
                        "bare",
                    ]
                }
            ]
        },
        {
            "messages": [
                {"role": 1, "tool_calls": "x"},
                {
                    "tool_calls": [
                        1,
                        None,
                        {"function": "x"},
                        {"function": {"name": None, "arguments": {"a": 1}}},
                    ]
                },
                {"function_call": {"name": "f", "arguments": "{}"}},
                {"function_call": 7},
            ]
        },
        {"tools": [{"x": float("nan")}], "functions": "f"},
        {"tools": _circular()},
        {"tools": _deep(5000)},
        {"response_format": {"type": "json_schema", "json_schema": {1, 2}}},
    ],
)
def test_chat_counter_never_raises_on_odd_shapes(body):
    assert tokens.count_chat_input_tokens(body) >= 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "role",
                    "content",
                    "name",
                    "type",
                    "text",
                    "image_url",
                    "detail",
                    "tool_calls",
                    "function",
                    "arguments",
                    "messages",
                    "input",
                    "model",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=30,
)
odd_bodies = st.dictionaries(
    st.sampled_from(["model", "messages", "tools", "functions", "response_format", "input"]),
    json_values,
    max_size=5,
)


@pytest.mark.slow  # 200 examples
@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(odd_bodies)
def test_counters_never_raise_on_arbitrary_json(body):
    assert tokens.count_chat_input_tokens(body) >= 3
    assert tokens.count_embedding_input_tokens(body) >= 0


# --- embeddings --------------------------------------------------------------


def test_embedding_inputs():
    model = "text-embedding-3-small"
    one = tokens.count_tokens("hello world", model)
    count = tokens.count_embedding_input_tokens
    assert count({"model": model, "input": "hello world"}) == one
    assert count({"model": model, "input": ["hello world", "hello world", ""]}) == 2 * one
    assert count({"model": model, "input": [15339, 1917, 0]}) == 3
    assert count({"model": model, "input": [[1, 2], [3], []]}) == 3
    assert count({"model": model, "input": ["hello world", [1, 2], 7]}) == one + 3
    assert count({"input": "hello world"}) == tokens.count_tokens("hello world")


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"input": None},
        {"input": [True, 1.5, None, {"a": 1}]},
        {"input": {"a": "b"}},
        {"input": [[True, "x", None]]},
        "input",
        {"model": [], "input": "x"},
    ],
)
def test_embedding_counter_never_raises(body):
    assert tokens.count_embedding_input_tokens(body) in (0, 1)


# --- loading: thread safety and corrupt files --------------------------------


def test_concurrent_first_use_loads_once(monkeypatch):
    monkeypatch.setattr(tokens, "_encodings", {})
    calls = []
    real = tokens._load_ranks

    def counting(spec):
        calls.append(spec.filename)
        return real(spec)

    monkeypatch.setattr(tokens, "_load_ranks", counting)
    barrier = threading.Barrier(12)
    results = []

    def worker():
        barrier.wait()
        results.append(tokens.get_encoding("cl100k_base"))

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == ["cl100k_base.tiktoken.gz"]
    assert len(results) == 12 and all(r is results[0] for r in results)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b"not gzip at all", "decompressed"),
        (gzip.compress(b"IQ== 0\n"), "sha256"),
    ],
)
def test_corrupt_bundled_file_is_a_clear_error(monkeypatch, tmp_path, content, needle):
    bad = tmp_path / "cl100k_base.tiktoken.gz"
    bad.write_bytes(content)
    monkeypatch.setattr(tokens, "_encodings", {})
    monkeypatch.setattr(resources, "data_path", lambda name: bad)
    with pytest.raises(LocalgateError, match=needle) as info:
        tokens.get_encoding("cl100k_base")
    assert info.value.code == "bundled_data_corrupt"


def test_malformed_line_with_right_hash_is_reported(monkeypatch, tmp_path):
    raw = b"IQ== 0\nnot-a-pair\n"
    bad = tmp_path / "x.tiktoken.gz"
    bad.write_bytes(gzip.compress(raw))
    spec = tokens._Spec("x.tiktoken.gz", hashlib.sha256(raw).hexdigest(), "", {})
    monkeypatch.setattr(resources, "data_path", lambda name: bad)
    with pytest.raises(LocalgateError, match="malformed"):
        tokens._load_ranks(spec)


def test_module_import_loads_nothing():
    # Importing must stay cheap: the rank files are read on first use only.
    code = "import localgate.tokens as t; print(len(t._encodings))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "0"
