"""Local safety: Host checks against DNS rebinding, the admin session, the admin guard.

The wallet UI and the admin API accept either ``Authorization: Bearer <admin
token>`` or the session cookie that ``/login?token=...`` sets. The cookie is
``<nonce>.<last seen>.<mac>``: a random session id and the time it was last
used, signed with the admin token, so rotating the token logs every browser out.

Session policy: a session unused for ``server.session_idle_minutes`` is over
(each use renews the stamp, at most once a minute, by a new cookie on the
answer); ``POST /logout`` ends one for good, and logging in again ends the one
the browser had (a new id at every login). Ended sessions are remembered in
memory until they would have timed out anyway, so a restart forgets them; a
cookie from before it still dies at its idle timeout.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable
from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from localgate.config import LOOPBACK_HOSTS
from localgate.errors import Forbidden, Unauthenticated

SESSION_COOKIE = "localgate_session"


RENEW_AFTER_SECONDS = 60  # a used session gets a fresh stamp at most this often


def sign_session(admin_token: str, nonce: str | None = None, stamp: int | None = None) -> str:
    """A session cookie value: ``nonce`` (new if None) last seen at ``stamp`` (now)."""
    nonce = nonce or secrets.token_urlsafe(18)
    body = f"{nonce}.{int(time.time()) if stamp is None else stamp}"
    mac = hmac.new(admin_token.encode(), body.encode(), hashlib.sha256).hexdigest()
    return f"{body}.{mac}"


def session_parts(value: str) -> tuple[str, int]:
    """(nonce, last-seen stamp) of a cookie value already checked by valid_session."""
    nonce, stamp, _mac = value.split(".")
    return nonce, int(stamp)


def valid_session(
    admin_token: str, value: str | None, *, idle_seconds: float, now: float | None = None
) -> bool:
    """Signed with ``admin_token`` and used within the last ``idle_seconds``."""
    if not value or value.count(".") != 2 or not admin_token:
        return False
    nonce, stamp, _mac = value.split(".")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return False
    if not hmac.compare_digest(sign_session(admin_token, nonce, int(stamp)), value):
        return False
    age = (time.time() if now is None else now) - int(stamp)
    return -60 <= age <= idle_seconds  # a stamp from the future is forged or a clock jump


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
    return live_session(connection.app.state, connection.cookies.get(SESSION_COOKIE))


def live_session(state: Any, value: str | None) -> str | None:
    """``value`` if it is a session that is signed, not idle too long, not ended."""
    settings = state.settings
    idle = settings.get("server.session_idle_minutes") * 60
    if not valid_session(settings.admin_token, value, idle_seconds=idle):
        return None
    assert value is not None
    return None if session_parts(value)[0] in ended_sessions(state) else value


def ended_sessions(state: Any) -> dict[str, float]:
    """Session ids ended by logout or a new login -> when (``app.state``, in memory)."""
    ended: dict[str, float] | None = getattr(state, "ended_sessions", None)
    if ended is None:
        ended = state.ended_sessions = {}
    return ended


def end_session(state: Any, value: str) -> None:
    """End the session ``value`` for good; forget those that have timed out anyway."""
    ended = ended_sessions(state)
    now = time.time()
    idle = state.settings.get("server.session_idle_minutes") * 60
    for nonce, at in list(ended.items()):
        if now - at > idle + RENEW_AFTER_SECONDS:
            ended.pop(nonce, None)
    ended[session_parts(value)[0]] = now


def session_cookie_header(value: str) -> bytes:
    """The Set-Cookie value for a session: the attributes /login sets."""
    return f"{SESSION_COOKIE}={value}; HttpOnly; Path=/; SameSite=Strict".encode()


def renew_session(message: Message, scope: Scope) -> None:
    """``before_send`` hook: an answer to a request whose session stamp is over a
    minute old carries the same session with a fresh stamp, so an idle timeout
    counts from the last use, not from the login."""
    if message["type"] != "http.response.start" or scope["type"] != "http":
        return
    value = _cookie(scope["headers"], SESSION_COOKIE)
    if value is None:
        return
    headers = list(message.get("headers") or ())
    prefix = SESSION_COOKIE.encode() + b"="
    if any(k.lower() == b"set-cookie" and v.startswith(prefix) for k, v in headers):
        return  # login or logout set the cookie themselves
    state = scope["app"].state
    if live_session(state, value) is None:
        return
    nonce, stamp = session_parts(value)
    if time.time() - stamp >= RENEW_AFTER_SECONDS:
        renewed = sign_session(state.settings.admin_token, nonce)
        message["headers"] = [*headers, (b"set-cookie", session_cookie_header(renewed))]


def _cookie(headers: Iterable[tuple[bytes, bytes]], name: str) -> str | None:
    for key, raw in headers:
        if key == b"cookie":
            for part in raw.decode("latin-1").split(";"):
                k, _, v = part.strip().partition("=")
                if k == name:
                    return v
    return None


def csrf_token(admin_token: str, session: str) -> str:
    """Bound to the session: a page's forms carry it, a foreign page cannot know it.
    (The session's id only: a renewed stamp keeps the pages already open working.)"""
    nonce = session.split(".", 1)[0]
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
            "<data dir>/admin-token) or open the login link that 'localgate login' prints",
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


def host_name(raw: str) -> str | None:
    """The name part of a Host header, without port and IPv6 brackets; None when
    what follows the name is not ``:<port>`` with a port of 1..65535 in ASCII digits
    (``localhost:evil.example``, ``127.0.0.1:80@evil.example`` name no port)."""
    raw = raw.strip().lower()
    if raw.startswith("["):
        name, bracket, rest = raw[1:].partition("]")
        if not bracket:
            return None
    elif raw.count(":") == 1:
        name, rest = raw.split(":")
        rest = ":" + rest
    else:  # no port, or a bare IPv6 address such as ::1
        name, rest = raw, ""
    if rest and not _is_port(rest[1:] if rest.startswith(":") else "x"):
        return None
    return name


def _is_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 5 and 1 <= int(text) <= 65535


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
