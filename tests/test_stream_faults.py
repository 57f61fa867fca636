"""Faults that used to be charged wrongly or not fail over (issue 13).

- A stream whose upstream answers 200 and then breaks before any event falls
  over to the next route, like a whole answer would, and is never charged:
  localgate waits for the first upstream event before it answers.
- An error event in the middle of a stream, even followed by ``[DONE]``, makes
  the receipt ``failed`` (charged for what was delivered), not ``succeeded``.
- An upstream 429 with no backup reaches the caller as a 429 with the
  upstream's Retry-After, in the caller's dialect, never as a 502.
- A free route (all prices zero) answers, with a receipt and no ledger entry.
"""

from __future__ import annotations

from typing import Any

import gateway_fixtures as gf
import pytest
from upstream import FakeUpstream

pytestmark = pytest.mark.slow

up_a = FakeUpstream.fixture("up_a")
up_b = FakeUpstream.fixture("up_b")

P_A = gf.price(input="1", output="2")
P_B = gf.price(input="3", output="5")
FREE = gf.price(input="0", output="0")
MSG = [{"role": "user", "content": "Tell me a story"}]


@pytest.fixture
def gate(tmp_path, up_a, up_b):
    config = {
        "channels": [
            gf.channel("a", up_a.base_url),
            gf.channel("b", up_b.base_url),
            gf.channel("ant", up_a.base_url, kind="anthropic"),
        ],
        "models": [
            gf.model(
                "gw-fb",
                gf.route("a", "a-model", P_A, priority=1),
                gf.route("b", "b-model", P_B, priority=2),
            ),
            gf.model("gw-one", gf.route("a", "one-model", P_A)),
            gf.model("gw-claude", gf.route("ant", "claude-model", P_A)),
            gf.model("gw-free", gf.route("a", "free-model", FREE)),
        ],
    }
    with gf.run_gateway(tmp_path, **config) as g:
        g.fund("credit", "10")
        yield g


def post(gate: gf.Gate, path: str, body: dict[str, Any]):
    return gate.http(gate.key()).post(path, json=body)


def test_a_stream_broken_before_its_first_event_falls_over_uncharged(gate, up_a, up_b):
    up_a.push(cut_after=0)  # 200 and headers, then the connection ends: no event at all
    resp = post(gate, "/v1/chat/completions", {"model": "gw-fb", "messages": MSG, "stream": True})
    assert resp.status_code == 200 and b"[DONE]" in resp.content
    receipt = gate.wait_receipt(resp.headers["x-localgate-receipt"])
    assert receipt["status"] == "succeeded" and receipt["channel"] == "b"
    assert [a["channel"] for a in receipt["attempts"]] == ["a", "b"]
    assert len(up_b.requests) == 1


def test_a_stream_broken_before_its_first_event_with_no_backup_is_not_charged(gate, up_a):
    up_a.push(cut_after=0)
    resp = post(gate, "/v1/chat/completions", {"model": "gw-one", "messages": MSG, "stream": True})
    assert resp.status_code == 502
    assert resp.json()["error"]["type"] == "upstream_error"  # a whole error, not a broken stream
    receipt = gate.receipt(resp.headers["x-localgate-receipt"])
    assert receipt["status"] == "failed" and receipt["charge_micros"] == 0
    assert gate.wallet("credit")["held_micros"] == 0


def test_an_error_event_mid_stream_then_done_is_a_failure(gate, up_a):
    up_a.push(error_body="the pool ran dry")
    resp = post(gate, "/v1/chat/completions", {"model": "gw-one", "messages": MSG, "stream": True})
    assert resp.status_code == 200
    assert b"stream_cut" in resp.content and b"[DONE]" not in resp.content
    receipt = gate.wait_receipt(resp.headers["x-localgate-receipt"])
    assert receipt["status"] == "failed"
    assert "the pool ran dry" in receipt["error"]
    assert receipt["charge_micros"] > 0  # the first delta was delivered


def test_an_error_event_before_anything_was_delivered_falls_over(gate, up_a, up_b):
    up_a.push(error_body={"error": {"message": "overloaded", "type": "server_error"}}, chunks=0)
    resp = post(gate, "/v1/chat/completions", {"model": "gw-fb", "messages": MSG, "stream": True})
    assert resp.status_code == 200 and b"[DONE]" in resp.content
    receipt = gate.wait_receipt(resp.headers["x-localgate-receipt"])
    assert receipt["status"] == "succeeded" and receipt["channel"] == "b"
    assert "overloaded" in receipt["attempts"][0]["error"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_an_upstream_429_with_no_backup_is_relayed_as_429_with_retry_after(gate, up_a, stream):
    up_a.push(status=429, headers={"retry-after": "7"})
    resp = post(
        gate, "/v1/chat/completions", {"model": "gw-one", "messages": MSG, "stream": stream}
    )
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
    assert "error" in resp.json()
    receipt = gate.receipt(resp.headers["x-localgate-receipt"])
    assert receipt["status"] == "failed" and receipt["charge_micros"] == 0


def test_a_429_on_an_anthropic_client_is_in_anthropics_shape(gate, up_a):
    up_a.push(status=429, headers={"retry-after": "3"})
    resp = post(
        gate,
        "/v1/messages",
        {"model": "gw-one", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status_code == 429 and resp.headers["retry-after"] == "3"
    error = resp.json()
    assert error["type"] == "error" and error["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_free_route_answers_with_a_receipt_and_no_ledger_entry(gate, stream):
    entries = len(gate.entries("credit"))
    resp = post(
        gate, "/v1/chat/completions", {"model": "gw-free", "messages": MSG, "stream": stream}
    )
    assert resp.status_code == 200
    receipt = gate.wait_receipt(resp.headers["x-localgate-receipt"])
    assert receipt["status"] == "succeeded" and receipt["charge_micros"] == 0
    assert receipt["channel"] == "a" and receipt["hold_micros"] == 0
    assert receipt["balance_before_micros"] == receipt["balance_after_micros"] == 10_000_000
    assert len(gate.entries("credit")) == entries
    assert gate.verify()["ok"]
