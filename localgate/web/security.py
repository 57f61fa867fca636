"""Local safety: Host checks against DNS rebinding, the admin session, the admin guard.

The wallet UI and the admin API accept either ``Authorization: Bearer <admin
token>`` or the session cookie that ``/login?token=...`` sets. The cookie is a
random nonce signed with the admin token, so rotating the token logs every
browser out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Receive, Scope, Send

from localgate.config import LOOPBACK_HOSTS
from localgate.errors import Forbidden, Unauthenticated

SESSION_COOKIE = "localgate_session"


def sign_session(admin_token: str, nonce: str | None = None) -> str:
    nonce = nonce or secrets.token_urlsafe(18)
    mac = hmac.new(admin_token.encode(), nonce.encode(), hashlib.sha256).hexdigest()
    return f"{nonce}.{mac}"


def valid_session(admin_token: str, value: str | None) -> bool:
    if not value or "." not in value or not admin_token:
        return False
    nonce, _, mac = value.rpartition(".")
    return hmac.compare_digest(sign_session(admin_token, nonce), f"{nonce}.{mac}")


def valid_admin_token(admin_token: str, presented: str | None) -> bool:
    return bool(admin_token and presented) and hmac.compare_digest(
        admin_token.encode(), presented.encode()
    )  # type: ignore[union-attr]


def bearer(headers: Any) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def session_value(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    token = connection.app.state.settings.admin_token
    value = connection.cookies.get(SESSION_COOKIE)
    return value if valid_session(token, value) else None


def csrf_token(admin_token: str, session: str) -> str:
    """Bound to the session: a page's forms carry it, a foreign page cannot know it."""
    nonce = session.rpartition(".")[0]
    return hmac.new(admin_token.encode(), b"csrf:" + nonce.encode(), hashlib.sha256).hexdigest()


def same_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """The request's Origin (or Referer) names this very host: not a cross-site post."""
    origin = connection.headers.get("origin") or connection.headers.get("referer") or ""
    if not origin or origin == "null":
        return False
    host = connection.headers.get("host", "")
    rest = origin.split("://", 1)[-1]
    return rest.split("/", 1)[0].lower() == host.lower()


def admin_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Bearer admin token, or the session cookie — which, for a state change, also
    needs the CSRF token (header or form field) and a same-origin Origin."""
    settings = connection.app.state.settings
    if valid_admin_token(settings.admin_token, bearer(connection.headers)):
        return
    session = session_value(connection)
    if session is None:
        raise Unauthenticated(
            "admin login required: send 'Authorization: Bearer <admin token>' (the token is in "
            "<data dir>/admin-token) or open the login link that 'localgate serve' prints",
            code="admin_auth_required",
        )
    if connection.scope["method"] not in SAFE_METHODS:
        check_csrf(connection, session, connection.headers.get(CSRF_HEADER))


def check_csrf(
    connection: ASGIConnection[Any, Any, Any, Any], session: str, presented: str | None
) -> None:
    expected = csrf_token(connection.app.state.settings.admin_token, session)
    if not same_origin(connection):
        raise Forbidden(
            "cross-origin request refused: state changes must come from the localgate page itself",
            code="cross_origin",
        )
    if not presented or not hmac.compare_digest(expected, presented):
        raise Forbidden(
            "missing or wrong CSRF token: reload the page and try again", code="csrf_failed"
        )


def allowed_host_names(configured: Iterable[str], bind_host: str) -> frozenset[str]:
    names = {h.lower() for h in (*LOOPBACK_HOSTS, *configured)}
    if bind_host not in ("0.0.0.0", "::"):
        names.add(bind_host.lower())
    return frozenset(names)


def host_name(raw: str) -> str:
    """The name part of a Host header: strips the port and IPv6 brackets."""
    raw = raw.strip().lower()
    if raw.startswith("["):
        return raw[1 : raw.find("]")] if "]" in raw else raw
    return raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw


class HostCheck:
    """Refuse requests whose Host is not a loopback (or configured) name.

    A web page on another site that rebinds its DNS name to 127.0.0.1 still
    sends its own name as Host, so this stops it before any handler runs.
    """

    def __init__(self, app: ASGIApp, allowed: frozenset[str]) -> None:
        self.app = app
        self.allowed = allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            host = ""
            for name, value in scope["headers"]:
                if name == b"host":
                    host = value.decode("latin-1")
                    break
            if host_name(host) not in self.allowed:
                body = (
                    b'{"error":{"message":"Host not allowed: localgate answers only to '
                    b"loopback names (DNS rebinding protection); add the name to "
                    b'server.allowed_hosts to allow it","type":"invalid_request_error",'
                    b'"code":"host_not_allowed","param":null}}'
                )
                await send(
                    {
                        "type": "http.response.start",
                        "status": 403,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
