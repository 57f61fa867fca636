"""Errors to HTTP, in one place, in the caller's dialect.

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
from localgate.money import decimal_str

log = logging.getLogger(__name__)

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    504: "upstream_error",
}
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    504: "api_error",
}


def status_for(exc: e.LocalgateError) -> int:
    """Each error class carries its HTTP status (``http_status``)."""
    return exc.http_status


def dialect(path: str) -> str:
    if path.startswith("/v1/messages"):
        return "anthropic"
    if path == "/v1" or path.startswith("/v1/"):
        return "openai"
    return "admin"


def error_body(
    path: str, status: int, message: str, code: str, param: str | None = None
) -> dict[str, Any]:
    kind = dialect(path)
    if kind == "anthropic":
        return {
            "type": "error",
            "error": {"type": ANTHROPIC_TYPES.get(status, "api_error"), "message": message},
        }
    if kind == "openai":
        return {
            "error": {
                "message": message,
                "type": OPENAI_TYPES.get(status, "api_error"),
                "param": param,
                "code": code,
            }
        }
    return {"error": {"code": code, "message": message}}


def error_response(
    path: str, exc: e.LocalgateError, headers: dict[str, str] | None = None
) -> Response[Any]:
    status = status_for(exc)
    headers = {**exc.headers, **(headers or {})}
    if isinstance(exc, e.RateLimited):
        headers["retry-after"] = str(max(1, int(exc.retry_after)))
    body = error_body(path, status, exc.message, exc.code, getattr(exc, "param", None))
    if isinstance(exc, e.InsufficientFunds) and "error" in body:
        body["error"].update(
            {
                "wallet": exc.wallet,
                "needed": decimal_str(exc.needed),
                "available": decimal_str(exc.available),
            }
        )
    return Response(body, status_code=status, headers=headers, media_type=MediaType.JSON)


def handle_localgate_error(request: Request[Any, Any, Any], exc: e.LocalgateError) -> Response[Any]:
    return error_response(request.url.path, exc)


def handle_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    status = exc.status_code
    message = exc.detail or "request failed"
    code = {
        404: "not_found",
        405: "method_not_allowed",
        413: "request_too_large",
        401: "unauthorized",
        400: "invalid_request",
    }.get(status, "http_error")
    if status == 413:
        message = "request body too large: the limit is server.max_body_bytes"
    return Response(
        error_body(request.url.path, status, message, code),
        status_code=status,
        headers=dict(exc.headers or {}),
        media_type=MediaType.JSON,
    )


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return Response(
        error_body(
            request.url.path, 500, "internal error in localgate; see its log", "internal_error"
        ),
        status_code=500,
        media_type=MediaType.JSON,
    )


EXCEPTION_HANDLERS: dict[Any, Any] = {
    e.LocalgateError: handle_localgate_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
