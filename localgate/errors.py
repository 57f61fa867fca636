"""The exceptions localgate raises on purpose.

Adapters translate outside exceptions (httpx, stripe, sqlite3) into these once,
at the boundary, with ``raise ... from exc``; the web layer maps them to HTTP in
one place (``localgate.web.errors``)::

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
    │   ├── InsufficientFunds  a hold or debit larger than the available balance
    │   ├── WalletFrozen       the wallet takes no new holds
    │   └── HoldClosed         settle/release of a hold that is no longer open
    ├── AccessError            a key or session may not do this
    │   ├── Unauthenticated    no or unknown credentials (401)
    │   ├── Forbidden          credentials valid, action outside their scope (403)
    │   └── RateLimited        too many requests / budget exhausted (429)
    ├── UpstreamError          an upstream call failed (status, retryable)
    ├── InternalError          a localgate bug met while serving a request (500)
    └── PaymentError           the payment provider refused or failed
"""

from __future__ import annotations


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
    code = "insufficient_balance"
    http_status = 402

    def __init__(
        self, message: str, *, wallet: str = "", needed: int = 0, available: int = 0
    ) -> None:
        super().__init__(message)
        self.wallet = wallet
        self.needed = needed
        self.available = available


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


class RateLimited(AccessError):
    code = "rate_limited"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int = 1, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class UpstreamError(LocalgateError):
    """An upstream call failed. ``retryable`` is true for connect errors,
    timeouts, 429 and 5xx; ``status`` is the upstream HTTP status or None."""

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
        if timeout:
            self.http_status = 504


class InternalError(LocalgateError):
    """A bug in localgate met while serving a request (logged with its traceback)."""

    code = "internal_error"
    http_status = 500


class PaymentError(LocalgateError):
    code = "payment_error"
    http_status = 502
