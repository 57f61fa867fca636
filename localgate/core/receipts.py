"""The receipt: the record of one gateway request (ARCHITECTURE.md section 6).

A receipt is filled in as the request goes: created when the request arrives,
given its route and hold before the upstream call, and finished — usage,
charge, balance after, ledger entry, status — in the same transaction that
settles the hold. Failed and rejected requests get one too, at zero charge.

Its life is a handful of transitions, each a method that leaves it consistent
(:meth:`Receipt.hold_granted`, :meth:`Receipt.refused`, :meth:`Receipt.settle`,
:meth:`Receipt.fail`, :meth:`Receipt.reject`, :meth:`Receipt.interrupt`): the
route it names is always the one whose hold it carries, never a route that was
only tried.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from localgate.core.ids import random_bits
from localgate.core.pricing import Price, Usage, charge_micros, exact_cost
from localgate.core.routing import Attempt, RouteLike
from localgate.money import decimal_str

STATUSES = ("pending", "succeeded", "failed", "client_canceled", "interrupted", "rejected")

# What the receipt says about why it cost what it cost.
POLICY_CHARGED = "succeeded: charged for upstream-reported usage"
POLICY_ESTIMATED = "succeeded: upstream reported no usage, charged for estimated tokens"
POLICY_FAILED = "failed upstream: not charged"
POLICY_CUT = "upstream stream cut: charged for delivered tokens, estimated"
POLICY_CANCELED = "client canceled: charged for delivered tokens, estimated"
POLICY_CANCELED_UPSTREAM = "client canceled: charged for upstream-reported usage"
POLICY_REJECTED = "rejected before any upstream call: not charged"
POLICY_INTERRUPTED = "interrupted by a restart: hold released, not charged"
POLICY_SHUTDOWN = "interrupted by shutdown: hold released, not charged"
POLICY_SHUTDOWN_STREAM = "interrupted by shutdown: charged for delivered tokens, estimated"
INTERRUPTED_ERROR = "localgate stopped before the request finished"

_B32 = "0123456789abcdefghjkmnpqrstvwxyz"


def new_receipt_id(now: float | None = None) -> str:
    """``rc_`` + 10 base32 chars of milliseconds + 10 random: sorts by creation time."""
    ms = int((time.time() if now is None else now) * 1000)
    stamp = "".join(_B32[(ms >> shift) & 31] for shift in range(45, -1, -5))
    rand = random_bits(50)
    tail = "".join(_B32[(rand >> shift) & 31] for shift in range(45, -1, -5))
    return f"rc_{stamp}{tail}"


@dataclass
class Receipt:
    id: str
    request_id: str
    created_at: str
    endpoint: str
    stream: bool = False
    status: str = "pending"
    http_status: int | None = None
    finished_at: str | None = None
    key_id: str | None = None
    key_label: str | None = None
    key_project: str | None = None
    client: str | None = None
    user_agent: str | None = None
    requested_model: str | None = None
    catalog_model: str | None = None
    route_id: str | None = None
    route_type: str | None = None
    channel: str | None = None
    upstream_model: str | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    price_version_id: str | None = None
    price: Price | None = None
    cost_exact: Decimal = Decimal(0)
    charge_micros: int = 0
    currency: str | None = None
    wallet_id: str | None = None
    balance_before_micros: int | None = None
    balance_after_micros: int | None = None
    hold_id: str | None = None
    hold_micros: int = 0
    ledger_entry_id: int | None = None
    latency_ms: int | None = None
    ttft_ms: int | None = None
    error: str | None = None
    charge_policy: str | None = None
    # The API the caller spoke (openai-chat, anthropic-messages, ...), the kind of
    # upstream that held the money, and what translating between them left out.
    dialect: str | None = None
    upstream_kind: str | None = None
    notes: list[str] = field(default_factory=list)
    # Not stored: set once the receipt's final state is committed.
    closed: bool = field(default=False, compare=False)

    @property
    def fallback_used(self) -> bool:
        return len({a.get("route_id") for a in self.attempts}) > 1

    @property
    def retry_count(self) -> int:
        return max(0, len(self.attempts) - 1)

    # -- transitions ----------------------------------------------------------------

    def attempted(self, attempt: Attempt) -> None:
        """One more try of a route (the receipt lists every one)."""
        self.attempts.append(attempt.as_dict())

    def hold_granted(
        self,
        route: RouteLike,
        price_version_id: str | None,
        *,
        upstream_kind: str | None,
        hold_id: str | None,
        amount: int,
        wallet_id: str,
        currency: str,
        balance: int,
    ) -> None:
        """``route`` now holds money (nothing, on a free route: ``hold_id`` None):
        from here the receipt names it, and only it."""
        self.route_id, self.route_type, self.channel = route.id, route.settlement, route.channel
        self.upstream_model, self.price = route.upstream_model, route.price
        self.price_version_id, self.upstream_kind = price_version_id, upstream_kind
        self.hold_id, self.hold_micros = hold_id, amount
        self.wallet_id, self.currency = wallet_id, currency
        self.balance_before_micros = balance

    def note(self, text: str) -> None:
        """Something the caller should know about how the request was served."""
        if text not in self.notes:
            self.notes.append(text)

    def refused(self, wallet_id: str, currency: str) -> None:
        """A route's wallet or budget could not pay. While nothing is held, the
        refused wallet is the one the receipt names; an earlier route's hold
        keeps its place otherwise."""
        if self.route_id is None:
            self.wallet_id, self.currency = wallet_id, currency

    def settle(
        self, usage: Usage, status: str, policy: str, http_status: int, latency_ms: int
    ) -> int:
        """The call ended with ``usage`` on the held route: price it at that
        route's price version; the charge in micros (before any cap) is returned."""
        if self.price is None:
            raise ValueError("settle needs a route holding money")
        self.usage = usage
        self.cost_exact = exact_cost(usage, self.price)
        self.status, self.charge_policy, self.http_status = status, policy, http_status
        self.latency_ms = latency_ms
        if self.ttft_ms is None and status == "succeeded":
            self.ttft_ms = latency_ms
        return charge_micros(usage, self.price)

    def booked(self, *, entry_id: int, charged: int, balance_after: int) -> None:
        """The hold was settled (``charged`` > 0) or released by ledger entry ``entry_id``."""
        self.charge_micros = charged
        self.ledger_entry_id = entry_id
        self.balance_after_micros = balance_after
        self.balance_before_micros = balance_after + charged

    def add_policy_note(self, note: str) -> None:
        """A rule that changed the charge (a cap), appended to the charge policy."""
        self.charge_policy = f"{self.charge_policy or ''}; {note}"

    def fail(self, http_status: int, error: str, latency_ms: int | None = None) -> None:
        """Failed (upstream, or localgate itself): nothing is charged."""
        self.status, self.http_status, self.error = "failed", http_status, error
        self.charge_policy = POLICY_FAILED
        if latency_ms is not None:
            self.latency_ms = latency_ms

    def reject(self, http_status: int, error: str) -> None:
        """Refused before any upstream call (bad key, model, money): not charged."""
        self.status = "rejected"
        self.http_status = http_status
        self.error = error
        self.charge_policy = POLICY_REJECTED

    def interrupt(self, *, policy: str = POLICY_INTERRUPTED) -> None:
        """localgate stopped before the request finished; its hold is released.
        (Start-up recovery does the same to stored rows: store.receipts.interrupt_pending.)"""
        self.status, self.charge_policy, self.error = "interrupted", policy, INTERRUPTED_ERROR
        self.http_status = 503

    # -- what the caller is told -----------------------------------------------------

    def headers(self, *, pending: bool = False) -> dict[str, str]:
        """The x-localgate-* headers: receipt id, charge, wallet, balance."""
        headers = {
            "x-localgate-receipt": self.id,
            "x-localgate-charge": "pending"
            if pending
            else _amount(self.charge_micros, self.currency),
        }
        if self.wallet_id:
            headers["x-localgate-wallet"] = self.wallet_id
        balance = self.balance_before_micros if pending else self.balance_after_micros
        if balance is not None:
            headers["x-localgate-balance"] = _amount(balance, self.currency)
        return headers

    def sse_comment(self) -> bytes:
        """The same as an SSE comment line, for tools that read only a stream's body."""
        fields = " ".join(
            f"{k.removeprefix('x-localgate-')}={v.replace(' ', '_')}"
            for k, v in self.headers().items()
        )
        return f": localgate {fields}\n\n".encode()

    def as_fields(self) -> dict[str, Any]:
        """The plain fields (usage, price and the closed flag are stored apart).
        Shallow on purpose: dataclasses.asdict would deep-copy on the hot path."""
        return {name: getattr(self, name) for name in _PLAIN_FIELDS}


def _amount(micros: int | None, currency: str | None) -> str:
    return f"{decimal_str(micros or 0)} {currency or ''}".strip()


# User-Agent fragments of the tools people point at localgate, most specific first.
_CLIENTS = (
    ("claude-cli", "Claude Code"),
    ("claude-code", "Claude Code"),
    ("codex", "Codex CLI"),
    ("cursor", "Cursor"),
    ("aider", "aider"),
    ("roo-code", "Roo Code"),
    ("roocode", "Roo Code"),
    ("cline", "Cline"),
    ("continue", "Continue"),
    ("localgate-playground", "localgate playground"),
    ("anthropic/python", "anthropic-python"),
    ("anthropic/js", "anthropic-node"),
    ("openai/python", "openai-python"),
    ("openai/js", "openai-node"),
    ("python-httpx", "httpx"),
    ("python-requests", "requests"),
    ("curl/", "curl"),
)


def recognise_client(user_agent: str | None) -> str | None:
    """The tool behind a request, from its User-Agent (``None`` if unknown)."""
    if not user_agent:
        return None
    ua = user_agent.lower()
    for fragment, name in _CLIENTS:
        if fragment in ua:
            return name
    return "other"


_PLAIN_FIELDS = tuple(
    f.name for f in fields(Receipt) if f.name not in ("usage", "price", "closed", "notes")
)


# Credentials that could reach free text: our keys, upstream keys, bearer tokens,
# and the admin token, which has no prefix: it is secrets.token_urlsafe(32)
# (config_files.admin_token), 43 URL-safe base64 characters standing alone.
_SECRETS = re.compile(
    r"(?P<bearer>(?i:bearer)\s+)[^\s\"',;]+"
    r"|(?P<prefix>lg_|sk-ant-|sk-proj-|sk-|sk_live_|sk_test_|rk_live_|rk_test_|whsec_|AIza)"
    r"[A-Za-z0-9_\-]{12,}"
    r"|(?<![A-Za-z0-9_\-])[A-Za-z0-9_\-]{43}(?![A-Za-z0-9_\-])"
)


def mask_secrets(text: str | None) -> str | None:
    """``text`` with API keys, bearer tokens and anything shaped like the admin token
    replaced by their prefix (if any) and an ellipsis."""
    if not text:
        return text
    return _SECRETS.sub(lambda m: (m.group("bearer") or m.group("prefix") or "") + "…", text)
