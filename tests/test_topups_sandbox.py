"""Top-ups with the sandbox provider, through the ASGI app: every state of the
machine by the sandbox checkout's buttons, exactly-once fulfilment, refunds that
exceed the balance, the pages and the JSON API."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from topup_helpers import (
    BASE,
    USD,
    auth,
    balance,
    form_headers,
    ledger,
    login,
    no_loop,
    payments,
    text,
    verify_ok,
    wallet_row,
)

from localgate.errors import WalletFrozen
from localgate.store import ledger as ledger_store


@pytest.fixture
def settings_overrides(monkeypatch):
    """The sandbox provider, its sync loop off (a test decides when syncs happen)."""
    no_loop(monkeypatch)
    return payments("sandbox")


async def create(client, settings, wallet="credit", amount="20", method=None):
    body = {"wallet": wallet, "amount": amount}
    if method:
        body["method"] = method
    resp = await client.post("/api/topups", json=body, headers=auth(settings))
    assert resp.status_code == 201, resp.text
    return resp.json()


async def act(client, settings, topup_id, action, **extra):
    resp = await client.post(
        f"/sandbox/checkout/{topup_id}",
        data={"action": action, **extra},
        headers=auth(settings),
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    return resp.headers["location"]


async def back(client, settings, location):
    """Follow the sandbox's redirect to the return page, as the browser would."""
    resp = await client.get(location, headers=auth(settings), follow_redirects=False)
    assert resp.status_code in (200, 303)
    return resp


async def get(client, settings, topup_id):
    resp = await client.get(f"/api/topups/{topup_id}", headers=auth(settings))
    assert resp.status_code == 200
    return resp.json()


# -- every state ------------------------------------------------------------------------


async def test_pay_completes_and_credits_once(client, settings):
    t = await create(client, settings)
    assert t["status"] == "pending" and t["checkout_url"] == f"{BASE}/sandbox/checkout/{t['id']}"
    assert t["currency"] == "USD" and t["amount"] == "20.000000" and t["ledger_entry_id"] is None
    location = await act(client, settings, t["id"], "pay")
    assert location == f"/billing/topups/{t['id']}/return"
    await back(client, settings, location)
    done = await get(client, settings, t["id"])
    assert done["status"] == "completed"
    assert (done["balance_before_micros"], done["balance_after_micros"]) == (0, 20 * USD)
    [entry] = ledger(settings, kind="topup")
    assert entry["id"] == done["ledger_entry_id"] and entry["topup_id"] == t["id"]
    assert entry["idempotency_key"] == f"topup:sandbox:{done['reference']}"
    conn = sqlite3.connect(settings.db_path)
    postings = conn.execute(
        "SELECT account, amount_micros FROM postings WHERE entry_id = ?", (entry["id"],)
    ).fetchall()
    assert sorted(postings) == [("funding:sandbox", -20 * USD), ("wallet:credit", 20 * USD)]
    assert [(e["from"], e["to"], e["source"]) for e in done["events"]] == [
        (None, "created", "user"),
        ("created", "pending", "user"),
        ("pending", "completed", "return"),
    ]
    assert done["events"][-1]["ledger_entry_id"] == entry["id"]
    # The entry points back at the top-up, both ways.
    resp = await client.get(f"/api/ledger/entries/{entry['id']}", headers=auth(settings))
    assert resp.json()["topup_id"] == t["id"]
    verify_ok(settings)


async def test_pay_later_stays_pending_then_completes_by_sync(client, settings):
    provider = client.app.state.topups.provider
    provider.settle_after, provider.sync_interval = 0.3, 0.1
    t = await create(client, settings, method="wechat_pay")
    await back(client, settings, await act(client, settings, t["id"], "pay_later"))
    pending = await get(client, settings, t["id"])
    assert pending["status"] == "pending" and "WeChat Pay confirmation" in pending["reason"]
    assert balance(settings) == 0
    await asyncio.sleep(0.4)
    assert await client.app.state.topups.sync_due() >= 1
    done = await get(client, settings, t["id"])
    assert done["status"] == "completed" and done["events"][-1]["source"] == "sync"
    assert balance(settings) == 20 * USD


async def test_pay_later_can_fail_like_an_async_payment(client, settings):
    t = await create(client, settings, method="alipay")
    await back(client, settings, await act(client, settings, t["id"], "pay_later"))
    await back(client, settings, await act(client, settings, t["id"], "decline"))
    done = await get(client, settings, t["id"])
    assert done["status"] == "failed" and "not confirmed" in done["reason"]
    assert ledger(settings) == []


@pytest.mark.parametrize(
    ("action", "status", "why"),
    [
        ("decline", "failed", "declined"),
        ("cancel", "canceled", "canceled"),
        ("expire", "expired", "expired"),
    ],
)
async def test_no_money_outcomes(client, settings, action, status, why):
    t = await create(client, settings)
    await back(client, settings, await act(client, settings, t["id"], action))
    done = await get(client, settings, t["id"])
    assert done["status"] == status and why in done["reason"]
    assert done["ledger_entry_id"] is None and ledger(settings) == []


async def test_cancel_from_our_page_and_time_based_expiry(client, settings):
    t = await create(client, settings)
    resp = await client.post(f"/api/topups/{t['id']}/cancel", headers=auth(settings))
    assert resp.json()["status"] == "canceled"
    assert resp.json()["events"][-1]["source"] == "user"
    # A sandbox checkout left open past its expiry is closed by the sync.
    client.app.state.topups.provider.expires_after = 0.05
    t2 = await create(client, settings)
    await asyncio.sleep(0.1)
    await client.app.state.topups.sync_due()
    assert (await get(client, settings, t2["id"]))["status"] == "expired"


async def test_refunds_partial_then_full(client, settings):
    t = await create(client, settings)
    await back(client, settings, await act(client, settings, t["id"], "pay"))
    await act(client, settings, t["id"], "refund", amount="5")
    part = await get(client, settings, t["id"])
    assert part["status"] == "refunded" and part["refunded_micros"] == 5 * USD
    assert balance(settings) == 15 * USD
    await act(client, settings, t["id"], "refund")
    full = await get(client, settings, t["id"])
    assert full["refunded_micros"] == 20 * USD and balance(settings) == 0
    assert [e["kind"] for e in full["entries"]] == ["topup", "refund", "refund"]
    assert [e["source"] for e in full["events"][-2:]] == ["webhook", "webhook"]
    verify_ok(settings)


async def test_refund_beyond_the_balance_freezes_instead_of_going_negative(client, settings):
    t = await create(client, settings)
    await back(client, settings, await act(client, settings, t["id"], "pay"))
    # Spend most of it (an adjustment stands in for usage).
    await client.post(
        "/api/adjustments",
        json={"wallet": "credit", "amount": "-18", "reason": "usage"},
        headers=auth(settings),
    )
    await act(client, settings, t["id"], "refund")
    after = await get(client, settings, t["id"])
    assert after["status"] == "refunded" and after["refunded_micros"] == 20 * USD
    assert after["shortfall_micros"] == 18 * USD
    assert balance(settings) == 0
    row = wallet_row(settings)
    assert row["frozen"] == 1 and "exceeded the balance" in row["frozen_reason"]
    store = client.app.state.store
    with pytest.raises(WalletFrozen):
        await store.write(lambda conn: ledger_store.place_hold(conn, "credit", 1, owner="t"))
    # The page shows it.
    await login(client, settings)
    page = text((await client.get(f"/billing/topups/{t['id']}")).text)
    assert "$18.000000 of the refund or dispute was more than Credit had left" in page
    # The next top-up covers the shortfall first and lifts the freeze.
    t2 = await create(client, settings, amount="30")
    await back(client, settings, await act(client, settings, t2["id"], "pay"))
    assert balance(settings) == 12 * USD
    assert wallet_row(settings)["frozen"] == 0
    assert (await get(client, settings, t["id"]))["shortfall_micros"] == 0
    verify_ok(settings)


async def test_dispute_then_won_reinstates_and_lost_keeps_it_out(client, settings):
    t = await create(client, settings)
    await back(client, settings, await act(client, settings, t["id"], "pay"))
    await act(client, settings, t["id"], "dispute")
    d = await get(client, settings, t["id"])
    assert d["status"] == "disputed" and balance(settings) == 0
    reversal = [e for e in ledger(settings) if e["kind"] == "reversal"]
    assert reversal and reversal[0]["reverses_id"] == d["ledger_entry_id"]
    await act(client, settings, t["id"], "dispute_won")
    assert (await get(client, settings, t["id"]))["status"] == "reinstated"
    assert balance(settings) == 20 * USD

    t2 = await create(client, settings, amount="10")
    await back(client, settings, await act(client, settings, t2["id"], "pay"))
    await act(client, settings, t2["id"], "dispute")
    await act(client, settings, t2["id"], "dispute_lost")
    lost = await get(client, settings, t2["id"])
    assert lost["status"] == "disputed" and lost["dispute_state"] == "lost"
    assert balance(settings) == 20 * USD
    verify_ok(settings)


# -- exactly once -----------------------------------------------------------------------


async def test_return_page_page_open_and_sync_at_once_credit_once(client, settings):
    t = await create(client, settings)
    await act(client, settings, t["id"], "pay")
    topups = client.app.state.topups
    await asyncio.gather(
        *[topups.handle_return(t["id"], canceled=False) for _ in range(5)],
        *[topups.refresh(t["id"], source="sync") for _ in range(5)],
        *[
            client.get(f"/billing/topups/{t['id']}/return", headers=auth(settings))
            for _ in range(5)
        ],
        topups.sync_due(),
    )
    assert len(ledger(settings, kind="topup")) == 1
    assert balance(settings) == 20 * USD
    done = await get(client, settings, t["id"])
    assert [e["to"] for e in done["events"] if e["applied"]].count("completed") == 1
    verify_ok(settings)


# -- the API ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"wallet": "credit", "amount": "0.50"}, 400, "amount_too_small"),
        ({"wallet": "credit", "amount": "9000"}, 400, "amount_too_large"),
        ({"wallet": "credit", "amount": "1.005"}, 400, "invalid_amount"),
        ({"wallet": "routed", "amount": "2"}, 400, "amount_too_small"),
        ({"wallet": "nope", "amount": "20"}, 404, "unknown_wallet"),
        ({"wallet": "credit", "amount": "20", "method": "paypal"}, 400, "invalid_method"),
        ({"wallet": "credit"}, 400, "invalid_request"),
        ({"wallet": "credit", "amount": 20.5}, 400, "invalid_request"),
    ],
)
async def test_create_rejects_bad_requests_clearly(client, settings, body, status, code):
    resp = await client.post("/api/topups", json=body, headers=auth(settings))
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["code"] == code


async def test_api_lists_and_needs_the_admin(client, settings):
    t = await create(client, settings, wallet="routed", amount="50")
    assert t["currency"] == "CNY"
    resp = await client.get("/api/topups", headers=auth(settings))
    assert [x["id"] for x in resp.json()["topups"]] == [t["id"]]
    assert (await client.get("/api/topups")).status_code == 401
    assert (await client.get("/api/topups/tu_missing", headers=auth(settings))).status_code == 404


async def test_sandbox_actions_refused_in_the_wrong_state(client, settings):
    t = await create(client, settings)
    resp = await client.post(
        f"/sandbox/checkout/{t['id']}", data={"action": "refund"}, headers=auth(settings)
    )
    assert resp.status_code == 409 and "needs it paid" in resp.json()["error"]["message"]


# -- the pages -------------------------------------------------------------------------------


async def test_billing_form_creates_and_redirects_to_checkout(client, settings):
    csrf = await login(client, settings)
    page = text((await client.get("/billing")).text)
    assert "Credit pays official routes" in page and "Routed balance pays routed channels" in page
    assert "Sandbox payments" in page
    resp = await client.post(
        "/billing",
        data={"csrf_token": csrf, "wallet": "credit", "amount": "20", "method": "card"},
        headers=form_headers(),
        follow_redirects=False,
    )
    assert resp.status_code == 303 and "/sandbox/checkout/tu_" in resp.headers["location"]
    bad = await client.post(
        "/billing",
        data={"csrf_token": csrf, "wallet": "credit", "amount": "0.1"},
        headers=form_headers(),
    )
    assert bad.status_code == 400 and "smallest top-up in USD is $1.00" in text(bad.text)
    forged = await client.post(
        "/billing", data={"wallet": "credit", "amount": "20"}, headers=form_headers()
    )
    assert forged.status_code == 403


async def test_post_payment_page_answers_everything_above_the_fold(client, settings):
    csrf = await login(client, settings)
    t = await create(client, settings)
    resp = await client.post(
        f"/sandbox/checkout/{t['id']}",
        data={"action": "pay", "csrf_token": csrf},
        headers=form_headers(),
        follow_redirects=False,
    )
    ret = await client.get(resp.headers["location"], follow_redirects=False)
    assert ret.status_code == 303 and ret.headers["location"] == f"/billing/topups/{t['id']}"
    html = (await client.get(ret.headers["location"])).text
    hero = text(html.split('id="receipt"')[0])
    entry = (await get(client, settings, t["id"]))["ledger_entry_id"]
    for expected in [
        "$20.00 arrived in Credit",
        "official",
        "Balance $0.000000 → $20.000000",
        "Ready to use now",
        "localgate-demo",
        f"Ledger entry #{entry} in the Credit ledger",
        "Create an API key",
        "Run a model",
        "not charged",
    ]:
        assert expected in hero, expected
    assert f'href="/wallets/credit#entry-{entry}"' in html
    assert f'href="/api/ledger/entries/{entry}"' in html
    assert 'href="/keys?settlement=official"' in html and 'href="/playground"' in html
    assert 'href="#receipt"' in html


async def test_pending_page_says_what_it_waits_for_and_refreshes(client, settings):
    await login(client, settings)
    t = await create(client, settings, method="wechat_pay")
    await act(client, settings, t["id"], "pay_later")
    html = (await client.get(f"/billing/topups/{t['id']}")).text
    page = text(html)
    assert "Waiting for your payment of $20.00" in page
    assert "WeChat Pay confirmation" in page and "safe to close" in page
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in html
    assert "/static/js/topup.js" in html and 'id="cancel"' in html


async def test_failed_page_says_no_money_moved_and_retries(client, settings):
    csrf = await login(client, settings)
    t = await create(client, settings)
    await back(client, settings, await act(client, settings, t["id"], "decline"))
    page = text((await client.get(f"/billing/topups/{t['id']}")).text)
    assert "No money moved" in page and "declined" in page and "Nothing was charged" in page
    resp = await client.post(
        f"/billing/topups/{t['id']}/retry",
        data={"csrf_token": csrf},
        headers=form_headers(),
        follow_redirects=False,
    )
    assert resp.status_code == 303 and "/sandbox/checkout/" in resp.headers["location"]
    new_id = resp.headers["location"].rsplit("/", 1)[1]
    again = await get(client, settings, new_id)
    assert again["retry_of"] == t["id"] and again["amount_micros"] == 20 * USD


async def test_return_page_without_the_cookie_hands_over_to_the_page(client, settings):
    """Back from a provider's site, SameSite=Strict keeps our cookie: the return page
    still checks the payment, then navigates (same-site) to the post-payment page."""
    t = await create(client, settings)
    await act(client, settings, t["id"], "pay")
    resp = await client.get(f"/billing/topups/{t['id']}/return", follow_redirects=False)
    assert resp.status_code == 200
    assert f'content="0;url=/billing/topups/{t["id"]}"' in resp.text
    assert (await get(client, settings, t["id"]))["status"] == "completed"
    assert (await client.get("/billing/topups/tu_nope/return")).status_code == 404


async def test_pages_need_login(client, settings):
    t = await create(client, settings)
    for path in ("/billing", f"/billing/topups/{t['id']}", f"/sandbox/checkout/{t['id']}"):
        resp = await client.get(path, follow_redirects=False)
        assert resp.status_code in (302, 303, 307) and "/login/help" in resp.headers["location"]


async def test_webhook_endpoint_is_off_for_the_sandbox(client):
    resp = await client.post("/webhooks/stripe", content=b"{}")
    assert resp.status_code == 404
