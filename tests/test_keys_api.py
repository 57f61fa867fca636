"""The admin JSON API of the gateway: /api/keys and /api/receipts, through the app
in-process (the ``gate`` fixture of conftest.py).

Keys: created with the secret shown once (never in a list or a get, nor its
hash), validated field by field, paused / resumed / revoked. Receipts: every
filter (key, model, status, wallet, time) and cursor pagination.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import gateway_fixtures as gf
import pytest
from upstream import FakeUpstream

upstream = FakeUpstream.fixture()

P_CHAT = gf.price(input="0.5", output="1.5")
P_ROUTED = gf.price("CNY", input="1", output="2")
MSG = [{"role": "user", "content": "hello"}]
CHAT = "/v1/chat/completions"


@pytest.fixture
def gateway_config(upstream) -> gf.GatewaySetup:
    return gf.GatewaySetup(
        channels=[
            gf.channel("up1", upstream.base_url),
            gf.channel("rt", upstream.base_url, settlement="routed"),
        ],
        models=[
            gf.model("gw-chat", gf.route("up1", "up-chat", P_CHAT)),
            gf.model("gw-embed", gf.route("up1", "up-embed", P_CHAT), kind="embedding"),
            gf.model("gw-routed", gf.route("rt", "rt-chat", P_ROUTED)),
        ],
        funds={"credit": "10", "routed": "10"},
    )


def admin_error(resp) -> dict[str, Any]:
    body = resp.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] and body["error"]["message"]
    return body["error"]


# --- /api/keys -------------------------------------------------------------------


def test_create_shows_the_key_once_and_never_again(gate):
    resp = gate.api(
        "POST",
        "/api/keys",
        json={
            "label": "cursor laptop",
            "project": "web",
            "models": ["gpt-4o*", "gw-*"],
            "settlement": "official",
            "budgets": {"USD": {"day": "5", "month": "50.5"}, "CNY": {"total": "100"}},
            "rpm": 30,
        },
    )
    assert resp.status_code == 201
    created = resp.json()
    secret = created["key"]
    assert secret.startswith("lg_") and len(secret) > 40
    assert created["id"].startswith("key_")
    assert (created["label"], created["project"], created["rpm"]) == ("cursor laptop", "web", 30)
    assert created["models"] == ["gpt-4o*", "gw-*"]
    assert created["settlement"] == "official"
    assert created["status"] == "active"
    assert created["budgets"]["USD"]["day_micros"] == 5_000_000
    assert created["budgets"]["USD"]["month_micros"] == 50_500_000
    assert created["budgets"]["CNY"]["total_micros"] == 100_000_000
    shown = created["prefix"].split("\u2026")
    assert secret.startswith(shown[0]) and secret.endswith(shown[-1])  # recognisable...
    assert len("".join(shown)) < 20  # ...never usable

    digest = hashlib.sha256(secret.encode()).hexdigest()
    listing = gate.api("GET", "/api/keys")
    one = gate.api("GET", f"/api/keys/{created['id']}")
    for resp in (listing, one):
        assert resp.status_code == 200
        text = resp.text
        assert secret not in text and secret[3:] not in text
        assert digest not in text and "hash" not in text
    keys = listing.json()["keys"]
    (mine,) = [k for k in keys if k["id"] == created["id"]]
    assert "key" not in mine and "key" not in one.json()
    assert mine["label"] == "cursor laptop" and one.json()["prefix"] == created["prefix"]

    # The key works; one character off does not.
    assert gate.http(secret).get("/v1/models").status_code == 200
    near = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert gate.http(near).get("/v1/models").status_code == 401


def test_each_key_is_new_and_the_list_has_them_all(gate):
    made = [gate.create_key(f"k{i}") for i in range(3)]
    assert len({k["key"] for k in made}) == 3
    listed = {k["id"] for k in gate.ok("GET", "/api/keys")["keys"]}
    assert {k["id"] for k in made} <= listed


@pytest.mark.parametrize(
    "body, param",
    [
        ({}, "label"),
        ({"label": ""}, "label"),
        ({"label": "x" * 201}, "label"),
        ({"label": "a", "settlement": "cheap"}, "settlement"),
        ({"label": "a", "models": "gpt-4o"}, "models"),
        ({"label": "a", "models": [1]}, "models"),
        ({"label": "a", "rpm": 0}, "rpm"),
        ({"label": "a", "rpm": "10"}, "rpm"),
        ({"label": "a", "budgets": {"USD": {"day": "-1"}}}, "budgets"),
        ({"label": "a", "budgets": {"USD": {"day": 5.5}}}, "budgets"),
        ({"label": "a", "budgets": {"US": {"day": "1"}}}, "budgets"),
        ({"label": "a", "budgets": ["USD"]}, "budgets"),
        ({"label": "a", "expires_at": "next tuesday"}, "expires_at"),
    ],
)
def test_create_rejects_bad_fields_with_400(gate, body, param):
    before = len(gate.ok("GET", "/api/keys")["keys"])
    resp = gate.api("POST", "/api/keys", json=body)
    assert resp.status_code == 400, resp.text
    error = admin_error(resp)
    assert param in error["message"] or error.get("param") == param, error
    assert len(gate.ok("GET", "/api/keys")["keys"]) == before


def test_create_rejects_bodies_that_are_not_objects(gate):
    for raw in (b"", b"not json", b"[1]", b'"label"'):
        resp = gate.api("POST", "/api/keys", content=raw)
        assert resp.status_code == 400, (raw, resp.text)
        admin_error(resp)


def test_keys_api_needs_the_admin_token(gate):
    secret = gate.key()
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Bearer {secret}"}):
        with gate.http(headers=headers) as anon:
            for method, path in [
                ("GET", "/api/keys"),
                ("POST", "/api/keys"),
                ("GET", "/api/receipts"),
            ]:
                resp = anon.request(method, path, json={"label": "x"})
                assert resp.status_code == 401, (headers, path)
                assert admin_error(resp)["code"] == "admin_auth_required"
    assert len(gate.ok("GET", "/api/keys")["keys"]) == 1


def test_pause_resume_revoke(gate):
    key = gate.create_key("switch")
    kid, http = key["id"], gate.http(key["key"])
    body = {"model": "gw-chat", "messages": MSG}
    assert gate.ok("GET", f"/api/keys/{kid}")["last_used_at"] is None
    assert http.post("/v1/chat/completions", json=body).status_code == 200
    assert gate.ok("GET", f"/api/keys/{kid}")["last_used_at"] is not None

    paused = gate.ok("POST", f"/api/keys/{kid}/pause")
    assert (paused["status"], paused["paused"]) == ("paused", True)
    assert gate.ok("GET", f"/api/keys/{kid}")["status"] == "paused"
    assert http.post("/v1/chat/completions", json=body).status_code == 403

    resumed = gate.ok("POST", f"/api/keys/{kid}/resume")
    assert (resumed["status"], resumed["paused"]) == ("active", False)
    assert http.post("/v1/chat/completions", json=body).status_code == 200

    revoked = gate.ok("POST", f"/api/keys/{kid}/revoke")
    assert (revoked["status"], revoked["revoked"]) == ("revoked", True)
    assert revoked["revoked_at"] is not None
    assert http.post("/v1/chat/completions", json=body).status_code == 401
    for action in ("resume", "pause"):
        resp = gate.api("POST", f"/api/keys/{kid}/{action}")
        assert resp.status_code == 400
        assert "revoked" in admin_error(resp)["message"]
    assert gate.ok("GET", f"/api/keys/{kid}")["status"] == "revoked"
    # Revoking twice changes nothing; the key stays listed as revoked.
    again = gate.ok("POST", f"/api/keys/{kid}/revoke")
    assert again["revoked_at"] == revoked["revoked_at"]
    assert any(
        k["id"] == kid and k["status"] == "revoked" for k in gate.ok("GET", "/api/keys")["keys"]
    )


def test_key_actions_on_unknown_keys_and_actions(gate):
    kid = gate.create_key("x")["id"]
    resp = gate.api("POST", f"/api/keys/{kid}/delete")
    assert resp.status_code == 400
    message = admin_error(resp)["message"]
    assert "delete" in message and "pause" in message and "revoke" in message
    for method, path in [("GET", "/api/keys/key_nope"), ("POST", "/api/keys/key_nope/pause")]:
        resp = gate.api(method, path)
        assert resp.status_code == 404, path
        admin_error(resp)


def test_key_view_shows_what_it_spent(gate, upstream):
    key = gate.create_key("spender", budgets={"USD": {"day": "1"}})
    upstream.push(prompt_tokens=1000, completion_tokens=1000)  # 500 + 1500 micros
    resp = gate.http(key["key"]).post(
        "/v1/chat/completions", json={"model": "gw-chat", "messages": MSG}
    )
    assert resp.status_code == 200
    spend = gate.ok("GET", f"/api/keys/{key['id']}")["spend"]
    assert spend == {"USD": {"day": "0.002000", "month": "0.002000", "total": "0.002000"}}


# --- /api/receipts -------------------------------------------------------------------


@pytest.fixture
def history(gate, upstream):
    """A mix of receipts: two keys, three models, both wallets, every status but pending."""
    k1, k2 = gate.create_key("one"), gate.create_key("two", settlement="routed")
    h1, h2 = gate.http(k1["key"]), gate.http(k2["key"])
    ids: dict[str, list[str]] = {"k1": [], "k2": []}

    def call(http, who: str, body: dict[str, Any], status: int, path: str = CHAT) -> None:
        resp = http.post(path, json=body)
        assert resp.status_code == status, resp.text
        ids[who].append(resp.headers["x-localgate-receipt"])

    for _ in range(3):
        call(h1, "k1", {"model": "gw-chat", "messages": MSG}, 200)
    call(h1, "k1", {"model": "gw-embed", "input": "hi"}, 200, "/v1/embeddings")
    call(h1, "k1", {"model": "nope", "messages": MSG}, 404)
    upstream.push(status=503)
    call(h1, "k1", {"model": "gw-chat", "messages": MSG}, 502)
    for _ in range(2):
        call(h2, "k2", {"model": "gw-routed", "messages": MSG}, 200)
    call(h2, "k2", {"model": "gw-chat", "messages": MSG}, 403)
    return {"k1": k1, "k2": k2, "ids": ids}


def listed(gate: gf.Gate, **params: str) -> list[str]:
    return [r["id"] for r in gate.receipts(**params)]


def test_receipt_filters(gate, history):
    k1, k2, ids = history["k1"], history["k2"], history["ids"]
    everything = gate.receipts()
    assert len(everything) == 9
    assert sorted(listed(gate, key=k1["id"])) == sorted(ids["k1"])
    assert sorted(listed(gate, key=k2["id"])) == sorted(ids["k2"])

    by_model = gate.receipts(model="gw-routed")
    assert len(by_model) == 2 and {r["model"] for r in by_model} == {"gw-routed"}
    assert [r["model"] for r in gate.receipts(model="nope")] == ["nope"]

    status_counts = {s: len(gate.receipts(status=s)) for s in ("succeeded", "failed", "rejected")}
    assert status_counts == {"succeeded": 6, "failed": 1, "rejected": 2}
    assert gate.receipts(status="pending") == []

    routed = gate.receipts(wallet="routed")
    assert len(routed) == 2 and all(r["currency"] == "CNY" for r in routed)
    credit = gate.receipts(wallet="credit")
    assert len(credit) == 5  # 3 chats, 1 embedding, 1 failed (it held on credit)
    assert all(r["wallet"] == "credit" for r in credit)

    both = gate.receipts(key=k1["id"], status="succeeded", model="gw-chat")
    assert len(both) == 3
    assert gate.receipts(key=k2["id"], wallet="credit") == []

    # Time: since / until bound created_at.
    ordered = sorted(everything, key=lambda r: r["created_at"])
    middle = ordered[4]["created_at"]
    since = gate.receipts(since=middle)
    until = gate.receipts(until=middle)
    assert {r["id"] for r in since} | {r["id"] for r in until} == {r["id"] for r in everything}
    assert all(r["created_at"] >= middle for r in since)
    assert all(r["created_at"] < middle for r in until)

    # The list carries the same receipt the detail endpoint does.
    for rec in everything:
        assert gate.receipt(rec["id"]) == rec


def test_receipt_cursor_pagination(gate, history):
    everything = listed(gate)
    assert everything == sorted(everything, reverse=True)  # newest first
    for limit in (1, 2, 4, 9, 50):
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params = {"limit": str(limit)}
            if cursor:
                params["cursor"] = cursor
            page = gate.ok("GET", "/api/receipts", params=params)
            assert len(page["receipts"]) <= limit
            seen += [r["id"] for r in page["receipts"]]
            pages += 1
            cursor = page["next"]
            if cursor is None:
                break
            assert cursor == page["receipts"][-1]["id"]
        assert seen == everything, limit
        assert pages == max(1, -(-9 // limit))

    # Filters and the cursor together.
    k1 = history["k1"]["id"]
    seen, cursor = [], None
    while True:
        params = {"key": k1, "status": "succeeded", "limit": "1"}
        if cursor:
            params["cursor"] = cursor
        page = gate.ok("GET", "/api/receipts", params=params)
        seen += page["receipts"]
        cursor = page["next"]
        if cursor is None:
            break
    assert len(seen) == 4 and {r["key"]["id"] for r in seen} == {k1}


def test_receipts_api_errors(gate, history):
    resp = gate.api("GET", "/api/receipts/rc_doesnotexist")
    assert resp.status_code == 404
    assert admin_error(resp)["code"] == "unknown_receipt"
    resp = gate.api("GET", "/api/receipts", params={"limit": "lots"})
    assert resp.status_code == 400
    admin_error(resp)
    # Out-of-range limits are clamped, not refused.
    assert len(gate.ok("GET", "/api/receipts", params={"limit": "0"})["receipts"]) == 1
    assert len(gate.ok("GET", "/api/receipts", params={"limit": "100000"})["receipts"]) == 9


def test_receipts_never_carry_secrets(gate, history):
    text = json.dumps(gate.receipts())
    for key in (history["k1"], history["k2"]):
        assert key["key"] not in text
    assert gf.UPSTREAM_KEY not in text
