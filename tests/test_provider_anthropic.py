"""The anthropic channel kind (localgate.providers.anthropic) against the fake
Anthropic upstream (tests/upstream_anthropic.py): native /v1/messages pass-through,
chat translated both ways, usage, stream events and failures."""

from __future__ import annotations

import json
import socket

import httpx
import pytest
from upstream import FakeUpstream

from localgate.config import ChannelSettings
from localgate.core.pricing import Usage
from localgate.errors import BadRequest, ConfigError, UpstreamError
from localgate.providers.anthropic import AnthropicProvider
from localgate.providers.base import ProviderRequest

upstream = FakeUpstream.fixture()

MESSAGES = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "Say hi"}],
}
CHAT = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Say hi"}]}
CHAT_STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
CHAT_TOOLS = [
    {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
]


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as c:
        yield c


def anthropic(base_url: str, client: httpx.AsyncClient, **kw) -> AnthropicProvider:
    return AnthropicProvider(
        ChannelSettings("claude", "anthropic", base_url, "sk-test", "official", **kw), client
    )


def request(endpoint: str, stream: bool = False, headers=None, **fields) -> ProviderRequest:
    base = MESSAGES if endpoint == "messages" else CHAT_STREAM if stream else CHAT
    body = {**base, **fields}
    if stream and endpoint == "messages":
        body["stream"] = True
    return ProviderRequest(endpoint, body, stream, headers or {})


async def drain(stream) -> list:
    return [event async for event in stream]


def chunks_of(events) -> list[dict]:
    return [
        json.loads(e.raw[6:]) for e in events if e.raw.startswith(b"data: {") and not e.usage_only
    ]


# --- answers -------------------------------------------------------------------------


async def test_messages_pass_through_unchanged_with_normalised_usage(upstream, client):
    upstream.set(prompt_tokens=10, cached_tokens=100, cache_write_tokens=20, completion_tokens=7)
    req = request("messages", headers={"anthropic-beta": "context-1m-2025-08-07"})
    resp = await anthropic(upstream.base_url, client).complete(req)
    assert resp.status == 200 and json.loads(resp.content) == resp.body
    assert resp.body["type"] == "message"
    assert resp.body["content"] == [{"type": "text", "text": "tok0 tok1 tok2 tok3 tok4 "}]
    assert resp.usage == Usage(input=130, cached_input=100, cache_write=20, output=7)
    seen = upstream.last
    assert seen.path == "/v1/messages" and seen.body == MESSAGES
    assert seen.headers["x-api-key"] == "sk-test" and "authorization" not in seen.headers
    assert seen.headers["anthropic-version"] == "2023-06-01"
    assert seen.headers["anthropic-beta"] == "context-1m-2025-08-07"
    assert seen.headers["user-agent"].startswith("localgate/")


async def test_channel_options_and_headers_reach_the_upstream(upstream, client):
    provider = anthropic(
        upstream.base_url,
        client,
        options={"anthropic_version": "2024-01-01"},
        headers={"X-Team": "core"},
    )
    await provider.complete(request("chat", headers={"anthropic-beta": "not-for-chat"}))
    headers = upstream.last.headers
    assert headers["anthropic-version"] == "2024-01-01" and headers["x-team"] == "core"
    assert "anthropic-beta" not in headers  # only native calls forward the client's betas


async def test_chat_is_translated_to_messages_and_back(upstream, client):
    upstream.set(prompt_tokens=10, cached_tokens=4, cache_write_tokens=2, completion_tokens=5)
    body = {**CHAT, "messages": [{"role": "system", "content": "Be brief."}, *CHAT["messages"]]}
    resp = await anthropic(upstream.base_url, client).complete(
        ProviderRequest("chat", {**body, "max_tokens": 50, "stop": "END"})
    )
    sent = upstream.last.body
    assert sent["system"] == [{"type": "text", "text": "Be brief."}]
    assert sent["max_tokens"] == 50 and sent["stop_sequences"] == ["END"]
    assert sent["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]
    assert resp.body["object"] == "chat.completion" and json.loads(resp.content) == resp.body
    choice = resp.body["choices"][0]
    assert choice["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 "
    assert choice["finish_reason"] == "stop"
    assert resp.body["usage"]["prompt_tokens"] == 16
    assert resp.body["usage"]["prompt_tokens_details"] == {"cached_tokens": 4}
    assert resp.usage == Usage(input=16, cached_input=4, cache_write=2, output=5)


async def test_a_chat_request_without_a_limit_gets_the_channel_default(upstream, client):
    await anthropic(upstream.base_url, client).complete(request("chat"))
    assert upstream.last.body["max_tokens"] == 4096
    await anthropic(upstream.base_url, client, options={"max_tokens": 777}).complete(
        request("chat")
    )
    assert upstream.last.body["max_tokens"] == 777


async def test_a_chat_tool_round_trip(upstream, client):
    provider = anthropic(upstream.base_url, client)
    first = await provider.complete(request("chat", tools=CHAT_TOOLS))
    reply = first.body["choices"][0]["message"]
    assert first.body["choices"][0]["finish_reason"] == "tool_calls"
    call = reply["tool_calls"][0]
    assert call["function"] == {"name": "search", "arguments": '{"query": "tok0"}'}
    assert upstream.last.body["tools"] == [{"name": "search", "input_schema": {"type": "object"}}]
    messages = [
        *CHAT["messages"],
        reply,
        {"role": "tool", "tool_call_id": call["id"], "content": "found it"},
    ]
    second = await provider.complete(request("chat", tools=CHAT_TOOLS, messages=messages))
    assert upstream.last.body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": call["id"], "name": "search", "input": {"query": "tok0"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "found it"}],
        },
    ]
    assert second.body["choices"][0]["message"]["content"].startswith("tok0")


async def test_an_untranslatable_chat_request_is_refused_before_any_call(upstream, client):
    with pytest.raises(BadRequest):
        await anthropic(upstream.base_url, client).complete(request("chat", n=3))
    assert upstream.requests == []


# --- streams ---------------------------------------------------------------------------


async def test_native_stream_relays_every_event_verbatim(upstream, client):
    upstream.set(chunks=3, prompt_tokens=10, cached_tokens=100, cache_write_tokens=20)
    stream = await anthropic(upstream.base_url, client).open_stream(request("messages", True))
    events = await drain(stream)
    names = [e.raw.split(b"\n")[0] for e in events]
    assert names == [
        b"event: message_start",
        b"event: ping",
        b"event: content_block_start",
        *[b"event: content_block_delta"] * 3,
        b"event: content_block_stop",
        b"event: message_delta",
        b"event: message_stop",
    ]
    assert [e.done for e in events] == [False] * 8 + [True]
    assert not any(e.usage_only for e in events)
    assert stream.completed and stream.finish_reason == "end_turn"
    assert stream.output_text == "tok0 tok1 tok2 "
    assert stream.usage == Usage(input=130, cached_input=100, cache_write=20, output=3)
    assert upstream.last.headers["accept"] == "text/event-stream"


async def test_chat_stream_is_told_as_openai_chunks_with_usage_and_done(upstream, client):
    upstream.set(chunks=3, prompt_tokens=10, cached_tokens=5, cache_write_tokens=1)
    stream = await anthropic(upstream.base_url, client).open_stream(request("chat", True))
    events = await drain(stream)
    assert events[-1] == (b"data: [DONE]\n\n", False, True)
    assert [e.usage_only for e in events[-2:]] == [True, False]
    usage_chunk = json.loads(events[-2].raw[6:])
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["prompt_tokens"] == 16
    chunks = chunks_of(events)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "tok0 tok1 tok2 "
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert stream.completed and stream.finish_reason == "stop"
    assert stream.usage == Usage(input=16, cached_input=5, cache_write=1, output=3)
    assert upstream.last.body["stream"] is True and "stream_options" not in upstream.last.body


async def test_chat_stream_tool_call_arrives_in_fragments(upstream, client):
    stream = await anthropic(upstream.base_url, client).open_stream(
        request("chat", True, tools=CHAT_TOOLS)
    )
    chunks = chunks_of(await drain(stream))
    calls = [c for chunk in chunks for c in chunk["choices"][0]["delta"].get("tool_calls", ())]
    assert calls[0]["function"] == {"name": "search", "arguments": ""}
    assert len(calls) > 2
    assert "".join(c["function"]["arguments"] for c in calls) == '{"query": "tok0"}'
    assert stream.finish_reason == "tool_calls"
    assert stream.output_text == 'search{"query": "tok0"}'


async def test_thinking_streams_as_reasoning_content(upstream, client):
    upstream.set(reasoning_tokens=3)
    stream = await anthropic(upstream.base_url, client).open_stream(
        request("chat", True, reasoning_effort="low", max_tokens=2000)
    )
    chunks = chunks_of(await drain(stream))
    assert upstream.last.body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    reasoning = "".join(c["choices"][0]["delta"].get("reasoning_content") or "" for c in chunks)
    assert reasoning == "fake thinking"


async def test_stream_without_usage_reports_none_and_skips_the_usage_chunk(upstream, client):
    upstream.set(usage=False)
    stream = await anthropic(upstream.base_url, client).open_stream(request("chat", True))
    events = await drain(stream)
    assert stream.usage is None and stream.completed
    assert not any(e.usage_only for e in events)


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


STREAM_START = sse(
    "message_start",
    {
        "type": "message_start",
        "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 3}},
    },
)
TEXT = sse(
    "content_block_start",
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
) + sse(
    "content_block_delta",
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
)
STREAM_END = sse(
    "message_delta",
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
) + sse("message_stop", {"type": "message_stop"})


async def mock(handler, endpoint="chat", *, stream=True):
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as mock_client:
        provider = anthropic("http://up/v1", mock_client)
        req = request(endpoint, stream)
        if not stream:
            return await provider.complete(req)
        opened = await provider.open_stream(req)
        received = []
        try:
            async for event in opened:
                received.append(event)
        except UpstreamError as exc:
            return opened, received, exc
        return opened, received, None


def stream_of(body: bytes):
    headers = {"content-type": "text/event-stream"}
    return lambda request: httpx.Response(200, content=body, headers=headers)


@pytest.mark.parametrize("endpoint", ["chat", "messages"])
async def test_pings_comments_and_unknown_events_are_tolerated(endpoint):
    odd = b": keep-alive\n\n" + sse("ping", {"type": "ping"})
    odd += sse("brand_new_event", {"type": "brand_new_event", "x": [1]})
    stream, events, error = await mock(
        stream_of(STREAM_START + odd + TEXT + odd + STREAM_END), endpoint
    )
    assert error is None and stream.completed and stream.output_text == "hi"
    assert stream.usage == Usage(input=3, output=1)
    if endpoint == "messages":
        assert b"".join(e.raw for e in events).count(b"brand_new_event") == 4


@pytest.mark.parametrize("endpoint", ["chat", "messages"])
async def test_an_error_event_in_a_200_stream_fails_after_the_events_so_far(
    upstream, client, endpoint
):
    upstream.set(error_body="Overloaded")
    stream = await anthropic(upstream.base_url, client).open_stream(request(endpoint, True))
    received = []
    with pytest.raises(UpstreamError, match="overloaded_error: Overloaded") as info:
        async for event in stream:
            received.append(event)
    assert not info.value.retryable and "claude" in info.value.message
    assert received and not stream.completed
    assert stream.output_text == "tok0 "
    assert not any(b"event: error" in e.raw for e in received)


async def test_an_error_event_before_anything_else_is_retryable():
    error = sse("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}})
    _, events, exc = await mock(stream_of(error))
    assert events == [] and exc is not None and exc.retryable


@pytest.mark.parametrize("endpoint", ["chat", "messages"])
async def test_a_clean_end_without_message_stop_is_a_cut(endpoint):
    body = STREAM_START + TEXT + STREAM_END.rsplit(b"event: message_stop", 1)[0]
    stream, events, exc = await mock(stream_of(body), endpoint)
    assert exc is not None and "before message_stop" in exc.message and not exc.retryable
    assert not stream.completed and events


async def test_a_stream_cut_mid_tool_call_raises_after_the_delivered_events(upstream, client):
    upstream.set(cut_after=5)  # message_start, ping, block start, two argument fragments
    stream = await anthropic(upstream.base_url, client).open_stream(
        request("chat", True, tools=CHAT_TOOLS)
    )
    received = []
    with pytest.raises(UpstreamError, match="stream cut") as info:
        async for event in stream:
            received.append(event)
    assert not info.value.retryable and not stream.completed
    calls = [
        c for ch in chunks_of(received) for c in ch["choices"][0]["delta"].get("tool_calls", ())
    ]
    assert "".join(c["function"]["arguments"] for c in calls) == '{"query": '
    assert stream.finish_reason is None


@pytest.mark.parametrize("endpoint", ["chat", "messages"])
async def test_aclose_hangs_up_on_the_upstream_promptly(upstream, client, endpoint):
    upstream.set(chunks=200, chunk_delay=0.05)
    stream = await anthropic(upstream.base_url, client).open_stream(request(endpoint, True))
    for _ in range(4):
        await stream.__anext__()
    await stream.aclose()
    await stream.aclose()  # idempotent
    assert await upstream.async_wait_until(lambda: upstream.last.client_disconnected, 2.0)
    assert upstream.last.events_sent < 200
    assert [e async for e in stream] == [] and not stream.completed


@pytest.mark.parametrize("endpoint", ["chat", "messages"])
async def test_a_stream_answered_with_json_is_retryable(endpoint):
    handler = lambda request: httpx.Response(  # noqa: E731
        200, json={"type": "error", "error": {"type": "api_error", "message": "no capacity"}}
    )
    with pytest.raises(UpstreamError, match="no capacity") as info:
        await mock(handler, endpoint)
    assert info.value.retryable and info.value.status == 200


async def test_a_200_with_an_error_body_instead_of_a_message_is_retryable():
    handler = lambda request: httpx.Response(  # noqa: E731
        200, json={"type": "error", "error": {"type": "api_error", "message": "busy"}}
    )
    with pytest.raises(UpstreamError, match="busy") as info:
        await mock(handler, "messages", stream=False)
    assert info.value.retryable


# --- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (401, False), (408, True), (429, True), (500, True)]
)
@pytest.mark.parametrize(
    ("endpoint", "stream"), [("chat", False), ("chat", True), ("messages", True)]
)
async def test_status_errors_are_classified(upstream, client, status, retryable, endpoint, stream):
    upstream.push(status=status)
    provider = anthropic(upstream.base_url, client)
    req = request(endpoint, stream)
    with pytest.raises(UpstreamError) as info:
        await (provider.open_stream(req) if stream else provider.complete(req))
    assert (info.value.status, info.value.retryable) == (status, retryable)
    assert f"fake upstream: HTTP {status}" in info.value.message
    assert json.loads(info.value.body)["type"] == "error"


@pytest.mark.parametrize("stream", [False, True])
async def test_overloaded_529_is_retryable(stream):
    body = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    handler = lambda request: httpx.Response(529, json=body)  # noqa: E731
    with pytest.raises(UpstreamError, match="HTTP 529: Overloaded") as info:
        await mock(handler, "messages", stream=stream)
    assert info.value.retryable and info.value.status == 529


async def test_the_key_never_appears_in_an_error(upstream, client):
    upstream.push(status=401, error_body={"error": {"message": "invalid x-api-key sk-test"}})
    with pytest.raises(UpstreamError) as info:
        await anthropic(upstream.base_url, client).complete(request("messages"))
    assert "sk-test" not in info.value.message and "sk-test" not in info.value.body


async def test_connect_errors_are_retryable(client):
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = anthropic(f"http://127.0.0.1:{port}/v1", client)
    for call, stream in ((provider.complete, False), (provider.open_stream, True)):
        with pytest.raises(UpstreamError) as info:
            await call(request("messages", stream))
        assert info.value.retryable and info.value.status is None


async def test_a_channel_without_a_key_is_a_config_error(client):
    with pytest.raises(ConfigError, match="No key for channel claude"):
        AnthropicProvider(
            ChannelSettings("claude", "anthropic", "http://up/v1", None, "official"), client
        )
