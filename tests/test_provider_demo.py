"""The built-in demo model: deterministic answers, exact usage, max_tokens, n,
forced tool calls and embeddings, through the same interface as a real upstream."""

from __future__ import annotations

import base64
import json
import math
import struct

import httpx
import pytest

from localgate import tokens
from localgate.config import ChannelSettings
from localgate.core.pricing import Usage
from localgate.errors import ConfigError
from localgate.providers import ProviderRequest
from localgate.providers.demo import DemoProvider, compose_answer


async def drain(stream) -> list:
    return [event async for event in stream]


def demo(http_client: httpx.AsyncClient, delay_ms: float = 0) -> DemoProvider:
    """The demo provider; it never uses ``http_client``, the interface wants one."""
    settings = ChannelSettings(
        id="demo",
        kind="demo",
        base_url="",
        api_key=None,
        settlement="official",
        options={"chunk_delay_ms": delay_ms},
    )
    return DemoProvider(settings, http_client)


DEMO_CHAT = {
    "model": "demo-1",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is  localgate?"},
                {"type": "image_url", "image_url": {"url": "data:,"}},
            ],
        },
    ],
}


async def test_demo_is_deterministic_with_exact_usage(http_client):
    first = await demo(http_client).complete(ProviderRequest("chat", DEMO_CHAT))
    second = await demo(http_client).complete(ProviderRequest("chat", DEMO_CHAT))
    assert first.body["id"] == second.body["id"] and first.body["id"].startswith("chatcmpl-demo-")
    assert first.body["object"] == "chat.completion" and first.body["model"] == "demo-1"
    text = first.body["choices"][0]["message"]["content"]
    assert text == second.body["choices"][0]["message"]["content"]
    assert '"What is localgate?" (3 words, 1 image)' in text and "offline demo" in text
    assert first.body["choices"][0]["finish_reason"] == "stop"
    assert first.usage == Usage(
        input=tokens.count_chat_input_tokens(DEMO_CHAT), output=tokens.count_tokens(text, "demo-1")
    )
    assert first.body["usage"]["completion_tokens"] == first.usage.output
    assert json.loads(first.content) == first.body


async def test_demo_stream_matches_non_stream(http_client):
    body = {**DEMO_CHAT, "stream": True, "stream_options": {"include_usage": True}}
    whole = await demo(http_client).complete(ProviderRequest("chat", DEMO_CHAT))
    stream = await demo(http_client, delay_ms=1).open_stream(ProviderRequest("chat", body, True))
    events = await drain(stream)
    assert events[-1].done and events[-2].usage_only
    chunks = [json.loads(e.raw[6:]) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == whole.body["choices"][0]["message"]["content"] == stream.output_text
    assert len(chunks) > 20  # word by word
    assert stream.usage == whole.usage and stream.completed and stream.finish_reason == "stop"


async def test_demo_stream_without_include_usage_still_knows_usage(http_client):
    stream = await demo(http_client).open_stream(
        ProviderRequest("chat", {**DEMO_CHAT, "stream": True}, True)
    )
    events = await drain(stream)
    assert not any(e.usage_only for e in events) and b'"usage"' not in b"".join(
        e.raw for e in events
    )
    assert stream.usage is not None and stream.usage.output == tokens.count_tokens(
        stream.output_text, "demo-1"
    )


async def test_demo_aclose_stops_the_stream(http_client):
    stream = await demo(http_client, delay_ms=5).open_stream(
        ProviderRequest("chat", DEMO_CHAT, True)
    )
    await stream.__anext__()
    await stream.aclose()
    assert [e async for e in stream] == [] and not stream.completed and stream.usage is None


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
async def test_demo_honours_max_tokens(http_client, key):
    resp = await demo(http_client).complete(ProviderRequest("chat", {**DEMO_CHAT, key: 10}))
    choice = resp.body["choices"][0]
    assert choice["finish_reason"] == "length"
    assert 0 < resp.usage.output <= 10
    assert resp.usage.output == tokens.count_tokens(choice["message"]["content"], "demo-1")


async def test_demo_n_choices(http_client):
    one = await demo(http_client).complete(ProviderRequest("chat", DEMO_CHAT))
    two = await demo(http_client).complete(ProviderRequest("chat", {**DEMO_CHAT, "n": 2}))
    assert [c["index"] for c in two.body["choices"]] == [0, 1]
    assert two.usage.output == 2 * one.usage.output


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "required": ["city", "days", "unit"],
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"enum": ["c", "f"]},
                "note": {"type": "string"},
            },
        },
    },
}


@pytest.mark.parametrize(
    "choice", ["required", {"type": "function", "function": {"name": "get_weather"}}]
)
async def test_demo_tool_call_and_round_trip(http_client, choice):
    body = {**DEMO_CHAT, "tools": [WEATHER], "tool_choice": choice}
    resp = await demo(http_client).complete(ProviderRequest("chat", body))
    message = resp.body["choices"][0]["message"]
    assert resp.body["choices"][0]["finish_reason"] == "tool_calls"
    call = message["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "demo", "days": 0, "unit": "c"}
    stream = await demo(http_client).open_stream(
        ProviderRequest("chat", {**body, "stream": True}, True)
    )
    await drain(stream)
    assert stream.finish_reason == "tool_calls"
    assert stream.output_text == "get_weather" + call["function"]["arguments"]
    assert stream.usage.output == resp.usage.output
    # The round trip: the tool's result comes back, the demo answers in text.
    back = {
        "model": "demo-1",
        "tools": [WEATHER],
        "messages": [
            *DEMO_CHAT["messages"],
            message,
            {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21 C"},
        ],
    }
    answer = await demo(http_client).complete(ProviderRequest("chat", back))
    assert '"sunny, 21 C"' in answer.body["choices"][0]["message"]["content"]


async def test_demo_auto_tool_choice_answers_in_text(http_client):
    resp = await demo(http_client).complete(
        ProviderRequest("chat", {**DEMO_CHAT, "tools": [WEATHER]})
    )
    assert resp.body["choices"][0]["message"]["content"]


async def test_demo_embeddings(http_client):
    body = {"model": "demo-embed", "input": ["hello", "world", "hello"]}
    resp = await demo(http_client).complete(ProviderRequest("embeddings", body))
    vectors = [d["embedding"] for d in resp.body["data"]]
    assert all(len(v) == 256 and math.isclose(math.fsum(x * x for x in v), 1.0) for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert resp.usage == Usage(input=tokens.count_embedding_input_tokens(body))
    packed = await demo(http_client).complete(
        ProviderRequest("embeddings", {**body, "encoding_format": "base64", "dimensions": 8})
    )
    raw = base64.b64decode(packed.body["data"][0]["embedding"])
    assert len(struct.unpack("<8f", raw)) == 8


def test_compose_answer_without_user_message():
    assert "no user message" in compose_answer([])
    assert "no user message" in compose_answer("not a list")


async def test_demo_rejects_a_bad_delay_option(http_client):
    with pytest.raises(ConfigError, match="chunk_delay_ms"):
        demo(http_client, delay_ms="fast")
