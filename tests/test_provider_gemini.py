"""The gemini channel kind: OpenAI chat <-> generateContent translation both
ways, then the adapter against the fake Gemini upstream (tests/upstream_gemini.py)."""

from __future__ import annotations

import base64
import json
import socket

import httpx
import pytest
from upstream import FakeUpstream
from upstream_gemini import SIGNATURE

from localgate.config import ChannelSettings
from localgate.core.pricing import Usage
from localgate.errors import UpstreamError
from localgate.providers import ProviderRequest
from localgate.providers.gemini import (
    GeminiProvider,
    StreamTranslator,
    from_gemini,
    usage_from_gemini,
)
from localgate.providers.gemini_format import (
    gemini_schema,
    new_call_id,
    signature_from_id,
    to_gemini,
)

upstream = FakeUpstream.fixture()

MODEL = "gemini-2.5-flash"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}]}
STREAM = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as c:
        yield c


def gemini(base_url: str, client: httpx.AsyncClient, **kw) -> GeminiProvider:
    settings = ChannelSettings("gemini", "gemini", base_url, "gm-secret-key", "official", **kw)
    return GeminiProvider(settings, client)


async def drain(stream) -> list:
    return [event async for event in stream]


def payloads(events) -> list:
    return [json.loads(e.raw[6:]) for e in events if not e.done]


# --- request translation --------------------------------------------------------


def test_system_and_developer_messages_become_the_system_instruction():
    body = to_gemini(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "salut"},
            ]
        }
    )
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "Use French."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "hi"}]},
        {"role": "model", "parts": [{"text": "salut"}]},
    ]


def test_consecutive_turns_of_one_role_are_merged():
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    assert to_gemini({"messages": messages})["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]}
    ]


def test_images_go_inline_from_data_urls_and_by_uri_from_web_urls():
    png = base64.b64encode(b"\x89PNG").decode()
    content = [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/cat.webp?size=2"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/render"}},
        {"type": "image_url", "image_url": {"url": "data:text/plain,hi%20there"}},
    ]
    parts = to_gemini({"messages": [{"role": "user", "content": content}]})["contents"][0]["parts"]
    assert parts == [
        {"text": "what is this"},
        {"inlineData": {"mimeType": "image/png", "data": png}},
        {"fileData": {"fileUri": "https://x.test/cat.webp?size=2", "mimeType": "image/webp"}},
        {"fileData": {"fileUri": "https://x.test/render", "mimeType": "image/jpeg"}},
        {"inlineData": {"mimeType": "text/plain", "data": base64.b64encode(b"hi there").decode()}},
    ]


def test_tool_calls_and_tool_results_become_function_call_and_response_turns():
    messages = [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "sunny"},
    ]
    contents = to_gemini({"messages": messages})["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
        ],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 21}}},
            {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}},
        ],
    }


def test_a_tool_result_for_an_unknown_call_is_refused():
    with pytest.raises(ValueError, match="no earlier tool call"):
        to_gemini({"messages": [{"role": "tool", "tool_call_id": "call_x", "content": "1"}]})


def test_tools_lose_the_schema_keys_gemini_refuses():
    body = to_gemini({**CHAT, "tools": [WEATHER]})
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather for a city",
                    "parameters": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                        "required": ["city"],
                    },
                }
            ]
        }
    ]


def test_a_function_without_parameters_declares_none():
    tool = {"type": "function", "function": {"name": "now", "parameters": {"type": "object"}}}
    assert to_gemini({**CHAT, "tools": [tool]})["tools"] == [
        {"functionDeclarations": [{"name": "now"}]}
    ]


def test_schemas_are_reduced_to_what_gemini_accepts():
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}},
        "properties": {
            "unit": {"$ref": "#/$defs/Unit", "description": "scale"},
            "note": {"type": ["string", "null"], "default": "", "format": "uri"},
            "mode": {"const": "fast"},
            "size": {"oneOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "null"}]},
        },
        "additionalProperties": False,
    }
    assert gemini_schema(schema) == {
        "type": "object",
        "properties": {
            "unit": {"type": "string", "enum": ["C", "F"], "description": "scale"},
            "note": {"type": "string", "nullable": True},
            "mode": {"enum": ["fast"]},
            "size": {"type": "integer", "nullable": True},
        },
    }


def test_a_recursive_ref_stops_at_a_plain_object():
    schema = {
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}
    }
    reduced = gemini_schema({**schema, "$ref": "#/$defs/Node"})
    depth = 0
    while "properties" in reduced:
        reduced, depth = reduced["properties"]["next"], depth + 1
    assert reduced["type"] == "object" and 1 < depth < 20


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"mode": "ANY", "allowedFunctionNames": ["get_weather"]},
        ),
    ],
)
def test_tool_choice_becomes_the_function_calling_mode(choice, config):
    body = to_gemini({**CHAT, "tools": [WEATHER], "tool_choice": choice})
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_sampling_limits_and_stop_go_into_the_generation_config():
    body = to_gemini(
        {
            **CHAT,
            "max_tokens": 50,
            "max_completion_tokens": 80,
            "temperature": 0.3,
            "top_p": 0.9,
            "stop": "END",
            "n": 2,
            "reasoning_effort": "medium",
        }
    )
    assert body["generationConfig"] == {
        "maxOutputTokens": 80,
        "temperature": 0.3,
        "topP": 0.9,
        "candidateCount": 2,
        "stopSequences": ["END"],
        "thinkingConfig": {"thinkingBudget": 8192, "includeThoughts": False},
    }
    assert "generationConfig" not in to_gemini(CHAT)


@pytest.mark.parametrize(
    ("effort", "budget"), [("none", 0), ("minimal", 1024), ("low", 1024), ("high", 24576)]
)
def test_reasoning_effort_maps_to_a_thinking_budget(effort, budget):
    config = to_gemini({**CHAT, "reasoning_effort": effort})["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingBudget": budget, "includeThoughts": False}


def test_response_formats_ask_for_json():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "strict": True}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    config = to_gemini({**CHAT, "response_format": fmt})["generationConfig"]
    assert config == {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"a": {"type": "integer"}}},
    }
    config = to_gemini({**CHAT, "response_format": {"type": "json_object"}})["generationConfig"]
    assert config == {"responseMimeType": "application/json"}


def test_a_thought_signature_survives_the_trip_through_a_call_id():
    call_id = new_call_id(SIGNATURE)
    assert call_id.startswith("call_")
    assert all(c.isalnum() or c in "_-" for c in call_id)
    assert signature_from_id(call_id) == SIGNATURE
    assert signature_from_id(new_call_id()) is None
    assert signature_from_id("toolu_01abc") is None


# --- response translation -------------------------------------------------------


def test_an_answer_becomes_a_chat_completion_with_thoughts_apart():
    data = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "Let me think.", "thought": True},
                        {"text": "Hello"},
                        {"text": " there"},
                    ],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "modelVersion": "gemini-2.5-flash-001",
        "responseId": "r1",
    }
    answer = from_gemini(data, MODEL)
    assert answer["id"] == "chatcmpl-r1" and answer["object"] == "chat.completion"
    assert answer["model"] == "gemini-2.5-flash-001"
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Hello there",
                "reasoning_content": "Let me think.",
            },
            "finish_reason": "stop",
        }
    ]
    assert "usage" not in answer


def test_function_calls_become_tool_calls_with_generated_ids():
    part = {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
    data = {"candidates": [{"content": {"parts": [part]}, "finishReason": "STOP"}]}
    choice = from_gemini(data, MODEL)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "get_weather", "arguments": '{"city": "Paris"}'}


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        ("OTHER", "stop"),
    ],
)
def test_finish_reasons(reason, expected):
    data = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": reason}]}
    assert from_gemini(data, MODEL)["choices"][0]["finish_reason"] == expected


def test_a_blocked_prompt_is_a_content_filter_answer():
    data = {
        "promptFeedback": {"blockReason": "PROHIBITED_CONTENT"},
        "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
    }
    answer = from_gemini(data, MODEL)
    (choice,) = answer["choices"]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] is None
    assert "PROHIBITED_CONTENT" in choice["message"]["refusal"]
    assert answer["usage"]["prompt_tokens"] == 12


def test_usage_bills_thoughts_as_output_and_counts_cached_content_as_input():
    meta = {
        "promptTokenCount": 1000,
        "cachedContentTokenCount": 800,
        "toolUsePromptTokenCount": 50,
        "candidatesTokenCount": 30,
        "thoughtsTokenCount": 70,
    }
    usage = usage_from_gemini(meta)
    assert usage == Usage(input=1050, cached_input=800, output=100, reasoning=70)
    answer = from_gemini({"candidates": [], "usageMetadata": meta}, MODEL)
    assert answer["usage"] == {
        "prompt_tokens": 1050,
        "completion_tokens": 100,
        "total_tokens": 1150,
        "prompt_tokens_details": {"cached_tokens": 800},
        "completion_tokens_details": {"reasoning_tokens": 70},
    }


def test_odd_usage_numbers_are_clamped():
    meta = {"promptTokenCount": 5, "cachedContentTokenCount": 9, "candidatesTokenCount": -3}
    assert usage_from_gemini(meta) == Usage(input=5, cached_input=5, output=0)
    assert usage_from_gemini({"promptTokenCount": "many", "thoughtsTokenCount": 2.0}) == Usage(
        output=2, reasoning=2
    )
    assert usage_from_gemini(None) is None


def test_stream_fragments_become_chunks_with_role_first_and_finish_last():
    translator = StreamTranslator(MODEL)
    first = translator.feed(
        {"candidates": [{"content": {"parts": [{"text": "Hel"}]}}], "responseId": "r2"}
    )
    thought = translator.feed(
        {"candidates": [{"content": {"parts": [{"text": "hmm", "thought": True}]}}]}
    )
    last = translator.feed(
        {
            "candidates": [{"content": {"parts": [{"text": "lo"}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2},
        }
    )
    deltas = [c["choices"][0]["delta"] for c in first + thought + last]
    assert deltas == [
        {"role": "assistant", "content": "Hel"},
        {"reasoning_content": "hmm"},
        {"content": "lo"},
        {},
    ]
    assert last[-1]["choices"][0]["finish_reason"] == "stop"
    assert all(c["id"] == "chatcmpl-r2" for c in first + thought + last)
    assert translator.finished and translator.usage == Usage(input=4, output=2)
    assert translator.usage_chunk()["choices"] == []


def test_a_streamed_function_call_is_one_whole_tool_call_delta():
    translator = StreamTranslator(MODEL)
    parts = [
        {"functionCall": {"name": "a", "args": {}}},
        {"functionCall": {"name": "b", "args": {"x": 1}}},
    ]
    chunks = translator.feed(
        {"candidates": [{"content": {"parts": parts}, "finishReason": "STOP"}]}
    )
    delta = chunks[0]["choices"][0]["delta"]
    assert delta["role"] == "assistant" and delta["content"] is None
    calls = delta["tool_calls"]
    assert [(c["index"], c["function"]["name"], c["function"]["arguments"]) for c in calls] == [
        (0, "a", "{}"),
        (1, "b", '{"x": 1}'),
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


# --- the adapter against the fake upstream -----------------------------------------


async def test_complete_calls_generate_content_and_translates_the_answer(upstream, client):
    upstream.set(chunks=3, prompt_tokens=11)
    resp = await gemini(upstream.base_url, client).complete(ProviderRequest("chat", CHAT))
    seen = upstream.last
    assert seen.path == f"/v1/models/{MODEL}:generateContent"
    assert seen.headers["x-goog-api-key"] == "gm-secret-key"
    assert "authorization" not in seen.headers
    assert seen.body == {"contents": [{"role": "user", "parts": [{"text": "Say hi"}]}]}
    assert json.loads(resp.content) == resp.body
    assert resp.body["choices"][0]["message"]["content"] == "tok0 tok1 tok2 "
    assert resp.usage == Usage(input=11, output=3)
    assert resp.body["usage"]["prompt_tokens"] == 11


async def test_complete_bills_thinking_as_output_and_cached_content_as_cached_input(
    upstream, client
):
    upstream.set(prompt_tokens=500, cached_tokens=400, completion_tokens=90, reasoning_tokens=60)
    resp = await gemini(upstream.base_url, client).complete(ProviderRequest("chat", CHAT))
    assert resp.usage == Usage(input=500, cached_input=400, output=90, reasoning=60)
    usage = resp.body["usage"]
    assert usage["completion_tokens"] == 90
    assert usage["completion_tokens_details"] == {"reasoning_tokens": 60}
    assert usage["prompt_tokens_details"] == {"cached_tokens": 400}


async def test_complete_without_usage_metadata_reports_none(upstream, client):
    upstream.set(usage=False)
    resp = await gemini(upstream.base_url, client).complete(ProviderRequest("chat", CHAT))
    assert resp.usage is None and "usage" not in resp.body


async def test_stream_is_translated_to_openai_chunks_ending_with_done(upstream, client):
    upstream.set(chunks=3, prompt_tokens=9, cached_tokens=4, reasoning_tokens=1)
    provider = gemini(upstream.base_url, client)
    stream = await provider.open_stream(ProviderRequest("chat", STREAM, True))
    events = await drain(stream)
    assert upstream.last.path == f"/v1/models/{MODEL}:streamGenerateContent"
    assert upstream.last.headers["accept"] == "text/event-stream"
    assert all(e.raw.startswith(b"data: ") and e.raw.endswith(b"\n\n") for e in events)
    assert b"\r" not in b"".join(e.raw for e in events)
    assert [e.done for e in events] == [False] * (len(events) - 1) + [True]
    assert events[-1].raw == b"data: [DONE]\n\n"
    assert [e.usage_only for e in events] == [False] * (len(events) - 2) + [True, False]
    chunks = payloads(events)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert stream.output_text == "tok0 tok1 tok2 "
    assert stream.finish_reason == "stop" and stream.completed
    assert stream.usage == Usage(input=9, cached_input=4, output=3, reasoning=1)
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 1}


async def test_stream_without_include_usage_has_no_usage_chunk_but_keeps_usage(upstream, client):
    upstream.set(prompt_tokens=9)
    body = {**CHAT, "stream": True}
    stream = await gemini(upstream.base_url, client).open_stream(
        ProviderRequest("chat", body, True)
    )
    events = await drain(stream)
    assert not any(e.usage_only for e in events) and events[-1].done
    assert stream.usage == Usage(input=9, output=5)


async def test_tool_round_trip_carries_the_call_back_with_its_signature(upstream, client):
    provider = gemini(upstream.base_url, client)
    first = {**CHAT, "tools": [WEATHER]}
    answer = (await provider.complete(ProviderRequest("chat", first))).body
    message = answer["choices"][0]["message"]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    (call,) = message["tool_calls"]
    assert call["function"] == {"name": "get_weather", "arguments": "{}"}

    second = {
        **first,
        "messages": [
            *CHAT["messages"],
            message,
            {"role": "tool", "tool_call_id": call["id"], "content": '{"temp": 21}'},
        ],
    }
    final = (await provider.complete(ProviderRequest("chat", second))).body
    assert final["choices"][0]["message"]["content"] == "tok0 tok1 tok2 tok3 tok4 "
    contents = upstream.last.body["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [
            {"functionCall": {"name": "get_weather", "args": {}}, "thoughtSignature": SIGNATURE}
        ],
    }
    assert contents[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}],
    }


async def test_streamed_tool_call(upstream, client):
    body = {**STREAM, "tools": [WEATHER], "tool_choice": "required"}
    stream = await gemini(upstream.base_url, client).open_stream(
        ProviderRequest("chat", body, True)
    )
    events = await drain(stream)
    assert upstream.last.body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}
    assert stream.finish_reason == "tool_calls" and stream.completed
    assert stream.output_text == "get_weather{}"
    (call,) = payloads(events)[0]["choices"][0]["delta"]["tool_calls"]
    assert signature_from_id(call["id"]) == SIGNATURE


async def test_a_cut_stream_raises_after_the_delivered_events(upstream, client):
    upstream.set(chunks=10, cut_after=4)
    stream = await gemini(upstream.base_url, client).open_stream(
        ProviderRequest("chat", STREAM, True)
    )
    received = []
    with pytest.raises(UpstreamError, match="stream cut") as info:
        async for event in stream:
            received.append(event)
    assert len(received) == 4
    assert stream.output_text == "tok0 tok1 tok2 tok3 "
    assert not stream.completed and not info.value.retryable


async def mock_stream(response: httpx.Response):
    transport = httpx.MockTransport(lambda request: response)
    async with httpx.AsyncClient(transport=transport) as mock:
        stream = await gemini("http://up/v1beta", mock).open_stream(
            ProviderRequest("chat", STREAM, True)
        )
        return stream, await drain(stream)


SSE = {"content-type": "text/event-stream"}


async def test_a_clean_end_without_a_finish_reason_is_a_cut():
    body = b'data: {"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}\r\n\r\n'
    with pytest.raises(UpstreamError, match="before a finishReason") as info:
        await mock_stream(httpx.Response(200, content=body, headers=SSE))
    assert not info.value.retryable


async def test_stream_usage_follows_the_last_usage_metadata():
    fragments = [
        {
            "candidates": [{"content": {"parts": [{"text": "a"}]}}],
            "usageMetadata": {"promptTokenCount": 7, "candidatesTokenCount": 1},
        },
        {
            "candidates": [{"content": {"parts": [{"text": "b"}]}, "finishReason": "MAX_TOKENS"}],
            "usageMetadata": {
                "promptTokenCount": 7,
                "candidatesTokenCount": 2,
                "thoughtsTokenCount": 5,
            },
        },
    ]
    body = b"".join(b"data: " + json.dumps(f).encode() + b"\r\n\r\n" for f in fragments)
    stream, events = await mock_stream(httpx.Response(200, content=body, headers=SSE))
    assert stream.usage == Usage(input=7, output=7, reasoning=5)
    assert stream.finish_reason == "length" and events[-1].done


async def test_an_error_in_the_first_fragment_is_retryable():
    body = b'data: {"error":{"code":503,"message":"overloaded","status":"UNAVAILABLE"}}\n\n'
    with pytest.raises(UpstreamError, match="overloaded") as info:
        await mock_stream(httpx.Response(200, content=body, headers=SSE))
    assert info.value.retryable


async def test_an_error_after_the_first_event_is_final():
    body = (
        b'data: {"candidates":[{"content":{"parts":[{"text":"hi"}]}}]}\r\n\r\n'
        b'data: {"error":{"code":500,"message":"internal","status":"INTERNAL"}}\r\n\r\n'
    )
    with pytest.raises(UpstreamError, match="internal") as info:
        await mock_stream(httpx.Response(200, content=body, headers=SSE))
    assert not info.value.retryable


async def test_a_stream_answered_with_json_is_retryable():
    error = {"error": {"code": 500, "message": "no capacity", "status": "INTERNAL"}}
    with pytest.raises(UpstreamError, match="no capacity") as info:
        await mock_stream(httpx.Response(200, json=error))
    assert info.value.retryable and info.value.status == 200


async def test_a_200_carrying_an_error_instead_of_an_answer_is_retryable():
    error = {"error": {"code": 500, "message": "no capacity", "status": "INTERNAL"}}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=error))
    async with httpx.AsyncClient(transport=transport) as mock:
        with pytest.raises(UpstreamError, match="no capacity") as info:
            await gemini("http://up/v1beta", mock).complete(ProviderRequest("chat", CHAT))
    assert info.value.retryable


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (401, False), (408, True), (429, True), (500, True), (503, True)],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_status_errors_read_googles_error_shape(upstream, client, status, retryable, stream):
    upstream.push(status=status)
    provider = gemini(upstream.base_url, client)
    req = ProviderRequest("chat", STREAM if stream else CHAT, stream)
    with pytest.raises(UpstreamError) as info:
        await (provider.open_stream(req) if stream else provider.complete(req))
    err = info.value
    assert (err.status, err.retryable) == (status, retryable)
    assert err.message.endswith(f"HTTP {status}: fake upstream: HTTP {status}")
    assert json.loads(err.body)["error"]["code"] == status


async def test_an_error_wrapped_in_a_list_is_read_and_the_key_never_echoed():
    error = [{"error": {"code": 400, "message": "API key gm-secret-key not valid"}}]
    transport = httpx.MockTransport(lambda request: httpx.Response(400, json=error))
    async with httpx.AsyncClient(transport=transport) as mock:
        with pytest.raises(UpstreamError) as info:
            await gemini("http://up/v1beta", mock).complete(ProviderRequest("chat", CHAT))
    assert "API key *** not valid" in info.value.message
    assert "gm-secret-key" not in info.value.body


async def test_connect_errors_are_retryable(client):
    with socket.socket() as sock:  # a port nobody listens on once this closes
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = gemini(f"http://127.0.0.1:{port}/v1beta", client)
    for call in (provider.complete, provider.open_stream):
        with pytest.raises(UpstreamError) as info:
            await call(ProviderRequest("chat", CHAT))
        assert info.value.retryable and info.value.status is None


async def test_a_request_gemini_cannot_take_is_refused_before_sending(upstream, client):
    body = {**CHAT, "messages": [{"role": "user", "content": [{"type": "audio_url"}]}]}
    with pytest.raises(UpstreamError, match="no Gemini equivalent") as info:
        await gemini(upstream.base_url, client).complete(ProviderRequest("chat", body))
    assert info.value.status == 400 and not info.value.retryable
    assert json.loads(info.value.body)["error"]["type"] == "invalid_request_error"
    assert upstream.requests == []


def test_the_kind_serves_chat_only_and_needs_a_key():
    assert GeminiProvider.kind == "gemini"
    assert GeminiProvider.endpoints == frozenset({"chat"})
    assert GeminiProvider.needs_key and GeminiProvider.output_limit_field == "max_tokens"


@pytest.mark.parametrize("stream", [False, True])
async def test_a_timeout_is_retryable(upstream, client, stream):
    upstream.push(latency=5)
    provider = gemini(upstream.base_url, client, timeout=0.2)
    req = ProviderRequest("chat", STREAM, stream)
    with pytest.raises(UpstreamError) as info:
        await (provider.open_stream(req) if stream else provider.complete(req))
    assert info.value.retryable and info.value.timeout


async def test_aclose_hangs_up_on_the_upstream(upstream, client):
    upstream.set(chunks=200, chunk_delay=0.05)
    stream = await gemini(upstream.base_url, client).open_stream(
        ProviderRequest("chat", STREAM, True)
    )
    for _ in range(3):
        await stream.__anext__()
    await stream.aclose()
    assert await upstream.async_wait_until(lambda: upstream.last.client_disconnected, 2.0)
    assert upstream.last.events_sent < 200
    assert [e async for e in stream] == []
