"""The receipt: the record of one gateway request (ARCHITECTURE.md section 6).

A receipt is filled in as the request goes: created when the request arrives,
given its route and hold before the upstream call, and finished — usage,
charge, balance after, ledger entry, status — in the same transaction that
settles the hold. Failed and rejected requests get one too, at zero charge.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

from localgate.core.ids import random_bits
from localgate.core.pricing import Price, Usage

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
    # Not stored: set once the receipt's final state is committed.
    closed: bool = field(default=False, compare=False)

    @property
    def fallback_used(self) -> bool:
        return len({a.get("route_id") for a in self.attempts}) > 1

    @property
    def retry_count(self) -> int:
        return max(0, len(self.attempts) - 1)

    def reject(self, http_status: int, error: str) -> None:
        self.status = "rejected"
        self.http_status = http_status
        self.error = error
        self.charge_policy = POLICY_REJECTED

    def as_fields(self) -> dict[str, Any]:
        """The plain fields (usage, price and the closed flag are stored apart).
        Shallow on purpose: dataclasses.asdict would deep-copy on the hot path."""
        return {name: getattr(self, name) for name in _PLAIN_FIELDS}


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


_PLAIN_FIELDS = tuple(f.name for f in fields(Receipt) if f.name not in ("usage", "price", "closed"))


# Credentials that could reach free text: our keys, upstream keys, bearer tokens.
_SECRETS = re.compile(
    r"(?P<bearer>(?i:bearer)\s+)[^\s\"',;]+"
    r"|(?P<prefix>lg_|sk-ant-|sk-proj-|sk-|sk_live_|sk_test_|rk_live_|rk_test_|whsec_|AIza)"
    r"[A-Za-z0-9_\-]{12,}"
)


def mask_secrets(text: str | None) -> str | None:
    """``text`` with API keys and bearer tokens replaced by their prefix and an ellipsis."""
    if not text:
        return text
    return _SECRETS.sub(lambda m: (m.group("bearer") or m.group("prefix")) + "…", text)
