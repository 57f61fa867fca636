"""The provider layer: SSE splitting, the OpenAI adapter against a real fake
upstream (tests/upstream.py), and the registry. The demo model: test_provider_demo.py."""

from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from upstream import FakeUpstream

from localgate.config import ChannelSettings
from localgate.core.pricing import Usage
from localgate.errors import ConfigError, UpstreamError
from localgate.providers import PROVIDERS, ProviderRequest, make_provider
from localgate.providers.demo import DemoProvider
from localgate.providers.openai import OpenAICompatibleProvider, OpenAIProvider
from localgate.providers.sse import SSEDecoder, aiter_sse

upstream = FakeUpstream.fixture()

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as c:
        yield c


def channel(
    base_url: str = "", *, kind: str = "openai", key: str | None = "sk-test", **kw
) -> ChannelSettings:
    return ChannelSettings(
        id=kind, kind=kind, base_url=base_url, api_key=key, settlement="official", **kw
    )


def openai(upstream: FakeUpstream, client: httpx.AsyncClient, **kw) -> OpenAIProvider:
    return OpenAIProvider(channel(upstream.base_url, **kw), client)


async def drain(stream) -> list:
    return [event async for event in stream]


# --- SSE ----------------------------------------------------------------------


def feed_all(pieces: list[bytes]):
    decoder = SSEDecoder()
    events = [e for piece in pieces for e in decoder.feed(piece)]
    return events + decoder.flush()


def test_sse_several_events_per_chunk_and_split_events():
    stream = b'data: {"a":1}\n\n: keep-alive\n\nevent: ping\ndata: x\ndata: y\n\ndata: [DONE]\n\n'
    for cut in range(len(stream) + 1):
        events = feed_all([stream[:cut], stream[cut:]])
        assert [e.data for e in events] == [b'{"a":1}', None, b"x\ny", b"[DONE]"]
        assert events[2].event == b"ping"
        assert b"".join(e.raw for e in events) == stream


def test_sse_crlf_is_normalized_and_trailing_event_is_flushed():
    events = feed_all([b"data: one\r\n\r\ndata:two\r", b"\n\r\ndata: three"])
    assert [e.data for e in events] == [b"one", b"two", b"three"]
    assert all(e.raw.endswith(b"\n\n") and b"\r" not in e.raw for e in events)


async def test_aiter_sse_over_async_bytes():
    async def chunks():
        for piece in (b"data: a\n", b"\ndata: b\n\n\n\n", b"data: c\n\n"):
            yield piece

    assert [e.data async for e in aiter_sse(chunks())] == [b"a", b"b", b"c"]


payloads = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=30)
blocks = st.one_of(
    payloads.map(lambda p: [f"data: {p}"]),
    st.lists(payloads, min_size=1, max_size=3).map(lambda ps: [f"data: {p}" for p in ps]),
    payloads.map(lambda p: [f": {p}"]),
    st.tuples(payloads, payloads).map(lambda t: [f"event: {t[0]}", f"data: {t[1]}"]),
)


@given(
    st.lists(blocks, min_size=1, max_size=8),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.lists(st.integers(min_value=0, max_value=400), max_size=12),
)
def test_sse_rechunking_gives_the_same_events(events, newline, cuts):
    stream = "".join(newline.join(lines) + newline * 2 for lines in events).encode()
    whole = feed_all([stream])
    bounds = sorted({min(c, len(stream)) for c in cuts})
    pieces = [stream[a:b] for a, b in zip([0, *bounds], [*bounds, len(stream)], strict=True)]
    assert feed_all(pieces) == whole
    assert len(whole) == len(events)
    for lines, event in zip(events, whole, strict=True):
        data = [line[6:] for line in lines if line.startswith("data: ")]
        assert event.data == ("\n".join(data).encode() if data else None)
        assert event.raw.endswith(b"\n\n")


# --- OpenAI provider: answers ---------------------------------------------------


async def test_complete_relays_body_and_maps_usage(upstream, client):
    upstream.set(prompt_tokens=120, completion_tokens=30, cached_tokens=100, reasoning_tokens=12)
    resp = await openai(upstream, client).complete(ProviderRequest("chat", CHAT))
    assert resp.status == 200
    assert json.loads(resp.content) == resp.body
    assert resp.body["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 "
    assert resp.usage == Usage(input=120, cached_input=100, output=30, reasoning=12)
    seen = upstream.last
    assert (seen.method, seen.path, seen.body) == ("POST", "/v1/chat/completions", CHAT)
    assert seen.headers["authorization"] == "Bearer sk-test"


async def test_complete_without_usage_reports_none(upstream, client):
    upstream.set(usage=False)
    resp = await openai(upstream, client).complete(ProviderRequest("chat", CHAT))
    assert resp.usage is None


async def test_embeddings(upstream, client):
    upstream.set(prompt_tokens=7)
    body = {"model": "text-embedding-3-small", "input": ["a b", "c"]}
    resp = await openai(upstream, client).complete(ProviderRequest("embeddings", body))
    assert upstream.last.path == "/v1/embeddings"
    assert len(resp.body["data"]) == 2
    assert resp.usage == Usage(input=7)


async def test_stream_events_flags_and_accounting(upstream, client):
    upstream.set(chunks=3, prompt_tokens=9, cached_tokens=4, reasoning_tokens=1)
    stream = await openai(upstream, client).open_stream(ProviderRequest("chat", STREAM, True))
    assert stream.status == 200
    events = await drain(stream)
    assert all(e.raw.startswith(b"data: ") and e.raw.endswith(b"\n\n") for e in events)
    assert [e.done for e in events] == [False] * (len(events) - 1) + [True]
    assert [e.usage_only for e in events] == [False] * (len(events) - 2) + [True, False]
    assert stream.output_text == "tok0 tok1 tok2 "
    assert stream.finish_reason == "stop" and stream.completed
    assert stream.usage == Usage(input=9, cached_input=4, output=3, reasoning=1)
    assert upstream.last.headers["accept"] == "text/event-stream"


async def test_stream_without_usage(upstream, client):
    body = {**CHAT, "stream": True}
    stream = await openai(upstream, client).open_stream(ProviderRequest("chat", body, True))
    events = await drain(stream)
    assert not any(e.usage_only for e in events)
    assert stream.usage is None and stream.completed


async def test_stream_tool_call_arguments_count_as_output(upstream, client):
    tools = [{"type": "function", "function": {"name": "get_time", "parameters": {}}}]
    body = {**STREAM, "tools": tools, "tool_choice": "required"}
    stream = await openai(upstream, client).open_stream(ProviderRequest("chat", body, True))
    await drain(stream)
    assert stream.finish_reason == "tool_calls"
    assert stream.output_text == "get_time{}"


async def test_compatible_kind_sends_no_key_when_none(upstream, client):
    provider = OpenAICompatibleProvider(
        channel(
            upstream.base_url, kind="openai_compatible", key=None, headers={"X-Title": "localgate"}
        ),
        client,
    )
    await provider.complete(ProviderRequest("chat", CHAT))
    assert "authorization" not in upstream.last.headers
    assert upstream.last.headers["x-title"] == "localgate"


# --- OpenAI provider: failures ----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (401, False), (429, True), (500, True), (503, True)]
)
@pytest.mark.parametrize("stream", [False, True])
async def test_status_errors(upstream, client, status, retryable, stream):
    upstream.push(status=status)
    provider = openai(upstream, client)
    req = ProviderRequest("chat", STREAM if stream else CHAT, stream)
    with pytest.raises(UpstreamError) as info:
        await (provider.open_stream(req) if stream else provider.complete(req))
    err = info.value
    assert (err.status, err.retryable, err.timeout) == (status, retryable, False)
    assert f"fake upstream: HTTP {status}" in err.message
    assert json.loads(err.body)["error"]["message"] == f"fake upstream: HTTP {status}"


async def test_error_body_never_echoes_the_key(upstream, client):
    upstream.push(status=401, error_body={"error": {"message": "Incorrect API key sk-test"}})
    with pytest.raises(UpstreamError) as info:
        await openai(upstream, client).complete(ProviderRequest("chat", CHAT))
    assert "sk-test" not in info.value.message and "sk-test" not in info.value.body


async def test_status_sequence_then_success(upstream, client):
    upstream.push_statuses(503)
    provider = openai(upstream, client)
    with pytest.raises(UpstreamError):
        await provider.complete(ProviderRequest("chat", CHAT))
    assert (await provider.complete(ProviderRequest("chat", CHAT))).status == 200


async def test_connect_refused_is_retryable(client):
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAIProvider(channel(f"http://127.0.0.1:{port}/v1"), client)
    for call in (provider.complete, provider.open_stream):
        with pytest.raises(UpstreamError) as info:
            await call(ProviderRequest("chat", CHAT))
        assert info.value.retryable and info.value.status is None
        assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("stream", [False, True])
async def test_reset_before_answer_is_retryable(upstream, client, stream):
    upstream.push(reset=True)
    provider = openai(upstream, client)
    req = ProviderRequest("chat", STREAM, stream)
    with pytest.raises(UpstreamError) as info:
        await (provider.open_stream(req) if stream else provider.complete(req))
    assert info.value.retryable and not info.value.timeout


@pytest.mark.parametrize("stream", [False, True])
async def test_timeout_is_retryable(upstream, client, stream):
    upstream.push(latency=5)
    provider = openai(upstream, client, timeout=0.2)
    req = ProviderRequest("chat", STREAM, stream)
    with pytest.raises(UpstreamError) as info:
        await (provider.open_stream(req) if stream else provider.complete(req))
    assert info.value.retryable and info.value.timeout


async def test_cut_stream_raises_after_the_delivered_events(upstream, client):
    upstream.set(chunks=10, cut_after=4)
    stream = await openai(upstream, client).open_stream(ProviderRequest("chat", STREAM, True))
    received = []
    with pytest.raises(UpstreamError, match="stream cut") as info:
        async for event in stream:
            received.append(event)
    assert len(received) == 4  # role chunk + 3 content chunks
    assert stream.output_text == "tok0 tok1 tok2 "
    assert not stream.completed and stream.usage is None
    assert not info.value.retryable


async def mock_stream(response: httpx.Response):
    transport = httpx.MockTransport(lambda request: response)
    async with httpx.AsyncClient(transport=transport) as mock:
        stream = await OpenAIProvider(channel("http://up/v1"), mock).open_stream(
            ProviderRequest("chat", STREAM, True)
        )
        return stream, await drain(stream)


async def test_clean_end_without_done_or_finish_is_a_cut():
    body = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
    with pytest.raises(UpstreamError, match="before"):
        await mock_stream(httpx.Response(200, content=body))


async def test_stream_answered_with_json_is_retryable():
    with pytest.raises(UpstreamError, match="no capacity") as info:
        await mock_stream(httpx.Response(200, json={"error": {"message": "no capacity"}}))
    assert info.value.retryable and info.value.status == 200


async def test_finish_reason_then_clean_end_is_complete():
    body = b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}'  # no [DONE]
    stream, events = await mock_stream(httpx.Response(200, content=body))
    assert stream.completed and len(events) == 1 and events[0].raw.endswith(b"\n\n")


async def test_aclose_cancels_the_upstream_promptly(upstream, client):
    upstream.set(chunks=200, chunk_delay=0.05)
    stream = await openai(upstream, client).open_stream(ProviderRequest("chat", STREAM, True))
    for _ in range(3):
        await stream.__anext__()
    closed_at = time.monotonic()
    await stream.aclose()
    await stream.aclose()  # idempotent
    assert await upstream.async_wait_until(lambda: upstream.last.client_disconnected, 2.0)
    assert upstream.last.disconnected_at - closed_at < 1.0
    assert upstream.last.events_sent < 200
    assert [e async for e in stream] == []


async def test_cancelled_task_then_aclose_disconnects(upstream, client):
    upstream.set(chunks=200, chunk_delay=0.05)
    stream = await openai(upstream, client).open_stream(ProviderRequest("chat", STREAM, True))
    task = asyncio.create_task(drain(stream))
    await asyncio.sleep(0.12)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await stream.aclose()
    assert await upstream.async_wait_until(lambda: upstream.last.client_disconnected, 2.0)


async def test_aclose_from_another_task_ends_the_reader(upstream, client):
    upstream.set(chunks=200, chunk_delay=0.05)
    stream = await openai(upstream, client).open_stream(ProviderRequest("chat", STREAM, True))
    reader = asyncio.create_task(drain(stream))
    await asyncio.sleep(0.12)
    await stream.aclose()
    events = await asyncio.wait_for(reader, 2.0)
    assert 0 < len(events) < 200 and not stream.completed
    assert await upstream.async_wait_until(lambda: upstream.last.client_disconnected, 2.0)


async def test_connection_is_reused_after_a_complete_stream(upstream, client):
    provider = openai(upstream, client)
    for _ in range(3):
        await drain(await provider.open_stream(ProviderRequest("chat", STREAM, True)))
    assert len(upstream._connections) == 1


# --- registry ----------------------------------------------------------------------


async def test_registry_and_make_provider(client):
    assert set(PROVIDERS) == {"openai", "openai_compatible", "anthropic", "gemini", "demo"}
    assert isinstance(make_provider(channel(kind="demo", key=None), client), DemoProvider)
    with pytest.raises(ConfigError, match="unknown channel kind 'nope'; use one of openai"):
        make_provider(channel(kind="nope"), client)
    with pytest.raises(ConfigError, match="No key for channel openai"):
        make_provider(channel("http://x/v1", key=None), client)
    assert PROVIDERS["openai"].needs_key and not PROVIDERS["openai_compatible"].needs_key
