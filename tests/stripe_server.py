"""A Stripe-shaped API server on 127.0.0.1 for tests, built from Stripe's published fixtures.

Objects are copies of the shapes in ``stripe_fixtures3.json`` (Stripe's
``openapi/fixtures3.json``; a subset is kept in ``tests/data``) with ids,
amounts and statuses changed, so the real ``stripe`` SDK parses exactly what
it would parse from Stripe. It serves, form-encoded the way the SDK sends:

- ``POST /v1/checkout/sessions`` (honours ``Idempotency-Key``),
  ``GET /v1/checkout/sessions/{id}`` (``expand[]`` of ``payment_intent`` and
  ``payment_intent.latest_charge``), ``POST /v1/checkout/sessions/{id}/expire``
- ``GET /v1/events`` (``types[]``, ``created[gte|gt]``, ``limit``, ``starting_after``)
- ``GET /v1/payment_intents/{id}``, ``GET /v1/charges/{id}``

What a payer or the card network would do is driven from the test —
``pay``, ``pay_async`` then ``async_succeed`` / ``async_fail``, ``expire``,
``refund``, ``dispute`` and ``close_dispute`` — and each returns the event
Stripe would send. ``signed(event)`` gives the webhook body and a
``Stripe-Signature`` header made by the ``stripe`` SDK's own signing code::

    with StripeServer() as stripe_api:
        settings uses api_base = stripe_api.base_url
        ...
        event = stripe_api.pay(session_id)
        body, header = stripe_api.signed(event)
"""

from __future__ import annotations

import copy
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe

API_KEY = "sk_test_localgate_fake"
WEBHOOK_SECRET = "whsec_localgate_test_secret"

_HERE = Path(__file__).resolve().parent
SHARED_FIXTURES = _HERE.parent.parent / "shared" / "data" / "stripe_fixtures3.json"
SUBSET_FIXTURES = _HERE / "data" / "stripe_fixtures3_subset.json"


def load_fixtures() -> dict[str, Any]:
    path = SHARED_FIXTURES if SHARED_FIXTURES.exists() else SUBSET_FIXTURES
    return json.loads(path.read_text())["resources"]


def _new_id(prefix: str) -> str:
    return f"{prefix}_test_{os.urandom(12).hex()}"


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket encoding (``a[b][0][c]=x``) back into dicts and lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(root)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _lists(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


class StripeError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"type": kind, "message": message, "param": param, "code": code}}


class StripeServer:
    def __init__(self, *, api_key: str = API_KEY, webhook_secret: str = WEBHOOK_SECRET) -> None:
        self.api_key = api_key
        self.webhook_secret = webhook_secret
        self.fixtures = load_fixtures()
        self.sessions: dict[str, dict[str, Any]] = {}
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.disputes: dict[str, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, dict[str, Any], dict[str, str]]] = []
        self.fail_next: list[int] = []  # statuses to answer the next requests with
        self._idempotent: dict[str, tuple[int, dict[str, Any]]] = {}
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

    def __enter__(self) -> StripeServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- building objects from the fixtures ---------------------------------------

    def _fixture(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.fixtures[name])

    def _event(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        event = self._fixture("event")
        event.update(
            id=_new_id("evt"),
            type=kind,
            created=int(time.time()),
            api_version="2025-01-27.acacia",
            data={"object": copy.deepcopy(obj)},
            livemode=False,
            pending_webhooks=1,
        )
        with self._lock:
            self.events.append(event)
        return event

    def signed(
        self, event: dict[str, Any], *, secret: str | None = None, timestamp: int | None = None
    ) -> tuple[bytes, str]:
        """The webhook body and its Stripe-Signature header, signed by the stripe SDK."""
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(
            payload, secret or self.webhook_secret, timestamp
        )
        return payload.encode(), header

    # -- what the payer, the bank and the card network do ------------------------

    def pay(
        self,
        session_id: str,
        *,
        method: str = "card",
        processing: bool = False,
        amount_minor: int | None = None,
        currency: str | None = None,
    ) -> dict[str, Any]:
        """The payer completes checkout: paid at once, or (``processing``) paid later."""
        with self._lock:
            s = self.sessions[session_id]
            if s["status"] != "open":
                raise AssertionError(f"session {session_id} is {s['status']}")
            amount = s["amount_total"] if amount_minor is None else amount_minor
            cur = currency or s["currency"]
            pi = self._fixture("payment_intent")
            pi.update(
                id=_new_id("pi"),
                amount=amount,
                amount_received=0 if processing else amount,
                currency=cur,
                status="processing" if processing else "succeeded",
                payment_method_types=[method],
                metadata=dict(s["metadata"]),
                created=int(time.time()),
                canceled_at=None,
                last_payment_error=None,
                next_action=None,
                processing=None,
                latest_charge=None,
                client_secret=None,
                automatic_payment_methods=None,
                transfer_data=None,
            )
            self.intents[pi["id"]] = pi
            if not processing:
                self._charge(pi)
            s.update(
                status="complete",
                payment_status="unpaid" if processing else "paid",
                payment_intent=pi["id"],
                amount_total=amount,
                currency=cur,
            )
            return self._event("checkout.session.completed", s)

    def _charge(self, pi: dict[str, Any]) -> dict[str, Any]:
        ch = self._fixture("charge")
        ch.update(
            id=_new_id("ch"),
            amount=pi["amount"],
            amount_captured=pi["amount"],
            amount_refunded=0,
            captured=True,
            paid=True,
            refunded=False,
            currency=pi["currency"],
            payment_intent=pi["id"],
            status="succeeded",
            receipt_url=f"{self.base_url}/receipts/{pi['id']}",
            created=int(time.time()),
        )
        self.charges[ch["id"]] = ch
        pi["latest_charge"] = ch["id"]
        return ch

    def async_succeed(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            s = self.sessions[session_id]
            pi = self.intents[s["payment_intent"]]
            pi.update(status="succeeded", amount_received=pi["amount"])
            self._charge(pi)
            s["payment_status"] = "paid"
            return self._event("checkout.session.async_payment_succeeded", s)

    def async_fail(
        self, session_id: str, message: str = "The payment was not confirmed."
    ) -> dict[str, Any]:
        with self._lock:
            s = self.sessions[session_id]
            pi = self.intents[s["payment_intent"]]
            pi.update(
                status="requires_payment_method",
                last_payment_error={
                    "type": "card_error",
                    "message": message,
                    "code": "payment_intent_payment_attempt_failed",
                },
            )
            return self._event("checkout.session.async_payment_failed", s)

    def expire(self, session_id: str) -> dict[str, Any]:
        with self._lock:
            s = self.sessions[session_id]
            s["status"] = "expired"
            return self._event("checkout.session.expired", s)

    def refund(self, session_id: str, amount_minor: int) -> dict[str, Any]:
        with self._lock:
            ch = self._session_charge(session_id)
            ch["amount_refunded"] += amount_minor
            ch["refunded"] = ch["amount_refunded"] >= ch["amount"]
            return self._event("charge.refunded", ch)

    def dispute(self, session_id: str, amount_minor: int | None = None) -> dict[str, Any]:
        with self._lock:
            ch = self._session_charge(session_id)
            dp = self._fixture("dispute")
            dp.update(
                id=_new_id("dp"),
                amount=ch["amount"] if amount_minor is None else amount_minor,
                currency=ch["currency"],
                charge=ch["id"],
                payment_intent=ch["payment_intent"],
                status="needs_response",
                created=int(time.time()),
            )
            self.disputes[dp["id"]] = dp
            ch["disputed"] = True
            return self._event("charge.dispute.created", dp)

    def close_dispute(self, dispute_id: str, *, won: bool) -> dict[str, Any]:
        with self._lock:
            dp = self.disputes[dispute_id]
            dp["status"] = "won" if won else "lost"
            return self._event("charge.dispute.closed", dp)

    def _session_charge(self, session_id: str) -> dict[str, Any]:
        pi = self.intents[self.sessions[session_id]["payment_intent"]]
        return self.charges[pi["latest_charge"]]

    # -- the API -------------------------------------------------------------------

    def _create_session(self, p: dict[str, Any]) -> dict[str, Any]:
        for name in ("mode", "success_url", "cancel_url", "line_items"):
            if name not in p:
                raise StripeError(400, f"Missing required param: {name}.", param=name)
        if p["mode"] != "payment":
            raise StripeError(400, "This test server only does mode=payment.", param="mode")
        item = p["line_items"][0]
        price = item["price_data"]
        unit, qty = int(price["unit_amount"]), int(item.get("quantity", 1))
        now = int(time.time())
        expires = int(p.get("expires_at", now + 24 * 3600))
        if not now + 1800 - 5 <= expires <= now + 24 * 3600:
            raise StripeError(
                400, "expires_at must be 30 minutes to 24 hours from now", param="expires_at"
            )
        if "{CHECKOUT_SESSION_ID}" not in p["success_url"]:
            raise StripeError(
                400,
                "test server: success_url should carry {CHECKOUT_SESSION_ID}",
                param="success_url",
            )
        s = self._fixture("checkout.session")
        sid = "cs_test_" + os.urandom(24).hex()
        s.update(
            id=sid,
            amount_subtotal=unit * qty,
            amount_total=unit * qty,
            currency=price["currency"],
            client_reference_id=p.get("client_reference_id"),
            metadata=p.get("metadata", {}),
            payment_method_types=p.get("payment_method_types", ["card"]),
            payment_method_options=p.get("payment_method_options", {}),
            success_url=p["success_url"],
            cancel_url=p["cancel_url"],
            expires_at=expires,
            created=now,
            status="open",
            payment_status="unpaid",
            payment_intent=None,
            url=f"{self.base_url}/c/pay/{sid}",
            customer_details=None,
            shipping_cost=None,
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            currency_conversion=None,
            shipping_address_collection=None,
            collected_information=None,
        )
        self.sessions[sid] = s
        return s

    def _expanded(self, s: dict[str, Any], expand: list[str]) -> dict[str, Any]:
        out = copy.deepcopy(s)
        if "payment_intent" in expand and out.get("payment_intent"):
            pi = copy.deepcopy(self.intents[out["payment_intent"]])
            if "payment_intent.latest_charge" in expand and pi.get("latest_charge"):
                pi["latest_charge"] = copy.deepcopy(self.charges[pi["latest_charge"]])
            out["payment_intent"] = pi
        return out

    def _list_events(self, q: dict[str, Any]) -> dict[str, Any]:
        types = q.get("types") or ([q["type"]] if q.get("type") else None)
        created = q.get("created") or {}
        limit = int(q.get("limit", 10))
        newest_first = list(reversed(self.events))  # as Stripe lists them
        rows = [
            e
            for e in newest_first
            if (types is None or e["type"] in types)
            and e["created"] >= int(created.get("gte", 0))
            and e["created"] > int(created.get("gt", -1))
        ]
        if q.get("starting_after"):
            ids = [e["id"] for e in rows]
            rows = rows[ids.index(q["starting_after"]) + 1 :]
        return {
            "object": "list",
            "data": rows[:limit],
            "has_more": len(rows) > limit,
            "url": "/v1/events",
        }

    def handle(
        self, method: str, path: str, params: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append((method, path, params, headers))
            if self.fail_next:
                status = self.fail_next.pop(0)
                raise StripeError(status, "test server: forced failure", kind="api_error")
            if headers.get("authorization") != f"Bearer {self.api_key}":
                raise StripeError(401, "Invalid API Key provided: the test server knows one key")
            key = headers.get("idempotency-key")
            if method == "POST" and key and key in self._idempotent:
                return self._idempotent[key]
            result = self._route(method, path, params)
            if method == "POST" and key:
                self._idempotent[key] = result
            return result

    def _route(self, method: str, path: str, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        expand = p.get("expand") or []
        if method == "POST" and path == "/v1/checkout/sessions":
            return 200, self._create_session(p)
        m = re.fullmatch(r"/v1/checkout/sessions/([^/]+)(/expire)?", path)
        if m:
            s = self.sessions.get(m[1])
            if s is None:
                raise StripeError(
                    404,
                    f"No such checkout.session: '{m[1]}'",
                    code="resource_missing",
                    param="session",
                )
            if m[2] and method == "POST":
                if s["status"] != "open":
                    raise StripeError(
                        400, 'Only Checkout Sessions with a status in ["open"] can be expired.'
                    )
                self.expire(s["id"])
            return 200, self._expanded(s, expand)
        if method == "GET" and path == "/v1/events":
            return 200, self._list_events(p)
        m = re.fullmatch(r"/v1/(payment_intents|charges)/([^/]+)", path)
        if m and method == "GET":
            store = self.intents if m[1] == "payment_intents" else self.charges
            if m[2] not in store:
                raise StripeError(404, f"No such object: '{m[2]}'", code="resource_missing")
            return 200, copy.deepcopy(store[m[2]])
        raise StripeError(404, f"Unrecognized request URL ({method}: {path}).")

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self, method: str) -> None:
                url = urlsplit(self.path)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                pairs = parse_qsl(url.query, keep_blank_values=True)
                pairs += parse_qsl(body, keep_blank_values=True)
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    status, obj = server.handle(method, url.path, parse_form(pairs), headers)
                except StripeError as exc:
                    status, obj = exc.status, exc.body
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.send_header("request-id", "req_" + os.urandom(6).hex())
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_POST(self) -> None:
                self._serve("POST")

        return Handler
