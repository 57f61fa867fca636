"""Shared helpers for the top-up tests: settings, the app through ASGI, login, ledger reads."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar.testing import AsyncTestClient

from localgate.config import Settings, load_settings
from localgate.services.topups import Topups
from localgate.store.db import open_db
from localgate.store.verify import verify
from localgate.web.app import create_app

BASE = "http://127.0.0.1:4311"
USD = 1_000_000


def payments(provider: str = "sandbox", **values: Any) -> dict[str, Any]:
    """Config overrides for a payments provider; ``a__b=v`` stands for ``a.b = v``."""
    overrides = {"payments.provider": provider}
    overrides.update({k.replace("__", "."): v for k, v in values.items()})
    return overrides


def make_settings(provider: str = "sandbox", **values: Any) -> Settings:
    return load_settings(overrides=payments(provider, **values))


def auth(settings: Settings) -> dict[str, str]:
    return {"Authorization": f"Bearer {settings.admin_token}"}


def no_loop(monkeypatch: Any) -> None:
    """Keep the background sync loop off, so a test decides when syncs happen."""

    async def start(self: Topups) -> None:
        return None

    monkeypatch.setattr(Topups, "start", start)


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(app=create_app(settings), base_url=BASE) as client:
        yield client


async def login(client: AsyncTestClient[Any], settings: Settings) -> str:
    """Log the client in (session cookie) and return the page's CSRF token."""
    await client.get(f"/login?token={settings.admin_token}")
    page = await client.get("/billing")
    match = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert match, page.text[:500]
    return match.group(1)


def form_headers() -> dict[str, str]:
    return {"Origin": BASE}


def ledger(
    settings: Settings, *, kind: str | None = None, topup: str | None = None
) -> list[dict[str, Any]]:
    conn = open_db(settings.db_path)
    try:
        sql, args = "SELECT * FROM entries WHERE 1 = 1", []
        if kind:
            sql += " AND kind = ?"
            args.append(kind)
        if topup:
            sql += " AND topup_id = ?"
            args.append(topup)
        return [dict(r) for r in conn.execute(sql + " ORDER BY id", args)]
    finally:
        conn.close()


def balance(settings: Settings, wallet: str = "credit") -> int:
    conn = open_db(settings.db_path)
    try:
        row = conn.execute(
            "SELECT COALESCE(SUM(balance_micros), 0) FROM accounts WHERE id IN (?, ?)",
            (f"wallet:{wallet}", f"hold:{wallet}"),
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


def wallet_row(settings: Settings, wallet: str = "credit") -> dict[str, Any]:
    conn = open_db(settings.db_path)
    try:
        return dict(conn.execute("SELECT * FROM wallets WHERE id = ?", (wallet,)).fetchone())
    finally:
        conn.close()


def text(html: str) -> str:
    """A page's visible text, whitespace collapsed (for asserting what it says)."""
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    html = re.sub(r"<[^>]+>", " ", html)
    return re.sub(r"\s+", " ", html).replace("&#39;", "'").replace("&amp;", "&").strip()


def verify_ok(settings: Settings) -> None:

    conn = open_db(settings.db_path)
    try:
        report = verify(conn)
    finally:
        conn.close()
    assert report.ok, report.first_error
