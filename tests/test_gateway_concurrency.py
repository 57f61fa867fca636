"""Many requests at once against a wallet that can pay for only some of them.

300 concurrent requests (httpx.AsyncClient over real HTTP) against a wallet that
affords about 50 full-size ones: no negative balance at any ledger entry, the
ledger verifies, every request has exactly one receipt (its header id is
distinct and stored), refusals are 402 insufficient_balance naming the wallet,
and the charges on the receipts add up to exactly what left the wallet.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import gateway_fixtures as gf
import httpx
import pytest
from upstream import FakeUpstream

from localgate import tokens

upstream = FakeUpstream.fixture()
pytestmark = pytest.mark.slow  # hundreds of requests over real connections

PRICE = gf.price(input="1", output="1")  # one micro-unit per token: a hold is easy to know
MSG = [{"role": "user", "content": "Count to a thousand"}]
FUNDS = 50_000  # micros
MAX_TOKENS = 1000


@pytest.fixture
def gateway_config(upstream) -> gf.GatewaySetup:
    return gf.GatewaySetup(
        channels=[gf.channel("up", upstream.base_url)],
        models=[gf.model("gw-c", gf.route("up", "c", PRICE), max_output_tokens=4096)],
        funds={"credit": "0.050000"},
    )


async def fire(gate: gf.Gate, key: str, bodies: list[dict[str, Any]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(
        base_url=gate.base_url,
        headers={"authorization": f"Bearer {key}"},
        limits=limits,
        timeout=60.0,
    ) as client:
        return list(
            await asyncio.gather(*(client.post("/v1/chat/completions", json=b) for b in bodies))
        )


def check_books(gate: gf.Gate, responses: list[httpx.Response], key_id: str) -> dict[str, Any]:
    """What every concurrency test must find, whatever the mix of outcomes."""
    statuses = collections.Counter(r.status_code for r in responses)
    assert set(statuses) <= {200, 402}, statuses
    ids = [r.headers["x-localgate-receipt"] for r in responses]
    assert len(set(ids)) == len(responses)  # one distinct receipt per request

    for r in responses:
        if r.status_code == 402:
            error = gf.openai_error(r)
            assert error["code"] == "insufficient_balance"
            assert error["wallet"] == "credit"
            assert "'credit'" in error["message"]

    receipts = gate.receipts(key=key_id)
    assert len(receipts) == len(responses)
    assert len(gate.receipts()) == len(responses)  # nothing else wrote any
    by_id = {rec["id"]: rec for rec in receipts}
    assert set(by_id) == set(ids)
    for r in responses:
        rec = by_id[r.headers["x-localgate-receipt"]]
        want = "succeeded" if r.status_code == 200 else "rejected"
        assert rec["status"] == want, rec
        if want == "rejected":
            assert rec["charge_micros"] == 0 and rec["http_status"] == 402
    assert all(rec["status"] != "pending" for rec in receipts)

    wallet = gate.wallet("credit")
    assert wallet["balance_micros"] >= 0
    assert wallet["held_micros"] == 0
    charged = sum(rec["charge_micros"] for rec in receipts)
    assert charged == FUNDS - wallet["balance_micros"]  # sum of charges == wallet decrease

    entries = gate.entries("credit")
    for e in entries:  # never below zero, at any point of the history
        assert e["balance_after_micros"] >= 0, e
        assert e["balance_after_micros"] - e["held_after_micros"] >= 0, e
    settles = [e for e in entries if e["kind"] == "settle"]
    assert len(settles) == statuses[200]
    assert {e["receipt_id"] for e in settles} == {
        rec["id"] for rec in receipts if rec["status"] == "succeeded"
    }
    assert sum(-e["amount_micros"] for e in settles) == charged
    assert (
        len({rec["ledger_entry_id"] for rec in receipts if rec["ledger_entry_id"]})
        == (statuses[200])
    )
    assert gate.verify() == {"ok": True, "entries": len(entries), "first_error": None}
    return {"statuses": statuses, "receipts": receipts, "charged": charged}


async def test_300_concurrent_requests_against_a_wallet_for_about_50(live_gate, upstream):
    body = {"model": "gw-c", "messages": MSG, "max_tokens": MAX_TOKENS}
    hold = tokens.count_chat_input_tokens(body) + MAX_TOKENS
    assert 45 <= FUNDS // hold <= 50  # the wallet affords about 50 full-size holds
    # Each call costs a bit more than its hold (the upstream counts more prompt
    # tokens than localgate's estimate): settles reach into the free balance.
    upstream.set(prompt_tokens=50, completion_tokens=MAX_TOKENS, latency=0.02)
    key = live_gate.create_key("load")

    responses = await fire(live_gate, key["key"], [body] * 300)

    result = check_books(live_gate, responses, key["id"])
    ok = result["statuses"][200]
    assert 40 <= ok <= FUNDS // hold
    assert live_gate.wallet("credit")["available_micros"] < hold  # the money was used up
    assert result["statuses"][402] == 300 - ok
    assert len(upstream.requests) == ok  # no request reached the upstream without a hold
    for rec in result["receipts"]:
        if rec["status"] == "succeeded":
            full = MAX_TOKENS + 50
            capped = "capped" in rec["charge_policy"]
            assert rec["charge_micros"] == full or (capped and rec["charge_micros"] < full)


async def test_concurrent_streams_and_failures_keep_the_books(live_gate, upstream):
    """Streams, upstream failures and refusals interleaved: the same invariants."""
    upstream.set(prompt_tokens=20, completion_tokens=900, chunks=4, chunk_delay=0.01)
    for _ in range(15):
        upstream.push(status=503)
    stream = {"model": "gw-c", "messages": MSG, "max_tokens": MAX_TOKENS, "stream": True}
    plain = {"model": "gw-c", "messages": MSG, "max_tokens": MAX_TOKENS}
    key = live_gate.create_key("mixed")
    bodies = [stream if i % 2 else plain for i in range(200)]

    responses = await fire(live_gate, key["key"], bodies)

    # Upstream 503s (single route) are 502 and must not be charged.
    failed = [r for r in responses if r.status_code == 502]
    assert len(failed) <= 15
    rest = [r for r in responses if r.status_code != 502]
    for r in failed:
        rec = live_gate.receipt(r.headers["x-localgate-receipt"])
        assert (rec["status"], rec["charge_micros"]) == ("failed", 0)
    statuses = collections.Counter(r.status_code for r in rest)
    assert set(statuses) <= {200, 402}, statuses
    for r in rest:
        if r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream"):
            assert gf.data_events(r.content)[-1] == "[DONE]"
    receipts = live_gate.receipts(key=key["id"])
    assert len(receipts) == 200
    assert {rec["id"] for rec in receipts} == {r.headers["x-localgate-receipt"] for r in responses}
    assert all(rec["status"] != "pending" for rec in receipts)
    wallet = live_gate.wallet("credit")
    assert wallet["balance_micros"] >= 0 and wallet["held_micros"] == 0
    charged = sum(rec["charge_micros"] for rec in receipts)
    assert charged == FUNDS - wallet["balance_micros"]
    assert all(
        e["balance_after_micros"] - e["held_after_micros"] >= 0 for e in live_gate.entries("credit")
    )
    assert live_gate.verify()["ok"] is True
