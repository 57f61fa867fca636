"""Every API on /v1 in front of every kind of upstream, through the official SDKs.

The matrix: inbound API (OpenAI chat, Anthropic messages, OpenAI Responses) x
upstream kind (anthropic, openai, openai_compatible, gemini) x stream or not.
One fake upstream speaks every wire format (tests/upstream.py picks it by
path). In each cell the charge on the receipt equals this test's own price
computation from the usage the fake reported, read the way that upstream's
documentation defines it (Anthropic's input excludes cache reads and writes;
OpenAI's, the Responses API's and Gemini's include cache reads).
"""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import anthropic
import gateway_fixtures as gf
import pytest
from upstream import FakeUpstream

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as fake:
        yield fake


PRICE = gf.price(input="1", cached_input="0.5", cache_write="1.25", output="4")
KINDS = {"ant": "anthropic", "oai": "openai", "relay": "openai_compatible", "gem": "gemini"}
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


@pytest.fixture(scope="module")
def gate(tmp_path_factory, upstream):
    channels = [gf.channel(cid, upstream.base_url, kind=kind) for cid, kind in KINDS.items()]
    models = [gf.model(f"m-{cid}", gf.route(cid, f"{cid}-upstream", PRICE)) for cid in KINDS]
    with gf.run_gateway(tmp_path_factory.mktemp("dialects"), channels=channels, models=models) as g:
        g.fund("credit", "100")
        yield g


@pytest.fixture(scope="module")
def key(gate):
    return gate.key("dialects")


@pytest.fixture(autouse=True)
def default_knobs(upstream):
    upstream.set(
        prompt_tokens=100,
        completion_tokens=20,
        cached_tokens=30,
        cache_write_tokens=10,
        echo_tools=False,
        usage=True,
    )


def reported_usage(kind: str, dialect: str) -> dict[str, int]:
    """What the fake's knobs mean on the wire format that answered, normalised by hand."""
    if kind == "anthropic":  # input_tokens excludes cache reads (30) and writes (10)
        return {"input": 140, "cached_input": 30, "cache_write": 10, "output": 20}
    if kind == "openai" and dialect == "openai-responses":  # Responses reports cache writes
        return {"input": 100, "cached_input": 30, "cache_write": 10, "output": 20}
    return {"input": 100, "cached_input": 30, "cache_write": 0, "output": 20}


def expected_charge(usage: dict[str, int]) -> int:
    uncached = usage["input"] - usage["cached_input"] - usage["cache_write"]
    exact = (
        uncached * Decimal(PRICE["input"])
        + usage["cached_input"] * Decimal(PRICE["cached_input"])
        + usage["cache_write"] * Decimal(PRICE["cache_write"])
        + usage["output"] * Decimal(PRICE["output"])
    )
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def check_receipt(gate, receipt_id: str, cid: str, dialect: str, *, native: bool) -> None:
    receipt = gate.wait_receipt(receipt_id)
    assert receipt["status"] == "succeeded", receipt["error"]
    assert (receipt["dialect"], receipt["upstream_kind"]) == (dialect, KINDS[cid])
    usage = reported_usage(KINDS[cid], dialect)
    assert {k: receipt["usage"][k] for k in usage} == usage
    assert receipt["usage"]["source"] == "upstream"
    assert receipt["charge_micros"] == expected_charge(usage)
    translated = any("translated to chat" in note for note in receipt["notes"])
    assert translated is not native


# -- OpenAI chat completions in front of every kind --------------------------------


@pytest.mark.parametrize("cid", list(KINDS))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_chat_completions_reach_every_kind(gate, key, cid, stream):
    client = gate.openai(key)
    messages = [{"role": "user", "content": "hello"}]
    if stream:
        raw = client.chat.completions.with_raw_response.create(
            model=f"m-{cid}", messages=messages, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
        receipt_id = raw.headers["x-localgate-receipt"]
    else:
        raw = client.chat.completions.with_raw_response.create(model=f"m-{cid}", messages=messages)
        text = raw.parse().choices[0].message.content
        receipt_id = raw.headers["x-localgate-receipt"]
    assert text.startswith("tok0")
    check_receipt(gate, receipt_id, cid, "openai-chat", native=True)


# -- Anthropic messages, through the anthropic SDK -----------------------------------


def claude(gate, key: str, **kw: Any) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=gate.base_url, api_key=key, max_retries=0, **kw)
    gate.clients.append(client)
    return client


@pytest.mark.parametrize("cid", list(KINDS))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_anthropic_messages_reach_every_kind(gate, key, cid, stream):
    client = claude(gate, key)
    args = {
        "model": f"m-{cid}",
        "max_tokens": 200,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "hello"}],
    }
    if stream:
        with client.messages.stream(**args) as events:
            text = "".join(events.text_stream)
            final = events.get_final_message()
            receipt_id = events.response.headers["x-localgate-receipt"]
        assert final.stop_reason == "end_turn"
    else:
        raw = client.messages.with_raw_response.create(**args)
        final = raw.parse()
        text = "".join(b.text for b in final.content if b.type == "text")
        receipt_id = raw.headers["x-localgate-receipt"]
    assert text.startswith("tok0")
    check_receipt(gate, receipt_id, cid, "anthropic-messages", native=cid == "ant")


@pytest.mark.parametrize("cid", ["ant", "relay"])
def test_an_anthropic_tool_round_trip(gate, key, upstream, cid):
    client = claude(gate, key)
    upstream.set(echo_tools=True)
    first = client.messages.create(
        model=f"m-{cid}",
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and isinstance(call.input, dict)
    second = client.messages.create(
        model=f"m-{cid}",
        max_tokens=200,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    sent = upstream.last.body
    if cid == "relay":  # translated: the tool result went up as an OpenAI tool message
        assert sent["messages"][-1] == {"role": "tool", "tool_call_id": call.id, "content": "sunny"}
    else:
        assert sent["messages"][-1]["content"][0]["tool_use_id"] == call.id


def test_count_tokens_answers_without_an_upstream_call_or_a_receipt(gate, key, upstream):
    before = len(upstream.requests), len(gate.receipts())
    count = claude(gate, key).messages.count_tokens(
        model="m-ant", messages=[{"role": "user", "content": "hello there"}]
    )
    assert count.input_tokens > 0
    assert (len(upstream.requests), len(gate.receipts())) == before


def test_claude_code_style_auth_and_query_string_work(gate, key, upstream):
    # Claude Code: ANTHROPIC_AUTH_TOKEN (a bearer token) and /v1/messages?beta=true.
    client = claude(gate, None, auth_token=key, default_headers={"anthropic-beta": "x-test"})
    resp = client.messages.with_raw_response.create(
        model="m-ant",
        max_tokens=50,
        messages=[{"role": "user", "content": "hi"}],
        extra_query={"beta": "true"},
    )
    assert resp.status_code == 200
    assert upstream.last.headers.get("anthropic-beta") == "x-test"


# -- OpenAI Responses, through the openai SDK ----------------------------------------


@pytest.mark.parametrize("cid", list(KINDS))
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_responses_reach_every_kind(gate, key, cid, stream):
    client = gate.openai(key)
    args = {"model": f"m-{cid}", "input": "hello", "instructions": "Be brief."}
    if stream:
        raw = client.responses.with_raw_response.create(**args, stream=True)
        events = list(raw.parse())
        receipt_id = raw.headers["x-localgate-receipt"]
        assert events[-1].type == "response.completed"
        text = events[-1].response.output_text
        assert [e.sequence_number for e in events] == list(range(len(events)))
    else:
        raw = client.responses.with_raw_response.create(**args)
        text = raw.parse().output_text
        receipt_id = raw.headers["x-localgate-receipt"]
    assert text.startswith("tok0")
    check_receipt(gate, receipt_id, cid, "openai-responses", native=cid == "oai")


@pytest.mark.parametrize("cid", ["oai", "relay"])
def test_a_responses_function_tool_round_trip(gate, key, upstream, cid):
    client = gate.openai(key)
    upstream.set(echo_tools=True)
    tool = {
        "type": "function",
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    first = client.responses.create(model=f"m-{cid}", input="Weather in Paris?", tools=[tool])
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather"
    second = client.responses.create(
        model=f"m-{cid}",
        tools=[tool],
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": "{}",
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert second.output_text.startswith("tok0")


# -- bad input on the new endpoints: the caller's dialect, never a ledger write -------


BAD = [
    ("/v1/messages", {"model": "m-ant", "messages": [{"role": "user", "content": "x"}]}),
    ("/v1/messages", {"model": "m-ant", "max_tokens": "many", "messages": []}),
    ("/v1/messages", {"model": "m-ant", "max_tokens": 5, "messages": [{"role": "robot"}]}),
    ("/v1/messages", {"model": "m-ant", "max_tokens": 5, "messages": "hello"}),
    ("/v1/responses", {"model": "m-oai", "input": 42}),
    ("/v1/responses", {"model": "m-oai", "input": [{"role": "robot", "content": "x"}]}),
    ("/v1/responses", {"model": "m-relay", "input": "x", "previous_response_id": "resp_1"}),
]


@pytest.mark.parametrize(("path", "body"), BAD)
def test_bad_input_is_a_4xx_in_the_endpoints_dialect_and_writes_nothing(gate, key, path, body):
    entries = len(gate.entries("credit"))
    resp = gate.http(key).post(path, content=json.dumps(body))
    assert 400 <= resp.status_code < 500, resp.text
    error = resp.json()
    if path.startswith("/v1/messages"):
        assert error["type"] == "error" and error["error"]["type"] == "invalid_request_error"
    else:
        assert error["error"]["type"] == "invalid_request_error"
    assert len(gate.entries("credit")) == entries
    assert gate.wallet("credit")["held_micros"] == 0


def test_not_enough_money_on_messages_is_a_402_in_anthropics_shape(tmp_path, upstream):
    channels = [gf.channel("ant", upstream.base_url, kind="anthropic")]
    models = [gf.model("m-ant", gf.route("ant", "a", PRICE))]
    with gf.run_gateway(tmp_path, channels=channels, models=models) as g:
        client = claude(g, g.key())
        with pytest.raises(anthropic.APIStatusError) as info:
            client.messages.create(
                model="m-ant", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
            )
    assert info.value.status_code == 402
    error = info.value.body["error"]
    assert error["type"] == "billing_error" and error["wallet"] == "credit"
    assert "Top up at" in error["message"]


# -- a stream that breaks ends with an error in the caller's dialect ---------------------


def sse_events(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    out = []
    for block in raw.decode().split("\n\n"):
        name = next((ln[7:] for ln in block.splitlines() if ln.startswith("event: ")), None)
        data = "".join(ln[6:] for ln in block.splitlines() if ln.startswith("data: "))
        if data and data != "[DONE]":
            out.append((name, json.loads(data)))
    return out


@pytest.mark.parametrize(
    ("cid", "knobs"),
    [
        ("ant", {"error_body": "overloaded mid-stream"}),  # Anthropic's own error event
        ("relay", {"cut_after": 3, "chunk_delay": 0.01}),  # a chat stream cut, translated
    ],
)
def test_a_broken_messages_stream_ends_with_an_anthropic_error_event(
    gate, key, upstream, cid, knobs
):
    upstream.push(**knobs)
    body = {
        "model": f"m-{cid}",
        "max_tokens": 50,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    resp = gate.http(key).post("/v1/messages", json=body)
    events = sse_events(resp.content)
    assert events[0][0] == "message_start"
    name, error = events[-1]
    assert name == "error" and error["type"] == "error"
    assert error["error"]["type"] == "api_error" and "cut" in error["error"]["message"]
    assert not any(n == "message_stop" for n, _ in events)
    receipt = gate.wait_receipt(resp.headers["x-localgate-receipt"])
    assert receipt["status"] == "failed"
    assert receipt["charge_micros"] > 0  # what was delivered is charged


def test_a_broken_responses_stream_ends_with_an_error_event(gate, key, upstream):
    upstream.push(cut_after=3, chunk_delay=0.01)
    resp = gate.http(key).post(
        "/v1/responses", json={"model": "m-relay", "input": "hi", "stream": True}
    )
    events = sse_events(resp.content)
    name, error = events[-1]
    assert name == "error" and error["type"] == "error"
    numbers = [data["sequence_number"] for _, data in events]
    assert numbers == list(range(len(events)))
    receipt = gate.wait_receipt(resp.headers["x-localgate-receipt"])
    assert receipt["status"] == "failed" and receipt["charge_micros"] > 0
