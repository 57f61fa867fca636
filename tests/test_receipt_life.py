"""A receipt describes one route, and "not enough money" reads the same everywhere.

- After a refused fallback (the first route fails upstream, the backup's
  wallet is empty) the receipt still names the first route: its channel,
  settlement, price, wallet and currency, and the error it gave.
- A 402 carries the same fields on ``/v1`` (OpenAI and Anthropic dialects) and
  on ``/api``: the wallet, what was needed and available, and the top-up link
  where there is one.
"""

from __future__ import annotations

from decimal import Decimal

import gateway_fixtures as gf
import pytest
from upstream import FakeUpstream

from localgate.core.pricing import Price, Usage
from localgate.core.receipts import Receipt
from localgate.core.routing import Attempt
from localgate.errors import InsufficientFunds, error_payload

up_a = FakeUpstream.fixture("up_a")

P_A = gf.price(input="1", output="2")
P_R = gf.price("CNY", input="7", output="11")
MSG = [{"role": "user", "content": "hi"}]
FIELDS_402 = {"wallet", "currency", "needed", "needed_micros", "available", "available_micros"}


@pytest.fixture
def gate(tmp_path, up_a):
    config = {
        "channels": [
            gf.channel("a", up_a.base_url),
            gf.channel("r", up_a.base_url, settlement="routed"),
        ],
        "models": [
            gf.model(
                "gw-cross",
                gf.route("a", "cross-official", P_A, priority=1),
                gf.route("r", "cross-routed", P_R, priority=2),
            ),
            gf.model("gw-routed", gf.route("r", "routed-only", P_R)),
        ],
    }
    with gf.run_gateway(tmp_path, **config) as g:
        yield g


def test_a_refused_fallback_leaves_the_receipt_on_the_first_route(gate, up_a):
    gate.fund("credit", "10")  # the routed wallet stays empty
    up_a.push(status=503)
    resp = gate.http(gate.key(settlement="any")).post(
        "/v1/chat/completions", json={"model": "gw-cross", "messages": MSG}
    )
    assert resp.status_code == 502
    receipt = gate.receipt(resp.headers["x-localgate-receipt"])
    assert receipt["status"] == "failed" and receipt["charge_micros"] == 0
    assert (receipt["channel"], receipt["route_type"], receipt["upstream_model"]) == (
        "a",
        "official",
        "cross-official",
    )
    assert (receipt["wallet"], receipt["currency"]) == ("credit", "USD")
    assert receipt["price"]["input"] == "1" and receipt["price"]["output"] == "2"
    assert "503" in receipt["error"]
    assert [a["channel"] for a in receipt["attempts"]] == ["a", "r"]
    assert gate.wallet("credit")["held_micros"] == 0


def test_the_402_body_is_the_same_on_v1_in_both_dialects_and_on_the_api(gate):
    key = gate.key(settlement="any")
    chat = gate.http(key).post("/v1/chat/completions", json={"model": "gw-routed", "messages": MSG})
    assert chat.status_code == 402
    error = chat.json()["error"]
    assert error["code"] == "insufficient_balance" and error["type"] == "insufficient_quota"
    assert error.keys() >= FIELDS_402
    assert (error["wallet"], error["currency"], error["available_micros"]) == ("routed", "CNY", 0)
    assert error["topup_url"].endswith("/billing?wallet=routed")
    assert error["topup_url"] in error["message"]

    api = gate.api(
        "POST", "/api/adjustments", json={"wallet": "credit", "amount": "-1", "reason": "test"}
    )
    assert api.status_code == 402
    api_error = api.json()["error"]
    assert api_error["code"] == "insufficient_balance"
    assert api_error.keys() >= FIELDS_402
    assert (api_error["needed"], api_error["available"]) == ("1.000000", "0.000000")


def test_every_dialect_gets_the_same_details_for_not_enough_money():
    exc = InsufficientFunds.for_wallet(
        "credit", "USD", needed=1_500, available=20, topup_url="http://x/billing"
    )
    openai_error = error_payload(exc, "openai")["error"]
    anthropic = error_payload(exc, "anthropic")
    admin_error = error_payload(exc, "admin")["error"]
    assert anthropic["type"] == "error" and anthropic["error"]["type"] == "billing_error"
    for body in (openai_error, anthropic["error"], admin_error):
        assert body["message"] == exc.message
        assert (body["needed_micros"], body["available_micros"]) == (1_500, 20)
        assert body["topup_url"] == "http://x/billing"


# -- the transitions themselves ------------------------------------------------------


class FakeRoute:
    def __init__(self, rid: str, channel: str, settlement: str, price: Price) -> None:
        self.id, self.model_id, self.channel = rid, "m", channel
        self.upstream_model, self.settlement, self.priority = f"{channel}-model", settlement, 1
        self.price, self.enabled = price, True


def new_receipt() -> Receipt:
    return Receipt(id="rc_x", request_id="r", created_at="now", endpoint="/v1/chat/completions")


def test_route_fields_are_set_only_with_a_granted_hold():
    receipt = new_receipt()
    official = FakeRoute("a", "a", "official", Price("USD", Decimal(1), Decimal(2)))
    receipt.refused("routed", "CNY")  # nothing held yet: the refused wallet is named
    assert (receipt.wallet_id, receipt.currency, receipt.channel) == ("routed", "CNY", None)
    receipt.hold_granted(
        official,
        "pv_1",
        upstream_kind="openai",
        hold_id="hd_1",
        amount=50,
        wallet_id="credit",
        currency="USD",
        balance=9,
    )
    receipt.refused("routed", "CNY")  # a later refusal leaves the held route in place
    assert (receipt.channel, receipt.route_type, receipt.wallet_id, receipt.currency) == (
        "a",
        "official",
        "credit",
        "USD",
    )
    receipt.attempted(Attempt("a", "a", "a-model", "official", status=503))
    charge = receipt.settle(Usage(input=1000, output=1000), "succeeded", "p", 200, 12)
    assert charge == 3_000 and receipt.ttft_ms == 12
    receipt.booked(entry_id=7, charged=charge, balance_after=100)
    assert (receipt.balance_before_micros, receipt.ledger_entry_id) == (3_100, 7)
    assert receipt.headers()["x-localgate-charge"] == "0.003000 USD"


def test_settle_without_a_held_route_is_refused():
    with pytest.raises(ValueError):
        new_receipt().settle(Usage(), "succeeded", "p", 200, 1)
