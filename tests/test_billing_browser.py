"""The top-up journeys in a real browser: Playwright driving Debian's chromium
against a localgate server on 127.0.0.1 with the sandbox provider.

Screenshots of the post-payment page in each state are saved in the
``screenshots`` dir (conftest.py: $LOCALGATE_SCREENSHOTS, else a tmp dir).
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterator
from typing import Any

import gateway_fixtures as gf
import httpx
import pytest
import uvicorn

from localgate.config import Settings, load_settings
from localgate.web.app import create_app

pytestmark = pytest.mark.browser


class Server:
    def __init__(
        self, settings: Settings, port: int, uv: uvicorn.Server, thread: threading.Thread
    ) -> None:
        self.settings = settings
        self.base = f"http://127.0.0.1:{port}"
        self.uv = uv
        self.thread = thread
        self.api = httpx.Client(
            base_url=self.base,
            timeout=20,
            headers={"authorization": f"Bearer {settings.admin_token}"},
        )


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    sock = gf.free_socket()
    port = sock.getsockname()[1]
    settings = load_settings(data_dir=tmp_path / "data", overrides={"server.port": port})
    uv, thread = gf.start_uvicorn(create_app(settings), sock)
    gf.wait_started(uv, thread)
    srv = Server(settings, port, uv, thread)
    try:
        yield srv
    finally:
        srv.api.close()
        uv.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture
def page(browser, server) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(15_000)
    pg.goto(f"{server.base}/login?token={server.settings.admin_token}")
    try:
        yield pg
    finally:
        context.close()


@pytest.fixture
def shot(shot):
    """The viewport only: the post-payment page must say it all above the fold."""
    return functools.partial(shot, full_page=False)


def start_topup(
    pg: Any, server: Server, *, wallet: str = "credit", amount: str = "20", method: str = "card"
) -> str:
    pg.goto(f"{server.base}/billing")
    pg.check(f"input[name=wallet][value={wallet}]")
    pg.fill("#amount", amount)
    pg.check(f"input[name=method][value={method}]")
    pg.click("text=Continue to payment")
    pg.wait_for_url(re.compile(r"/sandbox/checkout/tu_"))
    assert "SANDBOX CHECKOUT" in pg.inner_text(".sandbox-stamp")
    return pg.url.rsplit("/", 1)[1]


def hero(pg: Any) -> str:
    return pg.inner_text("#outcome")


def test_top_up_credit_pay_land_and_create_a_key(page, server, shot):
    topup_id = start_topup(page, server)
    page.click("#sandbox-pay")
    page.wait_for_url(f"{server.base}/billing/topups/{topup_id}")
    text = hero(page)
    assert "$20.00 arrived in Credit" in text
    assert "$0.000000 → $20.000000" in text
    assert "Ready to use now" in text and "localgate-demo" in text
    t = server.api.get(f"/api/topups/{topup_id}").json()
    entry = t["ledger_entry_id"]
    link = page.locator("#ledger-link")
    assert link.get_attribute("href") == f"/wallets/credit#entry-{entry}"
    assert page.locator("#ledger-json").get_attribute("href") == f"/api/ledger/entries/{entry}"
    assert page.locator("#outcome").bounding_box()["y"] + 300 < 800  # above the fold
    assert page.locator("#next-key").bounding_box()["y"] < 800
    shot(page, "topup_completed")
    page.click("#next-key")
    page.wait_for_url(re.compile(r"/keys\?settlement=official$"))
    shot(page, "topup_completed_next_create_key")
    assert server.api.get("/api/wallets").json()["wallets"][0]["balance_micros"] == 20_000_000


def test_pay_later_is_pending_then_completes_by_itself(page, server, shot):
    topup_id = start_topup(page, server, method="wechat_pay")
    page.click("#sandbox-pay_later")
    page.wait_for_url(f"{server.base}/billing/topups/{topup_id}")
    text = hero(page)
    assert "Waiting for your payment of $20.00" in text
    assert "WeChat Pay confirmation" in text and "safe to close" in text
    shot(page, "topup_pending")
    # No clicks: the page polls, the sandbox settles after a few seconds, the page reloads.
    page.wait_for_selector("text=$20.00 arrived in Credit", timeout=30_000)
    assert "$0.000000 → $20.000000" in hero(page)
    shot(page, "topup_pending_then_completed")
    events = server.api.get(f"/api/topups/{topup_id}").json()["events"]
    assert [e["to"] for e in events if e["applied"]] == ["created", "pending", "completed"]


def test_cancel_on_the_checkout_moves_no_money_and_offers_a_retry(page, server, shot):
    topup_id = start_topup(page, server)
    page.click("#sandbox-cancel")
    page.wait_for_url(f"{server.base}/billing/topups/{topup_id}")
    text = hero(page)
    assert "No money moved" in text and "canceled" in text and "Nothing was charged" in text
    shot(page, "topup_canceled")
    page.click("#retry")
    page.wait_for_url(re.compile(r"/sandbox/checkout/tu_"))
    assert page.url.rsplit("/", 1)[1] != topup_id


def test_the_other_states_for_the_record(page, server, shot):
    """Declined, expired, refunded, disputed and reinstated, each photographed."""
    api = server.api

    def new(amount: str = "20") -> str:
        return api.post("/api/topups", json={"wallet": "credit", "amount": amount}).json()["id"]

    def act(topup_id: str, action: str, **extra: str) -> None:
        resp = api.post(
            f"/sandbox/checkout/{topup_id}", data={"action": action, **extra}, follow_redirects=True
        )
        assert resp.status_code == 200, resp.text

    def visit(topup_id: str, name: str, expect: str) -> None:
        page.goto(f"{server.base}/billing/topups/{topup_id}")
        assert expect in hero(page)
        shot(page, name)

    declined = new()
    act(declined, "decline")
    visit(declined, "topup_failed", "card was declined")
    expired = new()
    act(expired, "expire")
    visit(expired, "topup_expired", "The checkout expired")
    refunded = new("30")
    act(refunded, "pay")
    act(refunded, "refund", amount="10")
    visit(refunded, "topup_refunded", "$10.00 of this $30.00 top-up was refunded")
    disputed = new("10")
    act(disputed, "pay")
    act(disputed, "dispute")
    visit(disputed, "topup_disputed", "This $10.00 top-up is disputed")
    act(disputed, "dispute_won")
    visit(disputed, "topup_reinstated", "$10.00 arrived in Credit")
