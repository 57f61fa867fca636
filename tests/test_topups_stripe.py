"""Top-ups through Stripe Checkout: the real ``stripe`` SDK against a Stripe-shaped
server on 127.0.0.1 (tests/stripe_server.py), webhooks signed with Stripe's scheme."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from stripe_server import API_KEY, WEBHOOK_SECRET, StripeServer
from topup_helpers import (
    USD,
    app_client,
    auth,
    balance,
    ledger,
    login,
    make_settings,
    no_loop,
    payments,
    text,
    verify_ok,
)


@pytest.fixture
def stripe_api():
    with StripeServer() as server:
        yield server


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("STRIPE_SECRET_KEY", API_KEY)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", WEBHOOK_SECRET)


@pytest.fixture
def settings_overrides(monkeypatch, env, stripe_api):
    """Stripe against the local Stripe-shaped server, the sync loop off (a test syncs)."""
    no_loop(monkeypatch)
    return payments("stripe", payments__stripe__api_base=stripe_api.base_url)


async def create(client, settings, amount="20", method="card", wallet="credit"):
    resp = await client.post(
        "/api/topups",
        json={"wallet": wallet, "amount": amount, "method": method},
        headers=auth(settings),
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


async def deliver(client, stripe_api, event, **sign):
    body, header = stripe_api.signed(event, **sign)
    return await client.post(
        "/webhooks/stripe",
        content=body,
        headers={"stripe-signature": header, "content-type": "application/json"},
    )


async def get(client, settings, topup_id):
    return (await client.get(f"/api/topups/{topup_id}", headers=auth(settings))).json()


# -- opening the checkout -----------------------------------------------------------------


async def test_checkout_session_is_opened_as_documented(client, settings, stripe_api):
    t = await create(client, settings, method="wechat_pay")
    method, path, params, headers = stripe_api.requests[0]
    assert (method, path) == ("POST", "/v1/checkout/sessions")
    assert headers["idempotency-key"] == f"localgate-topup-{t['id']}"
    assert params["mode"] == "payment"
    assert params["client_reference_id"] == t["id"]
    assert params["metadata"] == {"topup_id": t["id"], "wallet": "credit", "source": "localgate"}
    assert params["payment_intent_data"]["metadata"]["topup_id"] == t["id"]
    assert params["payment_method_types"] == ["wechat_pay", "card", "alipay"]
    assert params["payment_method_options"] == {"wechat_pay": {"client": "web"}}
    assert params["line_items"][0]["price_data"]["unit_amount"] == "2000"
    assert params["line_items"][0]["price_data"]["currency"] == "usd"
    back = f"http://127.0.0.1:4311/billing/topups/{t['id']}/return"
    assert params["success_url"] == back + "?session_id={CHECKOUT_SESSION_ID}"
    assert params["cancel_url"] == back + "?canceled=1"
    assert abs(int(params["expires_at"]) - (time.time() + 3600)) < 60
    session = stripe_api.sessions[t["reference"]]
    assert t["status"] == "pending" and t["checkout_url"] == session["url"]
    assert t["reference"].startswith("cs_test_")


async def test_opening_twice_is_the_same_session(client, settings, stripe_api):
    t = await create(client, settings)
    provider = client.app.state.topups.provider
    from localgate.payments.base import CheckoutUrls
    from localgate.store import topups as topup_store

    record = topup_store.record(topup_store.load(client.app.state.store.read(), t["id"]))
    again = await provider.open_checkout(record, CheckoutUrls("http://x/return", "http://x/c"))
    assert again.reference == t["reference"] and len(stripe_api.sessions) == 1


async def test_stripe_unreachable_is_a_clear_error_and_a_failed_topup(monkeypatch, env):
    no_loop(monkeypatch)
    settings = make_settings("stripe", payments__stripe__api_base="http://127.0.0.1:9")
    async with app_client(settings) as client:
        resp = await client.post(
            "/api/topups", json={"wallet": "credit", "amount": "20"}, headers=auth(settings)
        )
        assert resp.status_code == 502
        assert "cannot reach Stripe" in resp.json()["error"]["message"]
        [t] = (await client.get("/api/topups", headers=auth(settings))).json()["topups"]
        assert t["status"] == "failed" and "cannot reach Stripe" in t["reason"]


async def test_missing_secret_key_is_shown_not_crashed(monkeypatch):
    no_loop(monkeypatch)
    settings = make_settings("stripe")
    async with app_client(settings) as client:
        await login(client, settings)
        page = text((await client.get("/billing")).text)
        assert "Payments are not set up" in page and "STRIPE_SECRET_KEY is not set" in page
        resp = await client.post(
            "/api/topups", json={"wallet": "credit", "amount": "20"}, headers=auth(settings)
        )
        assert resp.status_code == 503
        assert resp.json()["error"]["code"] == "payments_not_configured"


# -- confirmation paths ---------------------------------------------------------------------


async def test_webhook_completes_and_credits(client, settings, stripe_api):
    t = await create(client, settings)
    resp = await deliver(client, stripe_api, stripe_api.pay(t["reference"]))
    assert resp.status_code == 200
    assert resp.json()["outcome"] == "applied" and resp.json()["status"] == "completed"
    done = await get(client, settings, t["id"])
    assert done["status"] == "completed" and done["events"][-1]["source"] == "webhook"
    [entry] = ledger(settings, kind="topup")
    assert entry["idempotency_key"] == f"topup:stripe:{t['reference']}"
    assert balance(settings) == 20 * USD


async def test_five_duplicate_webhooks_the_return_page_and_the_sync_credit_once(
    client, settings, stripe_api
):
    t = await create(client, settings)
    event = stripe_api.pay(t["reference"])
    topups = client.app.state.topups
    results = await asyncio.gather(
        *[deliver(client, stripe_api, event) for _ in range(5)],
        client.get(
            f"/billing/topups/{t['id']}/return?session_id={t['reference']}", headers=auth(settings)
        ),
        topups.sync_due(),
        topups.refresh(t["id"], source="sync"),
    )
    outcomes = sorted(r.json()["outcome"] for r in results[:5])
    assert outcomes.count("duplicate") >= 4
    assert set(outcomes) <= {"applied", "duplicate", "unchanged"}
    assert len(ledger(settings, kind="topup")) == 1
    assert balance(settings) == 20 * USD
    done = await get(client, settings, t["id"])
    assert [e["to"] for e in done["events"] if e["applied"]].count("completed") == 1
    # The same event much later, and a second event that says the same: still once.
    assert (await deliver(client, stripe_api, event)).json()["outcome"] == "duplicate"
    verify_ok(settings)


async def test_with_the_live_sync_loop_running_still_once(monkeypatch, env, stripe_api):
    """The same, with the real background loop polling Stripe every few milliseconds."""
    monkeypatch.setattr("localgate.payments.stripe.StripeProvider.sync_interval", 0.01)
    settings = make_settings("stripe", payments__stripe__api_base=stripe_api.base_url)
    async with app_client(settings) as client:
        t = await create(client, settings)
        event = stripe_api.pay(t["reference"])
        await asyncio.gather(
            *[deliver(client, stripe_api, event) for _ in range(5)],
            client.get(f"/billing/topups/{t['id']}/return", headers=auth(settings)),
            client.post(f"/api/topups/{t['id']}/sync", headers=auth(settings)),
        )
        for _ in range(50):
            if (await get(client, settings, t["id"]))["status"] == "completed":
                break
            await asyncio.sleep(0.02)
        assert len(ledger(settings, kind="topup")) == 1 and balance(settings) == 20 * USD
    verify_ok(settings)


async def test_an_overdue_open_session_is_expired_by_the_sync(client, settings, stripe_api):
    t = await create(client, settings)
    store = client.app.state.store
    await store.write(
        lambda conn: conn.execute(
            "UPDATE topups SET expires_at = '2000-01-01T00:00:00.000000Z' WHERE id = ?", (t["id"],)
        )
    )
    await client.app.state.topups.sync_due()
    done = await get(client, settings, t["id"])
    assert (
        done["status"] == "expired" and stripe_api.sessions[t["reference"]]["status"] == "expired"
    )


async def test_return_page_alone_completes(client, settings, stripe_api):
    t = await create(client, settings)
    stripe_api.pay(t["reference"])  # no webhook reaches localhost
    resp = await client.get(
        f"/billing/topups/{t['id']}/return?session_id={t['reference']}",
        headers=auth(settings),
        follow_redirects=False,
    )
    assert resp.status_code in (200, 303)
    done = await get(client, settings, t["id"])
    assert done["status"] == "completed" and done["events"][-1]["source"] == "return"
    assert (
        done["receipt_url"].endswith(done["reference"].replace("cs_", "pi_")) or done["receipt_url"]
    )


async def test_async_payment_pending_then_succeeded(client, settings, stripe_api):
    t = await create(client, settings, method="wechat_pay")
    resp = await deliver(
        client, stripe_api, stripe_api.pay(t["reference"], method="wechat_pay", processing=True)
    )
    assert resp.json()["status"] == "pending"
    pending = await get(client, settings, t["id"])
    assert "WeChat Pay confirmation" in pending["reason"] and balance(settings) == 0
    await deliver(client, stripe_api, stripe_api.async_succeed(t["reference"]))
    assert (await get(client, settings, t["id"]))["status"] == "completed"
    assert balance(settings) == 20 * USD


async def test_async_payment_failed(client, settings, stripe_api):
    t = await create(client, settings, method="alipay")
    await deliver(
        client, stripe_api, stripe_api.pay(t["reference"], method="alipay", processing=True)
    )
    await deliver(client, stripe_api, stripe_api.async_fail(t["reference"]))
    done = await get(client, settings, t["id"])
    assert done["status"] == "failed" and "Alipay payment failed" in done["reason"]
    # The sync sees the same from the session and its payment intent.
    await client.app.state.topups.refresh(t["id"], any_state=True)
    assert ledger(settings) == []


async def test_sync_sees_an_async_failure_without_webhooks(client, settings, stripe_api):
    t = await create(client, settings, method="alipay")
    stripe_api.pay(t["reference"], method="alipay", processing=True)
    stripe_api.async_fail(t["reference"], "Alipay payment timed out")
    done = await client.app.state.topups.refresh(t["id"], source="sync")
    assert done["status"] == "failed" and "timed out" in done["reason"]


async def test_expiry_by_webhook_and_by_sync(client, settings, stripe_api):
    t = await create(client, settings)
    await deliver(client, stripe_api, stripe_api.expire(t["reference"]))
    assert (await get(client, settings, t["id"]))["status"] == "expired"
    t2 = await create(client, settings)
    stripe_api.expire(t2["reference"])
    await client.app.state.topups.sync_due()
    assert (await get(client, settings, t2["id"]))["status"] == "expired"


async def test_user_cancel_expires_the_session(client, settings, stripe_api):
    t = await create(client, settings)
    done = (await client.post(f"/api/topups/{t['id']}/cancel", headers=auth(settings))).json()
    assert done["status"] == "canceled" and done["events"][-1]["source"] == "user"
    assert ("POST", f"/v1/checkout/sessions/{t['reference']}/expire") in [
        r[:2] for r in stripe_api.requests
    ]
    assert stripe_api.sessions[t["reference"]]["status"] == "expired"
    # Stripe's expired event arriving afterwards changes nothing.
    await deliver(client, stripe_api, stripe_api.events[-1])
    assert (await get(client, settings, t["id"]))["status"] == "canceled"


async def test_cancel_url_return_cancels(client, settings, stripe_api):
    t = await create(client, settings)
    await client.get(f"/billing/topups/{t['id']}/return?canceled=1", headers=auth(settings))
    done = await get(client, settings, t["id"])
    assert done["status"] == "canceled" and done["events"][-1]["source"] == "return"


async def test_cancel_after_paying_at_stripe_credits_instead(client, settings, stripe_api):
    t = await create(client, settings)
    stripe_api.pay(t["reference"])
    done = (await client.post(f"/api/topups/{t['id']}/cancel", headers=auth(settings))).json()
    assert done["status"] == "completed" and balance(settings) == 20 * USD


async def test_refund_and_dispute_events(client, settings, stripe_api):
    t = await create(client, settings)
    await deliver(client, stripe_api, stripe_api.pay(t["reference"]))
    await deliver(client, stripe_api, stripe_api.refund(t["reference"], 500))
    part = await get(client, settings, t["id"])
    assert part["status"] == "refunded" and part["refunded_micros"] == 5 * USD
    assert balance(settings) == 15 * USD
    opened = stripe_api.dispute(t["reference"], 1500)
    await deliver(client, stripe_api, opened)
    assert (await get(client, settings, t["id"]))["status"] == "disputed"
    assert balance(settings) == 0
    dispute_id = opened["data"]["object"]["id"]
    await deliver(client, stripe_api, stripe_api.close_dispute(dispute_id, won=True))
    won = await get(client, settings, t["id"])
    assert won["status"] == "reinstated" and balance(settings) == 15 * USD
    assert [e["kind"] for e in won["entries"]] == ["topup", "refund", "reversal", "topup"]
    verify_ok(settings)


async def test_events_out_of_order_still_apply(client, settings, stripe_api):
    """Stripe does not promise order: a refund can arrive before the completion."""
    t = await create(client, settings)
    completed = stripe_api.pay(t["reference"])
    refunded = stripe_api.refund(t["reference"], 700)
    first = await deliver(client, stripe_api, refunded)
    assert first.json()["outcome"] == "applied"  # found through the PaymentIntent's metadata
    await deliver(client, stripe_api, completed)
    done = await get(client, settings, t["id"])
    assert done["status"] == "refunded" and done["refunded_micros"] == 7 * USD
    assert len(ledger(settings, kind="topup")) == 1 and balance(settings) == 13 * USD


async def test_missed_events_are_caught_up_at_start_up(monkeypatch, env, stripe_api):
    settings = make_settings("stripe", payments__stripe__api_base=stripe_api.base_url)
    with monkeypatch.context() as m:
        no_loop(m)
        async with app_client(settings) as client:
            t = await create(client, settings)
    # While localgate is stopped the payer pays and part of it is refunded.
    stripe_api.pay(t["reference"])
    stripe_api.refund(t["reference"], 300)
    async with app_client(settings) as client:  # the real start-up: catch-up and sync loop
        for _ in range(100):
            done = await get(client, settings, t["id"])
            if done["status"] == "refunded":
                break
            await asyncio.sleep(0.05)
        assert done["status"] == "refunded" and done["refunded_micros"] == 3 * USD
        assert {e["source"] for e in done["events"][2:]} == {"sync"}
        assert any(r[1] == "/v1/events" for r in stripe_api.requests)
    assert len(ledger(settings, kind="topup")) == 1
    verify_ok(settings)


async def test_unreachable_during_sync_keeps_it_pending_with_back_off(client, settings, stripe_api):
    t = await create(client, settings)
    stripe_api.fail_next = [400]
    done = await client.app.state.topups.refresh(t["id"], source="sync")
    assert done["status"] == "pending" and "Stripe refused" in done["last_sync_error"]
    assert done["next_sync_at"] > done["last_sync_at"]


# -- rejected webhooks ------------------------------------------------------------------------


async def test_bad_signature_is_rejected_and_nothing_credited(client, settings, stripe_api, caplog):
    t = await create(client, settings)
    # A forged "completed" event for a session nobody paid.
    forged = stripe_api._event(
        "checkout.session.completed",
        {**stripe_api.sessions[t["reference"]], "status": "complete", "payment_status": "paid"},
    )
    with caplog.at_level(logging.WARNING):
        resp = await deliver(client, stripe_api, forged, secret="whsec_wrong")
    assert resp.status_code == 400 and resp.json()["error"]["code"] == "bad_signature"
    assert "webhook rejected" in caplog.text
    body, _ = stripe_api.signed(forged)
    no_header = await client.post("/webhooks/stripe", content=body)
    assert no_header.status_code == 400
    assert ledger(settings) == [] and (await get(client, settings, t["id"]))["status"] == "pending"


async def test_stale_timestamp_is_rejected(client, settings, stripe_api, caplog):
    t = await create(client, settings)
    event = stripe_api.pay(t["reference"])
    with caplog.at_level(logging.WARNING):
        resp = await deliver(client, stripe_api, event, timestamp=int(time.time()) - 600)
    assert resp.status_code == 400 and "tolerance" in resp.json()["error"]["message"]
    assert "webhook rejected" in caplog.text
    assert ledger(settings) == []


async def test_unknown_session_is_rejected(client, settings, stripe_api, caplog):
    stranger = stripe_api._create_session(
        {
            "mode": "payment",
            "success_url": "https://elsewhere/{CHECKOUT_SESSION_ID}",
            "cancel_url": "https://elsewhere",
            "client_reference_id": "someone-else",
            "line_items": [
                {"quantity": "1", "price_data": {"currency": "usd", "unit_amount": "2000"}}
            ],
        }
    )
    with caplog.at_level(logging.WARNING):
        resp = await deliver(client, stripe_api, stripe_api.pay(stranger["id"]))
    assert resp.status_code == 200 and resp.json()["outcome"] == "unknown"
    assert "unknown" in caplog.text and ledger(settings) == []


@pytest.mark.parametrize(
    ("amount", "currency", "why"),
    [(1000, "usd", "amount mismatch"), (2000, "eur", "currency mismatch")],
)
async def test_amount_or_currency_mismatch_is_rejected(
    client, settings, stripe_api, caplog, amount, currency, why
):
    t = await create(client, settings)
    event = stripe_api.pay(t["reference"], amount_minor=amount, currency=currency)
    with caplog.at_level(logging.WARNING):
        resp = await deliver(client, stripe_api, event)
    assert resp.json()["outcome"] == "refused" and why in resp.json()["detail"]
    assert why in caplog.text
    await client.app.state.topups.refresh(t["id"], source="sync")  # the session says the same
    done = await get(client, settings, t["id"])
    assert done["status"] == "pending" and ledger(settings) == []
    refused = [e for e in done["events"] if not e["applied"]]
    assert refused and why in refused[0]["detail"]
    assert len(refused) == 1  # the same refusal is recorded once, logged every time


async def test_webhook_secret_missing_is_a_clear_refusal(monkeypatch, stripe_api):
    no_loop(monkeypatch)
    monkeypatch.setenv("STRIPE_SECRET_KEY", API_KEY)
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    settings = make_settings("stripe", payments__stripe__api_base=stripe_api.base_url)
    async with app_client(settings) as client:
        resp = await client.post(
            "/webhooks/stripe", content=b"{}", headers={"stripe-signature": "t=1,v1=x"}
        )
        assert resp.status_code == 400
        assert resp.json()["error"]["code"] == "webhook_secret_missing"


async def test_pages_work_with_stripe(client, settings, stripe_api, monkeypatch):
    monkeypatch.setattr("localgate.web.billing.PAGE_SYNC_GAP", 0)
    await login(client, settings)
    t = await create(client, settings)
    page = text((await client.get(f"/billing/topups/{t['id']}")).text)
    assert "Waiting for your payment of $20.00" in page and "Stripe Checkout" in page
    stripe_api.pay(t["reference"])
    page = text((await client.get(f"/billing/topups/{t['id']}")).text)
    assert "$20.00 arrived in Credit" in page and "payment receipt" in page
