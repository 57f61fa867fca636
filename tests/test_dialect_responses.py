"""Translating the OpenAI Responses API to chat completions and back
(localgate/dialects/responses.py, responses_stream.py): requests, answers,
the event stream, and what the openai SDK makes of them."""

from __future__ import annotations

import json

import httpx
import openai
import pytest
from openai.types.responses import Response
from upstream_responses import validate_sdk_event

from localgate.core.pricing import Usage
from localgate.dialects.responses import (
    chat_completion_to_response,
    responses_to_chat,
    usage_from_responses,
)
from localgate.dialects.responses_stream import ChatToResponsesEvents, sse_event
from localgate.errors import BadRequest, UpstreamError

TOOL = {
    "type": "function",
    "name": "get_time",
    "description": "The time",
    "parameters": {"type": "object", "properties": {}},
    "strict": True,
}
CHAT_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time",
        "parameters": {"type": "object", "properties": {}},
        "strict": True,
    },
}


def chat(body: dict) -> dict:
    return responses_to_chat({"model": "m", **body})[0]


def notes(body: dict) -> list[str]:
    return responses_to_chat({"model": "m", **body})[1]


# --- requests -----------------------------------------------------------------------


def test_string_input_and_instructions_become_system_and_user_messages():
    result, dropped = responses_to_chat({"model": "m", "input": "hi", "instructions": "Be brief."})
    assert result == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
        ],
    }
    assert dropped == []


def test_message_items_keep_roles_and_developer_becomes_system():
    items = [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "a"}]},
        {"role": "system", "content": "b"},
        {"role": "user", "content": [{"type": "input_text", "text": "c"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "d", "annotations": []}]},
    ]
    assert chat({"input": items})["messages"] == [
        {"role": "system", "content": "a"},
        {"role": "system", "content": "b"},
        {"role": "user", "content": "c"},
        {"role": "assistant", "content": "d"},
    ]


def test_user_parts_with_images_stay_parts_and_files_are_noted():
    content = [
        {"type": "input_text", "text": "look"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAA", "detail": "low"},
        {"type": "input_image", "file_id": "file-1"},
        {"type": "input_file", "file_id": "file-2"},
    ]
    result, dropped = responses_to_chat(
        {"model": "m", "input": [{"role": "user", "content": content}]}
    )
    assert result["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AAA", "detail": "low"},
                },
            ],
        }
    ]
    assert len(dropped) == 2 and "file_id" in dropped[0] and "input_file" in dropped[1]


def test_function_calls_join_the_assistant_turn_and_outputs_become_tool_messages():
    items = [
        {"role": "user", "content": "time in Paris and Tokyo?"},
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "output_text", "text": "Checking."}],
        },
        {
            "type": "function_call",
            "call_id": "c1",
            "name": "get_time",
            "arguments": '{"city":"Paris"}',
        },
        {
            "type": "function_call",
            "call_id": "c2",
            "name": "get_time",
            "arguments": '{"city":"Tokyo"}',
        },
        {"type": "function_call_output", "call_id": "c1", "output": "10:00"},
        {
            "type": "function_call_output",
            "call_id": "c2",
            "output": [{"type": "input_text", "text": "17:00"}],
        },
        {"type": "function_call", "call_id": "c3", "name": "get_time", "arguments": "{}"},
    ]
    messages = chat({"input": items})["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "assistant"]
    assert messages[1]["content"] == "Checking."
    assert [(c["id"], c["function"]["arguments"]) for c in messages[1]["tool_calls"]] == [
        ("c1", '{"city":"Paris"}'),
        ("c2", '{"city":"Tokyo"}'),
    ]
    assert messages[2] == {"role": "tool", "tool_call_id": "c1", "content": "10:00"}
    assert messages[3]["content"] == "17:00"
    assert messages[4]["content"] is None and messages[4]["tool_calls"][0]["id"] == "c3"


def test_reasoning_and_openai_only_tool_items_are_dropped_with_one_note_each():
    items = [
        {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "xyz"},
        {"type": "reasoning", "id": "rs_2", "summary": []},
        {"type": "local_shell_call", "call_id": "s", "action": {}, "status": "completed"},
        {"type": "local_shell_call_output", "call_id": "s", "output": "ok"},
        {"type": "custom_tool_call", "call_id": "p", "name": "apply_patch", "input": "*** Begin"},
        {"type": "custom_tool_call_output", "call_id": "p", "output": "done"},
        {"role": "user", "content": "go on"},
    ]
    result, dropped = responses_to_chat({"model": "m", "input": items})
    assert result["messages"] == [{"role": "user", "content": "go on"}]
    assert len(dropped) == 5
    assert all("dropped" in note for note in dropped)


def test_function_tools_are_mapped_and_other_tools_dropped_with_a_note_each():
    tools = [TOOL, {"type": "web_search"}, {"type": "local_shell"}, {"type": "custom", "name": "x"}]
    result, dropped = responses_to_chat(
        {
            "model": "m",
            "input": "hi",
            "tools": tools,
            "tool_choice": "required",
            "parallel_tool_calls": False,
        }
    )
    assert result["tools"] == [CHAT_TOOL]
    assert (result["tool_choice"], result["parallel_tool_calls"]) == ("required", False)
    assert len(dropped) == 3


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", "auto"),
        ("none", "none"),
        (
            {"type": "function", "name": "get_time"},
            {"type": "function", "function": {"name": "get_time"}},
        ),
    ],
)
def test_tool_choice_is_mapped(choice, expected):
    assert chat({"input": "hi", "tools": [TOOL], "tool_choice": choice})["tool_choice"] == expected


def test_without_function_tools_no_tool_options_are_sent():
    body = {
        "input": "hi",
        "tools": [{"type": "web_search"}],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }
    assert set(chat(body)) == {"model", "messages"}


def test_sampling_limits_format_reasoning_and_user_are_mapped():
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    body = {
        "input": "hi",
        "max_output_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "reasoning": {"effort": "low", "summary": "auto"},
        "text": {"format": {"type": "json_schema", "name": "A", "schema": schema, "strict": True}},
        "safety_identifier": "user-1",
        "stream": True,
    }
    result = chat(body)
    assert result["max_tokens"] == 300 and "max_output_tokens" not in result
    assert (result["temperature"], result["top_p"]) == (0.2, 0.9)
    assert result["reasoning_effort"] == "low"
    assert result["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "A", "schema": schema, "strict": True},
    }
    assert result["user"] == "user-1"
    assert (result["stream"], result["stream_options"]) == (True, {"include_usage": True})
    assert chat({"input": "hi", "text": {"format": {"type": "json_object"}}})[
        "response_format"
    ] == {"type": "json_object"}


def test_bookkeeping_fields_are_ignored_silently():
    body = {
        "input": "hi",
        "metadata": {"a": "b"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "truncation": "auto",
        "service_tier": "auto",
        "prompt_cache_key": "k",
    }
    result, dropped = responses_to_chat({"model": "m", **body})
    assert set(result) == {"model", "messages"} and dropped == []


def test_previous_response_id_is_refused_on_a_translated_route():
    with pytest.raises(BadRequest, match="send the full conversation as input items") as info:
        responses_to_chat({"model": "m", "input": "and then?", "previous_response_id": "resp_1"})
    assert info.value.param == "previous_response_id"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi"}, "model"),
        ({"model": "m"}, "input"),
        ({"model": "m", "input": 3}, "input"),
        ({"model": "m", "input": ["hi"]}, "input[0]"),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
        ({"model": "m", "input": [{"role": "user", "content": 3}]}, "input[0].content"),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "audio"}]}]},
            "input[0].content[0]",
        ),
        ({"model": "m", "input": [{"type": "item_reference", "id": "x"}]}, "input[0]"),
        ({"model": "m", "input": [{"type": "function_call", "name": "f"}]}, "input[0].call_id"),
        ({"model": "m", "input": "hi", "instructions": ["x"]}, "instructions"),
        ({"model": "m", "input": "hi", "tools": {"type": "function"}}, "tools"),
        ({"model": "m", "input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
        ({"model": "m", "input": "hi", "temperature": "hot"}, "temperature"),
        ({"model": "m", "input": "hi", "text": {"format": {"type": "yaml"}}}, "text.format"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(body, param):
    with pytest.raises(BadRequest) as info:
        responses_to_chat(body)
    assert info.value.param == param


def test_a_codex_cli_request_translates_with_notes():
    body = {
        "model": "gpt-5-codex",
        "instructions": "You are Codex, a coding agent.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "<permissions>"}],
            },
            {
                "type": "message",
                "role": "user",
                "content": [
                    {
                        "type": "input_text",
                        "text": "<environment_context>cwd=/src</environment_context>",
                    },
                    {"type": "input_text", "text": "fix the failing test"},
                ],
            },
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "x"}],
                "encrypted_content": "gAAA",
            },
            {
                "type": "function_call",
                "call_id": "call_1",
                "name": "shell",
                "arguments": '{"command":["ls"]}',
            },
            {"type": "function_call_output", "call_id": "call_1", "output": "README.md\nsrc"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "shell",
                "description": "Run a command",
                "strict": False,
                "parameters": {
                    "type": "object",
                    "properties": {"command": {"type": "array", "items": {"type": "string"}}},
                },
            },
            {"type": "web_search"},
            {"type": "local_shell"},
            {
                "type": "custom",
                "name": "apply_patch",
                "description": "Patch files",
                "format": {"type": "grammar", "syntax": "lark", "definition": "start: x"},
            },
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199-session",
        "text": {"verbosity": "low"},
    }
    result, dropped = responses_to_chat(body)
    assert [m["role"] for m in result["messages"]] == [
        "system",
        "system",
        "user",
        "assistant",
        "tool",
    ]
    assert [part["text"] for part in result["messages"][2]["content"]][1] == "fix the failing test"
    assert [t["function"]["name"] for t in result["tools"]] == ["shell"]
    assert result["reasoning_effort"] == "medium" and result["stream"] is True
    assert result["tool_choice"] == "auto" and result["parallel_tool_calls"] is False
    assert len(dropped) == 5  # reasoning, web_search, local_shell, apply_patch, verbosity
    json.dumps(result)  # plain JSON all the way down


# --- answers ----------------------------------------------------------------------


def completion(message: dict, finish: str = "stop", usage: dict | None = None) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "upstream-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}
        ],
        "usage": usage,
    }


REQUEST = {
    "model": "m",
    "input": "hi",
    "instructions": "Be brief.",
    "tools": [TOOL],
    "max_output_tokens": 50,
}


def to_response(message: dict, finish: str = "stop", usage: dict | None = None) -> dict:
    return chat_completion_to_response(
        completion(message, finish, usage), request=REQUEST, response_id="resp_abc", created_at=7
    )


def test_a_text_answer_becomes_a_completed_response_the_sdk_accepts():
    usage = {
        "prompt_tokens": 20,
        "completion_tokens": 8,
        "total_tokens": 28,
        "prompt_tokens_details": {"cached_tokens": 5},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }
    body = to_response({"content": "Hello."}, usage=usage)
    response = Response.model_validate(body)
    assert (response.id, response.status, response.created_at) == ("resp_abc", "completed", 7)
    assert response.output_text == "Hello."
    assert response.output[0].id.startswith("msg_")
    assert (response.instructions, response.max_output_tokens, response.model) == (
        "Be brief.",
        50,
        "upstream-model",
    )
    assert response.tools[0].name == "get_time" and response.previous_response_id is None
    assert (
        response.usage.input_tokens == 20 and response.usage.input_tokens_details.cached_tokens == 5
    )
    assert (
        response.usage.output_tokens == 8
        and response.usage.output_tokens_details.reasoning_tokens == 3
    )
    assert response.usage.total_tokens == 28
    assert "output_text" not in body  # an SDK property, not a field


def test_tool_calls_and_reasoning_become_output_items():
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_time", "arguments": '{"a":1}'},
        },
        {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    body = to_response(
        {"content": None, "reasoning_content": "think", "tool_calls": calls}, "tool_calls"
    )
    response = Response.model_validate(body)
    assert [item.type for item in response.output] == [
        "reasoning",
        "function_call",
        "function_call",
    ]
    assert response.output[0].content[0].text == "think"
    assert [(i.call_id, i.name, i.arguments) for i in response.output[1:]] == [
        ("call_1", "get_time", '{"a":1}'),
        ("call_2", "get_time", "{}"),
    ]
    assert all(item.id.startswith("fc_") for item in response.output[1:])
    assert response.usage is None and response.status == "completed"


@pytest.mark.parametrize(
    ("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")]
)
def test_a_cut_answer_is_incomplete_with_its_reason(finish, reason):
    response = Response.model_validate(to_response({"content": "Hel"}, finish))
    assert response.status == "incomplete" and response.incomplete_details.reason == reason


def test_a_refusal_becomes_a_refusal_part():
    response = Response.model_validate(to_response({"content": None, "refusal": "I can't."}))
    assert response.output[0].content[0].type == "refusal"


def test_usage_from_responses_maps_and_clamps():
    usage = {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 30},
        "output_tokens": 40,
        "output_tokens_details": {"reasoning_tokens": 25},
        "total_tokens": 140,
    }
    assert usage_from_responses(usage) == Usage(100, 60, 30, 40, 25)
    odd = {
        "input_tokens": 10.7,
        "input_tokens_details": {"cached_tokens": 50, "cache_write_tokens": 9},
        "output_tokens": -3,
        "output_tokens_details": {"reasoning_tokens": True},
    }
    assert usage_from_responses(odd) == Usage(input=10, cached_input=10)
    assert usage_from_responses(None) is None and usage_from_responses({}) == Usage()


# --- the event stream -----------------------------------------------------------------


def chunk(delta: dict, finish: str | None = None, **extra) -> dict:
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "model": "upstream-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def run(chunks: list[dict], usage: Usage | None = None, request: dict | None = None) -> list[dict]:
    events = ChatToResponsesEvents(request or REQUEST, "resp_abc", 7)
    blocks = [block for c in chunks for block in events.feed(c)] + events.finish(usage)
    parsed = []
    for block in blocks:
        head, data = block.decode().split("\n", 1)
        assert block.endswith(b"\n\n") and data.startswith("data: ")
        payload = json.loads(data[6:])
        assert head == f"event: {payload['type']}"
        validate_sdk_event(payload)
        parsed.append(payload)
    assert [p["sequence_number"] for p in parsed] == list(range(len(parsed)))
    return parsed


def test_streamed_text_follows_the_real_event_order():
    events = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
        ],
        Usage(input=9, cached_input=2, output=2),
    )
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[6]["text"] == "Hello"
    final = Response.model_validate(events[-1]["response"])
    assert final.output_text == "Hello" and final.status == "completed"
    assert (final.usage.input_tokens, final.usage.input_tokens_details.cached_tokens) == (9, 2)
    assert final.model == "upstream-model"


def test_streamed_tool_calls_split_and_interleaved_become_whole_items():
    deltas = [
        chunk({"role": "assistant", "content": "Let me check."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": ""},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_time", "arguments": '{"ci'},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty":"Paris"}'}}]}),
        chunk({"tool_calls": [{"index": 1, "function": {"arguments": 'ty":"Tokyo"}'}}]}),
        chunk({}, "tool_calls"),
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "choices": [],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12},
        },
    ]
    events = run(deltas)
    kinds = [e["type"] for e in events]
    assert kinds.index("response.output_item.done") < kinds.index(
        "response.function_call_arguments.delta"
    )
    done = [e for e in events if e["type"] == "response.function_call_arguments.done"]
    assert [(e["output_index"], e["arguments"]) for e in done] == [
        (1, '{"city":"Paris"}'),
        (2, '{"city":"Tokyo"}'),
    ]
    final = Response.model_validate(events[-1]["response"])
    assert [item.type for item in final.output] == ["message", "function_call", "function_call"]
    assert [(i.call_id, i.arguments) for i in final.output[1:]] == [
        ("call_a", '{"city":"Paris"}'),
        ("call_b", '{"city":"Tokyo"}'),
    ]
    assert final.usage.input_tokens == 30  # from the usage chunk when finish() gets none


def test_a_tool_call_whose_name_comes_late_is_announced_with_it():
    events = run(
        [
            chunk(
                {"tool_calls": [{"index": 0, "id": "call_x", "function": {"arguments": '{"a"'}}]}
            ),
            chunk(
                {"tool_calls": [{"index": 0, "function": {"name": "get_time", "arguments": ":1}"}}]}
            ),
            chunk({}, "tool_calls"),
        ]
    )
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["name"] == "get_time" and added["item"]["call_id"] == "call_x"
    deltas = [e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta"]
    assert "".join(deltas) == '{"a":1}'


def test_reasoning_content_streams_as_a_reasoning_item_before_the_message():
    events = run(
        [
            chunk({"reasoning_content": "Hmm"}),
            chunk({"reasoning_content": "."}),
            chunk({"content": "Yes"}),
            chunk({}, "stop"),
        ]
    )
    kinds = [e["type"] for e in events]
    assert kinds.count("response.reasoning_text.delta") == 2
    assert kinds.index("response.reasoning_text.done") < kinds.index("response.output_text.delta")
    final = Response.model_validate(events[-1]["response"])
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].content[0].text == "Hmm."


def test_a_stream_cut_by_the_token_limit_ends_incomplete():
    events = run([chunk({"content": "Hel"}), chunk({}, "length")], Usage(input=3, output=1))
    assert events[-1]["type"] == "response.incomplete"
    final = Response.model_validate(events[-1]["response"])
    assert final.status == "incomplete" and final.incomplete_details.reason == "max_output_tokens"


def test_an_empty_stream_still_opens_and_completes():
    events = run([])
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]


def test_sse_event_writes_one_named_block():
    assert (
        sse_event("response.x", {"a": 1})
        == b'event: response.x\ndata: {"type":"response.x","a":1}\n\n'
    )


# --- through the openai SDK -------------------------------------------------------------


def sdk_client(handler) -> openai.AsyncOpenAI:
    transport = httpx.MockTransport(handler)
    return openai.AsyncOpenAI(
        api_key="lg-test",
        base_url="http://gw/v1",
        http_client=httpx.AsyncClient(transport=transport),
    )


def translated_stream(request: httpx.Request) -> httpx.Response:
    body = json.loads(request.content)
    events = ChatToResponsesEvents(body, "resp_sdk", 7)
    blocks = events.feed(chunk({"content": "Hi "})) + events.feed(chunk({"content": "there"}))
    blocks += events.feed(
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_1",
                        "function": {"name": "get_time", "arguments": "{}"},
                    }
                ]
            }
        )
    )
    blocks += events.feed(chunk({}, "tool_calls")) + events.finish(Usage(input=4, output=3))
    return httpx.Response(
        200, content=b"".join(blocks), headers={"content-type": "text/event-stream"}
    )


async def test_the_openai_sdk_streams_a_translated_answer():
    client = sdk_client(translated_stream)
    async with client, client.responses.stream(model="m", input="hi", tools=[TOOL]) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert final.output_text == "Hi there"
    assert final.output[1].name == "get_time" and final.usage.output_tokens == 3


async def test_the_openai_sdk_reads_a_translated_answer():
    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        answer = chat_completion_to_response(
            completion({"content": "Hello."}), request=body, response_id="resp_sdk", created_at=7
        )
        return httpx.Response(200, json=answer)

    async with sdk_client(handler) as client:
        response = await client.responses.create(model="m", input="hi", temperature=0.5)
    assert response.output_text == "Hello." and response.temperature == 0.5


async def test_an_error_event_continues_the_numbering_and_the_sdk_raises_it():
    events = ChatToResponsesEvents(REQUEST, "resp_abc", 7)
    blocks = events.feed(chunk({"content": "Hel"}))
    blocks.append(events.error_event(UpstreamError("channel a: stream cut")))
    payload = json.loads(blocks[-1].split(b"data: ", 1)[1])
    assert blocks[-1].startswith(b"event: error\n")
    assert payload["sequence_number"] == len(blocks) - 1
    assert payload["message"] == "channel a: stream cut" and payload["code"] == "upstream_error"
    validate_sdk_event(payload)

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"content-type": "text/event-stream"}
        return httpx.Response(200, content=b"".join(blocks), headers=headers)

    async with sdk_client(handler) as client:
        stream = await client.responses.create(model="m", input="hi", stream=True)
        with pytest.raises(openai.APIError, match="stream cut"):
            [event async for event in stream]
