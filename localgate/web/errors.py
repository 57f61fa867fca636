"""Errors to HTTP, in one place, in the caller's dialect.

The body comes from :func:`localgate.errors.error_payload`; this module only
picks the dialect from the path and turns Litestar's own exceptions (unknown
route, wrong method, body too large) into localgate errors first, so they
look the same as everything else:

- ``/v1/messages*``: Anthropic ``{"type": "error", "error": {"type", "message"}}``
- other ``/v1/*``: OpenAI ``{"error": {"message", "type", "param", "code"}}``
- everything else (admin API, webhooks): ``{"error": {"code", "message"}}``
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException

from localgate import errors as e

log = logging.getLogger(__name__)


def dialect(path: str) -> e.Dialect:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path == "/v1" or path.startswith("/v1/"):
        return "openai"
    return "admin"


def error_response(path: str, exc: e.LocalgateError) -> Response[Any]:
    return Response(
        e.error_payload(exc, dialect(path)),
        status_code=exc.http_status,
        headers=exc.response_headers(),
        media_type=MediaType.JSON,
    )


def from_http_exception(exc: HTTPException) -> e.LocalgateError:
    """Litestar's HTTP exceptions as the localgate errors they stand for."""
    status = exc.status_code
    message = exc.detail or "request failed"
    error: e.LocalgateError
    if status == 413:
        error = e.TooLarge("request body too large: the limit is server.max_body_bytes")
    elif status == 405:
        error = e.MethodNotAllowed(message)
    elif status == 404:
        error = e.NotFound(message)
    elif status == 401:
        error = e.Unauthenticated(message, code="unauthorized")
    else:
        error = e.LocalgateError(message, code="invalid_request" if status == 400 else "http_error")
        error.http_status = status
    error.headers = dict(exc.headers or {})
    return error


def handle_localgate_error(request: Request[Any, Any, Any], exc: e.LocalgateError) -> Response[Any]:
    return error_response(request.url.path, exc)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return error_response(request.url.path, from_http_exception(exc))


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    internal = e.InternalError("internal error in localgate; see its log")
    return error_response(request.url.path, internal)


EXCEPTION_HANDLERS: dict[Any, Any] = {
    e.LocalgateError: handle_localgate_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
