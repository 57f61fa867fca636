"""Browser journeys on the Keys, Playground, Models and Settings pages (Playwright driving
Debian's chromium): create a key -> copy it -> send a test request -> its receipt; a
playground run -> its receipt page; the kill switch -> a tool's request is refused with
a clear error. Screenshots go to the ``screenshots`` dir (conftest.py)."""

from __future__ import annotations

import re

import openai
import pytest
from ui_helpers import live_server

pytest.importorskip("playwright")
from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.browser
SLOW_DEMO = '[[channels]]\nid = "demo"\nkind = "demo"\noptions = { chunk_delay_ms = 25 }\n'


def logged_in(browser: Browser, live) -> Page:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live.base_url)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live.base_url}/login?token={live.settings.admin_token}")
    return page


def test_create_key_copy_send_test_request_then_receipt(browser, tmp_path, shot):
    with live_server(tmp_path) as live:
        live.fund("routed", "2")
        page = logged_in(browser, live)
        page.goto(f"{live.base_url}/keys")
        shot(page, "keys-empty")
        page.fill("#label", "cursor laptop")
        page.fill("#project", "acme")
        page.fill('input[name="budget_CNY_day"]', "2")
        page.fill("#rpm", "60")
        page.click("button:has-text('Create key')")

        page.wait_for_selector("#new-key")
        secret = page.inner_text("#new-key").strip()
        assert re.fullmatch(r"lg_[A-Za-z0-9_-]{43}", secret)
        assert page.locator("[data-tool='cursor']").count() == 1
        shot(page, "key-created")

        page.click("#copy-key")
        page.wait_for_function("document.getElementById('copy-key').textContent === 'Copied'")
        assert page.evaluate("navigator.clipboard.readText()") == secret
        # The tab remembers the fresh secret for the playground and the test button.
        key_id = page.get_attribute("#new-key", "data-key-id")
        stored = page.evaluate(f"sessionStorage.getItem('localgate.key.{key_id}')")
        assert stored == secret

        page.click("#send-test")
        page.wait_for_selector("#test-ok")
        receipt_id = page.get_attribute("[data-receipt]", "data-receipt")
        assert page.inner_text("#answer").strip()
        shot(page, "key-test-request")
        receipt = live.admin("GET", f"/api/receipts/{receipt_id}")
        assert receipt["status"] == "succeeded" and receipt["key"]["id"] == key_id
        assert receipt["endpoint"] == "/v1/chat/completions" and receipt["charge_micros"] > 0

        page.click("a.button:has-text('Open the receipt')")
        page.wait_for_url(f"**/receipts/{receipt_id}")
        assert receipt_id in page.content()
        shot(page, "receipt-from-test-request")

        # The key's page: spend against its budget, setup with the prefix placeholder.
        page.goto(f"{live.base_url}/keys/{key_id}")
        assert secret not in page.content()
        assert page.locator("meter").count() >= 1
        assert page.input_value("#secret") == secret  # filled from this tab's memory
        shot(page, "key-detail")
        page.goto(f"{live.base_url}/keys")
        assert "cursor laptop" in page.content() and secret not in page.content()
        shot(page, "keys")


def test_playground_run_streams_then_its_receipt_page(browser, tmp_path, shot):
    with live_server(tmp_path, SLOW_DEMO) as live:
        live.fund("routed", "2")
        page = logged_in(browser, live)
        page.goto(f"{live.base_url}/playground")
        assert page.locator("#preview-rows tr").count() == 2
        before = page.inner_text("#est-input")
        page.fill("#prompt", "Tell me, in a few words, what a ledger entry is. " * 5)
        page.wait_for_function(f"document.getElementById('est-input').textContent !== '{before}'")
        page.click("#send")
        # The answer grows while the stream is still open: it is streamed, not waited for.
        page.wait_for_function(
            "document.getElementById('answer').textContent.length > 0 && "
            "document.getElementById('send-status').textContent.startsWith('Streaming')"
        )
        page.wait_for_selector("#receipt [data-receipt]")
        receipt_id = page.get_attribute("#receipt [data-receipt]", "data-receipt")
        assert "demo model built into localgate" in page.inner_text("#answer")
        assert page.inner_text("#send-status").startswith("Charged")
        shot(page, "playground")
        receipt = live.admin("GET", f"/api/receipts/{receipt_id}")
        assert receipt["status"] == "succeeded" and receipt["stream"] is True
        assert receipt["key"]["label"] == "playground"
        assert receipt["client"] == "localgate playground"

        page.click("#receipt a.button:has-text('Open the receipt')")
        page.wait_for_url(f"**/receipts/{receipt_id}")
        assert receipt_id in page.content()
        shot(page, "receipt-from-playground")


def test_playground_without_javascript_still_answers(browser, tmp_path, shot):
    with live_server(tmp_path) as live:
        live.fund("routed", "2")
        context = browser.new_context(java_script_enabled=False)
        page = context.new_page()
        page.goto(f"{live.base_url}/login?token={live.settings.admin_token}")
        page.goto(f"{live.base_url}/playground")
        page.click("#send")
        page.wait_for_selector("#receipt [data-receipt]")
        assert "demo model built into localgate" in page.inner_text("#answer")
        shot(page, "playground-no-js")
        context.close()


def test_kill_switch_then_a_tool_request_is_refused_clearly(browser, tmp_path, shot):
    with live_server(tmp_path) as live:
        live.fund("routed", "2")
        keys = [
            live.admin("POST", "/api/keys", json={"label": f"agent {i}"})["key"] for i in (1, 2)
        ]
        client = openai.OpenAI(base_url=f"{live.base_url}/v1", api_key=keys[0], max_retries=0)
        ok = client.chat.completions.create(
            model="localgate-demo", messages=[{"role": "user", "content": "hi"}]
        )
        assert ok.choices[0].message.content

        page = logged_in(browser, live)
        page.goto(f"{live.base_url}/keys")
        dialogs: list[str] = []

        def accept(dialog):
            dialogs.append(dialog.message)
            dialog.accept()

        page.on("dialog", accept)
        page.click("button:has-text('Pause every key')")
        page.wait_for_selector("#kill-switch-done")
        assert "2 keys paused" in page.inner_text("#kill-switch-done")
        assert dialogs and "Pause every API key?" in dialogs[0]
        shot(page, "kill-switch")

        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.chat.completions.create(
                model="localgate-demo", messages=[{"role": "user", "content": "hi"}]
            )
        assert refused.value.status_code == 403
        assert refused.value.code == "key_paused"
        message = refused.value.body["message"]
        assert "'agent 1'" in message and "is paused" in message and "Resume it" in message
        client.close()


def test_models_and_settings_pages(browser, tmp_path, shot):
    with live_server(tmp_path) as live:
        page = logged_in(browser, live)
        page.goto(f"{live.base_url}/models?all=1")
        assert page.locator("tr[data-model='localgate-demo']").count() == 2
        shot(page, "models")

        page.goto(f"{live.base_url}/settings")
        page.fill("#ch-id", "relay")
        page.select_option("#ch-kind", "openai_compatible")
        page.fill("#ch-url", "https://relay.example/v1")
        page.select_option("#ch-settlement", "routed")
        page.fill("#ch-key", "sk-relay-secret-9876")
        page.click("button:has-text('Add channel')")
        page.wait_for_selector("tr[data-channel='relay']")
        assert "sk-relay-secret-9876" not in page.content()
        assert "Channel added" in page.content()
        shot(page, "settings")
        secrets = live.settings.data_dir / "secrets.toml"
        assert secrets.stat().st_mode & 0o777 == 0o600
