"""Local safety of the wallet UI (ARCHITECTURE.md section 9).

Wrong Host -> refused; cross-origin post -> refused; no CSRF token -> refused;
no session -> sent to a page that explains how to log in; and no secret or key
hash on any page the UI can reach, nor in an export.
"""

from __future__ import annotations

import hashlib
import re
from html import unescape
from urllib.parse import urljoin, urlsplit

from ui_helpers import BASE, chat, ui_client

from localgate.core.receipts import Receipt, new_receipt_id
from localgate.store import receipts as receipt_store
from localgate.web.security import SESSION_COOKIE, csrf_token, sign_session

PAGES = ("/", "/wallets/credit", "/receipts", "/receipts/export.csv", "/receipts/export.jsonl")


async def _a_receipt(ui) -> str:
    await ui.fund("credit", "2")
    key = await ui.api("POST", "/api/keys", json={"label": "t"})
    resp = await ui.v1(key["key"], chat())
    assert resp.status_code == 200
    return resp.headers["x-localgate-receipt"]


async def test_wrong_host_is_refused_before_any_page(tmp_path):
    async with ui_client(tmp_path) as ui:
        rid = await _a_receipt(ui)
        for path in (*PAGES, f"/receipts/{rid}", "/login/help"):
            for host in ("evil.example", "localgate.attacker.test:4311", "127.0.0.1.nip.io"):
                resp = await ui.client.get(path, headers={"host": host})
                assert resp.status_code == 403, (path, host)
                assert resp.json()["error"]["code"] == "host_not_allowed"
        resp = await ui.client.post(
            "/wallets/credit/threshold",
            data={"csrf_token": ui.csrf, "amount": "1"},
            headers={"host": "evil.example", "origin": "http://evil.example"},
        )
        assert resp.status_code == 403
        # The right names still work, with or without a port.
        for host in ("127.0.0.1:4311", "localhost:4311", "localhost", "[::1]:4311"):
            assert (await ui.client.get("/", headers={"host": host})).status_code == 200, host


def _threshold(ui):
    row = ui.state.store.read().execute(
        "SELECT low_balance_micros FROM wallets WHERE id = 'credit'"
    )
    return row.fetchone()[0]


async def test_cross_origin_and_tokenless_posts_are_refused(tmp_path):
    async with ui_client(tmp_path) as ui:
        other_session = sign_session(ui.settings.admin_token)
        foreign_token = csrf_token(ui.settings.admin_token, other_session)
        cases = [
            ({"origin": "http://evil.example"}, ui.csrf, "cross_origin"),
            ({"origin": "http://127.0.0.1:4311.evil.example"}, ui.csrf, "cross_origin"),
            ({"origin": "null"}, ui.csrf, "cross_origin"),
            ({"referer": "http://evil.example/page"}, ui.csrf, "cross_origin"),
            ({}, ui.csrf, "cross_origin"),  # neither Origin nor Referer
            ({"origin": BASE}, None, "csrf_failed"),
            ({"origin": BASE}, "0" * 64, "csrf_failed"),
            ({"origin": BASE}, foreign_token, "csrf_failed"),  # another session's token
        ]
        for headers, token, code in cases:
            form = {"amount": "9"} if token is None else {"amount": "9", "csrf_token": token}
            resp = await ui.client.post("/wallets/credit/threshold", data=form, headers=headers)
            assert resp.status_code == 403, (headers, token)
            assert resp.json()["error"]["code"] == code, (headers, token)
        assert _threshold(ui) is None, "a refused post changed nothing"
        # The same post from the page itself goes through.
        resp = await ui.post("/wallets/credit/threshold", {"amount": "9"}, follow_redirects=False)
        assert resp.status_code == 303 and _threshold(ui) == 9_000_000


async def test_no_session_is_sent_to_a_page_that_explains_how_to_log_in(tmp_path):
    async with ui_client(tmp_path) as ui:
        rid = await _a_receipt(ui)
    async with ui_client(tmp_path, login=False) as ui:
        for path in (*PAGES, f"/receipts/{rid}", "/receipts?client=curl"):
            resp = await ui.get(path, follow_redirects=False)
            assert resp.status_code in (302, 303), path
            assert resp.headers["location"].startswith("/login/help?next="), path
        # A forged or stale cookie counts as none.
        ui.client.cookies.set(SESSION_COOKIE, "abc.def")
        resp = await ui.get("/receipts", follow_redirects=False)
        assert resp.headers["location"] == "/login/help?next=/receipts"
        help_page = await ui.get(resp.headers["location"])
        assert help_page.status_code == 200
        body = unescape(re.sub(r"<[^>]+>", " ", help_page.text))
        assert "localgate serve" in body and "admin-token" in body and "/login?token=" in body
        assert ui.settings.admin_token not in help_page.text
        # A form post without a session changes nothing.
        resp = await ui.client.post(
            "/wallets/credit/threshold",
            data={"amount": "1"},
            headers={"origin": BASE},
            follow_redirects=False,
        )
        assert resp.status_code in (302, 303)
        assert resp.headers["location"].startswith("/login/help")
        assert _threshold(ui) is None


def _links(html: str, here: str) -> set[str]:
    out = set()
    for href in re.findall(r'href="([^"#]+)', html):
        url = urljoin(BASE + here, unescape(href))
        parts = urlsplit(url)
        # Pages and exports; /api is the admin JSON API, not a page.
        if parts.netloc == urlsplit(BASE).netloc and not parts.path.startswith(
            ("/static", "/login", "/logout", "/api/")
        ):
            out.add(parts.path + (f"?{parts.query}" if parts.query else ""))
    return out


CHANNEL_SECRET = "sk-proj-UPSTREAMsecret0123456789abcdefXYZ"
STRIPE_SECRET = "sk_test_STRIPEsecret0123456789abcdefXYZ"
HOSTED_SECRET = "hosted-token-SECRET-0123456789abcdef"
CONFIG = """
[[channels]]
id = "openai"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "OPENAI_API_KEY"
settlement = "official"
"""


async def test_no_secret_or_key_hash_on_any_page_or_export(tmp_path):
    env = {
        "OPENAI_API_KEY": CHANNEL_SECRET,
        "STRIPE_SECRET_KEY": STRIPE_SECRET,
        "LOCALGATE_HOSTED_TOKEN": HOSTED_SECRET,
    }
    async with ui_client(tmp_path, CONFIG, env) as ui:
        await ui.fund("credit", "5")
        await ui.fund("routed", "50")
        key = await ui.api("POST", "/api/keys", json={"label": "leaky", "project": "p"})
        plain = key["key"]
        digest = hashlib.sha256(plain.encode()).hexdigest()
        stored = ui.state.store.read().execute("SELECT key_hash FROM api_keys").fetchone()[0]
        assert stored == digest
        for ua in ("Cursor/1.0", f"curl/8 (key {plain})"):
            resp = await ui.client.post(
                "/v1/chat/completions",
                json=chat(),
                headers={"authorization": f"Bearer {plain}", "user-agent": ua},
            )
            assert resp.status_code == 200
        # An upstream that echoes credentials into its error (it happens): stored as
        # text, it must still not come back out.
        echo = Receipt(
            id=new_receipt_id(),
            request_id="req_echo",
            created_at="2026-11-26T00:00:00.000000Z",
            endpoint="/v1/chat/completions",
            status="failed",
            key_id=key["id"],
            key_label="leaky",
            requested_model="gpt-4o",
            channel="openai",
            route_type="official",
            attempts=[{"channel": "openai", "error": f"401: bad key {CHANNEL_SECRET}"}],
            error=f"401 Incorrect API key {CHANNEL_SECRET}; Authorization: Bearer {plain}",
        )
        await ui.state.store.write(receipt_store.save, echo)

        secrets = {
            "api key": plain,
            "key hash": digest,
            "admin token": ui.settings.admin_token,
            "session": ui.client.cookies.get(SESSION_COOKIE),
            "channel key": CHANNEL_SECRET,
            "stripe key": STRIPE_SECRET,
            "hosted token": HOSTED_SECRET,
        }
        start = {*PAGES, "/login/help", f"/receipts/{echo.id}", "/keys", "/settings", "/billing"}
        seen: set[str] = set()
        queue = sorted(start)
        while queue and len(seen) < 150:
            path = queue.pop(0)
            if path in seen:
                continue
            seen.add(path)
            resp = await ui.get(path)
            for name, value in secrets.items():
                assert value not in resp.text, f"{name} appears on {path}"
            if resp.headers.get("content-type", "").startswith("text/html"):
                queue += sorted(_links(resp.text, path) - seen)
        assert {"/", "/receipts/export.csv", f"/receipts/{echo.id}", "/wallets/routed"} <= seen
        # What is left of the echoed secrets is their recognisable prefix.
        page = await ui.get(f"/receipts/{echo.id}")
        assert "sk-proj-…" in page.text and "Bearer …" in page.text
        export = await ui.get("/receipts/export.jsonl")
        assert "sk-proj-…" in export.text
