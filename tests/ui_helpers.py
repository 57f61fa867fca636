"""Helpers for the UI tests.

``ui_client(tmp_path)`` builds the app with ``create_app`` and yields a :class:`UI`:
an httpx client over the ASGI app, logged in through the login link, that adds
the page's CSRF token and a same-origin Origin to form posts, plus admin-API
helpers. ``live_server(tmp_path)`` serves the same app with uvicorn on a free
127.0.0.1 port in a thread, for the browser journeys and the real SDK clients.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from gateway_fixtures import free_socket, seed_database, start_uvicorn, wait_started
from litestar.testing import AsyncTestClient

from localgate.config import Settings, load_settings
from localgate.web.app import create_app

BASE = "http://127.0.0.1:4311"
SECRET_RE = re.compile(r'id="new-key" data-key-id="([^"]+)">([^<]+)<')
RECEIPT_RE = re.compile(r'data-receipt="([^"]+)"')


def make_settings(
    tmp_path: Path, config: str = "", env: Mapping[str, str] | None = None, port: int = 4311
) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "config.toml"
    path.write_text(f"[server]\nport = {port}\n{config}")
    settings = load_settings(data_dir=data_dir, config_path=path, env=dict(env or {}))
    seed_database(settings.db_path)
    return settings


@dataclass
class UI:
    client: Any
    settings: Settings
    app: Any
    csrf: str = ""

    @property
    def state(self) -> Any:
        return self.app.state

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.settings.admin_token}"}

    async def login(self) -> None:
        resp = await self.client.get(
            f"/login?token={self.settings.admin_token}", follow_redirects=False
        )
        assert resp.status_code == 302, resp.text
        page = await self.client.get("/keys")
        self.csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.client.get(path, **kw)

    async def post(
        self, path: str, data: Mapping[str, str] | None = None, **kw: Any
    ) -> httpx.Response:
        form = {"csrf_token": self.csrf, **(data or {})}
        headers = {"origin": BASE, **kw.pop("headers", {})}
        return await self.client.post(path, data=form, headers=headers, **kw)

    async def api(self, method: str, path: str, **kw: Any) -> Any:
        resp = await self.client.request(method, path, headers=self.admin_headers, **kw)
        assert resp.status_code < 300, (resp.status_code, resp.text)
        return resp.json()

    async def fund(self, wallet: str, amount: str) -> None:
        await self.api(
            "POST", "/api/adjustments", json={"wallet": wallet, "amount": amount, "reason": "test"}
        )

    async def wallet(self, wallet_id: str) -> dict[str, Any]:
        wallets = (await self.api("GET", "/api/wallets"))["wallets"]
        return next(w for w in wallets if w["id"] == wallet_id)

    async def create_key(self, **form: str) -> tuple[str, str, httpx.Response]:
        """Create a key through the form: (id, secret, the page that showed it)."""
        resp = await self.post("/keys", {"label": "laptop", "settlement": "any", **form})
        assert resp.status_code == 200, resp.text
        found = SECRET_RE.search(resp.text)
        assert found, "the created key is not on the page"
        return found.group(1), found.group(2), resp

    async def v1(
        self, secret: str, body: dict[str, Any], path: str = "/v1/chat/completions"
    ) -> httpx.Response:
        return await self.client.post(
            path, json=body, headers={"authorization": f"Bearer {secret}", "user-agent": "curl/8.5"}
        )


@contextlib.asynccontextmanager
async def ui_client(
    tmp_path: Path, config: str = "", env: Mapping[str, str] | None = None, *, login: bool = True
) -> AsyncIterator[UI]:
    settings = make_settings(tmp_path, config, env)
    app = create_app(settings)
    async with AsyncTestClient(app, base_url=BASE) as client:
        ui = UI(client, settings, app)
        if login:
            await ui.login()
        yield ui


def chat(model: str = "localgate-demo", content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


# -- a live server -------------------------------------------------------------


@dataclass
class Live:
    settings: Settings
    app: Any
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def admin(self, method: str, path: str, **kw: Any) -> Any:
        resp = httpx.request(
            method,
            self.base_url + path,
            headers={"authorization": f"Bearer {self.settings.admin_token}"},
            timeout=20,
            **kw,
        )
        assert resp.status_code < 300, (resp.status_code, resp.text)
        return resp.json()

    def fund(self, wallet: str, amount: str) -> None:
        self.admin(
            "POST", "/api/adjustments", json={"wallet": wallet, "amount": amount, "reason": "test"}
        )


@contextlib.contextmanager
def live_server(
    tmp_path: Path, config: str = "", env: Mapping[str, str] | None = None
) -> Iterator[Live]:
    sock = free_socket()
    port = sock.getsockname()[1]
    settings = make_settings(tmp_path, config, env, port=port)
    app = create_app(settings)
    server, thread = start_uvicorn(app, sock)
    try:
        wait_started(server, thread)
        yield Live(settings, app, port)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
