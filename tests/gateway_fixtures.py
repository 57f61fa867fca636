"""Helpers for the gateway tests: localgate in front of the fake upstream.

``run_gateway(tmp_path, channels=[...], models=[...])`` writes a config.toml,
loads settings with ``localgate.config.load_settings``, builds
``localgate.web.app.create_app(settings)`` and yields a :class:`Gate`: the base
URL, admin API helpers (keys, wallets, receipts, ledger) and client factories
(httpx, the ``openai`` SDK). By default the app is served with uvicorn on
127.0.0.1 in a background thread, the way an IDE tool talks to localgate;
``in_process=True`` runs it through its ASGI interface instead (no socket, the
same clients and helpers), which is what request/response tests want: it is
cheaper, but a response body arrives whole, so stream timing and disconnects
need the real server. The ``gate`` / ``live_gate`` fixtures of conftest.py
open one from a module's ``gateway_config`` (a :class:`GatewaySetup`).

``charge_of`` is the test's own price oracle (Decimal, half-up), written here
on purpose instead of calling ``localgate.core.pricing``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import uvicorn
from litestar.testing import TestClient
from litestar.testing.transport import TestClientTransport

from localgate.config import Settings, load_settings
from localgate.store import migrations
from localgate.store.db import open_db
from localgate.web.app import create_app

UPSTREAM_KEY_ENV = "FAKE_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-fake-upstream-secret"
IN_PROCESS_PORT = 4311  # what the config says when no socket is bound: URLs in answers use it

# -- config -------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def toml_config(
    server: Mapping[str, Any], channels: list[dict[str, Any]], models: list[dict[str, Any]]
) -> str:
    """The config.toml shape of ARCHITECTURE.md section 3 (just what the tests use)."""
    lines = ["[server]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in server.items()]
    for ch in channels:
        lines += ["", "[[channels]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in ch.items()]
    for m in models:
        lines += ["", "[[models]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in m.items() if k != "routes"]
        for r in m.get("routes", []):
            lines += ["[[models.routes]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in r.items()]
    return "\n".join(lines) + "\n"


def channel(
    cid: str,
    base_url: str,
    *,
    kind: str = "openai_compatible",
    settlement: str = "official",
    **extra: Any,
) -> dict[str, Any]:
    return {
        "id": cid,
        "kind": kind,
        "base_url": base_url,
        "api_key_env": UPSTREAM_KEY_ENV,
        "settlement": settlement,
        **extra,
    }


def price(currency: str = "USD", **rates: str) -> dict[str, str]:
    return {"currency": currency, **rates}


def route(ch: str, upstream_model: str, prc: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {"channel": ch, "upstream_model": upstream_model, "price": prc, **extra}


def model(mid: str, *routes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": mid, **extra, "routes": list(routes)}


# -- the price oracle ---------------------------------------------------------


def charge_of(
    prc: Mapping[str, str],
    *,
    prompt: int = 0,
    completion: int = 0,
    cached: int = 0,
) -> tuple[int, Decimal]:
    """(charge in micros, exact cost in micros) for OpenAI-style usage numbers.

    Prices are per 1M tokens, so tokens x price is micro-units; cached tokens are
    part of ``prompt`` and billed at ``cached_input`` (or ``input`` if unset);
    ``per_request`` is in currency units. One rounding, half-up.
    """
    rate_in = Decimal(prc["input"])
    rate_cached = Decimal(prc.get("cached_input") or prc["input"])
    rate_out = Decimal(prc["output"])
    per_request = Decimal(prc.get("per_request") or "0") * 1_000_000
    exact = (prompt - cached) * rate_in + cached * rate_cached + completion * rate_out + per_request
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP)), exact


def micros(amount: str) -> int:
    return int(Decimal(amount) * 1_000_000)


# -- the database -----------------------------------------------------------------


def seed_database(path: Path) -> None:
    """Put an empty, fully migrated database at ``path`` before the app opens it
    (unless there is one: a restarted app keeps its data).

    ``Store.open`` then finds no migration to run: migrating costs each test a
    dozen durable commits, copying a file costs nothing. The image is made once
    per test process, from the migrations as they are now.
    """
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_migrated_image())


@functools.cache
def _migrated_image() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "template.db"
        conn = open_db(db)
        try:
            migrations.apply(conn)
        finally:
            conn.close()  # the last connection: the WAL is checkpointed into the file
        return db.read_bytes()


# -- the gateway -------------------------------------------------------------------


@dataclass
class GatewaySetup:
    """What a test module's gateway looks like: the ``gateway_config`` fixture."""

    channels: list[dict[str, Any]]
    models: list[dict[str, Any]]
    server: Mapping[str, Any] = field(default_factory=dict)
    funds: Mapping[str, str] = field(default_factory=dict)  # wallet -> amount, added at start


@dataclass
class Gate:
    settings: Settings
    app: Any
    port: int
    admin: httpx.Client
    # None: the app is served on a socket; else requests go through its ASGI interface.
    transport: httpx.BaseTransport | None = None
    clients: list[Any] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def v1(self) -> str:
        return self.base_url + "/v1"

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway

    @property
    def store(self) -> Any:
        return self.app.state.store

    # admin API
    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return self.admin.request(method, path, **kw)

    def ok(self, method: str, path: str, **kw: Any) -> Any:
        resp = self.api(method, path, **kw)
        assert resp.status_code < 300, (resp.status_code, resp.text)
        return resp.json()

    def create_key(self, label: str = "test", **body: Any) -> dict[str, Any]:
        return self.ok("POST", "/api/keys", json={"label": label, **body})

    def key(self, label: str = "test", **body: Any) -> str:
        return self.create_key(label, **body)["key"]

    def fund(self, wallet: str, amount: str) -> dict[str, Any]:
        return self.ok(
            "POST",
            "/api/adjustments",
            json={"wallet": wallet, "amount": amount, "reason": "test funding"},
        )

    def wallet(self, wallet_id: str) -> dict[str, Any]:
        wallets = self.ok("GET", "/api/wallets")["wallets"]
        return next(w for w in wallets if w["id"] == wallet_id)

    def receipt(self, receipt_id: str) -> dict[str, Any]:
        return self.ok("GET", f"/api/receipts/{receipt_id}")

    def wait_receipt(self, receipt_id: str, timeout: float = 5.0) -> dict[str, Any]:
        """The receipt once it is no longer pending (streams settle after the body)."""
        deadline = time.monotonic() + timeout
        while True:
            rec = self.receipt(receipt_id)
            if rec["status"] != "pending" or time.monotonic() > deadline:
                return rec
            time.sleep(0.02)

    def receipts(self, **filters: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {**filters, "limit": "500"}
            if cursor:
                params["cursor"] = cursor
            page = self.ok("GET", "/api/receipts", params=params)
            out += page["receipts"]
            cursor = page["next"]
            if cursor is None:
                return out

    def entries(self, wallet: str, receipt_id: str | None = None) -> list[dict[str, Any]]:
        """All ledger entries of a wallet, oldest first (optionally of one receipt)."""
        out: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"limit": "500"}
            if cursor:
                params["cursor"] = cursor
            page = self.ok("GET", f"/api/wallets/{wallet}/ledger", params=params)
            out += page["entries"]
            cursor = page["next"]
            if cursor is None:
                break
        out.reverse()
        if receipt_id is not None:
            out = [e for e in out if e["receipt_id"] == receipt_id]
        return out

    def verify(self) -> dict[str, Any]:
        return self.ok("GET", "/api/ledger/verify")

    # clients
    def openai(self, key: str, **kw: Any) -> openai.OpenAI:
        kw.setdefault("max_retries", 0)
        if self.transport is not None:
            kw.setdefault("http_client", self._client(transport=self.transport))
        client = openai.OpenAI(base_url=self.v1, api_key=key, timeout=20.0, **kw)
        self.clients.append(client)
        return client

    def http(
        self, key: str | None = None, *, headers: Mapping[str, str] | None = None, **kw: Any
    ) -> httpx.Client:
        """A client of the gateway, sending ``key`` as a Bearer token (and ``headers``)."""
        auth = {"authorization": f"Bearer {key}"} if key else {}
        return self._client(base_url=self.base_url, headers={**auth, **(headers or {})}, **kw)

    def _client(self, **kw: Any) -> httpx.Client:
        if self.transport is not None:
            kw.setdefault("transport", self.transport)
        client = httpx.Client(timeout=20.0, **kw)
        self.clients.append(client)
        return client

    def close(self) -> None:
        """Close every client handed out; the server is stopped by run_gateway."""
        for client in self.clients:
            with contextlib.suppress(Exception):
                client.close()
        self.admin.close()


def start_uvicorn(app: Any, sock: socket.socket) -> tuple[uvicorn.Server, threading.Thread]:
    """Serve ``app`` on an already bound socket in a daemon thread."""
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws="none",
            timeout_graceful_shutdown=2,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    return server, thread


def wait_started(server: uvicorn.Server, thread: threading.Thread, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("localgate did not start")
        time.sleep(0.01)


def free_socket() -> socket.socket:
    """A socket bound to a free 127.0.0.1 port, not yet listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def run_gateway(
    tmp_path: Path,
    *,
    channels: list[dict[str, Any]],
    models: list[dict[str, Any]],
    server: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    in_process: bool = False,
) -> Iterator[Gate]:
    """localgate on a free 127.0.0.1 port (or in-process), stopped on exit."""
    sock = None if in_process else free_socket()
    try:
        port = IN_PROCESS_PORT if sock is None else sock.getsockname()[1]
        tmp_path.mkdir(parents=True, exist_ok=True)
        config = tmp_path / "config.toml"
        config.write_text(toml_config({"port": port, **(server or {})}, channels, models))
        settings = load_settings(
            data_dir=tmp_path / "gwdata",
            config_path=config,
            env={UPSTREAM_KEY_ENV: UPSTREAM_KEY, **(env or {})},
        )
        seed_database(settings.db_path)
        app = create_app(settings)
        serve = _served_in_process(app) if sock is None else _served_on(app, sock)
        with serve as transport:
            admin = httpx.Client(
                base_url=f"http://127.0.0.1:{port}",
                headers={"authorization": f"Bearer {settings.admin_token}"},
                timeout=20.0,
                transport=transport,
            )
            gate = Gate(settings, app, port, admin, transport)
            try:
                assert admin.get("/health").json()["status"] == "ok"
                yield gate
            finally:
                gate.close()
    finally:
        if sock is not None:
            sock.close()


@contextlib.contextmanager
def open_gate(tmp_path: Path, setup: GatewaySetup, *, in_process: bool) -> Iterator[Gate]:
    """``run_gateway`` for a :class:`GatewaySetup`, its wallets funded."""
    with run_gateway(
        tmp_path,
        channels=setup.channels,
        models=setup.models,
        server=setup.server,
        in_process=in_process,
    ) as gate:
        for wallet, amount in setup.funds.items():
            gate.fund(wallet, amount)
        yield gate


@contextlib.contextmanager
def _served_on(app: Any, sock: socket.socket) -> Iterator[None]:
    server, thread = start_uvicorn(app, sock)
    try:
        wait_started(server, thread)
        yield None
    finally:
        server.should_exit = True
        thread.join(15)


@contextlib.contextmanager
def _served_in_process(app: Any) -> Iterator[httpx.BaseTransport]:
    """A transport into the app's ASGI interface, its lifespan running meanwhile.

    Litestar's test client owns the event loop (a thread) that the lifespan and
    every request run in; its transport is shared by all the gate's clients so
    they reach the same app. Server errors come back as a 500, as from uvicorn.
    """
    with TestClient(app, base_url=f"http://127.0.0.1:{IN_PROCESS_PORT}") as owner:
        yield _InProcess(TestClientTransport(owner, raise_server_exceptions=False))


class _InProcess(httpx.BaseTransport):
    """Litestar's transport as an httpx one (it has no ``close``: closing a client
    must leave the shared app running)."""

    def __init__(self, inner: TestClientTransport[Any]) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self._inner.handle_request(request)


# -- SSE ----------------------------------------------------------------------


def sse_blocks(raw: bytes) -> list[bytes]:
    """A whole SSE body split into its blocks (each without the blank line)."""
    return [b for b in raw.replace(b"\r\n", b"\n").split(b"\n\n") if b.strip()]


def data_events(raw: bytes) -> list[Any]:
    """The JSON payloads of the data events (``[DONE]`` as the string "[DONE]")."""
    out: list[Any] = []
    for block in sse_blocks(raw):
        for line in block.split(b"\n"):
            if line.startswith(b"data:"):
                payload = line[5:].strip()
                out.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return out


def receipt_comment(raw: bytes) -> dict[str, str] | None:
    """The fields of the final ``: localgate ...`` SSE comment, if present."""
    for block in sse_blocks(raw):
        if block.startswith(b": localgate "):
            text = block.decode()[len(": localgate ") :].strip()
            return dict(part.split("=", 1) for part in text.split())
    return None


def openai_error(resp: httpx.Response) -> dict[str, Any]:
    """The OpenAI error object of a response, checking the shape on the way."""
    body = resp.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return error
