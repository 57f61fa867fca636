"""The gateway over HTTP: the official openai SDK, stream relay, key scope,
rejections and bad input. localgate in front of the fake OpenAI upstream
(tests/upstream.py); every charge is checked against the test's own Decimal price
oracle (gateway_fixtures.charge_of) and the ledger. The SDK round trips and the
stream relay talk to a real server (``live_gate``, uvicorn in a thread); the
request/response checks go through the app in-process (``gate``).

Failures of the upstream (fallback, cuts, disconnects, missing usage):
test_gateway_failures.py. Concurrency: test_gateway_concurrency.py.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
import time
from decimal import ROUND_CEILING, Decimal
from typing import Any

import gateway_fixtures as gf
import httpx
import openai
import pytest
from upstream import FakeUpstream

from localgate import tokens

upstream = FakeUpstream.fixture()

P_CHAT = gf.price(input="0.5", cached_input="0.25", output="1.5")
P_EMBED = gf.price(input="0.02", output="0", per_request="0.0001")
P_ROUTED = gf.price("CNY", input="1", output="2")
P_CHEAP = gf.price(input="1", output="1")  # one micro-unit per token

MSG = [{"role": "user", "content": "Say hi"}]
UNAFFORDABLE = 10_000_000  # output tokens: a $15 hold on gw-chat, more than the $10 funded


def standard_config(up: FakeUpstream) -> dict[str, Any]:
    return {
        "channels": [
            gf.channel("up1", up.base_url),
            gf.channel("rt", up.base_url, settlement="routed"),
        ],
        "models": [
            gf.model("gw-chat", gf.route("up1", "up-chat", P_CHAT)),
            gf.model("gw-cheap", gf.route("up1", "up-cheap", P_CHEAP), max_output_tokens=4096),
            gf.model("gw-embed", gf.route("up1", "up-embed", P_EMBED), kind="embedding"),
            gf.model("gw-routed", gf.route("rt", "rt-chat", P_ROUTED)),
            gf.model(
                "gw-mixed",
                gf.route("up1", "mixed-official", P_CHAT, priority=1),
                gf.route("rt", "mixed-routed", P_ROUTED, priority=2),
            ),
            gf.model("gpt-4o-mini", gf.route("up1", "gpt-4o-mini", P_CHAT)),
            gf.model("gpt-4o", gf.route("up1", "gpt-4o", P_CHAT)),
        ],
    }


@pytest.fixture
def gateway_config(upstream) -> gf.GatewaySetup:
    return gf.GatewaySetup(**standard_config(upstream), funds={"credit": "10", "routed": "100"})


def money_header(micros: int, currency: str) -> str:
    return f"{Decimal(micros) / 1_000_000:.6f} {currency}"


def assert_charged(
    gate: gf.Gate,
    headers: Any,
    expected: int,
    *,
    before: int,
    wallet: str = "credit",
    currency: str = "USD",
    stream: bool = False,
) -> dict[str, Any]:
    """The receipt of a response charged ``expected``, and the ledger agrees."""
    rid = headers["x-localgate-receipt"]
    rec = gate.wait_receipt(rid)
    assert rec["status"] == "succeeded", rec
    assert rec["charge_micros"] == expected
    assert rec["charge"] == f"{Decimal(expected) / 1_000_000:.6f}"
    assert (rec["wallet"], rec["currency"]) == (wallet, currency)
    assert rec["balance_before_micros"] == before
    assert rec["balance_before_micros"] - rec["balance_after_micros"] == expected
    entries = gate.entries(wallet, rid)
    settles = [e for e in entries if e["kind"] == "settle"]
    assert len(settles) == 1, entries
    assert settles[0]["id"] == rec["ledger_entry_id"]
    assert settles[0]["amount_micros"] == -expected
    assert settles[0]["balance_after_micros"] == rec["balance_after_micros"]
    w = gate.wallet(wallet)
    assert w["balance_micros"] == before - expected
    assert w["held_micros"] == 0
    assert headers["x-localgate-wallet"] == wallet
    if not stream:
        assert headers["x-localgate-charge"] == money_header(expected, currency)
        assert headers["x-localgate-balance"] == money_header(before - expected, currency)
    return rec


# --- 1. the official openai SDK, unmodified ------------------------------------


def test_charge_oracle_rounds_half_up():
    charge, exact = gf.charge_of(P_CHAT, prompt=1203, cached=202, completion=333)
    assert exact == Decimal("1050.50")
    assert charge == 1051  # half-even would say 1050


@pytest.mark.slow
def test_sdk_chat_non_stream(live_gate, upstream):
    client = live_gate.openai(live_gate.key())
    upstream.push(prompt_tokens=1203, cached_tokens=202, completion_tokens=333)
    before = live_gate.wallet("credit")["balance_micros"]
    raw = client.chat.completions.with_raw_response.create(
        model="gw-chat",
        messages=MSG,
        max_tokens=400,
        temperature=0.2,
        extra_body={"x_vendor_field": {"keep": [1, "two"]}},
    )
    completion = raw.parse()
    assert completion.id == "chatcmpl-fake"
    assert completion.model == "up-chat"
    assert completion.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    usage = completion.usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (1203, 333)
    assert usage.prompt_tokens_details.cached_tokens == 202

    sent = upstream.last.body
    assert sent["model"] == "up-chat"
    assert sent["max_tokens"] == 400 and sent["temperature"] == 0.2
    assert sent["x_vendor_field"] == {"keep": [1, "two"]}  # unknown fields pass through
    assert sent["messages"] == MSG

    expected, exact = gf.charge_of(P_CHAT, prompt=1203, cached=202, completion=333)
    rec = assert_charged(live_gate, raw.headers, expected, before=before)
    assert rec["usage"] == {
        "input": 1203,
        "cached_input": 202,
        "cache_write": 0,
        "output": 333,
        "reasoning": 0,
        "source": "upstream",
    }
    assert Decimal(rec["cost_exact"]) * 1_000_000 == exact
    assert (rec["model"], rec["upstream_model"], rec["channel"]) == ("gw-chat", "up-chat", "up1")
    assert rec["route_type"] == "official"
    assert rec["price"]["version"].startswith("pv_")
    assert (rec["price"]["input"], rec["price"]["output"]) == ("0.5", "1.5")
    assert len(rec["attempts"]) == 1 and rec["attempts"][0]["status"] == 200
    assert rec["fallback_used"] is False
    assert rec["client"] == "openai-python"
    assert rec["hold_micros"] > 0


@pytest.mark.slow
def test_sdk_chat_stream(live_gate, upstream):
    client = live_gate.openai(live_gate.key())
    upstream.push(chunks=4, prompt_tokens=1201, completion_tokens=5)
    before = live_gate.wallet("credit")["balance_micros"]
    raw = client.chat.completions.with_raw_response.create(
        model="gw-chat", messages=MSG, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers["x-localgate-charge"] == "pending"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "tok0 tok1 tok2 tok3 "
    assert {c.id for c in chunks} == {"chatcmpl-fake"}
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 1201
    expected, _ = gf.charge_of(P_CHAT, prompt=1201, completion=5)
    assert expected == 608
    assert_charged(live_gate, raw.headers, expected, before=before, stream=True)


@pytest.mark.slow
def test_sdk_tools_round_trip(live_gate, upstream):
    client = live_gate.openai(live_gate.key())
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather in a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    balance = live_gate.wallet("credit")["balance_micros"]

    upstream.push(prompt_tokens=90, completion_tokens=12)
    raw = client.chat.completions.with_raw_response.create(
        model="gw-chat",
        messages=messages,
        tools=tools,
        tool_choice="auto",
        parallel_tool_calls=True,
    )
    first = raw.parse()
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_fake_0",
        "get_weather",
        "{}",
    )
    sent = upstream.last.body
    assert sent["tools"] == tools
    assert (sent["tool_choice"], sent["parallel_tool_calls"]) == ("auto", True)
    expected, _ = gf.charge_of(P_CHAT, prompt=90, completion=12)
    assert_charged(live_gate, raw.headers, expected, before=balance)
    balance -= expected

    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21}'})
    upstream.push(prompt_tokens=130, completion_tokens=7)
    raw = client.chat.completions.with_raw_response.create(
        model="gw-chat", messages=messages, tools=tools
    )
    second = raw.parse()
    assert second.choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    sent = upstream.last.body
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_fake_0"
    assert sent["messages"][2] == messages[2]
    expected, _ = gf.charge_of(P_CHAT, prompt=130, completion=7)
    assert_charged(live_gate, raw.headers, expected, before=balance)


@pytest.mark.slow
def test_sdk_embeddings(live_gate, upstream):
    client = live_gate.openai(live_gate.key())
    upstream.push(prompt_tokens=4321)
    before = live_gate.wallet("credit")["balance_micros"]
    raw = client.embeddings.with_raw_response.create(model="gw-embed", input=["a b", "c"])
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1]
    assert len(result.data[0].embedding) == 8  # the SDK decoded the upstream's base64
    assert upstream.last.path == "/v1/embeddings"
    assert upstream.last.body["model"] == "up-embed"
    expected, exact = gf.charge_of(P_EMBED, prompt=4321)
    assert exact == Decimal("186.42")  # 4321 x 0.02 + 100 per request
    rec = assert_charged(live_gate, raw.headers, expected, before=before)
    assert rec["endpoint"] == "/v1/embeddings"
    assert rec["usage"]["input"] == 4321 and rec["usage"]["output"] == 0


@pytest.mark.slow
def test_sdk_models_list_and_retrieve(live_gate):
    client = live_gate.openai(live_gate.key())
    models = {m.id: m for m in client.models.list()}
    for mid in ("gw-chat", "gw-embed", "gw-routed", "gw-mixed", "gpt-4o", "gpt-4o-mini"):
        assert mid in models
    ext = models["gw-mixed"].model_extra["localgate"]
    assert ext["route_types"] == ["official", "routed"]
    by_type = {r["route_type"]: r for r in ext["routes"]}
    assert by_type["official"]["price"]["input"] == "0.5"
    assert by_type["official"]["wallet"] == "credit"
    assert by_type["routed"]["price"]["currency"] == "CNY"
    assert by_type["routed"]["wallet"] == "routed"

    one = client.models.retrieve("gw-chat")
    assert one.id == "gw-chat"
    assert one.model_extra["localgate"]["routes"][0]["price"]["output"] == "1.5"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


# --- 2. stream relay --------------------------------------------------------------


def read_events_timed(resp: httpx.Response) -> list[tuple[float, bytes]]:
    """Each SSE block with the time it was complete at the client."""
    out: list[tuple[float, bytes]] = []
    buf = b""
    for piece in resp.iter_raw():
        buf += piece
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            if block.strip():
                out.append((time.monotonic(), block))
    return out


@pytest.mark.slow
def test_stream_is_relayed_as_it_arrives_not_buffered(live_gate, upstream):
    upstream.push(chunks=6, chunk_delay=0.12)
    http = live_gate.http(live_gate.key())
    body = {"model": "gw-chat", "messages": MSG, "stream": True}
    start = time.monotonic()
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = read_events_timed(resp)
    data = [(t, b) for t, b in events if b.startswith(b"data: {")]
    first, last = data[0][0], data[-1][0]
    # 8 upstream events 0.12 s apart: the first reached the client while the
    # upstream was still sending (same monotonic clock: the fake runs in-process).
    finished = upstream.last.finished_at
    assert finished is not None
    assert first < finished - 0.5
    assert last - first > 0.6
    assert first - start < 5.0


@pytest.mark.slow
@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_ids_usage_chunk_and_final_comment(live_gate, upstream, include_usage):
    upstream.push(chunks=3, prompt_tokens=77, completion_tokens=3)
    http = live_gate.http(live_gate.key())
    body: dict[str, Any] = {"model": "gw-chat", "messages": MSG, "stream": True}
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    before = live_gate.wallet("credit")["balance_micros"]
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200
    raw = resp.content

    # localgate always asks the upstream for usage...
    assert upstream.last.body["stream_options"] == {"include_usage": True}
    events = gf.data_events(raw)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    # ...and relays the upstream's own ids and fields.
    assert {c["id"] for c in chunks} == {"chatcmpl-fake"}
    assert {c["model"] for c in chunks} == {"up-chat"}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage_only = [c for c in chunks if not c["choices"]]
    if include_usage:
        assert len(usage_only) == 1 and usage_only[0] is chunks[-1]
        assert usage_only[0]["usage"]["prompt_tokens"] == 77
    else:
        assert usage_only == []  # stripped: the client did not ask for it
    assert "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    ) == ("tok0 tok1 tok2 ")

    # The final comment carries the receipt, before [DONE].
    blocks = gf.sse_blocks(raw)
    assert blocks[-1] == b"data: [DONE]"
    assert blocks[-2].startswith(b": localgate receipt=")
    comment = gf.receipt_comment(raw)
    rid = resp.headers["x-localgate-receipt"]
    expected, _ = gf.charge_of(P_CHAT, prompt=77, completion=3)
    rec = assert_charged(live_gate, resp.headers, expected, before=before, stream=True)
    assert comment == {
        "receipt": rid,
        "charge": money_header(expected, "USD").replace(" ", "_"),
        "wallet": "credit",
        "balance": money_header(rec["balance_after_micros"], "USD").replace(" ", "_"),
    }
    assert resp.headers["x-localgate-charge"] == "pending"
    assert resp.headers["x-localgate-balance"] == money_header(before, "USD")


def test_receipt_headers_on_every_response_that_identified_a_key(gate, upstream):
    key = gate.create_key("scoped", models=["gw-*"])
    http = gate.http(key["key"])
    cases = [
        ({"model": "gw-chat", "messages": MSG}, 200),
        ({"model": "gw-chat", "messages": MSG, "n": 0}, 400),
        ({"model": "gpt-4o", "messages": MSG}, 403),
        ({"model": "gw-nope", "messages": MSG}, 404),
        ({"model": "gw-chat", "messages": MSG, "max_tokens": UNAFFORDABLE}, 402),
    ]
    for body, status in cases:
        resp = http.post("/v1/chat/completions", json=body)
        assert resp.status_code == status, resp.text
        rid = resp.headers["x-localgate-receipt"]
        assert "x-localgate-charge" in resp.headers
        rec = gate.receipt(rid)
        assert rec["key"]["id"] == key["id"]
        if status == 200:
            assert rec["status"] == "succeeded"
            assert resp.headers["x-localgate-wallet"] == "credit"
            assert resp.headers["x-localgate-balance"].endswith(" USD")
        else:
            assert rec["status"] == "rejected"
            assert rec["http_status"] == status
            assert rec["charge_micros"] == 0
            gf.openai_error(resp)
    # Upstream failures name wallet and balance too (the hold was placed).
    upstream.push(status=500)
    resp = http.post("/v1/chat/completions", json={"model": "gw-chat", "messages": MSG})
    assert resp.status_code == 502
    assert resp.headers["x-localgate-wallet"] == "credit"
    assert resp.headers["x-localgate-charge"] == "0.000000 USD"
    assert resp.headers["x-localgate-balance"].endswith(" USD")
    assert gate.wallet("credit")["held_micros"] == 0


def test_402_names_its_wallet_in_headers_and_receipt(gate):
    http = gate.http(gate.key())
    resp = http.post(
        "/v1/chat/completions",
        json={"model": "gw-chat", "messages": MSG, "max_tokens": UNAFFORDABLE},
    )
    assert resp.status_code == 402
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert rec["wallet"] == "credit"
    assert rec["balance_before_micros"] == gate.wallet("credit")["balance_micros"]
    assert resp.headers["x-localgate-wallet"] == "credit"
    assert resp.headers["x-localgate-balance"] == money_header(10_000_000, "USD")


# --- the hold is an upper bound ----------------------------------------------------


def test_without_max_tokens_the_upstream_gets_what_the_wallet_affords(tmp_path, upstream):
    with gf.run_gateway(tmp_path, **standard_config(upstream), in_process=True) as gate:
        gate.fund("credit", "0.001000")  # 1000 micros = 1000 tokens of gw-cheap
        http = gate.http(gate.key())
        body = {"model": "gw-cheap", "messages": MSG}
        upstream.push(prompt_tokens=10, completion_tokens=20)
        resp = http.post("/v1/chat/completions", json=body)
        assert resp.status_code == 200
        input_estimate = tokens.count_chat_input_tokens(body)
        sent_max = upstream.last.body["max_tokens"]
        assert sent_max == 1000 - input_estimate  # all the wallet affords, below 4096
        rec = gate.receipt(resp.headers["x-localgate-receipt"])
        assert rec["hold_micros"] == 1000
        assert rec["charge_micros"] == 30

        # The model's limit caps it when the wallet could afford more.
        gate.fund("credit", "1")
        upstream.push(prompt_tokens=10, completion_tokens=20)
        assert http.post("/v1/chat/completions", json=body).status_code == 200
        assert upstream.last.body["max_tokens"] == 4096


def test_hold_covers_n_choices_of_max_tokens(gate, upstream):
    http = gate.http(gate.key())
    body = {"model": "gw-cheap", "messages": MSG, "max_tokens": 10, "n": 3}
    upstream.push(prompt_tokens=5, completion_tokens=30)
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 200
    assert upstream.last.body["n"] == 3 and upstream.last.body["max_tokens"] == 10
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert rec["hold_micros"] == tokens.count_chat_input_tokens(body) + 30
    assert rec["charge_micros"] == 35


@pytest.mark.slow
def test_sdk_stream_tool_calls_pass_through(live_gate, upstream):
    client = live_gate.openai(live_gate.key())
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    upstream.push(prompt_tokens=40, completion_tokens=6)
    before = live_gate.wallet("credit")["balance_micros"]
    raw = client.chat.completions.with_raw_response.create(
        model="gw-chat", messages=MSG, tools=tools, stream=True
    )
    chunks = list(raw.parse())
    calls = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
    assert calls[0].id == "call_fake_0" and calls[0].function.name == "lookup"
    assert "".join(tc.function.arguments or "" for tc in calls) == "{}"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    expected, _ = gf.charge_of(P_CHAT, prompt=40, completion=6)
    assert_charged(live_gate, raw.headers, expected, before=before, stream=True)


def test_official_openai_channel_gets_max_completion_tokens(tmp_path, upstream):
    config = {
        "channels": [gf.channel("oai-main", upstream.base_url, kind="openai")],
        "models": [gf.model("gw-o", gf.route("oai-main", "o4-mini", P_CHAT))],
    }
    with gf.run_gateway(tmp_path, **config, in_process=True) as gate:
        gate.fund("credit", "1")
        http = gate.http(gate.key())
        resp = http.post("/v1/chat/completions", json={"model": "gw-o", "messages": MSG})
        assert resp.status_code == 200
        sent = upstream.last.body
        assert "max_tokens" not in sent
        assert sent["max_completion_tokens"] > 0


@pytest.mark.slow
def test_route_priced_in_another_currency_than_its_wallet_stops_start_up(tmp_path, upstream):
    """A USD price on a route paid from the CNY wallet would charge the USD figure
    as yuan: `serve` refuses the config with one line naming the route and the fix."""
    config = {
        "channels": [gf.channel("rt", upstream.base_url, settlement="routed")],
        "models": [gf.model("gw-usd-routed", gf.route("rt", "x", P_CHAT))],
    }
    path = tmp_path / "config.toml"
    path.write_text(gf.toml_config({}, **config))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "localgate",
            "--data-dir",
            str(tmp_path / "d"),
            "--config",
            str(path),
            "serve",
            "--no-browser",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "priced in USD" in lines[0] and "CNY" in lines[0] and "gw-usd-routed" in lines[0]


# --- 8. key scope and rejections ---------------------------------------------------


def test_routed_key_sees_and_uses_only_routed_routes(gate):
    key = gate.create_key("routed-only", settlement="routed")
    client = gate.openai(key["key"])
    listed = {m.id: m.model_extra["localgate"] for m in client.models.list()}
    assert "gw-routed" in listed and "gw-mixed" in listed
    for mid in ("gw-chat", "gw-embed", "gpt-4o", "gpt-4o-mini", "gw-cheap"):
        assert mid not in listed
    for mid, ext in listed.items():
        assert ext["route_types"] == ["routed"], mid
        assert {r["route_type"] for r in ext["routes"]} == {"routed"}, mid
    assert [r["channel"] for r in listed["gw-mixed"]["routes"]] == ["rt"]

    http = gate.http(key["key"])
    resp = http.post("/v1/chat/completions", json={"model": "gw-chat", "messages": MSG})
    assert resp.status_code == 403
    assert gf.openai_error(resp)["code"] == "settlement_not_allowed"
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert (rec["status"], rec["charge_micros"]) == ("rejected", 0)

    # A model with both paths goes the routed way for this key, paid by the routed wallet.
    before = gate.wallet("routed")["balance_micros"]
    credit_before = gate.wallet("credit")["balance_micros"]
    resp = http.post("/v1/chat/completions", json={"model": "gw-mixed", "messages": MSG})
    assert resp.status_code == 200
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert (rec["route_type"], rec["wallet"], rec["currency"]) == ("routed", "routed", "CNY")
    assert rec["upstream_model"] == "mixed-routed"
    assert gate.wallet("routed")["balance_micros"] == before - rec["charge_micros"]
    assert gate.wallet("credit")["balance_micros"] == credit_before


def test_model_patterns_limit_the_key(gate):
    key = gate.create_key("4o-only", models=["gpt-4o*"])
    client = gate.openai(key["key"])
    ids = [m.id for m in client.models.list()]
    assert {"gpt-4o", "gpt-4o-mini"} <= set(ids)
    assert all(fnmatch.fnmatchcase(i, "gpt-4o*") for i in ids), ids
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gw-chat")

    http = gate.http(key["key"])
    ok = http.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": MSG})
    assert ok.status_code == 200
    resp = http.post("/v1/chat/completions", json={"model": "gw-chat", "messages": MSG})
    assert resp.status_code == 403
    error = gf.openai_error(resp)
    assert error["code"] == "model_not_allowed"
    assert error["type"] == "permission_error"
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(model="gw-embed", messages=MSG)


def test_key_over_its_daily_budget_gets_429_and_is_not_charged(gate, upstream):
    key = gate.create_key("budgeted", budgets={"USD": {"day": "0.000100"}})
    http = gate.http(key["key"])
    body = {"model": "gw-cheap", "messages": MSG}
    # The first request may spend up to the 100 micro budget and spends all of it.
    upstream.push(prompt_tokens=60, completion_tokens=40)
    first = http.post("/v1/chat/completions", json=body)
    assert first.status_code == 200
    assert gate.receipt(first.headers["x-localgate-receipt"])["charge_micros"] == 100
    spent = gate.ok("GET", f"/api/keys/{key['id']}")["spend"]["USD"]
    assert Decimal(spent["day"]) == Decimal("0.0001")

    before = gate.wallet("credit")
    entries_before = len(gate.entries("credit"))
    calls_before = len(upstream.requests)
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 429
    error = gf.openai_error(resp)
    assert error["code"] == "budget_exceeded"
    assert error["type"] == "rate_limit_error"
    assert 1 <= int(resp.headers["retry-after"]) <= 86_400  # until the next UTC midnight
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert (rec["status"], rec["http_status"], rec["charge_micros"]) == ("rejected", 429, 0)
    after = gate.wallet("credit")
    assert after["balance_micros"] == before["balance_micros"]
    assert after["held_micros"] == 0
    assert len(gate.entries("credit")) == entries_before
    assert len(upstream.requests) == calls_before  # never reached the upstream


def test_a_key_never_spends_past_its_budget(gate, upstream):
    key = gate.create_key("tight", budgets={"USD": {"day": "0.000100"}})
    http = gate.http(key["key"])
    # The hold is the whole 100 micro budget; the upstream then counts 300 prompt tokens.
    upstream.push(prompt_tokens=300, completion_tokens=50)
    resp = http.post("/v1/chat/completions", json={"model": "gw-cheap", "messages": MSG})
    assert resp.status_code == 200
    spent = gate.ok("GET", f"/api/keys/{key['id']}")["spend"]["USD"]["day"]
    assert Decimal(spent) <= Decimal("0.000100"), spent


def test_request_larger_than_the_budget_left_gets_429(gate, upstream):
    key = gate.create_key("small", budgets={"USD": {"day": "0.000500"}})
    http = gate.http(key["key"])
    before = gate.wallet("credit")["balance_micros"]
    resp = http.post(
        "/v1/chat/completions", json={"model": "gw-cheap", "messages": MSG, "max_tokens": 2000}
    )
    assert resp.status_code == 429
    assert gf.openai_error(resp)["code"] == "budget_exceeded"
    assert int(resp.headers["retry-after"]) >= 1
    assert gate.wallet("credit")["balance_micros"] == before
    assert upstream.requests == []


def test_paused_revoked_and_resumed_keys(gate):
    key = gate.create_key("switch")
    http = gate.http(key["key"])
    body = {"model": "gw-chat", "messages": MSG}
    assert http.post("/v1/chat/completions", json=body).status_code == 200

    gate.ok("POST", f"/api/keys/{key['id']}/pause")
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 403
    assert gf.openai_error(resp)["code"] == "key_paused"
    assert gate.receipt(resp.headers["x-localgate-receipt"])["status"] == "rejected"
    assert http.get("/v1/models").status_code == 403

    gate.ok("POST", f"/api/keys/{key['id']}/resume")
    assert http.post("/v1/chat/completions", json=body).status_code == 200

    gate.ok("POST", f"/api/keys/{key['id']}/revoke")
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 401
    error = gf.openai_error(resp)
    assert error["code"] == "invalid_api_key" and "revoked" in error["message"]
    assert http.get("/v1/models").status_code == 401
    with pytest.raises(openai.AuthenticationError):
        gate.openai(key["key"]).chat.completions.create(model="gw-chat", messages=MSG)


def test_rpm_limit_is_429_with_retry_after(gate):
    key = gate.create_key("slow", rpm=2)
    http = gate.http(key["key"])
    body = {"model": "gw-chat", "messages": MSG}
    assert [http.post("/v1/chat/completions", json=body).status_code for _ in range(2)] == [
        200,
        200,
    ]
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 429
    assert gf.openai_error(resp)["code"] == "rate_limit_exceeded"
    assert 1 <= int(resp.headers["retry-after"]) <= 61
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert (rec["status"], rec["charge_micros"]) == ("rejected", 0)


def test_unknown_missing_and_x_api_key(gate):
    http = gate.http()
    body = {"model": "gw-chat", "messages": MSG}
    for headers in ({"authorization": "Bearer lg_not_a_real_key"}, {}):
        resp = http.post("/v1/chat/completions", json=body, headers=headers)
        assert resp.status_code == 401
        assert gf.openai_error(resp)["type"] == "authentication_error"
        assert "x-localgate-receipt" not in resp.headers  # no key, no receipt
    with pytest.raises(openai.AuthenticationError):
        gate.openai("lg_wrong").models.list()
    key = gate.key()
    resp = http.post("/v1/chat/completions", json=body, headers={"x-api-key": key})
    assert resp.status_code == 200


def test_unknown_model_is_404_with_a_receipt(gate):
    http = gate.http(gate.key())
    resp = http.post("/v1/chat/completions", json={"model": "no-such-model", "messages": MSG})
    assert resp.status_code == 404
    error = gf.openai_error(resp)
    assert error["code"] == "model_not_found"
    assert "no-such-model" in error["message"]
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert (rec["status"], rec["http_status"], rec["model"]) == ("rejected", 404, "no-such-model")


def test_no_balance_is_402_naming_wallet_need_balance_and_topup_url(gate):
    gate.fund("credit", "-9.999950")  # 50 micros left
    http = gate.http(gate.key())
    body = {"model": "gw-chat", "messages": MSG, "max_tokens": 100}
    resp = http.post("/v1/chat/completions", json=body)
    assert resp.status_code == 402
    error = gf.openai_error(resp)
    assert error["code"] == "insufficient_balance"
    assert error["wallet"] == "credit"
    # The hold: every input token at the input rate + 100 output tokens, rounded up.
    exact = tokens.count_chat_input_tokens(body) * Decimal("0.5") + 100 * Decimal("1.5")
    needed = int(exact.to_integral_value(rounding=ROUND_CEILING))
    message = error["message"]
    assert "'credit'" in message
    assert f"${Decimal(needed) / 1_000_000:.6f}" in message
    assert "$0.000050" in message
    assert f"{gate.base_url}/billing?wallet=credit" in message
    with pytest.raises(openai.APIStatusError) as info:
        gate.openai(gate.key()).chat.completions.create(**body)
    assert info.value.status_code == 402
    assert gate.wallet("credit")["balance_micros"] == 50
    assert gate.wallet("credit")["held_micros"] == 0


# --- 9. bad input: 4xx in OpenAI shape, never 500, never a half-written ledger -----

BAD_CHAT = [
    ("malformed json", b'{"model": "gw-chat", "messages": [', 400, None),
    ("empty body", b"", 400, None),
    ("not an object", b'[{"model": "gw-chat"}]', 400, None),
    ("a string", b'"gw-chat"', 400, None),
    ("missing model", json.dumps({"messages": MSG}).encode(), 400, "model"),
    ("missing messages", json.dumps({"model": "gw-chat"}).encode(), 400, "messages"),
    ("model not a string", json.dumps({"model": 7, "messages": MSG}).encode(), 400, "model"),
    ("n=0", json.dumps({"model": "gw-chat", "messages": MSG, "n": 0}).encode(), 400, "n"),
    ("n=true", json.dumps({"model": "gw-chat", "messages": MSG, "n": True}).encode(), 400, "n"),
    (
        "max_tokens=x",
        json.dumps({"model": "gw-chat", "messages": MSG, "max_tokens": "x"}).encode(),
        400,
        "max_tokens",
    ),
    (
        "max_tokens=-1",
        json.dumps({"model": "gw-chat", "messages": MSG, "max_tokens": -1}).encode(),
        400,
        "max_tokens",
    ),
    (
        "embedding model on chat",
        json.dumps({"model": "gw-embed", "messages": MSG}).encode(),
        400,
        "model",
    ),
    ("invalid utf-8", b'{"model": "\xff\xfe", "messages": []}', 400, None),
]


@pytest.fixture
def small_gate(tmp_path, upstream):
    with gf.run_gateway(
        tmp_path, **standard_config(upstream), server={"max_body_bytes": 2048}, in_process=True
    ) as g:
        g.fund("credit", "10")
        yield g


def assert_ledger_untouched(gate: gf.Gate, entries_before: int) -> None:
    assert gate.verify()["ok"] is True
    wallet = gate.wallet("credit")
    assert wallet["balance_micros"] == 10_000_000
    assert wallet["held_micros"] == 0
    assert len(gate.entries("credit")) == entries_before


def test_bad_chat_input_is_400_in_openai_shape(small_gate, upstream):
    gate = small_gate
    http = gate.http(gate.key())
    entries_before = len(gate.entries("credit"))
    for name, raw, status, param in BAD_CHAT:
        resp = http.post(
            "/v1/chat/completions", content=raw, headers={"content-type": "application/json"}
        )
        assert resp.status_code == status, (name, resp.status_code, resp.text)
        error = gf.openai_error(resp)
        assert error["type"] == "invalid_request_error", name
        if param is not None:
            assert error["param"] == param, (name, error)
    bad_embeddings = [
        {"model": "gw-embed"},
        {"input": "x"},
        {"model": "gw-chat", "input": "x"},
    ]
    for body in bad_embeddings:
        resp = http.post("/v1/embeddings", json=body)
        assert resp.status_code == 400, (body, resp.text)
        gf.openai_error(resp)
    assert upstream.requests == []
    assert_ledger_untouched(gate, entries_before)


def test_oversized_body_is_413_with_or_without_content_length(small_gate, upstream):
    gate = small_gate
    http = gate.http(gate.key())
    entries_before = len(gate.entries("credit"))
    big = {"model": "gw-chat", "messages": [{"role": "user", "content": "x" * 5000}]}
    resp = http.post("/v1/chat/completions", json=big)
    assert resp.status_code == 413
    assert gf.openai_error(resp)["code"] == "request_too_large"

    def chunks():
        data = json.dumps(big).encode()
        for i in range(0, len(data), 1000):
            yield data[i : i + 1000]

    resp = http.post("/v1/chat/completions", content=chunks())
    assert resp.status_code == 413
    gf.openai_error(resp)
    # A body just under the limit still works.
    fits = {"model": "gw-chat", "messages": [{"role": "user", "content": "x" * 1500}]}
    assert http.post("/v1/chat/completions", json=fits).status_code == 200
    assert len(upstream.requests) == 1
    assert gate.verify()["ok"] is True
    assert gate.wallet("credit")["held_micros"] == 0
    assert len(gate.entries("credit")) == entries_before + 2  # hold + settle of the one call


def test_wrong_method_and_unknown_path(small_gate):
    gate = small_gate
    http = gate.http(gate.key())
    entries_before = len(gate.entries("credit"))
    for method, path, status in [
        ("GET", "/v1/chat/completions", 405),
        ("PUT", "/v1/embeddings", 405),
        ("POST", "/v1/models", 405),
        ("DELETE", "/v1/models/gw-chat", 405),
        ("POST", "/v1/completion", 404),
        ("GET", "/v1/nothing/here", 404),
    ]:
        resp = http.request(method, path, json={"model": "gw-chat", "messages": MSG})
        assert resp.status_code == status, (method, path, resp.status_code, resp.text)
        gf.openai_error(resp)
    assert_ledger_untouched(gate, entries_before)


def test_bare_v1_path_errors_in_openai_shape(small_gate):
    http = small_gate.http(small_gate.key())
    for path in ("/v1", "/v1/"):
        resp = http.post(path, json={})
        assert resp.status_code == 404
        gf.openai_error(resp)


def test_deeply_nested_json_is_400_not_500(tmp_path, upstream):
    with gf.run_gateway(tmp_path, **standard_config(upstream), in_process=True) as gate:
        http = gate.http(gate.key())
        raw = b'{"model": "gw-chat", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        resp = http.post("/v1/chat/completions", content=raw)
        assert resp.status_code == 400, resp.text
        gf.openai_error(resp)
