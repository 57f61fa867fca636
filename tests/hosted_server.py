"""A server that speaks hosted-api.md on 127.0.0.1, for tests.

Top-ups: ``POST /v1/topups`` (idempotent by ``client_reference``),
``GET /v1/topups/{id}``, ``GET /v1/topups?updated_since=`` (answers
``{"topups": [...]}``); wallets: ``GET /v1/wallets``; catalog:
``GET /v1/catalog`` with ``ETag`` / ``If-None-Match``. Every call needs
``Authorization: Bearer <token>``; errors are ``{"error": {"code", "message"}}``.

The test plays the payer and the hosted side's own payment provider::

    with HostedServer() as hosted:
        ... localgate creates a top-up ...
        hosted.set_status(hosted_id, "completed")        # amount_received = amount
        hosted.refund(hosted_id, "5.00")                  # partially_refunded
"""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "hosted-test-token"

CATALOG = {
    "version": "2026-11-27.3",
    "models": [
        {
            "id": "gpt-4o-mini",
            "name": "GPT-4o mini",
            "family": "openai",
            "context_length": 128000,
            "max_output_tokens": 16384,
            "modalities": ["text", "image"],
            "capabilities": ["tools", "stream"],
            "routes": [
                {
                    "id": "r_official_openai_4o_mini",
                    "settlement": "official",
                    "channel": "hosted",
                    "upstream_model": "gpt-4o-mini",
                    "priority": 2,
                    "price": {
                        "currency": "USD",
                        "input": "0.15",
                        "cached_input": "0.075",
                        "cache_write": None,
                        "output": "0.60",
                        "per_request": "0",
                    },
                }
            ],
        }
    ],
}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class HostedError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"code": code, "message": message}}


class HostedServer:
    def __init__(self, *, token: str = TOKEN) -> None:
        self.token = token
        self.topups: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []
        self.down = False  # True: answer 503 to everything
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        # A short poll: shutdown() waits for the loop to look, 0.5 s by default.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HostedServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- the hosted side's own events ------------------------------------------------

    def by_reference(self, client_reference: str) -> dict[str, Any]:
        return next(t for t in self.topups.values() if t["client_reference"] == client_reference)

    def set_status(
        self,
        hosted_id: str,
        status: str,
        *,
        failure_reason: str | None = None,
        amount_received: str | None = None,
    ) -> dict[str, Any]:
        with self._lock:
            t = self.topups[hosted_id]
            t["status"] = status
            t["failure_reason"] = failure_reason
            if status == "completed" and t["amount_received"] is None:
                t["amount_received"] = amount_received or t["amount"]
            t["updated_at"] = now_iso()
            return dict(t)

    def refund(self, hosted_id: str, amount: str) -> dict[str, Any]:
        with self._lock:
            t = self.topups[hosted_id]
            total = Decimal(t["refunded_amount"]) + Decimal(amount)
            t["refunded_amount"] = f"{total:.2f}"
            full = total >= Decimal(t["amount_received"])
            t["status"] = "refunded" if full else "partially_refunded"
            t["updated_at"] = now_iso()
            return dict(t)

    # -- the API ---------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: Any,
        headers: dict[str, str],
    ) -> tuple[int, Any, dict[str, str]]:
        with self._lock:
            self.requests.append((method, path, body))
            if self.down:
                raise HostedError(503, "unavailable", "the hosted service is down (test)")
            if headers.get("authorization") != f"Bearer {self.token}":
                raise HostedError(401, "unauthorized", "unknown account token")
            if method == "POST" and path == "/v1/topups":
                return self._create(body)
            if method == "GET" and path == "/v1/topups":
                since = (query.get("updated_since") or [""])[0]
                if not since:
                    raise HostedError(400, "invalid_request", "updated_since is required")
                rows = [dict(t) for t in self.topups.values() if t["updated_at"] > since]
                rows.sort(key=lambda t: t["updated_at"])
                return 200, {"topups": rows}, {}
            if method == "GET" and path.startswith("/v1/topups/"):
                t = self.topups.get(path.rsplit("/", 1)[1])
                if t is None:
                    raise HostedError(404, "not_found", "no such top-up")
                return 200, dict(t), {}
            if method == "GET" and path == "/v1/wallets":
                return 200, {"wallets": [], "as_of": now_iso()}, {}
            if method == "GET" and path == "/v1/catalog":
                etag = '"' + CATALOG["version"] + '"'
                if headers.get("if-none-match") == etag:
                    return 304, None, {"etag": etag}
                return 200, CATALOG, {"etag": etag}
            raise HostedError(404, "not_found", f"no route {method} {path}")

    def _create(self, body: Any) -> tuple[int, Any, dict[str, str]]:
        if not isinstance(body, dict):
            raise HostedError(400, "invalid_request", "send a JSON object")
        for name in (
            "wallet",
            "amount",
            "currency",
            "method",
            "success_url",
            "cancel_url",
            "client_reference",
        ):
            if not isinstance(body.get(name), str):
                raise HostedError(400, "invalid_request", f"missing field {name}")
        ref = body["client_reference"]
        for t in self.topups.values():
            if t["client_reference"] == ref:
                return 201, self._created(t), {}
        hid = "htu_" + os.urandom(6).hex()
        t = {
            "id": hid,
            "client_reference": ref,
            "wallet": body["wallet"],
            "amount": body["amount"],
            "currency": body["currency"],
            "method": body["method"],
            "status": "pending",
            "amount_received": None,
            "failure_reason": None,
            "provider": "stripe",
            "provider_ref": "cs_test_" + os.urandom(8).hex(),
            "refunded_amount": "0.00",
            "updated_at": now_iso(),
            "success_url": body["success_url"],
            "cancel_url": body["cancel_url"],
            "expires_at": "2099-01-01T00:00:00Z",
        }
        self.topups[hid] = t
        return 201, self._created(t), {}

    def _created(self, t: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": t["id"],
            "status": t["status"],
            "checkout_url": f"{self.base_url}/checkout/{t['id']}",
            "expires_at": t["expires_at"],
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                extra: dict[str, str] = {}
                try:
                    body = json.loads(raw) if raw else None
                    status, obj, extra = server.handle(
                        method, url.path, parse_qs(url.query), body, headers
                    )
                except HostedError as exc:
                    status, obj = exc.status, exc.body
                except ValueError:
                    status, obj = 400, {"error": {"code": "invalid_json", "message": "bad JSON"}}
                data = b"" if obj is None else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler
