"""Shared fixtures. Every test runs with a fresh tmp data dir and no network.

- ``settings`` / ``client``: the default settings in the test's data dir and the
  app over ASGI (Litestar's async test client). A module changes the settings by
  overriding ``settings_overrides`` (dotted config keys).
- ``gate`` / ``live_gate``: localgate in front of the fake upstream, from the
  module's ``gateway_config`` fixture (a ``gateway_fixtures.GatewaySetup``):
  ``gate`` runs in-process, ``live_gate`` on a real socket (stream timing,
  disconnects, SDK round trips, concurrency; those tests are marked ``slow``).
- ``browser`` / ``shot``: Debian's chromium through Playwright, and a screenshot
  saver writing to ``screenshots`` ($LOCALGATE_SCREENSHOTS, else a tmp dir).

Markers (pyproject.toml): ``slow`` and ``browser``; ``make test-fast`` leaves both out.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import gateway_fixtures as gf
import httpx
import pytest
from httpx._transports import default as httpx_transports
from topup_helpers import app_client

from localgate.config import Settings, load_settings

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(autouse=True)
def _tmp_home(tmp_path, monkeypatch):
    """Never touch the user's data dir or config; never read their env."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("LOCALGATE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in (
        "LOCALGATE_ADMIN_TOKEN",
        "LOCALGATE_CONFIG",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "STRIPE_SECRET_KEY",
        "LOCALGATE_HOSTED_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    return data_dir


# -- one TLS context -------------------------------------------------------------


_create_ssl_context = httpx_transports.create_ssl_context


@functools.cache
def _default_tls_context(trust_env: bool) -> Any:
    return _create_ssl_context(verify=True, trust_env=trust_env)


def _shared_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> Any:
    if verify is True and cert is None:
        return _default_tls_context(trust_env)
    return _create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)


@pytest.fixture(autouse=True, scope="session")
def _one_tls_context() -> Iterator[None]:
    """Every httpx transport loads the CA bundle into a new TLS context (~25 ms);
    the app makes 17 of them at start-up and every test client one more. Nothing
    here speaks TLS (all traffic is plain HTTP on 127.0.0.1), so one context,
    loaded once, serves them all."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(httpx_transports, "create_ssl_context", _shared_ssl_context)
        yield


# -- the app over ASGI -------------------------------------------------------------


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Dotted config keys to change in ``settings``; a test module overrides this."""
    return {}


@pytest.fixture
def settings(settings_overrides: dict[str, Any]) -> Settings:
    """Settings as ``load_settings()`` finds them in the test's data dir."""
    loaded = load_settings(overrides=settings_overrides)
    gf.seed_database(loaded.db_path)
    return loaded


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[Any]:
    """The app of ``settings`` through ASGI (its lifespan runs around the test)."""
    async with app_client(settings) as c:
        yield c


@pytest.fixture
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    """A plain async HTTP client, for providers built by hand."""
    async with httpx.AsyncClient() as c:
        yield c


# -- the gateway in front of the fake upstream ------------------------------------


@pytest.fixture
def gate(tmp_path: Path, gateway_config: gf.GatewaySetup) -> Iterator[gf.Gate]:
    """The module's gateway, in-process: for request/response tests."""
    with gf.open_gate(tmp_path, gateway_config, in_process=True) as g:
        yield g


@pytest.fixture
def live_gate(tmp_path: Path, gateway_config: gf.GatewaySetup) -> Iterator[gf.Gate]:
    """The module's gateway served by uvicorn on 127.0.0.1: where the socket matters."""
    with gf.open_gate(tmp_path, gateway_config, in_process=False) as g:
        yield g


# -- the browser --------------------------------------------------------------------


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where browser journeys save screenshots: $LOCALGATE_SCREENSHOTS if set (e.g.
    artifacts/screenshots, to look at them), else pytest's tmp dir, outside the
    checkout (pytest keeps the last three runs')."""
    chosen = os.environ.get("LOCALGATE_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (skips without chromium)."""
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def shot(screenshots: Path) -> Callable[..., Path]:
    """``shot(page, name)`` saves the page as <name>.png in ``screenshots``: the whole
    page, or with ``full_page=False`` the viewport (what is above the fold)."""

    def save(page: Any, name: str, *, full_page: bool = True) -> Path:
        path = screenshots / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return save
