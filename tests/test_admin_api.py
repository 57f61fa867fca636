"""The admin JSON API through the ASGI app (the ``client`` and ``settings`` fixtures of
conftest.py): auth, wallets, ledger pages, adjustments, verify, the Host check and the
login cookie."""

from __future__ import annotations

import sqlite3

import pytest
from litestar.testing import AsyncTestClient

from localgate.config import load_settings
from localgate.store.db import open_db
from localgate.web.app import create_app
from localgate.web.security import SESSION_COOKIE

BASE = "http://127.0.0.1:4311"
USD = 1_000_000


@pytest.fixture
def auth(settings):
    return {"Authorization": f"Bearer {settings.admin_token}"}


async def adjust(client, auth, wallet, amount, reason="test", **headers):
    return await client.post(
        "/api/adjustments",
        json={"wallet": wallet, "amount": amount, "reason": reason},
        headers={**auth, **headers},
    )


def entry_count(settings):
    conn = open_db(settings.db_path)
    try:
        return conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    finally:
        conn.close()


# -- auth ------------------------------------------------------------------------


async def test_health_needs_no_auth(client):
    resp = await client.get("/health")
    assert resp.status_code == 200
    assert resp.json()["status"] == "ok"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer "},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/wallets"),
        ("GET", "/api/wallets/credit/ledger"),
        ("GET", "/api/ledger/verify"),
        ("POST", "/api/adjustments"),
    ],
)
async def test_api_needs_the_admin_token(client, settings, headers, method, path):
    resp = await client.request(
        method,
        path,
        headers=headers,
        json={"wallet": "credit", "amount": "5", "reason": "x"} if method == "POST" else None,
    )
    assert resp.status_code == 401
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert body["error"]["code"] == "admin_auth_required"
    assert "admin-token" in body["error"]["message"]
    assert settings.admin_token not in resp.text
    assert entry_count(settings) == 0


# -- wallets -----------------------------------------------------------------------


async def test_wallets_shape(client, auth):
    resp = await client.get("/api/wallets", headers=auth)
    assert resp.status_code == 200
    wallets = resp.json()["wallets"]
    assert [w["id"] for w in wallets] == ["credit", "routed"]
    for w in wallets:
        assert {
            "id",
            "name",
            "settlement",
            "currency",
            "balance",
            "balance_micros",
            "held_micros",
            "available_micros",
        } <= set(w)
    credit, routed = wallets
    assert (credit["settlement"], credit["currency"]) == ("official", "USD")
    assert (routed["settlement"], routed["currency"]) == ("routed", "CNY")
    assert (
        credit["balance"],
        credit["balance_micros"],
        credit["held_micros"],
        credit["available_micros"],
    ) == ("0.000000", 0, 0, 0)

    assert (await adjust(client, auth, "credit", "12.345678")).status_code == 201
    assert (await adjust(client, auth, "routed", "-0.000001")).status_code == 402
    credit = (await client.get("/api/wallets/credit", headers=auth)).json()
    assert (credit["balance"], credit["balance_micros"], credit["available_micros"]) == (
        "12.345678",
        12_345_678,
        12_345_678,
    )
    assert (await client.get("/api/wallets/nope", headers=auth)).status_code == 404


# -- the ledger ----------------------------------------------------------------------


async def test_ledger_pages_with_a_next_cursor(client, auth):
    for i in range(1, 8):
        assert (await adjust(client, auth, "credit", str(i))).status_code == 201
    await adjust(client, auth, "routed", "1")  # another wallet's entry is not in the page

    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        resp = await client.get("/api/wallets/credit/ledger", params=params, headers=auth)
        assert resp.status_code == 200
        body = resp.json()
        pages += 1
        assert len(body["entries"]) <= 3
        for e in body["entries"]:
            assert {
                "id",
                "kind",
                "amount_micros",
                "balance_after_micros",
                "created_at",
                "receipt_id",
                "topup_id",
            } <= set(e)
        seen.extend(body["entries"])
        cursor = body["next"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert pages == 3
    assert [e["amount_micros"] for e in seen] == [i * USD for i in range(7, 0, -1)]  # newest first
    assert [e["balance_after_micros"] for e in seen] == [
        sum(range(1, i + 1)) * USD for i in range(7, 0, -1)
    ]
    assert {e["kind"] for e in seen} == {"adjustment"}
    assert seen[0]["amount"] == "7.000000" and seen[0]["balance_after"] == "28.000000"
    ids = [e["id"] for e in seen]
    assert ids == sorted(ids, reverse=True) and len(set(ids)) == 7

    # Exactly one page: no cursor.
    body = (await client.get("/api/wallets/credit/ledger?limit=7", headers=auth)).json()
    assert len(body["entries"]) == 7 and body["next"] is None


@pytest.mark.parametrize("query", ["cursor=abc", "cursor=0", "cursor=-3", "limit=ten"])
async def test_ledger_bad_query(client, auth, query):
    resp = await client.get(f"/api/wallets/credit/ledger?{query}", headers=auth)
    assert resp.status_code == 400
    assert resp.json()["error"]["message"]


async def test_ledger_of_unknown_wallet(client, auth):
    resp = await client.get("/api/wallets/nope/ledger", headers=auth)
    assert resp.status_code == 404
    assert resp.json()["error"]["code"] == "unknown_wallet"


# -- adjustments -----------------------------------------------------------------------


async def test_adjustments_up_and_down(client, auth):
    resp = await adjust(client, auth, "credit", "5", reason="support credit")
    assert resp.status_code == 201
    entry = resp.json()
    assert (
        entry["kind"],
        entry["wallet"],
        entry["amount"],
        entry["amount_micros"],
        entry["balance_after_micros"],
        entry["memo"],
    ) == ("adjustment", "credit", "5.000000", 5 * USD, 5 * USD, "support credit")
    resp = await adjust(client, auth, "credit", "-1.25")
    assert resp.status_code == 201
    assert (resp.json()["amount_micros"], resp.json()["balance_after_micros"]) == (
        -1_250_000,
        3_750_000,
    )
    resp = await adjust(client, auth, "credit", 2)  # an integer is a whole amount
    assert resp.status_code == 201 and resp.json()["amount_micros"] == 2 * USD


async def test_adjustment_below_zero_is_402_and_writes_nothing(client, auth, settings):
    await adjust(client, auth, "credit", "1")
    before = entry_count(settings)
    resp = await adjust(client, auth, "credit", "-1.000001")
    assert resp.status_code == 402
    err = resp.json()["error"]
    assert err["code"] == "insufficient_balance"
    assert (err["wallet"], err["needed"], err["available"]) == ("credit", "1.000001", "1.000000")
    assert entry_count(settings) == before
    wallets = (await client.get("/api/wallets", headers=auth)).json()["wallets"]
    assert wallets[0]["balance_micros"] == USD


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"",
        b"[1, 2]",
        b'"text"',
        b"\xff\xfe",
    ],
)
async def test_adjustment_malformed_body(client, auth, settings, body):
    resp = await client.post(
        "/api/adjustments", content=body, headers={**auth, "content-type": "application/json"}
    )
    assert resp.status_code == 400
    assert resp.json()["error"]["message"]
    assert entry_count(settings) == 0


@pytest.mark.parametrize(
    ("payload", "hint"),
    [
        ({"amount": "1", "reason": "r"}, "wallet"),
        ({"wallet": "credit", "reason": "r"}, "amount"),
        ({"wallet": "credit", "amount": "1"}, "reason"),
        ({"wallet": "credit", "amount": "1.0000001", "reason": "r"}, "decimals"),
        ({"wallet": "credit", "amount": 1.5, "reason": "r"}, "amount"),
        ({"wallet": "credit", "amount": True, "reason": "r"}, "amount"),
        ({"wallet": "credit", "amount": "abc", "reason": "r"}, "not a decimal"),
        ({"wallet": "credit", "amount": "NaN", "reason": "r"}, "amount"),
        ({"wallet": "credit", "amount": "1e30", "reason": "r"}, "too large"),
        ({"wallet": 7, "amount": "1", "reason": "r"}, "wallet"),
        ({"wallet": "credit", "amount": "1", "reason": ["r"]}, "reason"),
    ],
)
async def test_adjustment_bad_fields_are_400(client, auth, settings, payload, hint):
    resp = await client.post("/api/adjustments", json=payload, headers=auth)
    assert resp.status_code == 400, resp.text
    assert hint in resp.json()["error"]["message"]
    assert entry_count(settings) == 0


async def test_adjustment_unknown_wallet_is_404(client, auth):
    resp = await adjust(client, auth, "nope", "1")
    assert resp.status_code == 404


async def test_adjustment_idempotency_key(client, auth):
    first = await adjust(client, auth, "credit", "3", **{"Idempotency-Key": "support-42"})
    again = await adjust(client, auth, "credit", "3", **{"Idempotency-Key": "support-42"})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    body = {"wallet": "credit", "amount": "3", "reason": "r", "idempotency_key": "support-42"}
    third = await client.post("/api/adjustments", json=body, headers=auth)
    assert third.json()["id"] == first.json()["id"]
    wallets = (await client.get("/api/wallets", headers=auth)).json()["wallets"]
    assert wallets[0]["balance_micros"] == 3 * USD


# -- verify --------------------------------------------------------------------------


async def test_verify(client, auth, settings):
    resp = await client.get("/api/ledger/verify", headers=auth)
    assert resp.json() == {"ok": True, "entries": 0, "first_error": None}
    await adjust(client, auth, "credit", "5")
    await adjust(client, auth, "credit", "-2")
    assert (await client.get("/api/ledger/verify", headers=auth)).json() == {
        "ok": True,
        "entries": 2,
        "first_error": None,
    }

    conn = sqlite3.connect(settings.db_path, isolation_level=None)
    try:
        conn.execute("DROP TRIGGER entries_no_update")
        conn.execute("UPDATE entries SET memo = 'edited' WHERE id = 2")
    finally:
        conn.close()
    body = (await client.get("/api/ledger/verify", headers=auth)).json()
    assert body["ok"] is False
    assert "entry 2" in body["first_error"]


# -- local safety ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.com", "evil.com:4311", "127.0.0.1.evil.com", "10.0.0.5"])
async def test_foreign_host_is_refused(client, auth, host):
    for path in ("/api/wallets", "/health", "/login?token=x"):
        resp = await client.get(path, headers={**auth, "Host": host})
        assert resp.status_code == 403
        assert resp.json()["error"]["code"] == "host_not_allowed"


@pytest.mark.parametrize("host", ["127.0.0.1:4311", "localhost:4311", "LOCALHOST", "[::1]:4311"])
async def test_loopback_hosts_are_accepted(client, auth, host):
    resp = await client.get("/api/wallets", headers={**auth, "Host": host})
    assert resp.status_code == 200


async def test_login_cookie_authorizes_the_api(client, settings):
    resp = await client.get(f"/login?token={settings.admin_token}", follow_redirects=False)
    assert resp.status_code in (301, 302, 303, 307)
    assert resp.headers["location"] == "/"
    cookie = resp.headers["set-cookie"]
    attrs = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "httponly" in attrs
    assert "samesite=strict" in cookie.lower()
    assert settings.admin_token not in cookie  # a signed nonce, not the token itself
    # The client keeps the cookie: the API now answers without a bearer token.
    resp = await client.get("/api/wallets")
    assert resp.status_code == 200
    assert [w["id"] for w in resp.json()["wallets"]] == ["credit", "routed"]
    # A state change by cookie alone (no CSRF token) is refused.
    resp = await client.post(
        "/api/adjustments", json={"wallet": "credit", "amount": "5", "reason": "x"}
    )
    assert resp.status_code == 403


async def test_a_forged_cookie_is_refused(client, settings):
    client.cookies.set(SESSION_COOKIE, "nonce.0123456789abcdef")
    assert (await client.get("/api/wallets")).status_code == 401


@pytest.mark.parametrize("query", ["?token=wrong", "?token=", ""])
async def test_bad_login_token_is_401(client, query):
    resp = await client.get(f"/login{query}", follow_redirects=False)
    assert resp.status_code == 401
    assert "set-cookie" not in resp.headers
    assert (await client.get("/api/wallets")).status_code == 401


async def test_admin_token_from_env_is_the_one_that_works(monkeypatch):
    monkeypatch.setenv("LOCALGATE_ADMIN_TOKEN", "env-token-123")
    settings = load_settings()
    async with AsyncTestClient(app=create_app(settings), base_url=BASE) as c:
        ok = await c.get("/api/wallets", headers={"Authorization": "Bearer env-token-123"})
        assert ok.status_code == 200
