"""The Keys page: create (shown once), limits, pause / resume / revoke / rotate, the kill
switch, spend against budgets, tool setup, and the test request through /v1."""

from __future__ import annotations

import hashlib
import re
from html import unescape

from click.testing import CliRunner
from ui_helpers import RECEIPT_RE, chat, ui_client

from localgate.cli import main as cli_main

DEMO = "localgate-demo"


async def test_keys_page_needs_login(tmp_path):
    async with ui_client(tmp_path, login=False) as ui:
        resp = await ui.get("/keys", follow_redirects=False)
        assert resp.status_code in (302, 303)
        assert resp.headers["location"].startswith("/login/help")


async def test_create_shows_the_key_once_and_never_again(tmp_path):
    async with ui_client(tmp_path) as ui:
        key_id, secret, page = await ui.create_key(label="cursor laptop", project="acme")
        assert secret.startswith("lg_") and len(secret) == 46
        assert page.headers["cache-control"] == "no-store"
        assert 'data-copy="' + secret + '"' in page.text  # the copy button carries it
        # Every tool's snippet on this page has the real key and the base URL.
        for tool in ("cursor", "continue", "cline", "aider", "claude-code", "codex", "curl"):
            assert f'data-tool="{tool}"' in page.text
        assert page.text.count(secret) > 9
        assert "http://127.0.0.1:4311/v1" in page.text

        digest = hashlib.sha256(secret.encode()).hexdigest()
        for path in (
            "/keys",
            f"/keys/{key_id}",
            "/models",
            "/playground",
            "/settings",
            f"/playground?key={key_id}",
            "/api/keys",
            f"/api/keys/{key_id}",
        ):
            resp = await ui.client.get(path, headers=ui.admin_headers)
            assert resp.status_code == 200, path
            assert secret not in resp.text, path
            assert digest not in resp.text, path
        detail = await ui.get(f"/keys/{key_id}")
        prefix = (await ui.api("GET", f"/api/keys/{key_id}"))["prefix"]
        # Afterwards the snippets carry the prefix as a placeholder.
        assert f"export OPENAI_API_KEY={prefix}" in detail.text.replace("&amp;", "&")
        assert "cursor laptop" in detail.text and "acme" in detail.text


async def test_create_stores_every_limit(tmp_path):
    async with ui_client(tmp_path) as ui:
        key_id, _, _ = await ui.create_key(
            label="ci",
            project="proj",
            models="gpt-4o* localgate-demo",
            settlement="routed",
            budget_USD_day="5",
            budget_CNY_month="100.50",
            rpm="30",
            expires_at="2030-01-02T03:04",
        )
        key = await ui.api("GET", f"/api/keys/{key_id}")
        assert key["project"] == "proj"
        assert key["models"] == ["gpt-4o*", "localgate-demo"]
        assert key["settlement"] == "routed"
        assert key["budgets"]["USD"]["day_micros"] == 5_000_000
        assert key["budgets"]["CNY"]["month_micros"] == 100_500_000
        assert key["budgets"]["USD"]["month"] is None
        assert key["rpm"] == 30
        assert key["expires_at"] == 1893553440.0  # 2030-01-02 03:04 UTC


async def test_create_form_is_preset_from_the_billing_link(tmp_path):
    async with ui_client(tmp_path) as ui:
        page = await ui.get("/keys?settlement=routed")
        assert re.search(r'value="routed" checked', page.text)
        assert not re.search(r'value="any" checked', page.text)
        page = await ui.get("/keys?settlement=bogus")
        assert re.search(r'value="any" checked', page.text)


async def test_create_with_a_bad_budget_explains_and_keeps_the_form(tmp_path):
    async with ui_client(tmp_path) as ui:
        resp = await ui.post("/keys", {"label": "x", "budget_USD_day": "five", "project": "keepme"})
        assert resp.status_code == 400
        assert "budgets.USD.day" in resp.text
        assert 'value="keepme"' in resp.text
        assert (await ui.api("GET", "/api/keys"))["keys"] == []
        resp = await ui.post("/keys", {"label": "", "rpm": "1"})
        assert resp.status_code == 400 and "label" in resp.text


async def test_forms_need_csrf_and_same_origin(tmp_path):
    async with ui_client(tmp_path) as ui:
        resp = await ui.client.post(
            "/keys", data={"label": "x"}, headers={"origin": "http://127.0.0.1:4311"}
        )
        assert resp.status_code == 403 and "csrf" in resp.text.lower()
        resp = await ui.post("/keys/pause-all", headers={"origin": "http://evil.example"})
        assert resp.status_code == 403
        assert (await ui.api("GET", "/api/keys"))["keys"] == []


async def test_send_a_test_request_makes_a_real_receipt(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("routed", "1")
        key_id, secret, created = await ui.create_key()
        # The created page's test form carries the secret and a model the key may call.
        assert re.search(r"<option selected>localgate-demo</option>", created.text)
        resp = await ui.post(f"/keys/{key_id}/test", {"secret": secret, "model": DEMO})
        assert resp.status_code == 200
        assert 'id="test-ok"' in resp.text
        receipt_id = RECEIPT_RE.search(resp.text).group(1)
        assert f'href="/receipts/{receipt_id}"' in resp.text
        receipt = await ui.api("GET", f"/api/receipts/{receipt_id}")
        assert receipt["status"] == "succeeded"
        assert receipt["endpoint"] == "/v1/chat/completions"
        assert receipt["key"]["id"] == key_id
        assert receipt["client"] == "localgate playground"
        assert receipt["charge_micros"] > 0 and receipt["ledger_entry_id"]
        wallet = await ui.wallet("routed")
        assert wallet["balance_micros"] == 1_000_000 - receipt["charge_micros"]
        assert secret not in resp.text
        # The spend shows on the key's page.
        detail = await ui.get(f"/keys/{key_id}")
        assert f"¥{receipt['charge']}" in detail.text


async def test_test_request_errors_are_clear(tmp_path):
    async with ui_client(tmp_path) as ui:
        key_id, secret, _ = await ui.create_key()
        _, other_secret, _ = await ui.create_key(label="other")
        resp = await ui.post(f"/keys/{key_id}/test", {"secret": "", "model": DEMO})
        assert "paste the key's secret" in unescape(resp.text)
        resp = await ui.post(f"/keys/{key_id}/test", {"secret": other_secret, "model": DEMO})
        assert "belongs to another key ('other')" in unescape(resp.text)
        resp = await ui.post(f"/keys/{key_id}/test", {"secret": "lg_nope", "model": DEMO})
        assert "invalid API key" in resp.text
        # Empty wallets: 402 with the wallet named, a top-up link, and a receipt.
        resp = await ui.post(f"/keys/{key_id}/test", {"secret": secret, "model": DEMO})
        assert "HTTP 402" in resp.text and "insufficient_balance" in resp.text
        assert 'href="/billing?wallet=routed"' in resp.text
        receipt = await ui.api("GET", f"/api/receipts/{RECEIPT_RE.search(resp.text).group(1)}")
        assert receipt["status"] == "rejected" and receipt["charge_micros"] == 0


async def test_pause_resume_revoke(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("routed", "1")
        key_id, secret, _ = await ui.create_key(label="agent")
        resp = await ui.post(f"/keys/{key_id}/pause", follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"] == f"/keys/{key_id}?done=pause"
        refused = await ui.v1(secret, chat())
        assert refused.status_code == 403
        error = refused.json()["error"]
        assert error["code"] == "key_paused"
        assert "'agent'" in error["message"] and "Resume it" in error["message"]
        page = await ui.get(f"/keys/{key_id}?done=pause")
        assert "status-paused" in page.text and "Paused: requests" in page.text

        await ui.post(f"/keys/{key_id}/resume")
        assert (await ui.v1(secret, chat())).status_code == 200

        await ui.post(f"/keys/{key_id}/revoke")
        refused = await ui.v1(secret, chat())
        assert refused.status_code == 401 and "revoked" in refused.json()["error"]["message"]
        resp = await ui.post(f"/keys/{key_id}/resume")
        assert resp.status_code == 400 and "revoked" in resp.text


async def test_rotate_keeps_id_receipts_and_spend(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("routed", "1")
        key_id, old, _ = await ui.create_key(budget_CNY_day="1")
        first = await ui.v1(old, chat())
        assert first.status_code == 200
        spend_before = ui.state.gateway.keys.spend_report(key_id)

        page = await ui.post(f"/keys/{key_id}/rotate")
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        new_id, new = re.search(r'data-key-id="([^"]+)">([^<]+)<', page.text).groups()
        assert new_id == key_id and new != old
        assert "The old secret stopped working" in page.text

        assert (await ui.v1(old, chat())).status_code == 401
        second = await ui.v1(new, chat())
        assert second.status_code == 200
        assert ui.state.gateway.keys.spend_report(key_id) != spend_before  # still adding up
        receipts = (await ui.api("GET", f"/api/receipts?key={key_id}"))["receipts"]
        ids = {r["id"] for r in receipts}
        assert {first.headers["x-localgate-receipt"], second.headers["x-localgate-receipt"]} <= ids
        rows = ui.state.store.read().execute("SELECT key_hash FROM api_keys").fetchall()
        hashes = {row[0] for row in rows}
        assert hashlib.sha256(new.encode()).hexdigest() in hashes
        assert hashlib.sha256(old.encode()).hexdigest() not in hashes
        # The policy came along unchanged.
        key = await ui.api("GET", f"/api/keys/{key_id}")
        assert key["budgets"]["CNY"]["day_micros"] == 1_000_000


async def test_kill_switch_pauses_every_key(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("routed", "1")
        secrets = [(await ui.create_key(label=f"k{i}"))[1] for i in range(3)]
        keys_page = await ui.get("/keys")
        assert "3 active now" in keys_page.text
        resp = await ui.post("/keys/pause-all", follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"] == "/keys?paused=3"
        page = await ui.get("/keys?paused=3")
        assert "Kill switch:" in page.text and "3 keys paused" in page.text
        for secret in secrets:
            refused = await ui.v1(secret, chat())
            assert refused.status_code == 403
            assert refused.json()["error"]["code"] == "key_paused"
        keys = (await ui.api("GET", "/api/keys"))["keys"]
        assert {k["status"] for k in keys} == {"paused"}


async def test_edit_changes_limits_and_keeps_state(tmp_path):
    async with ui_client(tmp_path) as ui:
        key_id, _, _ = await ui.create_key(budget_USD_day="1")
        await ui.post(f"/keys/{key_id}/pause")
        resp = await ui.post(
            f"/keys/{key_id}/edit",
            {"label": "renamed", "budget_USD_day": "", "budget_USD_month": "20", "rpm": "5"},
            follow_redirects=False,
        )
        assert resp.status_code == 303
        key = await ui.api("GET", f"/api/keys/{key_id}")
        assert key["label"] == "renamed" and key["status"] == "paused" and key["rpm"] == 5
        assert key["budgets"]["USD"]["day"] is None
        assert key["budgets"]["USD"]["month_micros"] == 20_000_000
        bad = await ui.post(f"/keys/{key_id}/edit", {"label": "x", "rpm": "many"})
        assert bad.status_code == 400 and "rate limit" in bad.text


async def test_spend_against_budgets_on_the_pages(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("routed", "1")
        key_id, secret, _ = await ui.create_key(budget_CNY_day="0.01")
        assert (await ui.v1(secret, chat())).status_code == 200
        report = ui.state.gateway.keys.spend_report(key_id)
        cny = next(r for r in report if r["currency"] == "CNY")
        day = cny["windows"][0]
        assert day["limit_micros"] == 10_000 and 0 < day["spent_micros"] < 10_000
        assert 0 < day["percent"] < 100
        page = await ui.get(f"/keys/{key_id}")
        assert "<meter" in page.text and "¥0.010000" in page.text
        listing = await ui.get("/keys")
        assert "of ¥0.010000" in listing.text


async def test_admin_api_and_cli_rotate_and_kill_switch(tmp_path):
    async with ui_client(tmp_path) as ui:
        key_id, old, _ = await ui.create_key()
        rotated = await ui.api("POST", f"/api/keys/{key_id}/rotate")
        assert rotated["id"] == key_id and rotated["key"] != old
        assert (await ui.api("POST", "/api/keys/pause-all")) == {"paused": 1}

    data_dir = str(tmp_path / "data")
    runner = CliRunner()
    out = runner.invoke(cli_main, ["--data-dir", data_dir, "keys", "resume", key_id])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli_main, ["--data-dir", data_dir, "keys", "rotate", key_id, "--json"])
    assert out.exit_code == 0, out.output
    assert '"key": "lg_' in out.output
    out = runner.invoke(cli_main, ["--data-dir", data_dir, "keys", "pause-all"])
    assert out.exit_code == 0 and "paused 1 key(s)" in out.output
