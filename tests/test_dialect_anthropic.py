"""Anthropic Messages <-> OpenAI chat translation (localgate.dialects.anthropic and
anthropic_stream): requests, answers, usage and streams, both ways, plus the
event sequence checked by the anthropic SDK itself."""

from __future__ import annotations

import json

import anthropic
import httpx2
import pytest

from localgate.core.pricing import Usage
from localgate.dialects.anthropic import (
    chat_completion_to_message,
    messages_to_chat,
    usage_from_anthropic,
)
from localgate.dialects.anthropic_stream import (
    AnthropicToChatChunks,
    ChatToAnthropicEvents,
    sse_event,
)
from localgate.dialects.anthropic_upstream import chat_to_messages, message_to_chat_completion
from localgate.errors import BadRequest, UpstreamError

USER = {"role": "user", "content": "Hi"}
PNG = "iVBORw0KGgo="


def inbound(**fields):
    return {"model": "claude-sonnet-4-5", "max_tokens": 256, "messages": [USER], **fields}


# --- Anthropic request -> chat request ----------------------------------------------


def test_a_plain_request_keeps_model_limit_sampling_stop_stream_and_user():
    chat, notes = messages_to_chat(
        inbound(
            temperature=0.3,
            top_p=0.9,
            stop_sequences=["END"],
            stream=True,
            metadata={"user_id": "u-1"},
        )
    )
    assert chat == {
        "model": "claude-sonnet-4-5",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_tokens": 256,
        "stop": ["END"],
        "temperature": 0.3,
        "top_p": 0.9,
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "u-1",
    }
    assert notes == []


@pytest.mark.parametrize(
    "system",
    ["Be brief.", [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]],
)
def test_system_as_string_or_blocks_becomes_a_leading_system_message(system):
    chat, _ = messages_to_chat(inbound(system=system))
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}


def test_several_system_blocks_stay_separate_text_parts():
    blocks = [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]
    chat, _ = messages_to_chat(inbound(system=blocks))
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two"},
    ]


def test_images_become_image_url_parts_from_base64_and_url_sources():
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/cat.jpg"}},
    ]
    chat, _ = messages_to_chat(inbound(messages=[{"role": "user", "content": content}]))
    assert chat["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/cat.jpg"}},
            ],
        }
    ]


def test_a_tool_round_trip_becomes_tool_calls_and_tool_messages():
    messages = [
        USER,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a.py"}},
                {"type": "tool_use", "id": "toolu_2", "name": "ls", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "print(1)"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [{"type": "text", "text": "a.py"}, {"type": "text", "text": "b.py"}],
                    "is_error": True,
                },
                {"type": "text", "text": "Go on."},
            ],
        },
    ]
    chat, notes = messages_to_chat(inbound(messages=messages))
    assert chat["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"path": "a.py"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "ls", "arguments": "{}"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "print(1)"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "[tool error] a.py\nb.py"},
        {"role": "user", "content": "Go on."},
    ]
    assert "dropped thinking blocks" in notes


def test_an_assistant_turn_with_only_tool_use_has_null_content():
    turn = {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f"}]}
    chat, _ = messages_to_chat(inbound(messages=[USER, turn]))
    assert chat["messages"][1]["content"] is None
    assert chat["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_images_inside_a_tool_result_move_to_a_following_user_message():
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    result = {"type": "tool_result", "tool_use_id": "t", "content": [image]}
    chat, notes = messages_to_chat(inbound(messages=[{"role": "user", "content": [result]}]))
    assert chat["messages"] == [
        {"role": "tool", "tool_call_id": "t", "content": ""},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
            ],
        },
    ]
    assert notes == ["moved tool_result images into a user message"]


def test_documents_become_text_or_file_parts():
    content = [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}},
        {
            "type": "document",
            "title": "spec.pdf",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        },
    ]
    chat, _ = messages_to_chat(inbound(messages=[{"role": "user", "content": content}]))
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "doc"},
        {
            "type": "file",
            "file": {"filename": "spec.pdf", "file_data": "data:application/pdf;base64,JVBE"},
        },
    ]


def test_custom_tools_map_and_server_tools_are_dropped_with_a_note():
    tools = [
        {
            "name": "read",
            "description": "Read a file",
            "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
    ]
    chat, notes = messages_to_chat(inbound(tools=tools))
    assert chat["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "read",
                "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
                "description": "Read a file",
            },
        }
    ]
    assert notes == ["dropped tool type web_search_20250305"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "read"}, {"type": "function", "function": {"name": "read"}}),
    ],
)
def test_tool_choice_maps_to_openai(choice, expected):
    tools = [{"name": "read", "input_schema": {"type": "object"}}]
    chat, _ = messages_to_chat(inbound(tools=tools, tool_choice=choice))
    assert chat["tool_choice"] == expected
    assert "parallel_tool_calls" not in chat


def test_disable_parallel_tool_use_turns_parallel_tool_calls_off():
    tools = [{"name": "read", "input_schema": {"type": "object"}}]
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    chat, _ = messages_to_chat(inbound(tools=tools, tool_choice=choice))
    assert chat["parallel_tool_calls"] is False


def test_tool_choice_is_dropped_when_every_tool_was_a_server_tool():
    tools = [{"type": "web_search_20250305", "name": "web_search"}]
    chat, notes = messages_to_chat(inbound(tools=tools, tool_choice={"type": "any"}))
    assert "tools" not in chat and "tool_choice" not in chat
    assert "dropped tool_choice (no tool OpenAI can run)" in notes


def test_fields_openai_cannot_carry_are_listed_as_dropped():
    chat, notes = messages_to_chat(
        inbound(top_k=5, thinking={"type": "enabled", "budget_tokens": 2048}, service_tier="auto")
    )
    assert set(notes) == {
        "dropped field top_k",
        "dropped field thinking",
        "dropped field service_tier",
    }
    assert "top_k" not in chat and "thinking" not in chat


def test_more_than_four_stop_sequences_keep_the_first_four():
    chat, notes = messages_to_chat(inbound(stop_sequences=list("abcdef")))
    assert chat["stop"] == list("abcd") and notes == ["dropped stop_sequences past the first 4"]


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": "100"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"messages": []}, "messages"),
        ({"messages": "Hi"}, "messages"),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
        ({"messages": [{"role": "user", "content": [{"text": "x"}]}]}, "messages.0.content.0"),
        (
            {"messages": [{"role": "user", "content": [{"type": "text", "text": 1}]}]},
            "messages.0.content.0.text",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]},
            "messages.0.content.0.source",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result"}]}]},
            "messages.0.content.0.tool_use_id",
        ),
        ({"system": 5}, "system"),
        ({"system": [{"type": "image"}]}, "system.0"),
        ({"stop_sequences": "END"}, "stop_sequences"),
        ({"temperature": "hot"}, "temperature"),
        ({"tools": {"name": "x"}}, "tools"),
        ({"tools": [{"input_schema": {}}]}, "tools.0.name"),
    ],
)
def test_malformed_anthropic_requests_are_refused(change, param):
    body = {**inbound(), **change}
    if change.get("max_tokens") is None and "max_tokens" in change:
        del body["max_tokens"]
    with pytest.raises(BadRequest) as info:
        messages_to_chat(body)
    assert info.value.param == param


def claude_code_request(system) -> dict:
    """The shape Claude Code sends: many tools, system reminders, thinking, metadata."""
    tools = [
        {
            "name": f"Tool{i}",
            "description": f"Tool number {i}. " + "Explains at length how to use it. " * 60,
            "input_schema": {
                "type": "object",
                "properties": {"arg": {"type": "string", "description": "x" * 200}},
                "required": ["arg"],
                "additionalProperties": False,
                "$schema": "http://json-schema.org/draft-07/schema#",
            },
        }
        for i in range(25)
    ]
    tools[-1]["cache_control"] = {"type": "ephemeral"}
    history = []
    for i in range(20):
        history.append(
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": f"<system-reminder>ctx {i}</system-reminder>"},
                    {"type": "text", "text": f"step {i}: " + "please fix the bug " * 60},
                ],
            }
        )
        history.append(
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "thinking " * 20, "signature": "s" * 40},
                    {"type": "text", "text": f"Reading file {i}."},
                    {"type": "tool_use", "id": f"toolu_{i}", "name": "Tool1", "input": {"arg": i}},
                ],
            }
        )
        history.append(
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": "ok " * 50}
                ],
            }
        )
    history.append({"role": "user", "content": "Now summarise."})
    return {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 32000,
        "system": system,
        "messages": history,
        "tools": tools,
        "tool_choice": {"type": "auto"},
        "thinking": {"type": "enabled", "budget_tokens": 31999},
        "metadata": {"user_id": "user_abc_account_def_session_ghi"},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "temperature": 1,
        "stream": True,
    }


@pytest.mark.parametrize(
    "system",
    [
        pytest.param("You are Claude Code. " * 200, id="system-string"),
        pytest.param(
            [
                {"type": "text", "text": "You are Claude Code, Anthropic's official CLI."},
                {
                    "type": "text",
                    "text": "You are Claude Code. " * 200,
                    "cache_control": {"type": "ephemeral"},
                },
            ],
            id="system-blocks",
        ),
    ],
)
def test_a_large_claude_code_request_keeps_everything_openai_can_carry(system):
    body = claude_code_request(system)
    assert len(json.dumps(body)) > 100_000
    chat, notes = messages_to_chat(body)
    assert set(notes) == {
        "dropped thinking blocks",
        "dropped field thinking",
        "dropped field context_management",
    }
    assert chat["model"] == body["model"] and chat["max_tokens"] == 32000
    assert chat["user"] == body["metadata"]["user_id"] and chat["temperature"] == 1
    assert chat["tool_choice"] == "auto" and chat["stream"] is True
    assert [t["function"]["name"] for t in chat["tools"]] == [f"Tool{i}" for i in range(25)]
    assert all(
        t["function"]["parameters"] == body["tools"][i]["input_schema"]
        and t["function"]["description"] == body["tools"][i]["description"]
        for i, t in enumerate(chat["tools"])
    )
    system_text = json.dumps(chat["messages"][0]["content"])
    assert chat["messages"][0]["role"] == "system" and "You are Claude Code. " * 10 in system_text
    roles = [m["role"] for m in chat["messages"][1:]]
    assert roles == ["user", "assistant", "tool"] * 20 + ["user"]
    calls = [m["tool_calls"][0] for m in chat["messages"] if m.get("tool_calls")]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [
        {"arg": i} for i in range(20)
    ]
    # every text survives: the chat request carries all the text the body had
    texts = [
        b["text"]
        for m in body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "text"
    ]
    flat = json.dumps(chat)
    assert all(json.dumps(t)[1:-1] in flat for t in texts)
    assert "signature" not in flat and "thinking " not in flat


# --- chat request -> Anthropic request ----------------------------------------------


def outbound(**fields):
    return {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "Hi"}], **fields}


def test_a_plain_chat_request_gets_the_default_limit_and_mapped_fields():
    body = chat_to_messages(
        outbound(temperature=1.5, top_p=0.5, stop="END", user="u-1", stream=True), max_tokens=999
    )
    assert body == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 999,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "stop_sequences": ["END"],
        "temperature": 1,  # clamped: Anthropic's range ends at 1
        "top_p": 0.5,
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }


@pytest.mark.parametrize(
    ("fields", "limit"),
    [({"max_completion_tokens": 50}, 50), ({"max_tokens": 60}, 60), ({"max_tokens": 0}, 999)],
)
def test_the_output_limit_comes_from_the_body_when_it_names_one(fields, limit):
    assert chat_to_messages(outbound(**fields), max_tokens=999)["max_tokens"] == limit


def test_stop_lists_keep_only_sequences_anthropic_accepts():
    body = chat_to_messages(outbound(stop=["a", " ", "\n\n", "b"]), max_tokens=10)
    assert body["stop_sequences"] == ["a", "b"]


def test_system_and_developer_messages_anywhere_go_to_system_with_cache_control():
    messages = [
        {
            "role": "system",
            "content": [{"type": "text", "text": "Rules", "cache_control": {"type": "ephemeral"}}],
        },
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Edit it"},
        {"role": "developer", "content": "Reply with a diff"},  # aider's trailing reminder
    ]
    body = chat_to_messages(outbound(messages=messages), max_tokens=10)
    assert body["system"] == [
        {"type": "text", "text": "Rules", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "Reply with a diff"},
    ]
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


def test_images_become_base64_or_url_sources_and_keep_cache_control():
    content = [
        {"type": "text", "text": "Look"},
        {
            "type": "image_url",
            "image_url": {"url": f"data:image/png;base64,{PNG}"},
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg", "detail": "high"}},
    ]
    body = chat_to_messages(outbound(messages=[{"role": "user", "content": content}]), max_tokens=9)
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Look"},
        {
            "type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
    ]


def test_a_pdf_file_part_becomes_a_document():
    part = {
        "type": "file",
        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBE"},
    }
    body = chat_to_messages(outbound(messages=[{"role": "user", "content": [part]}]), max_tokens=9)
    assert body["messages"][0]["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        }
    ]


def test_tools_and_tool_calls_round_trip_with_results_in_one_user_turn():
    tools = [
        {
            "type": "function",
            "function": {"name": "read", "description": "Read", "parameters": {"type": "object"}},
        },
        {"type": "function", "function": {"name": "ls"}},
    ]
    messages = [
        {"role": "user", "content": "List and read"},
        {
            "role": "assistant",
            "content": "",  # Continue sends this beside tool calls
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "ls", "arguments": ""}},
                {
                    "id": "c2",
                    "type": "function",
                    "function": {"name": "read", "arguments": '{"path": "a.py"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "a.py"},
        {
            "role": "tool",
            "tool_call_id": "c2",
            "content": [
                {"type": "text", "text": "print(1)", "cache_control": {"type": "ephemeral"}}
            ],
        },
        {"role": "user", "content": "Thanks"},
    ]
    body = chat_to_messages(
        outbound(messages=messages, tools=tools, tool_choice="required", parallel_tool_calls=False),
        max_tokens=9,
    )
    assert body["tools"] == [
        {"name": "read", "input_schema": {"type": "object"}, "description": "Read"},
        {"name": "ls", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "c1", "name": "ls", "input": {}},
                {"type": "tool_use", "id": "c2", "name": "read", "input": {"path": "a.py"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "a.py"},
                {
                    "type": "tool_result",
                    "tool_use_id": "c2",
                    "content": [
                        {"type": "text", "text": "print(1)", "cache_control": {"type": "ephemeral"}}
                    ],
                },
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


def test_unparsable_tool_arguments_are_kept_raw():
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": [call]}]
    body = chat_to_messages(outbound(messages=messages), max_tokens=9)
    assert body["messages"][1]["content"][0]["input"] == {"_unparsed_arguments": "{oops"}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ({"type": "function", "function": {"name": "ls"}}, {"type": "tool", "name": "ls"}),
    ],
)
def test_chat_tool_choice_maps_to_anthropic(choice, expected):
    tools = [{"type": "function", "function": {"name": "ls"}}]
    body = chat_to_messages(outbound(tools=tools, tool_choice=choice), max_tokens=9)
    assert body["tool_choice"] == expected


def test_consecutive_same_role_turns_merge_and_a_prefill_loses_trailing_space():
    messages = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "assistant", "content": "The answer is "},
    ]
    body = chat_to_messages(outbound(messages=messages), max_tokens=9)
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "The answer is"}]},
    ]


@pytest.mark.parametrize(
    ("effort", "limit", "thinking"),
    [
        ("low", 8000, {"type": "enabled", "budget_tokens": 1024}),
        ("medium", 8000, {"type": "enabled", "budget_tokens": 4096}),
        ("high", 8000, {"type": "enabled", "budget_tokens": 7999}),  # kept under max_tokens
        ("high", 1000, None),  # no room for the smallest budget
        ("minimal", 8000, None),
    ],
)
def test_reasoning_effort_becomes_a_thinking_budget(effort, limit, thinking):
    body = chat_to_messages(outbound(reasoning_effort=effort, temperature=0.2), max_tokens=limit)
    assert body.get("thinking") == thinking
    assert ("temperature" in body) == (thinking is None)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "system", "content": "only rules"}]}, "messages"),
        ({"messages": [{"role": "function", "content": "x"}]}, "messages.0.role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.tool_call_id"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages.0.content.0",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "ftp://x"}}],
                    }
                ]
            },
            "messages.0.content.0",
        ),
        ({"n": 2}, "n"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
        ({"tools": [{"type": "custom", "custom": {"name": "x"}}]}, "tools.0"),
    ],
)
def test_chat_requests_anthropic_cannot_serve_are_refused(change, param):
    with pytest.raises(BadRequest) as info:
        chat_to_messages(outbound(**change), max_tokens=9)
    assert info.value.param == param


# --- answers and usage ----------------------------------------------------------------

ANTHROPIC_USAGE = {
    "input_tokens": 10,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 20,
    "output_tokens": 7,
}


def test_anthropic_usage_counts_cache_reads_and_writes_as_input():
    assert usage_from_anthropic(ANTHROPIC_USAGE) == Usage(
        input=130, cached_input=100, cache_write=20, output=7
    )
    assert usage_from_anthropic(None) is None


def test_odd_anthropic_usage_numbers_are_clamped():
    odd = {"input_tokens": -5, "cache_read_input_tokens": "3", "output_tokens": 4.7}
    assert usage_from_anthropic(odd) == Usage(input=0, output=4)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
    ],
)
def test_a_message_becomes_a_chat_completion(stop, finish):
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "Let me think.", "signature": "sig"},
            {"type": "text", "text": "Reading."},
            {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}},
        ],
        "stop_reason": stop,
        "usage": ANTHROPIC_USAGE,
    }
    completion = message_to_chat_completion(message)
    assert completion["object"] == "chat.completion" and completion["model"] == "claude-sonnet-4-5"
    choice = completion["choices"][0]
    assert choice["finish_reason"] == finish
    assert choice["message"] == {
        "role": "assistant",
        "content": "Reading.",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "read", "arguments": '{"path": "a"}'},
            }
        ],
        "reasoning_content": "Let me think.",
    }
    assert completion["usage"] == {
        "prompt_tokens": 130,
        "completion_tokens": 7,
        "total_tokens": 137,
        "prompt_tokens_details": {"cached_tokens": 100},
    }


def test_a_tool_only_message_has_null_content():
    message = {"content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}
    reply = message_to_chat_completion(message)["choices"][0]["message"]
    assert reply["content"] is None and reply["tool_calls"][0]["function"]["arguments"] == "{}"


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "tool_use"),  # tool calls under a plain "stop": still a tool turn
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
    ],
)
def test_a_chat_completion_becomes_a_message(finish, stop):
    completion = {
        "id": "chatcmpl-abc",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hi",
                    "reasoning_content": "think",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "f", "arguments": '{"a": 1}'},
                        }
                    ],
                },
                "finish_reason": finish,
            }
        ],
        "usage": {
            "prompt_tokens": 130,
            "completion_tokens": 7,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    }
    message = chat_completion_to_message(completion, model="claude-via-openai")
    assert message == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-via-openai",
        "content": [
            {"type": "thinking", "thinking": "think", "signature": ""},
            {"type": "text", "text": "Hi"},
            {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
        ],
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 30,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 100,
            "output_tokens": 7,
        },
    }


def test_a_completion_without_usage_or_text_gives_an_empty_message():
    message = chat_completion_to_message({"choices": [{"message": {"content": None}}]}, model="m")
    assert message["id"].startswith("msg_") and message["content"] == []
    assert message["stop_reason"] == "end_turn" and message["usage"]["output_tokens"] == 0


# --- Anthropic stream -> chat chunks ----------------------------------------------------


def anthropic_events(blocks, stop="end_turn"):
    """(event, data) pairs of a real Anthropic stream with the given blocks."""
    start_usage = {"input_tokens": 10, "cache_read_input_tokens": 100, "output_tokens": 1}
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude",
        "content": [],
    }
    events = [
        ("message_start", {"type": "message_start", "message": {**message, "usage": start_usage}})
    ]
    events.append(("ping", {"type": "ping"}))
    for index, (start, deltas) in enumerate(blocks):
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start},
            )
        )
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop},
                "usage": {"output_tokens": 42},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def run_chunks(events):
    translator = AnthropicToChatChunks()
    chunks = [chunk for name, data in events for chunk in translator.feed(name, data)]
    return translator, chunks


def deltas_of(chunks):
    return [c["choices"][0]["delta"] for c in chunks]


def test_anthropic_stream_text_thinking_and_tools_become_chunks():
    blocks = [
        (
            {"type": "thinking", "thinking": "", "signature": ""},
            [
                {"type": "thinking_delta", "thinking": "hmm"},
                {"type": "signature_delta", "signature": "s"},
            ],
        ),
        (
            {"type": "text", "text": ""},
            [{"type": "text_delta", "text": "Hel"}, {"type": "text_delta", "text": "lo"}],
        ),
        (
            {"type": "tool_use", "id": "toolu_a", "name": "read", "input": {}},
            [
                {"type": "input_json_delta", "partial_json": p}
                for p in ["", '{"pa', 'th": ', '"a"}']
            ],
        ),
        (
            {"type": "tool_use", "id": "toolu_b", "name": "ls", "input": {}},
            [{"type": "input_json_delta", "partial_json": "{}"}],
        ),
    ]
    events = anthropic_events(blocks, stop="tool_use")
    events.insert(3, ("future_event", {"type": "future_event", "x": 1}))  # unknown: ignored
    translator, chunks = run_chunks(events)
    assert all(c["object"] == "chat.completion.chunk" and c["id"] == "msg_1" for c in chunks)
    deltas = deltas_of(chunks)
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"reasoning_content": "hmm"}
    assert "".join(d.get("content") or "" for d in deltas) == "Hello"
    calls = [call for d in deltas for call in d.get("tool_calls", ())]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_a",
        "type": "function",
        "function": {"name": "read", "arguments": ""},
    }
    assert "".join(c["function"]["arguments"] for c in calls if c["index"] == 0) == '{"path": "a"}'
    assert calls[-2]["id"] == "toolu_b" and calls[-2]["index"] == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert translator.finish_reason == "tool_calls" and translator.stop_reason == "tool_use"
    assert translator.done
    assert translator.usage == Usage(input=110, cached_input=100, output=42)


def test_anthropic_stream_usage_takes_the_latest_value_of_each_field():
    translator = AnthropicToChatChunks()
    translator.feed(
        "message_start",
        {"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}},
    )
    assert translator.usage == Usage(input=5, output=1)
    translator.feed(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {},
            "usage": {"output_tokens": 9, "cache_read_input_tokens": 3, "input_tokens": None},
        },
    )
    assert translator.usage == Usage(input=8, cached_input=3, output=9)
    assert not translator.done and translator.finish_reason is None


def test_an_error_event_raises_an_upstream_error_that_is_not_retryable():
    translator = AnthropicToChatChunks()
    with pytest.raises(UpstreamError, match="overloaded_error: Overloaded") as info:
        translator.feed(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        )
    assert not info.value.retryable


# --- chat chunks -> Anthropic stream -----------------------------------------------------


def chunk(delta=None, finish=None, **extra):
    choices = (
        []
        if delta is None and finish is None
        else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    )
    return {"id": "chatcmpl-9", "object": "chat.completion.chunk", "choices": choices, **extra}


def parse_sse(blocks: list[bytes]) -> list[tuple[str, dict]]:
    out = []
    for block in blocks:
        assert block.endswith(b"\n\n")
        event_line, data_line = block.decode().strip().split("\n")
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        out.append((event_line[7:], json.loads(data_line[6:])))
    return out


def run_events(chunks, usage=None, input_tokens=12):
    events = ChatToAnthropicEvents("claude-x", input_tokens)
    blocks = [b for c in chunks for b in events.feed(c)] + events.finish(usage)
    assert events.finish(usage) == []  # finishing twice sends nothing more
    return parse_sse(blocks)


def assert_well_formed(events):
    """message_start first, message_stop last, blocks never overlap, indexes count up."""
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert all(name == data["type"] for name, data in events)
    open_index, next_index = None, 0
    for name, data in events:
        if name == "content_block_start":
            assert open_index is None and data["index"] == next_index
            open_index, next_index = data["index"], next_index + 1
        elif name == "content_block_delta":
            assert data["index"] == open_index
        elif name == "content_block_stop":
            assert data["index"] == open_index
            open_index = None
    assert open_index is None


def test_chat_text_and_reasoning_chunks_become_thinking_then_text_blocks():
    events = run_events(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"reasoning_content": "Think"}),
            chunk({"reasoning_content": "ing"}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            chunk(
                usage={
                    "prompt_tokens": 130,
                    "completion_tokens": 7,
                    "prompt_tokens_details": {"cached_tokens": 100},
                }
            ),
        ],
        usage=Usage(input=130, cached_input=100, cache_write=20, output=7),
    )
    assert_well_formed(events)
    start = events[0][1]["message"]
    assert (
        start["model"] == "claude-x"
        and start["id"] == "msg_9"
        and start["usage"]["input_tokens"] == 12
    )
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts == [
        {"type": "thinking", "thinking": "", "signature": ""},
        {"type": "text", "text": ""},
    ]
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert "".join(d.get("thinking", "") for d in deltas) == "Thinking"
    assert "".join(d.get("text", "") for d in deltas) == "Hello"
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 20,
            "cache_read_input_tokens": 100,
            "output_tokens": 7,
        },
    }


def test_streamed_tool_calls_split_across_many_chunks_become_whole_tool_use_blocks():
    args0 = '{"path": "src/main.py", "limit": 200}'
    args1 = '{"pattern": "TODO"}'

    def frag(index, text):
        return chunk({"tool_calls": [{"index": index, "function": {"arguments": text}}]})

    chunks = [
        chunk({"role": "assistant", "content": "Looking."}),
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 0,
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "read", "arguments": ""},
                    }
                ]
            }
        ),
        *[frag(0, args0[i : i + 3]) for i in range(0, 12, 3)],
        chunk(
            {
                "tool_calls": [
                    {
                        "index": 1,
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "grep", "arguments": args1[:5]},
                    }
                ]
            }
        ),
        *[frag(0, args0[i : i + 3]) for i in range(12, len(args0), 3)],  # interleaved: back to 0
        frag(1, args1[5:]),
        chunk({}, "tool_calls"),
    ]
    events = run_events(chunks)
    assert_well_formed(events)
    blocks: dict[int, dict] = {}
    for name, data in events:
        if name == "content_block_start":
            blocks[data["index"]] = {**data["content_block"], "json": ""}
        elif name == "content_block_delta" and data["delta"]["type"] == "input_json_delta":
            blocks[data["index"]]["json"] += data["delta"]["partial_json"]
    assert blocks[0]["type"] == "text"
    assert (blocks[1]["id"], blocks[1]["name"], json.loads(blocks[1]["json"])) == (
        "call_a",
        "read",
        json.loads(args0),
    )
    assert (blocks[2]["id"], blocks[2]["name"], json.loads(blocks[2]["json"])) == (
        "call_b",
        "grep",
        json.loads(args1),
    )
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_without_any_usage_the_output_is_estimated_and_input_is_the_estimate():
    events = run_events([chunk({"content": "x" * 40}), chunk({}, "length")], input_tokens=33)
    assert events[-2][1]["usage"] == {
        "input_tokens": 33,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 10,
    }
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


def test_usage_from_the_last_chunk_serves_when_the_caller_has_none():
    events = run_events(
        [
            chunk({"content": "hi"}),
            chunk({}, "stop"),
            chunk(usage={"prompt_tokens": 5, "completion_tokens": 2}),
        ]
    )
    assert (
        events[-2][1]["usage"]["input_tokens"] == 5 and events[-2][1]["usage"]["output_tokens"] == 2
    )


def test_an_empty_chat_stream_still_gives_a_whole_message():
    events = run_events([])
    assert [n for n, _ in events] == ["message_start", "message_delta", "message_stop"]


def test_sse_event_is_one_named_block():
    assert sse_event("ping", {"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'


async def test_the_anthropic_sdk_accumulates_the_translated_stream():
    chunks = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"reasoning_content": "plan"}),
        chunk({"content": "Sure."}),
        chunk(
            {
                "tool_calls": [
                    {"index": 0, "id": "call_a", "function": {"name": "read", "arguments": '{"pa'}}
                ]
            }
        ),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'th": "a"}'}}]}),
        chunk({}, "tool_calls"),
    ]
    events = ChatToAnthropicEvents("claude-x", 12)
    body = b"".join(b for c in chunks for b in events.feed(c)) + b"".join(
        events.finish(Usage(input=12, output=5))
    )
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(
            200, content=body, headers={"content-type": "text/event-stream"}
        )
    )
    async with httpx2.AsyncClient(transport=transport) as http:
        client = anthropic.AsyncAnthropic(api_key="k", base_url="http://gw", http_client=http)
        async with client.messages.stream(
            model="claude-x", max_tokens=100, messages=[USER]
        ) as stream:
            message = await stream.get_final_message()
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[1].text == "Sure."
    assert message.content[2].input == {"path": "a"} and message.content[2].id == "call_a"
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 5
