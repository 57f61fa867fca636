"""The exceptions localgate raises on purpose.

Adapters translate outside exceptions (httpx, stripe, sqlite3) into these once,
at the boundary, with ``raise ... from exc``. How an error looks on the wire is
decided here too, once: :func:`error_payload` builds the body for a dialect
(OpenAI, Anthropic, the admin API), and every surface (``/v1``, ``/api``, the
pages, an error event inside a stream) asks it::

    LocalgateError
    ├── ConfigError            bad config file / env / flag; message names key and fix
    ├── BadRequest             malformed or invalid input from a caller (400)
    │   ├── TooLarge           a body past server.max_body_bytes (413)
    │   └── MethodNotAllowed   the wrong HTTP method for a path (405)
    ├── MoneyError             an amount or price that is not exact money
    ├── NotFound               an id that does not exist (wallet, receipt, key, ...)
    ├── Conflict               a request that contradicts stored state
    ├── LedgerError            the ledger refused a write
    │   ├── UnbalancedEntry    postings do not sum to zero per currency
    │   ├── InsufficientFunds  a hold or debit larger than the available balance (402)
    │   ├── WalletFrozen       the wallet takes no new holds
    │   └── HoldClosed         settle/release of a hold that is no longer open
    ├── AccessError            a key or session may not do this
    │   ├── Unauthenticated    no or unknown credentials (401)
    │   │   └── LoginRequired  a page needs the UI session (redirects to the login help)
    │   ├── Forbidden          credentials valid, action outside their scope (403)
    │   └── RateLimited        too many requests / budget exhausted (429)
    ├── UpstreamError          an upstream call failed (status, retryable)
    │   └── HostedError        the hosted service could not be reached or refused
    ├── InternalError          a localgate bug met while serving a request (500)
    │   └── LoopbackFailed     a page's call through the app's own /v1 failed
    ├── ShuttingDown           localgate is stopping; try again shortly (503)
    │   └── WriterClosed       the ledger writer has stopped
    └── PaymentError           the payment provider refused or failed
        ├── PaymentsOff        payments configured but unable to start (503)
        └── WebhookRejected    a webhook whose signature or payload is refused (400)
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

# How a caller speaks: OpenAI (chat completions, embeddings, Responses),
# Anthropic (Messages), or localgate's own admin API and pages.
Dialect = Literal["openai", "anthropic", "admin"]


class LocalgateError(Exception):
    """Base class. ``code`` is a stable machine-readable slug."""

    code = "localgate_error"
    http_status = 400

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        # Extra response headers (e.g. the receipt of a rejected request).
        self.headers: dict[str, str] = {}

    def __str__(self) -> str:
        return self.message

    def details(self) -> dict[str, Any]:
        """Fields a caller can act on, added to the error body in every dialect."""
        return {}

    def response_headers(self) -> dict[str, str]:
        """The headers an answer carrying this error sends."""
        return dict(self.headers)


class ConfigError(LocalgateError):
    code = "config_error"


class BadRequest(LocalgateError):
    code = "invalid_request"

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.param = param


class TooLarge(BadRequest):
    """A request body past ``server.max_body_bytes``."""

    code = "request_too_large"
    http_status = 413


class MethodNotAllowed(BadRequest):
    code = "method_not_allowed"
    http_status = 405


class MoneyError(LocalgateError, ValueError):
    code = "invalid_amount"


class NotFound(LocalgateError):
    code = "not_found"
    http_status = 404


class Conflict(LocalgateError):
    code = "conflict"
    http_status = 409


class LedgerError(LocalgateError):
    code = "ledger_error"
    http_status = 409


class UnbalancedEntry(LedgerError):
    code = "unbalanced_entry"


class InsufficientFunds(LedgerError):
    """Not enough money: never 429, which SDKs retry. The body names the wallet,
    what was needed and available, and where to top up."""

    code = "insufficient_balance"
    http_status = 402

    def __init__(
        self,
        message: str,
        *,
        wallet: str = "",
        needed: int = 0,
        available: int = 0,
        currency: str = "",
        topup_url: str | None = None,
    ) -> None:
        super().__init__(message)
        self.wallet = wallet
        self.needed = needed
        self.available = available
        self.currency = currency
        self.topup_url = topup_url

    @classmethod
    def for_wallet(
        cls,
        wallet: str,
        currency: str,
        *,
        needed: int,
        available: int,
        topup_url: str | None = None,
        purpose: str = "needed",
    ) -> InsufficientFunds:
        """The one way this error is worded, wherever the ledger or a hold refuses."""
        from localgate.money import format_money  # money imports this module

        message = (
            f"wallet {wallet!r} has {format_money(available, currency)} available; "
            f"{format_money(needed, currency)} {purpose}"
        )
        if topup_url:
            message += f". Top up at {topup_url}"
        return cls(
            message,
            wallet=wallet,
            needed=needed,
            available=available,
            currency=currency,
            topup_url=topup_url,
        )

    def details(self) -> dict[str, Any]:
        from localgate.money import decimal_str  # money imports this module

        return {
            "wallet": self.wallet,
            "currency": self.currency or None,
            "needed": decimal_str(self.needed),
            "needed_micros": self.needed,
            "available": decimal_str(self.available),
            "available_micros": self.available,
            "topup_url": self.topup_url,
        }


class WalletFrozen(LedgerError):
    code = "wallet_frozen"
    http_status = 402


class HoldClosed(LedgerError):
    code = "hold_closed"


class AccessError(LocalgateError):
    code = "access_denied"
    http_status = 403


class Unauthenticated(AccessError):
    code = "invalid_api_key"
    http_status = 401


class Forbidden(AccessError):
    code = "forbidden"
    http_status = 403


class LoginRequired(Unauthenticated):
    code = "login_required"


class RateLimited(AccessError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after

    def response_headers(self) -> dict[str, str]:
        return {**self.headers, "retry-after": str(max(1, int(self.retry_after)))}


class UpstreamError(LocalgateError):
    """An upstream call failed. ``retryable``, set by the adapter that saw the
    failure, is true for connect errors, timeouts, 408, 429, 5xx and an error
    before a stream's first event; ``status`` is the upstream HTTP status or
    None; ``retry_after`` the upstream's Retry-After, relayed with a 429."""

    code = "upstream_error"
    http_status = 502

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retryable: bool = False,
        timeout: bool = False,
        body: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.timeout = timeout
        self.body = body
        self.retry_after: int | None = None  # the upstream's Retry-After, in seconds
        if timeout:
            self.http_status = 504

    def response_headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return dict(self.headers)
        return {**self.headers, "retry-after": str(max(1, self.retry_after))}


class HostedError(UpstreamError):
    """The hosted service could not be reached or refused a call."""

    code = "hosted_error"


class InternalError(LocalgateError):
    """A bug in localgate met while serving a request (logged with its traceback)."""

    code = "internal_error"
    http_status = 500


class LoopbackFailed(InternalError):
    """A page's call through the app's own ``/v1`` failed."""


# The reason the server gives the requests it cancels when it stops, so they can
# tell a shutdown from a client that went away (see is_shutdown).
SHUTDOWN_REASON = "localgate is shutting down"


class ShuttingDown(LocalgateError):
    """localgate is stopping: the request was cut short; another try will reach
    the next start (``Retry-After``)."""

    code = "shutting_down"
    http_status = 503

    def response_headers(self) -> dict[str, str]:
        return {**self.headers, "retry-after": "5"}


class WriterClosed(ShuttingDown):
    """The ledger writer has stopped: localgate is shutting down."""


def is_shutdown(exc: BaseException) -> bool:
    """Was this cancellation the server stopping (not a client leaving)?"""
    return isinstance(exc, asyncio.CancelledError) and SHUTDOWN_REASON in exc.args


class PaymentError(LocalgateError):
    code = "payment_error"
    http_status = 502


class PaymentsOff(PaymentError):
    """Payments are configured to a provider that cannot start (a key is missing)."""

    code = "payments_not_configured"
    http_status = 503


class WebhookRejected(PaymentError):
    code = "webhook_rejected"
    http_status = 400


# -- errors on the wire ------------------------------------------------------------

OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    502: "upstream_error",
    503: "service_unavailable",
    504: "upstream_error",
}
ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
}


def error_payload(exc: LocalgateError, dialect: Dialect = "admin") -> dict[str, Any]:
    """The JSON body that tells a caller about ``exc``, in the caller's dialect.

    - ``openai``: ``{"error": {"message", "type", "param", "code", ...details}}``
    - ``anthropic``: ``{"type": "error", "error": {"type", "message", ...details}}``
    - ``admin``: ``{"error": {"code", "message", ...details}}``
    """
    status, details = exc.http_status, exc.details()
    if dialect == "anthropic":
        kind = ANTHROPIC_TYPES.get(status, "api_error")
        return {"type": "error", "error": {"type": kind, "message": exc.message, **details}}
    if dialect == "openai":
        return {
            "error": {
                "message": exc.message,
                "type": OPENAI_TYPES.get(status, "api_error"),
                "param": getattr(exc, "param", None),
                "code": exc.code,
                **details,
            }
        }
    return {"error": {"code": exc.code, "message": exc.message, **details}}
