"""The OpenAI adapter's native Responses API (``/v1/responses``) against the fake
upstream (tests/upstream_responses.py): answers, streams, usage and failures."""

from __future__ import annotations

import json

import httpx
import pytest
from upstream import FakeUpstream
from upstream_responses import validate_sdk_event

from localgate.config import ChannelSettings
from localgate.core.pricing import Usage
from localgate.errors import UpstreamError
from localgate.providers import ProviderRequest
from localgate.providers.base import StreamEvent
from localgate.providers.openai import OpenAICompatibleProvider, OpenAIProvider, ResponsesStream

upstream = FakeUpstream.fixture()

BODY = {"model": "gpt-5", "input": "Say hi"}
STREAM = {**BODY, "stream": True}
TOOLS = [{"type": "function", "name": "get_time", "parameters": {"type": "object"}}]


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as c:
        yield c


def provider(base_url: str, client: httpx.AsyncClient, **kw) -> OpenAIProvider:
    settings = ChannelSettings("oa", "openai", base_url, "sk-test", "official", **kw)
    return OpenAIProvider(settings, client)


async def drain(stream) -> list:
    return [event async for event in stream]


def payloads(events) -> list[dict]:
    return [json.loads(e.raw.split(b"data: ", 1)[1]) for e in events]


def test_only_the_openai_kind_serves_responses_natively():
    assert "responses" in OpenAIProvider.endpoints
    assert "responses" not in OpenAICompatibleProvider.endpoints
    assert {"chat", "embeddings"} <= OpenAICompatibleProvider.endpoints


async def test_complete_posts_to_responses_and_maps_its_usage(upstream, client):
    upstream.set(
        prompt_tokens=120,
        completion_tokens=30,
        cached_tokens=80,
        cache_write_tokens=20,
        reasoning_tokens=12,
    )
    resp = await provider(upstream.base_url, client).complete(ProviderRequest("responses", BODY))
    assert (upstream.last.path, upstream.last.body) == ("/v1/responses", BODY)
    assert upstream.last.headers["authorization"] == "Bearer sk-test"
    assert json.loads(resp.content) == resp.body
    assert resp.body["output"][0]["content"][0]["text"] == "tok0 tok1 tok2 tok3 tok4 "
    assert resp.usage == Usage(input=120, cached_input=80, cache_write=20, output=30, reasoning=12)


async def test_complete_without_usage_reports_none(upstream, client):
    upstream.set(usage=False)
    resp = await provider(upstream.base_url, client).complete(ProviderRequest("responses", BODY))
    assert resp.body["usage"] is None and resp.usage is None


async def test_stream_relays_every_event_verbatim_and_ends_on_completed(upstream, client):
    upstream.set(chunks=3, prompt_tokens=9, cached_tokens=4, reasoning_tokens=1)
    stream = await provider(upstream.base_url, client).open_stream(
        ProviderRequest("responses", STREAM, True)
    )
    assert isinstance(stream, ResponsesStream)
    events = await drain(stream)
    kinds = [p["type"] for p in payloads(events)]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.output_text.delta") == 3
    assert kinds[-1] == "response.completed"
    assert [e.done for e in events] == [False] * (len(events) - 1) + [True]
    assert not any(e.usage_only for e in events)
    assert all(e.raw.startswith(b"event: ") and e.raw.endswith(b"\n\n") for e in events)
    assert stream.completed and stream.finish_reason == "stop"
    assert stream.output_text == "tok0 tok1 tok2 "
    assert stream.usage == Usage(input=9, cached_input=4, output=3, reasoning=1)


async def test_streamed_events_are_valid_sdk_events(upstream, client):
    for body in (STREAM, {**STREAM, "tools": TOOLS}):
        stream = await provider(upstream.base_url, client).open_stream(
            ProviderRequest("responses", body, True)
        )
        for data in payloads(await drain(stream)):
            validate_sdk_event(data)


async def test_stream_tool_call_arguments_count_as_output(upstream, client):
    stream = await provider(upstream.base_url, client).open_stream(
        ProviderRequest("responses", {**STREAM, "tools": TOOLS}, True)
    )
    events = await drain(stream)
    assert "response.function_call_arguments.delta" in [p["type"] for p in payloads(events)]
    assert stream.output_text == "{}" and stream.completed


async def test_stream_without_usage_completes_with_none(upstream, client):
    upstream.set(usage=False)
    stream = await provider(upstream.base_url, client).open_stream(
        ProviderRequest("responses", STREAM, True)
    )
    await drain(stream)
    assert stream.completed and stream.usage is None


async def test_error_event_raises_after_relaying_what_came_before(upstream, client):
    upstream.set(error_body={"error": {"message": "The model overloaded"}})
    stream = await provider(upstream.base_url, client).open_stream(
        ProviderRequest("responses", STREAM, True)
    )
    received = []
    with pytest.raises(UpstreamError, match="The model overloaded") as info:
        async for event in stream:
            received.append(event)
    assert [p["type"] for p in payloads(received)][-1] == "response.output_text.delta"
    assert stream.output_text == "tok0 "
    assert not info.value.retryable and not stream.completed
    assert await upstream.async_wait_until(lambda: upstream.last.finished_at is not None)


async def test_cut_stream_raises_after_the_delivered_events(upstream, client):
    upstream.set(chunks=10, cut_after=6)
    stream = await provider(upstream.base_url, client).open_stream(
        ProviderRequest("responses", STREAM, True)
    )
    received = []
    with pytest.raises(UpstreamError, match="stream cut") as info:
        async for event in stream:
            received.append(event)
    assert len(received) == 6  # created, in_progress, item added, part added, 2 deltas
    assert stream.output_text == "tok0 tok1 "
    assert not info.value.retryable and not stream.completed and stream.usage is None


@pytest.mark.parametrize(
    ("status", "retryable"), [(400, False), (401, False), (408, True), (429, True), (503, True)]
)
@pytest.mark.parametrize("stream", [False, True])
async def test_status_errors_are_classified(upstream, client, status, retryable, stream):
    upstream.push(status=status)
    adapter = provider(upstream.base_url, client)
    req = ProviderRequest("responses", STREAM if stream else BODY, stream)
    with pytest.raises(UpstreamError) as info:
        await (adapter.open_stream(req) if stream else adapter.complete(req))
    assert (info.value.status, info.value.retryable) == (status, retryable)
    assert upstream.last.path == "/v1/responses"


async def mock_stream(response: httpx.Response) -> tuple[ResponsesStream, list]:
    transport = httpx.MockTransport(lambda request: response)
    async with httpx.AsyncClient(transport=transport) as mock:
        stream = await provider("http://up/v1", mock).open_stream(
            ProviderRequest("responses", STREAM, True)
        )
        return stream, await drain(stream)


def sse(data: dict) -> bytes:
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


async def test_clean_end_without_a_terminal_event_is_a_cut():
    body = sse({"type": "response.output_text.delta", "delta": "hi"})
    with pytest.raises(UpstreamError, match=r"before response\.completed") as info:
        await mock_stream(httpx.Response(200, content=body))
    assert not info.value.retryable


async def test_json_instead_of_events_is_retryable():
    with pytest.raises(UpstreamError, match="no capacity") as info:
        await mock_stream(httpx.Response(200, json={"error": {"message": "no capacity"}}))
    assert info.value.retryable and info.value.status == 200


async def test_incomplete_response_ends_the_stream_with_its_usage():
    usage = {"input_tokens": 5, "output_tokens": 16, "output_tokens_details": {}}
    response = {"usage": usage, "incomplete_details": {"reason": "max_output_tokens"}}
    body = sse({"type": "response.incomplete", "response": response})
    stream, events = await mock_stream(httpx.Response(200, content=body))
    assert [e.done for e in events] == [True]
    assert stream.completed and stream.finish_reason == "length"
    assert stream.usage == Usage(input=5, output=16)


async def test_failed_response_keeps_its_usage_and_raises():
    failed = {
        "type": "response.failed",
        "response": {
            "usage": {"input_tokens": 7, "output_tokens": 2},
            "error": {"code": "server_error", "message": "the model crashed"},
        },
    }
    body = sse({"type": "response.created", "response": {}}) + sse(failed)
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    async with httpx.AsyncClient(transport=transport) as mock:
        stream = await provider("http://up/v1", mock).open_stream(
            ProviderRequest("responses", STREAM, True)
        )
        received = []
        with pytest.raises(UpstreamError, match="the model crashed") as info:
            async for event in stream:
                received.append(event)
    assert len(received) == 1 and not info.value.retryable
    assert stream.usage == Usage(input=7, output=2) and not stream.completed


async def test_an_error_before_any_event_may_be_retried_elsewhere():
    body = sse({"type": "error", "code": "server_error", "message": "try again"})
    with pytest.raises(UpstreamError, match="try again") as info:
        await mock_stream(httpx.Response(200, content=body))
    assert info.value.retryable and info.value.status == 200


async def test_chat_streams_still_use_the_chat_relay(upstream, client):
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    stream = await provider(upstream.base_url, client).open_stream(
        ProviderRequest("chat", chat, True)
    )
    assert not isinstance(stream, ResponsesStream)
    events = await drain(stream)
    assert events[-1].raw == b"data: [DONE]\n\n" and stream.completed


async def test_the_error_event_continues_the_upstream_numbering(upstream, client):
    upstream.set(chunks=2)
    stream = await provider(upstream.base_url, client).open_stream(
        ProviderRequest("responses", STREAM, True)
    )
    first = [await stream.__anext__() for _ in range(4)]
    await stream.aclose()
    payload = payloads([StreamEvent(stream.error_event(UpstreamError("gone")))])[0]
    assert payload["type"] == "error" and payload["message"] == "gone"
    assert payload["sequence_number"] == payloads(first)[-1]["sequence_number"] + 1
    validate_sdk_event(payload)
