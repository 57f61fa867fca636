"""The top-up state machine and its fulfilment rules (ARCHITECTURE.md section 7).

A top-up is one payment into one wallet::

    created -> pending -> completed | failed | canceled | expired
    completed -> refunded (partial or full, again and again) | disputed
    disputed -> reinstated (dispute won)

Payment providers report what they know as a :class:`Report` — the payment's
own state plus the cumulative refunded amount and any dispute — and
:func:`plan` turns (top-up, report, the wallet's available money) into the
transitions and ledger entries to apply. It is pure: the store runs it inside
the writer's transaction, so the decision and the money move together and a
payment confirmed by webhook, return page and sync at once is credited once.

Rules that hold whatever reports arrive, in whatever order:

- money is credited only on a ``completed`` report whose amount and currency
  match the top-up, through an entry keyed ``topup:<provider>:<reference>``;
- a report that would move the machine backwards (``failed`` after
  ``completed``) is refused and recorded as refused, never applied;
- refunds and disputes post new entries (never edit the credit); what the
  wallet cannot cover is recorded as a shortfall and the wallet is frozen for
  new holds instead of going below zero.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Literal

from localgate.core.ledger import (
    EntryDraft,
    Posting,
    funding_account,
    refund_account,
    topup_entry,
    wallet_account,
)
from localgate.errors import MoneyError
from localgate.money import (
    MICROS_PER_UNIT,
    currency,
    format_money,
    micros_to_decimal,
    to_minor_units,
)

STATUSES = (
    "created",
    "pending",
    "completed",
    "failed",
    "canceled",
    "expired",
    "refunded",
    "disputed",
    "reinstated",
)
# The payment's own phase, as providers report it.
PAYMENT_STATES = ("pending", "completed", "failed", "canceled", "expired")
SOURCES = ("return", "webhook", "sync", "user")
METHODS = ("card", "wechat_pay", "alipay")

OPEN = frozenset({"created", "pending"})
NO_MONEY = frozenset({"failed", "canceled", "expired"})
CREDITED = frozenset({"completed", "refunded", "disputed", "reinstated"})

TRANSITIONS: dict[str, frozenset[str]] = {
    "created": frozenset({"pending", "completed", "failed", "canceled", "expired"}),
    "pending": frozenset({"completed", "failed", "canceled", "expired"}),
    "completed": frozenset({"refunded", "disputed"}),
    "refunded": frozenset({"refunded", "disputed"}),
    "disputed": frozenset({"disputed", "reinstated"}),
    "reinstated": frozenset({"refunded", "disputed"}),
    "failed": frozenset(),
    "canceled": frozenset(),
    "expired": frozenset(),
}

# Smallest and largest top-up per currency, in whole units. Stripe's own
# minimum charge is about 0.50 USD; the maximum guards against a typo.
BOUNDS: dict[str, tuple[str, str]] = {
    "USD": ("1", "5000"),
    "EUR": ("1", "5000"),
    "GBP": ("1", "5000"),
    "CNY": ("5", "35000"),
    "HKD": ("10", "40000"),
    "JPY": ("100", "750000"),
}
DEFAULT_BOUNDS = ("1", "5000")

METHOD_NAMES = {"card": "Card", "wechat_pay": "WeChat Pay", "alipay": "Alipay"}


def new_topup_id() -> str:
    return "tu_" + os.urandom(8).hex()


def ledger_key(provider: str, reference: str) -> str:
    """The idempotency key of a payment's credit: one credit per provider reference."""
    return f"topup:{provider}:{reference}"


def can_move(src: str, dst: str) -> bool:
    return dst in TRANSITIONS.get(src, frozenset())


def amount_bounds(code: str) -> tuple[int, int]:
    low, high = BOUNDS.get(code.upper(), DEFAULT_BOUNDS)
    return int(low) * MICROS_PER_UNIT, int(high) * MICROS_PER_UNIT


def short_money(micros: int, code: str) -> str:
    """``$20.00`` rather than ``$20.000000`` when the amount is whole minor units."""
    digits = currency(code).minor_digits
    if micros % 10 ** (6 - digits):
        return format_money(micros, code)
    sign = "-" if micros < 0 else ""
    value = micros_to_decimal(abs(micros)).quantize(Decimal(1).scaleb(-digits))
    return f"{sign}{currency(code).symbol}{value:f}"


def check_amount(micros: int, code: str) -> None:
    """Refuse amounts outside the currency's bounds or finer than its minor unit."""
    low, high = amount_bounds(code)
    if micros < low:
        raise MoneyError(
            f"the smallest top-up in {code} is {short_money(low, code)}; "
            f"you asked for {short_money(micros, code)}",
            code="amount_too_small",
        )
    if micros > high:
        raise MoneyError(
            f"the largest top-up in {code} is {short_money(high, code)}; "
            f"you asked for {short_money(micros, code)} (split it into several top-ups)",
            code="amount_too_large",
        )
    digits = currency(code).minor_digits
    try:
        to_minor_units(micros, code)
    except MoneyError:
        raise MoneyError(
            f"{code} top-ups take at most {digits} decimals "
            f"(e.g. {short_money(low, code)}), got {short_money(micros, code)}",
            code="invalid_amount",
        ) from None


def check_method(method: str, allowed: tuple[str, ...] | list[str]) -> None:
    if method not in METHODS:
        raise MoneyError(
            f"unknown payment method {method!r}; use one of {', '.join(METHODS)}",
            code="invalid_method",
        )
    if method not in allowed:
        raise MoneyError(
            f"{METHOD_NAMES[method]} is not enabled here; enabled: "
            f"{', '.join(METHOD_NAMES[m] for m in allowed)} (see [payments.stripe] methods)",
            code="method_not_enabled",
        )


# -- what providers tell us --------------------------------------------------


@dataclass(frozen=True)
class Dispute:
    id: str
    amount: int  # micros
    state: Literal["open", "won", "lost"]


@dataclass(frozen=True)
class Report:
    """What a provider knows about one payment, provider-neutral.

    ``status`` is the payment phase (:data:`PAYMENT_STATES`); ``refunded`` is
    the cumulative refunded amount (None: not known by this report); a
    ``dispute`` is the latest one.
    """

    status: str
    reference: str | None = None
    amount: int | None = None  # micros received, for completed
    currency: str | None = None
    refunded: int | None = None
    dispute: Dispute | None = None
    reason: str = ""  # why it failed, or what we are waiting for
    detail: str = ""
    payment_id: str | None = None
    receipt_url: str | None = None

    def __post_init__(self) -> None:
        if self.status not in PAYMENT_STATES:
            raise ValueError(f"unknown payment state {self.status!r}")


@dataclass(frozen=True)
class Topup:
    """The fields of a stored top-up that decisions depend on."""

    id: str
    wallet_id: str
    currency: str
    amount: int
    method: str
    provider: str
    status: str
    reference: str | None = None
    ledger_entry_id: int | None = None
    refunded: int = 0
    disputed: int = 0  # what an open dispute withdrew from the wallet
    dispute_uncovered: int = 0  # what it claimed beyond the balance (part of shortfall)
    dispute_id: str | None = None
    dispute_state: str | None = None
    shortfall: int = 0
    cancel_requested: bool = False


@dataclass(frozen=True)
class Transition:
    src: str
    dst: str
    detail: str
    entry: int | None = None  # index into Plan.entries of the entry this move posted


@dataclass
class Plan:
    """What to apply: transitions, ledger entries, field changes; or what was refused."""

    topup: Topup  # the top-up as it will be after the plan
    transitions: list[Transition] = field(default_factory=list)
    entries: list[EntryDraft] = field(default_factory=list)
    refused: list[Transition] = field(default_factory=list)
    freeze_reason: str | None = None
    reason: str | None = None  # new failure / waiting reason, if the report gave one
    credit: bool = False  # entries[0] is the payment's credit

    @property
    def changed(self) -> bool:
        return bool(self.transitions or self.entries)


def plan(topup: Topup, report: Report, *, available: int) -> Plan:
    """Decide what ``report`` does to ``topup``. ``available`` is the wallet's free money."""
    p = Plan(topup)
    if report.reason:
        p.reason = report.reason
    if topup.status in OPEN or topup.status in NO_MONEY:
        _payment_phase(p, report)
    elif report.status != "completed":
        _refuse(p, report.status, report.detail or report.reason, "the payment was completed")
    if p.topup.status in CREDITED:
        available += sum(e.wallet_deltas()[0] for e in p.entries)
        available = _refund_phase(p, report, available)
        _dispute_phase(p, report, available)
    return p


def _move(p: Plan, dst: str, detail: str, *, posted: bool = False) -> None:
    entry = len(p.entries) - 1 if posted else None
    p.transitions.append(Transition(p.topup.status, dst, detail, entry))
    p.topup = replace(p.topup, status=dst)


def _refuse(p: Plan, dst: str, detail: str, why: str) -> None:
    p.refused.append(Transition(p.topup.status, dst, f"refused ({why}): {detail}".rstrip(": ")))


def _payment_phase(p: Plan, report: Report) -> None:
    t = p.topup
    dst = report.status
    if dst == "pending" and t.status == "pending":
        return
    if dst in NO_MONEY and t.status == "pending" and t.cancel_requested and dst == "expired":
        dst = "canceled"  # we expired the session because the user canceled
    if dst == t.status:
        return
    if not can_move(t.status, dst):
        _refuse(p, dst, report.detail, f"{t.status} is final")
        return
    if dst != "completed":
        _move(p, dst, report.detail or report.reason or f"the provider reports {dst}")
        return
    reference = report.reference or t.reference
    problem = _mismatch(t, report, reference)
    if problem:
        _refuse(p, dst, report.detail, problem)
        return
    assert reference is not None
    p.entries.append(
        topup_entry(
            t.wallet_id,
            t.currency,
            t.amount,
            t.provider,
            topup_id=t.id,
            idempotency_key=ledger_key(t.provider, reference),
            memo=f"top-up {t.id} via {t.provider} ({METHOD_NAMES.get(t.method, t.method)})",
        )
    )
    p.credit = True
    p.reason = None
    p.topup = replace(p.topup, reference=reference)
    _move(p, "completed", report.detail or "payment confirmed", posted=True)


def _mismatch(t: Topup, report: Report, reference: str | None) -> str | None:
    if not reference:
        return "no payment reference"
    if t.reference and reference != t.reference:
        return f"reference {reference} is not this top-up's {t.reference}"
    if report.currency is None or report.currency.upper() != t.currency:
        return f"currency mismatch: paid in {report.currency}, top-up is in {t.currency}"
    if report.amount != t.amount:
        paid = "unknown" if report.amount is None else format_money(report.amount, t.currency)
        return f"amount mismatch: paid {paid}, top-up is {format_money(t.amount, t.currency)}"
    return None


def _take(p: Plan, wanted: int, available: int, what: str) -> int:
    """How much of ``wanted`` the wallet can give; the rest becomes a shortfall."""
    taken = max(0, min(wanted, available))
    missing = wanted - taken
    if missing:
        t = p.topup
        p.topup = replace(t, shortfall=t.shortfall + missing)
        p.freeze_reason = (
            f"top-up {t.id}: {what} exceeded the balance by "
            f"{format_money(missing, t.currency)}; new requests wait until a top-up covers it"
        )
    return taken


def _refund_phase(p: Plan, report: Report, available: int) -> int:
    t = p.topup
    if report.refunded is None or report.refunded <= t.refunded:
        return available
    total = min(report.refunded, t.amount)
    delta = total - t.refunded
    if delta <= 0 or not can_move(t.status, "refunded"):
        if delta > 0:
            _refuse(p, "refunded", report.detail, f"{t.status} takes no refund")
        return available
    kind = "full" if total == t.amount else "partial"
    detail = (
        f"{kind} refund of {format_money(delta, t.currency)} "
        f"(refunded {format_money(total, t.currency)} of {format_money(t.amount, t.currency)})"
    )
    taken = _take(p, delta, available, f"a refund of {format_money(delta, t.currency)}")
    if taken:
        p.entries.append(
            EntryDraft(
                "refund",
                t.wallet_id,
                t.currency,
                (
                    Posting(wallet_account(t.wallet_id), t.currency, -taken),
                    Posting(refund_account(t.provider), t.currency, taken),
                ),
                memo=f"{detail}, top-up {t.id}",
                topup_id=t.id,
                idempotency_key=f"refund:{t.provider}:{t.reference}:{total}",
            )
        )
    if taken < delta:
        detail += f"; {format_money(delta - taken, t.currency)} not covered by the balance"
    p.topup = replace(p.topup, refunded=total)
    _move(p, "refunded", detail, posted=bool(taken))
    return available - taken


def _dispute_phase(p: Plan, report: Report, available: int) -> None:
    d = report.dispute
    if d is None:
        return
    t = p.topup
    if t.dispute_id != d.id and t.status != "disputed":
        if not can_move(t.status, "disputed"):
            return
        wanted = min(d.amount, t.amount - t.refunded)
        taken = _take(p, wanted, available, f"a dispute of {format_money(wanted, t.currency)}")
        if taken:
            p.entries.append(
                EntryDraft(
                    "reversal",
                    t.wallet_id,
                    t.currency,
                    (
                        Posting(wallet_account(t.wallet_id), t.currency, -taken),
                        Posting(funding_account(t.provider), t.currency, taken),
                    ),
                    memo=f"dispute {d.id}: {format_money(taken, t.currency)} withdrawn, top-up {t.id}",
                    reverses_id=t.ledger_entry_id,
                    topup_id=t.id,
                    idempotency_key=f"dispute:{t.provider}:{d.id}",
                )
            )
        p.topup = replace(
            p.topup,
            dispute_id=d.id,
            dispute_state="open",
            disputed=taken,
            dispute_uncovered=wanted - taken,
        )
        detail = f"dispute {d.id} opened: {format_money(wanted, t.currency)} withdrawn"
        if taken < wanted:
            detail += f" ({format_money(wanted - taken, t.currency)} not covered by the balance)"
        _move(p, "disputed", detail, posted=bool(taken))
        t = p.topup
    if t.dispute_id != d.id or t.status != "disputed" or d.state == "open":
        return
    if d.state == "won":
        # Give back what the wallet paid, at the time or from later top-ups;
        # forgive what it still owes for this dispute.
        still_owed = min(t.shortfall, t.dispute_uncovered)
        back = t.disputed + t.dispute_uncovered - still_owed
        if back:
            p.entries.append(
                topup_entry(
                    t.wallet_id,
                    t.currency,
                    back,
                    t.provider,
                    topup_id=t.id,
                    idempotency_key=f"reinstate:{t.provider}:{d.id}",
                    memo=f"dispute {d.id} won: {format_money(back, t.currency)} reinstated",
                )
            )
        p.topup = replace(
            p.topup,
            dispute_state="won",
            disputed=0,
            dispute_uncovered=0,
            shortfall=t.shortfall - still_owed,
        )
        _move(p, "reinstated", f"dispute {d.id} won: funds reinstated", posted=bool(back))
    elif t.dispute_state != "lost":
        p.topup = replace(p.topup, dispute_state="lost")
        _move(p, "disputed", f"dispute {d.id} lost: the money stays with the card holder")


def shortfall_recovery(
    wallet_id: str,
    code: str,
    available: int,
    owed: list[tuple[str, str, int, int]],
) -> tuple[list[EntryDraft], dict[str, int]]:
    """Cover earlier shortfalls from newly arrived money.

    ``owed`` lists (top-up id, provider, shortfall, how many recoveries so
    far); returns the refund entries to post and each top-up's new shortfall.
    """
    drafts: list[EntryDraft] = []
    left: dict[str, int] = {}
    for topup_id, provider, shortfall, seq in owed:
        take = max(0, min(shortfall, available))
        if take:
            available -= take
            drafts.append(
                EntryDraft(
                    "refund",
                    wallet_id,
                    code,
                    (
                        Posting(wallet_account(wallet_id), code, -take),
                        Posting(refund_account(provider), code, take),
                    ),
                    memo=f"covers the uncovered refund/dispute of top-up {topup_id}",
                    topup_id=topup_id,
                    idempotency_key=f"shortfall:{topup_id}:{seq + 1}",
                )
            )
        left[topup_id] = shortfall - take
    return drafts, left
