"""Top-ups through the hosted service, against a server that speaks hosted-api.md."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from hosted_server import TOKEN, HostedServer
from topup_helpers import (
    USD,
    app_client,
    auth,
    balance,
    ledger,
    make_settings,
    no_loop,
    payments,
    verify_ok,
)

from localgate.errors import ConfigError
from localgate.hosted import HostedClient, HostedError


@pytest.fixture
def hosted():
    with HostedServer() as server:
        yield server


@pytest.fixture
def settings_overrides(monkeypatch, hosted):
    """The hosted provider against the local server, its sync loop off (a test syncs)."""
    no_loop(monkeypatch)
    monkeypatch.setenv("LOCALGATE_HOSTED_TOKEN", TOKEN)
    return payments("hosted", hosted__base_url=hosted.base_url)


async def create(client, settings, amount="20", wallet="credit", method="card"):
    resp = await client.post(
        "/api/topups",
        json={"wallet": wallet, "amount": amount, "method": method},
        headers=auth(settings),
    )
    assert resp.status_code == 201, resp.text
    return resp.json()


async def sync(client, topup_id):
    """A check of the top-up (the app runs in its own event loop: go through the API)."""
    headers = {"Authorization": f"Bearer {client.app.state.settings.admin_token}"}
    resp = await client.post(f"/api/topups/{topup_id}/sync", headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def test_create_posts_the_contract_body(client, settings, hosted):
    t = await create(client, settings, amount="20", method="alipay")
    method, path, body = hosted.requests[0]
    assert (method, path) == ("POST", "/v1/topups")
    back = f"http://127.0.0.1:4311/billing/topups/{t['id']}/return"
    assert body == {
        "wallet": "credit",
        "amount": "20.00",
        "currency": "USD",
        "method": "alipay",
        "success_url": back,
        "cancel_url": back + "?canceled=1",
        "client_reference": t["id"],
    }
    assert t["reference"].startswith("htu_") and t["checkout_url"].endswith(t["reference"])
    assert t["status"] == "pending" and t["can_cancel"] is False


async def test_completed_by_sync_credits_once(client, settings, hosted):
    t = await create(client, settings)
    hosted.set_status(t["reference"], "completed")
    await asyncio.gather(
        *[sync(client, t["id"]) for _ in range(4)], client.get(f"/billing/topups/{t['id']}/return")
    )
    done = await sync(client, t["id"])
    assert done["status"] == "completed" and balance(settings) == 20 * USD
    [entry] = ledger(settings, kind="topup")
    assert entry["idempotency_key"] == f"topup:hosted:{t['reference']}"
    verify_ok(settings)


@pytest.mark.parametrize("status", ["failed", "canceled", "expired"])
async def test_no_money_outcomes(client, settings, hosted, status):
    t = await create(client, settings)
    hosted.set_status(
        t["reference"], status, failure_reason="card_declined" if status == "failed" else None
    )
    done = await sync(client, t["id"])
    assert done["status"] == status and ledger(settings) == []
    if status == "failed":
        assert done["reason"] == "card_declined"


async def test_wrong_amount_received_is_refused(client, settings, hosted):
    t = await create(client, settings)
    hosted.set_status(t["reference"], "completed", amount_received="2.00")
    done = await sync(client, t["id"])
    assert done["status"] == "pending" and ledger(settings) == []
    assert "amount mismatch" in done["events"][-1]["detail"] and not done["events"][-1]["applied"]


async def test_refunds_and_dispute_won(client, settings, hosted):
    t = await create(client, settings)
    hosted.set_status(t["reference"], "completed")
    await sync(client, t["id"])
    hosted.refund(t["reference"], "5.00")
    part = await sync(client, t["id"])
    assert part["status"] == "refunded" and balance(settings) == 15 * USD
    hosted.set_status(t["reference"], "disputed")
    assert (await sync(client, t["id"]))["status"] == "disputed"
    assert balance(settings) == 0
    hosted.set_status(t["reference"], "partially_refunded")  # the dispute was closed in our favour
    won = await sync(client, t["id"])
    assert won["status"] == "reinstated" and balance(settings) == 15 * USD
    verify_ok(settings)


async def test_cancel_is_not_offered(client, settings):
    t = await create(client, settings)
    resp = await client.post(f"/api/topups/{t['id']}/cancel", headers=auth(settings))
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "cannot_cancel"


async def test_hosted_down_keeps_pending_and_says_why(client, settings, hosted):
    t = await create(client, settings)
    hosted.down = True
    done = await sync(client, t["id"])
    assert done["status"] == "pending" and "HTTP 503" not in (done["last_sync_error"] or "x")
    assert "hosted service is down" in done["last_sync_error"]


async def test_updated_since_catch_up_at_start_up(monkeypatch, hosted):
    monkeypatch.setenv("LOCALGATE_HOSTED_TOKEN", TOKEN)
    settings = make_settings("hosted", hosted__base_url=hosted.base_url)
    with monkeypatch.context() as m:
        no_loop(m)
        async with app_client(settings) as client:
            t = await create(client, settings)
            hosted.set_status(t["reference"], "completed")
            await sync(client, t["id"])
    hosted.refund(t["reference"], "20.00")  # while localgate is stopped
    async with app_client(settings) as client:
        for _ in range(100):
            done = (await client.get(f"/api/topups/{t['id']}", headers=auth(settings))).json()
            if done["status"] == "refunded":
                break
            await asyncio.sleep(0.05)
    assert done["status"] == "refunded" and done["refunded_micros"] == 20 * USD
    assert any(p == "/v1/topups" and m == "GET" for m, p, _ in hosted.requests)
    assert balance(settings) == 0


async def test_missing_token_is_a_config_problem(monkeypatch, hosted):
    no_loop(monkeypatch)
    settings = make_settings("hosted", hosted__base_url=hosted.base_url)
    async with app_client(settings) as client:
        resp = await client.post(
            "/api/topups", json={"wallet": "credit", "amount": "20"}, headers=auth(settings)
        )
        assert (
            resp.status_code == 503 and "LOCALGATE_HOSTED_TOKEN" in resp.json()["error"]["message"]
        )


async def test_client_translates_errors_and_hides_the_token(hosted):
    async with httpx.AsyncClient() as http:
        api = HostedClient(hosted.base_url, "wrong-token", http)
        assert TOKEN not in repr(api) and "wrong-token" not in repr(api)
        with pytest.raises(HostedError, match="unknown account token") as info:
            await api.get_topup("htu_x")
        assert info.value.status == 401
        ok = HostedClient(hosted.base_url, TOKEN, http)
        assert (await ok.topups_since("2000-01-01T00:00:00Z")) == []
        assert "wallets" in await ok.wallets()
        first = await ok.request("GET", "/v1/catalog")
        again = await ok.request(
            "GET", "/v1/catalog", headers={"if-none-match": first.headers["etag"]}
        )
        assert again.status == 304
        down = HostedClient("http://127.0.0.1:9", TOKEN, http)
        with pytest.raises(HostedError, match="cannot reach the hosted service"):
            await down.wallets()
    with pytest.raises(ConfigError):
        HostedClient("ftp://x", TOKEN, httpx.AsyncClient())
