"""Browser journeys over the money pages (Playwright driving Debian's chromium).

- the login link (``serve`` on first run, ``localgate login``) -> the dashboard;
- receipts: filter by tool, export CSV, download it and parse it; open a
  receipt, follow its ledger entry to the wallet page.

Screenshots of each page go to the ``screenshots`` dir (conftest.py).
"""

from __future__ import annotations

import csv

import httpx
import pytest
from ui_helpers import chat, live_server

pytestmark = pytest.mark.browser

TOOLS = (
    ("Cursor/1.7.2", "cursor laptop"),
    ("claude-cli/2.0.1 (external, cli)", "claude box"),
    ("aider/0.86 openai/python 1.99", "aider"),
)


def _traffic(live) -> dict[str, list[str]]:
    """Requests from three tools on both paths, and one the gateway refuses."""
    live.fund("credit", "5")
    live.fund("routed", "40")
    by_tool: dict[str, list[str]] = {}
    with httpx.Client(base_url=live.base_url, timeout=20) as client:
        for n, (ua, label) in enumerate(TOOLS):
            # Claude Code's key may only pay official routes; the others take the
            # cheaper routed path first.
            key = live.admin(
                "POST",
                "/api/keys",
                json={
                    "label": label,
                    "project": "webapp" if n < 2 else "scripts",
                    "settlement": "official" if n == 1 else "any",
                },
            )
            for i in range(3 + n):
                body = chat(content=f"request {i} from {label}: summarise the diff")
                resp = client.post(
                    "/v1/chat/completions",
                    json=body,
                    headers={"authorization": f"Bearer {key['key']}", "user-agent": ua},
                )
                assert resp.status_code == 200, resp.text
                by_tool.setdefault(ua.split("/")[0], []).append(resp.headers["x-localgate-receipt"])
        refused = client.post(
            "/v1/chat/completions",
            json=chat(model="gpt-4o"),  # no openai channel configured here
            headers={"authorization": f"Bearer {key['key']}", "user-agent": TOOLS[2][0]},
        )
        assert refused.status_code == 404
    return by_tool


def test_login_link_opens_the_dashboard(tmp_path, browser, shot):
    with live_server(tmp_path) as live:
        _traffic(live)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{live.base_url}/receipts")
        assert page.url.startswith(f"{live.base_url}/login/help")
        assert "localgate serve" in page.inner_text("main")
        shot(page, "login-help")

        page.goto(f"{live.base_url}/login?token={live.settings.admin_token}")
        assert page.url == f"{live.base_url}/"
        assert page.inner_text("h1") == "Dashboard"
        assert page.locator('section[data-wallet="credit"] .balance').inner_text().startswith("$")
        assert page.locator("svg.chart").count() == 2
        assert page.locator("#top-tool").get_by_role("link", name="Cursor").count() == 1
        assert page.locator("#recent tbody tr").count() == 8
        shot(page, "dashboard")
        page.close()


def test_filter_receipts_export_csv_and_follow_a_receipt(tmp_path, browser, shot):
    with live_server(tmp_path) as live:
        by_tool = _traffic(live)
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, accept_downloads=True
        )
        page = context.new_page()
        page.goto(f"{live.base_url}/login?token={live.settings.admin_token}")
        page.get_by_role("link", name="Receipts", exact=True).first.click()
        page.wait_for_url("**/receipts")
        assert page.locator("table.receipts tbody tr").count() == 13  # 12 + the refused one

        page.select_option("#f-client", "Claude Code")
        page.select_option("#f-route_type", "official")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**/receipts?*client=Claude*")
        shown = page.locator("table.receipts tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.receipt)"
        )
        assert shown == list(reversed(by_tool["claude-cli"]))
        assert page.locator(".chip").count() == 2
        shot(page, "receipts")

        with page.expect_download() as info:
            page.locator("#export-csv").click()
        download = info.value
        assert download.suggested_filename.startswith("localgate-receipts-")
        assert download.suggested_filename.endswith(".csv")
        with open(download.path(), newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["id"] for r in rows] == shown
        assert {r["client"] for r in rows} == {"Claude Code"}
        assert {r["route_type"] for r in rows} == {"official"}
        assert all(int(r["charge_micros"]) > 0 and r["currency"] == "USD" for r in rows)

        # One receipt, then its ledger entry on the wallet page.
        page.locator(f'tr[data-receipt="{shown[0]}"] a').first.click()
        page.wait_for_url(f"**/receipts/{shown[0]}")
        assert page.locator("#receipt-id").inner_text() == shown[0]
        assert "Claude Code" in page.locator("#request").inner_text()
        assert page.locator(".counterfactual").inner_text().startswith("¥")
        shot(page, "receipt")

        entry = page.locator("#ledger-entry-link").get_attribute("href").rsplit("-", 1)[1]
        page.locator("#ledger-entry-link").click()
        page.wait_for_url(f"**/wallets/credit?at={entry}#entry-{entry}")
        row = page.locator(f"#entry-{entry}")
        assert "focus" in row.get_attribute("class")
        assert row.locator("details").evaluate("d => d.open")
        assert "hold:credit" in row.inner_text()
        shot(page, "wallet")

        # A bare #entry-N link (the post-payment page's form) finds the entry even
        # when the page shown does not hold it: here a filter hides the top-up.
        page.goto(f"{live.base_url}/wallets/credit?kind=settle#entry-1")
        page.wait_for_url("**/wallets/credit?at=1#entry-1")
        page.wait_for_selector("#entry-1.focus")
        assert page.locator("#entry-1 details").evaluate("d => d.open")
        context.close()
