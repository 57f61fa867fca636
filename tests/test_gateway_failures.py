"""Upstream failures through a running localgate: fallback before the first byte,
failure after every route, timeouts, non-retryable 4xx, a stream the upstream
cuts, a client that hangs up mid-stream, and upstreams that report no usage.

Two fake OpenAI upstreams (tests/upstream.py) on 127.0.0.1 stand behind two
channels. Charges are checked against the test's own price oracle
(gateway_fixtures.charge_of); estimated usage against localgate.tokens, the
tokenizer the issue names as the estimate's reference.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gateway_fixtures as gf
import openai
import pytest
from upstream import FakeUpstream

from localgate import tokens

# Real servers with faults injected on the wire (resets, cuts, disconnects).
pytestmark = pytest.mark.slow

up_a = FakeUpstream.fixture("up_a")
up_b = FakeUpstream.fixture("up_b")

P_A = gf.price(input="1", output="2")
P_B = gf.price(input="3", output="5")
P_R = gf.price("CNY", input="7", output="11")
MSG = [{"role": "user", "content": "Tell me a story"}]
BODY = {"model": "gw-chat", "messages": MSG}


def config(a: FakeUpstream, b: FakeUpstream) -> dict[str, Any]:
    return {
        "channels": [
            gf.channel("a", a.base_url),
            gf.channel("b", b.base_url),
            gf.channel("slow", a.base_url, timeout=0.4),
            gf.channel("r", b.base_url, settlement="routed"),
        ],
        "models": [
            gf.model(
                "gw-fb",
                gf.route("a", "a-model", P_A, priority=1),
                gf.route("b", "b-model", P_B, priority=2),
            ),
            gf.model("gw-chat", gf.route("a", "a-chat", P_A)),
            gf.model("gw-slow", gf.route("slow", "slow-model", P_A)),
            gf.model(
                "gw-cross",
                gf.route("a", "cross-official", P_A, priority=1),
                gf.route("r", "cross-routed", P_R, priority=2),
            ),
        ],
    }


@pytest.fixture
def gate(tmp_path, up_a, up_b):
    with gf.run_gateway(tmp_path, **config(up_a, up_b)) as g:
        g.fund("credit", "10")
        yield g


def post(gate: gf.Gate, body: dict[str, Any], key: str | None = None):
    http = gate.http(key or gate.key())
    return http.post("/v1/chat/completions", json=body)


def kinds(entries: list[dict[str, Any]]) -> list[str]:
    return [e["kind"] for e in entries]


def estimate(body: dict[str, Any], delivered: str) -> tuple[int, int]:
    return tokens.count_chat_input_tokens(body), tokens.count_tokens(delivered)


# --- 3. fallback before the first byte ------------------------------------------------

FAILURES = {
    "503": {"status": 503},
    "429": {"status": 429},
    "reset": {"reset": True},
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("failure", list(FAILURES))
def test_fallback_before_first_byte_charges_only_the_winner(gate, up_a, up_b, failure, stream):
    up_a.push(**FAILURES[failure])
    up_b.push(prompt_tokens=100, completion_tokens=50, chunks=3)
    body = {"model": "gw-fb", "messages": MSG, "stream": stream}
    resp = post(gate, body)
    assert resp.status_code == 200, resp.text
    if stream:
        events = gf.data_events(resp.content)
        assert events[-1] == "[DONE]"
        text = "".join(
            e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]
        )
        assert {e["model"] for e in events[:-1]} == {"b-model"}
    else:
        text = resp.json()["choices"][0]["message"]["content"]
    assert text == "tok0 tok1 tok2 "
    assert len(up_a.requests) == 1 and len(up_b.requests) == 1
    assert up_b.last.body["model"] == "b-model"

    rid = resp.headers["x-localgate-receipt"]
    rec = gate.wait_receipt(rid)
    assert rec["status"] == "succeeded"
    first, second = rec["attempts"]
    assert (first["channel"], first["upstream_model"]) == ("a", "a-model")
    assert first["status"] == (None if failure == "reset" else int(failure))
    assert first["error"] and "trying next route" in first["why_next"]
    assert (second["channel"], second["status"], second["why_next"]) == ("b", 200, None)
    assert rec["fallback_used"] is True and rec["retry_count"] == 1
    assert (rec["channel"], rec["upstream_model"]) == ("b", "b-model")
    assert rec["price"]["input"] == "3"  # the winner's price, not the first route's

    expected, _ = gf.charge_of(P_B, prompt=100, completion=50)
    assert rec["charge_micros"] == expected == 550
    entries = gate.entries("credit", rid)
    assert kinds(entries) == ["hold", "release", "hold", "settle"]
    hold1, release, hold2, settle = entries
    assert release["hold_id"] == hold1["hold_id"] != hold2["hold_id"] == settle["hold_id"]
    assert release["amount_micros"] == 0 and release["held_delta_micros"] < 0
    assert settle["amount_micros"] == -expected
    assert settle["id"] == rec["ledger_entry_id"]
    wallet = gate.wallet("credit")
    assert wallet["balance_micros"] == 10_000_000 - expected
    assert wallet["held_micros"] == 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_every_route_failing_is_502_naming_the_attempts_and_not_charged(gate, up_a, up_b, stream):
    up_a.push(status=503)
    up_b.push(status=503)
    key = gate.key()
    resp = post(gate, {"model": "gw-fb", "messages": MSG, "stream": stream}, key)
    assert resp.status_code == 502
    assert resp.headers["content-type"].startswith("application/json")
    error = gf.openai_error(resp)
    assert error["type"] == "upstream_error"
    message = error["message"]
    assert "2 attempts" in message
    assert "a (a-model)" in message and "b (b-model)" in message
    assert message.count("503") >= 2
    assert "Not charged" in message

    rid = resp.headers["x-localgate-receipt"]
    rec = gate.receipt(rid)
    assert (rec["status"], rec["http_status"], rec["charge_micros"]) == ("failed", 502, 0)
    assert rec["charge_policy"] == "failed upstream: not charged"
    assert [a["status"] for a in rec["attempts"]] == [503, 503]
    assert kinds(gate.entries("credit", rid)) == ["hold", "release", "hold", "release"]
    wallet = gate.wallet("credit")
    assert (wallet["balance_micros"], wallet["held_micros"]) == (10_000_000, 0)
    assert resp.headers["x-localgate-charge"] == "0.000000 USD"

    # The SDK sees the same as an APIStatusError (no retries: max_retries=0).
    up_a.push(status=500)
    up_b.push(status=502)
    with pytest.raises(openai.APIStatusError) as info:
        gate.openai(key).chat.completions.create(model="gw-fb", messages=MSG)
    assert info.value.status_code == 502
    assert gate.wallet("credit")["held_micros"] == 0
    assert gate.verify()["ok"] is True


def test_upstream_timeout_is_504_and_not_charged(gate, up_a):
    up_a.push(latency=3.0)
    start = time.monotonic()
    resp = post(gate, {"model": "gw-slow", "messages": MSG})
    elapsed = time.monotonic() - start
    assert resp.status_code == 504
    assert elapsed < 2.0  # the channel's 0.4 s timeout, not the upstream's 3 s
    error = gf.openai_error(resp)
    assert error["type"] == "upstream_error"
    assert "timed out" in error["message"]
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert (rec["status"], rec["http_status"], rec["charge_micros"]) == ("failed", 504, 0)
    wallet = gate.wallet("credit")
    assert (wallet["balance_micros"], wallet["held_micros"]) == (10_000_000, 0)


def test_upstream_400_is_relayed_not_retried_not_charged(gate, up_a, up_b):
    upstream_error = {
        "error": {
            "message": "Invalid value for 'temperature': 9",
            "type": "invalid_request_error",
            "param": "temperature",
            "code": "invalid_value",
        }
    }
    up_a.push(status=400, error_body=upstream_error)
    resp = post(gate, {"model": "gw-fb", "messages": MSG, "temperature": 9})
    assert resp.status_code == 400
    assert resp.json() == upstream_error
    assert up_b.requests == []  # a 4xx is the request's fault: no fallback
    rid = resp.headers["x-localgate-receipt"]
    rec = gate.receipt(rid)
    assert (rec["status"], rec["http_status"], rec["charge_micros"]) == ("failed", 400, 0)
    assert len(rec["attempts"]) == 1 and rec["fallback_used"] is False
    assert kinds(gate.entries("credit", rid)) == ["hold", "release"]
    assert gate.wallet("credit")["held_micros"] == 0
    assert gate.wallet("credit")["balance_micros"] == 10_000_000


def test_a_failing_channel_cools_down_and_goes_last(gate, up_a, up_b):
    key = gate.key()
    for _ in range(3):
        up_a.push(status=503)
        assert post(gate, {"model": "gw-fb", "messages": MSG}, key).status_code == 200
    assert len(up_a.requests) == 3
    resp = post(gate, {"model": "gw-fb", "messages": MSG}, key)
    assert resp.status_code == 200
    assert len(up_a.requests) == 3  # in cool-down: not tried first any more
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert [a["channel"] for a in rec["attempts"]] == ["b"]


def test_fallback_crosses_to_routed_when_the_key_allows_both(gate, up_a, up_b):
    gate.fund("routed", "10")
    up_a.push(status=503)
    up_b.push(prompt_tokens=10, completion_tokens=20)
    resp = post(gate, {"model": "gw-cross", "messages": MSG}, gate.key(settlement="any"))
    assert resp.status_code == 200
    rid = resp.headers["x-localgate-receipt"]
    rec = gate.receipt(rid)
    assert (rec["route_type"], rec["wallet"], rec["currency"]) == ("routed", "routed", "CNY")
    expected, _ = gf.charge_of(P_R, prompt=10, completion=20)
    assert rec["charge_micros"] == expected == 290
    assert resp.headers["x-localgate-wallet"] == "routed"
    # One wallet burnt: the official hold was released, the routed one settled.
    assert kinds(gate.entries("credit", rid)) == ["hold", "release"]
    assert kinds(gate.entries("routed", rid)) == ["hold", "settle"]
    credit, routed = gate.wallet("credit"), gate.wallet("routed")
    assert (credit["balance_micros"], credit["held_micros"]) == (10_000_000, 0)
    assert (routed["balance_micros"], routed["held_micros"]) == (10_000_000 - expected, 0)


def test_fallback_never_crosses_settlement_for_an_official_key(gate, up_a, up_b):
    gate.fund("routed", "10")
    up_a.push(status=503)
    resp = post(gate, {"model": "gw-cross", "messages": MSG}, gate.key(settlement="official"))
    assert resp.status_code == 502
    assert up_b.requests == []
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert [a["channel"] for a in rec["attempts"]] == ["a"]
    assert kinds(gate.entries("routed")) == ["adjustment"]  # never held
    assert gate.wallet("credit")["held_micros"] == 0


def test_fallback_to_a_route_whose_wallet_cannot_pay_reports_the_upstream_failure(gate, up_a, up_b):
    up_a.push(status=503)  # the routed wallet is empty
    resp = post(gate, {"model": "gw-cross", "messages": MSG})
    assert resp.status_code == 502
    assert "503" in gf.openai_error(resp)["message"]
    assert up_b.requests == []
    rid = resp.headers["x-localgate-receipt"]
    rec = gate.receipt(rid)
    assert (rec["status"], rec["charge_micros"]) == ("failed", 0)
    assert len(rec["attempts"]) == 2
    assert "routed" in rec["attempts"][1]["error"]  # the refusal is on the receipt
    assert kinds(gate.entries("credit", rid)) == ["hold", "release"]
    assert gate.wallet("credit")["held_micros"] == 0
    assert gate.wallet("routed")["held_micros"] == 0


def test_an_empty_wallet_falls_through_to_a_route_another_wallet_pays(gate, up_a, up_b):
    gate.fund("credit", "-10")
    gate.fund("routed", "10")
    resp = post(gate, {"model": "gw-cross", "messages": MSG})
    assert resp.status_code == 200
    assert up_a.requests == [] and len(up_b.requests) == 1
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert rec["wallet"] == "routed"
    assert rec["attempts"][0]["status"] is None and "credit" in rec["attempts"][0]["error"]
    assert gate.wallet("credit")["balance_micros"] == 0


def test_fallback_to_a_frozen_wallet_releases_the_first_hold(gate, up_a, up_b):
    """A wallet frozen by a refund shortfall refuses new holds; when the fallback
    route lands on it, the first route's hold must still be released."""
    gate.fund("routed", "10")
    gate.store.write_sync(
        lambda c: c.execute(
            "UPDATE wallets SET frozen = 1, frozen_reason = 'test' WHERE id = 'routed'"
        )
    )
    up_a.push(status=503)
    resp = post(gate, {"model": "gw-cross", "messages": MSG}, gate.key(settlement="any"))
    assert resp.status_code == 502
    assert up_b.requests == []
    rid = resp.headers["x-localgate-receipt"]
    rec = gate.receipt(rid)
    assert (rec["status"], rec["charge_micros"]) == ("failed", 0)
    assert kinds(gate.entries("credit", rid)) == ["hold", "release"]
    assert gate.wallet("credit")["held_micros"] == 0
    assert "frozen" in rec["attempts"][-1]["error"]


# --- 4. the upstream cuts a stream ------------------------------------------------------


def test_mid_stream_cut_delivers_chunks_then_an_error_and_charges_the_delivered(gate, up_a):
    up_a.push(chunks=6, cut_after=3)  # role chunk, "tok0 ", "tok1 ", then FIN
    body = {**BODY, "stream": True}
    resp = post(gate, body)
    assert resp.status_code == 200
    events = gf.data_events(resp.content)
    assert "[DONE]" not in events
    chunks, error = events[:-1], events[-1]
    assert len(chunks) == 3
    assert [c["choices"][0]["delta"].get("content") for c in chunks] == ["", "tok0 ", "tok1 "]
    assert error["error"]["code"] == "stream_cut"
    comment = gf.receipt_comment(resp.content)
    rid = resp.headers["x-localgate-receipt"]
    assert comment is not None and comment["receipt"] == rid

    rec = gate.wait_receipt(rid)
    assert (rec["status"], rec["http_status"]) == ("failed", 502)
    assert "delivered tokens" in rec["charge_policy"]
    prompt, completion = estimate(body, "tok0 tok1 ")
    assert (rec["usage"]["input"], rec["usage"]["output"]) == (prompt, completion)
    expected, _ = gf.charge_of(P_A, prompt=prompt, completion=completion)
    assert rec["charge_micros"] == expected > 0
    assert comment["charge"] == f"{expected / 1_000_000:.6f}_USD"
    (settle,) = [e for e in gate.entries("credit", rid) if e["kind"] == "settle"]
    assert settle["amount_micros"] == -expected
    wallet = gate.wallet("credit")
    assert (wallet["balance_micros"], wallet["held_micros"]) == (10_000_000 - expected, 0)


def test_mid_stream_cut_receipt_says_estimated(gate, up_a):
    up_a.push(chunks=6, cut_after=3)
    resp = post(gate, {**BODY, "stream": True})
    rec = gate.wait_receipt(resp.headers["x-localgate-receipt"])
    assert rec["charge_micros"] > 0
    assert rec["usage"]["source"] == "estimated"


def test_mid_stream_cut_surfaces_as_an_sdk_error_after_the_chunks(gate, up_a):
    up_a.push(chunks=6, cut_after=4)
    client = gate.openai(gate.key())
    seen = []
    with pytest.raises(openai.APIError, match="stream was cut"):
        for chunk in client.chat.completions.create(model="gw-chat", messages=MSG, stream=True):
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["", "tok0 ", "tok1 ", "tok2 "]
    assert gate.wallet("credit")["held_micros"] == 0


# --- 5. the client hangs up mid-stream ----------------------------------------------------


def test_client_disconnect_cancels_upstream_and_charges_the_delivered(gate, up_a):
    up_a.push(chunks=20, chunk_delay=0.4)
    body = {**BODY, "stream": True}
    http = gate.http(gate.key())
    received = []
    with http.stream("POST", "/v1/chat/completions", json=body) as resp:
        rid = resp.headers["x-localgate-receipt"]
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                received.append(json.loads(line[6:]))
                if len(received) == 2:
                    break
        closed_at = time.monotonic()
    http.close()  # the connection is gone now
    assert [c["choices"][0]["delta"].get("content") for c in received] == ["", "tok0 "]

    seen = up_a.last
    assert up_a.wait_until(lambda: seen.disconnected_at is not None, timeout=3.0)
    assert seen.disconnected_at - closed_at < 1.0  # the upstream call was cancelled promptly
    assert seen.events_sent < 6  # of 24

    rec = gate.wait_receipt(rid, timeout=5.0)
    assert (rec["status"], rec["http_status"]) == ("client_canceled", 499)
    assert rec["charge_policy"] == "client canceled: charged for delivered tokens, estimated"
    assert rec["usage"]["source"] == "estimated"
    prompt, completion = estimate(body, "tok0 ")
    assert (rec["usage"]["input"], rec["usage"]["output"]) == (prompt, completion)
    expected, _ = gf.charge_of(P_A, prompt=prompt, completion=completion)
    assert rec["charge_micros"] == expected > 0
    (settle,) = [e for e in gate.entries("credit", rid) if e["kind"] == "settle"]
    assert settle["amount_micros"] == -expected
    wallet = gate.wallet("credit")
    assert (wallet["balance_micros"], wallet["held_micros"]) == (10_000_000 - expected, 0)
    assert gate.verify()["ok"] is True


def test_disconnect_while_the_final_settle_waits_for_the_writer(gate, up_a):
    # Events 0.2 s apart: role, tok0, tok1, finish, usage (stripped), [DONE].
    up_a.push(chunks=2, chunk_delay=0.2)
    http = gate.http(gate.key())
    writer_free = threading.Event()
    try:
        with http.stream("POST", "/v1/chat/completions", json={**BODY, "stream": True}) as resp:
            rid = resp.headers["x-localgate-receipt"]
            lines = resp.iter_lines()  # kept alive: a dropped generator closes the socket
            for line in lines:
                if '"finish_reason":"stop"' in line:
                    break
            # The writer is busy (a slow batch), so the settle after [DONE] queues...
            gate.store.writer.submit(lambda conn: writer_free.wait(10))
            time.sleep(0.8)  # ...the relay has read [DONE] and waits for its settle
        http.close()  # the client leaves before localgate's [DONE]
        time.sleep(0.3)
    finally:
        writer_free.set()
    rec = gate.wait_receipt(rid, timeout=3.0)
    assert rec["status"] == "succeeded", rec["status"]
    assert gate.wallet("credit")["held_micros"] == 0


# --- 6. usage missing -----------------------------------------------------------------------

FIVE = "tok0 tok1 tok2 tok3 tok4 "


def test_missing_usage_non_stream_is_estimated(gate, up_a):
    up_a.push(usage=False, chunks=5)
    resp = post(gate, BODY)
    assert resp.status_code == 200
    assert "usage" not in resp.json()
    rec = gate.receipt(resp.headers["x-localgate-receipt"])
    assert rec["status"] == "succeeded"
    assert rec["usage"]["source"] == "estimated"
    assert "no usage" in rec["charge_policy"]
    prompt, completion = estimate(BODY, FIVE)
    assert (rec["usage"]["input"], rec["usage"]["output"]) == (prompt, completion)
    expected, _ = gf.charge_of(P_A, prompt=prompt, completion=completion)
    assert rec["charge_micros"] == expected
    assert gate.wallet("credit")["balance_micros"] == 10_000_000 - expected


@pytest.mark.parametrize("client_usage", [False, True])
def test_missing_usage_stream_is_estimated(gate, up_a, client_usage):
    up_a.push(usage=False, chunks=5)
    body: dict[str, Any] = {**BODY, "stream": True}
    if client_usage:
        body["stream_options"] = {"include_usage": True}
    resp = post(gate, body)
    assert resp.status_code == 200
    events = gf.data_events(resp.content)
    assert events[-1] == "[DONE]"
    assert all(e["choices"] for e in events[:-1])  # nothing to pass on: no usage chunk
    rec = gate.wait_receipt(resp.headers["x-localgate-receipt"])
    assert rec["status"] == "succeeded"
    assert rec["usage"]["source"] == "estimated"
    prompt, completion = estimate(body, FIVE)
    assert (rec["usage"]["input"], rec["usage"]["output"]) == (prompt, completion)
    expected, _ = gf.charge_of(P_A, prompt=prompt, completion=completion)
    assert rec["charge_micros"] == expected
    wallet = gate.wallet("credit")
    assert (wallet["balance_micros"], wallet["held_micros"]) == (10_000_000 - expected, 0)


# --- an upstream answering nonsense ----------------------------------------------------------


class _Canned(BaseHTTPRequestHandler):
    """Answers every POST with 200 and ``server.canned`` (bytes) as JSON."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = self.server.canned  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def canned():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    server.canned = b"{}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"[1, 2, 3]", id="array"),
        pytest.param(b"not json at all", id="text"),
        pytest.param(
            b'{"id": "x", "choices": "nope", "usage": {"prompt_tokens": "many"}}', id="odd-usage"
        ),
        pytest.param(
            b'{"id": "x", "choices": [{"index": 0, "message": "just a string"}]}',
            id="message-string",
        ),
        pytest.param(
            b'{"id": "x", "choices": [{"message": {"tool_calls": [{"function": "f"}]}}]}',
            id="function-string",
        ),
    ],
)
def test_upstream_nonsense_ends_with_a_closed_receipt_no_hold_and_no_500(tmp_path, canned, answer):
    canned.canned = answer
    url = f"http://127.0.0.1:{canned.server_address[1]}/v1"
    cfg = {
        "channels": [gf.channel("odd", url)],
        "models": [gf.model("gw-odd", gf.route("odd", "odd", P_A))],
    }
    with gf.run_gateway(tmp_path, **cfg) as gate:
        gate.fund("credit", "1")
        resp = post(gate, {"model": "gw-odd", "messages": MSG})
        (rec,) = gate.receipts()  # exactly one receipt, finished
        assert rec["status"] in ("succeeded", "failed")
        assert gate.wallet("credit")["held_micros"] == 0
        assert gate.verify()["ok"] is True
        # Last: what the client sees. An upstream's nonsense is the upstream's fault.
        assert resp.status_code in (200, 502), resp.text
        assert resp.headers["x-localgate-receipt"] == rec["id"]
        if resp.status_code == 502:
            gf.openai_error(resp)
