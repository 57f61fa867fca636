"""The payment provider protocol: open a checkout, report a payment, cancel it.

A provider turns its own objects (a Stripe Checkout Session, a hosted top-up,
a sandbox payment) into provider-neutral :class:`~localgate.core.topups.Report`
values; the top-up service decides what they mean and moves the money. The
provider never touches the ledger.

Providers register in ``localgate.payments.PROVIDERS`` — the sandbox the same
way as Stripe — and are built by :func:`localgate.payments.make_provider`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from localgate.core.topups import Report, Topup


@dataclass(frozen=True)
class CheckoutUrls:
    success: str  # where the provider sends the payer back (our return page)
    cancel: str  # where it sends them when they give up


@dataclass(frozen=True)
class Checkout:
    """A checkout the provider opened for one top-up."""

    reference: str  # the provider's payment reference: the fulfilment key
    url: str  # where the payer goes to pay
    expires_at: str | None = None  # ISO 8601 UTC
    payment_id: str | None = None


@dataclass(frozen=True)
class Notice:
    """Something a provider told us about one payment: a webhook event, an event
    found by catch-up, or a state snapshot. ``event_id`` (when set) de-duplicates
    it; ``topup_id``, ``reference`` and ``payment_id`` find the top-up."""

    type: str
    data: Mapping[str, Any]
    event_id: str | None = None
    topup_id: str | None = None
    reference: str | None = None
    payment_id: str | None = None


@dataclass
class CatchUp:
    notices: list[Notice] = field(default_factory=list)
    cursor: str | None = None


class PaymentProvider(Protocol):
    name: str  # also the ledger's funding account: funding:<name>
    label: str  # how the UI names it
    methods: tuple[str, ...]  # payment methods offered
    can_cancel: bool  # can a pending checkout be stopped from here
    sync_interval: float  # seconds between checks of a pending top-up at first

    async def open_checkout(self, topup: Topup, urls: CheckoutUrls) -> Checkout:
        """Create the checkout (idempotent per top-up id); raises PaymentError."""
        ...

    async def fetch(self, topup: Topup) -> Report:
        """The payment's current state, asked of the provider; raises PaymentError."""
        ...

    async def cancel(self, topup: Topup) -> Report:
        """Stop a pending payment (expire the session); returns the state after."""
        ...

    async def catch_up(self, cursor: str | None, since: str | None) -> CatchUp:
        """What changed since ``cursor`` (events missed while offline); with no
        cursor yet, since ``since`` (the oldest top-up that could still change)."""
        ...

    def report(self, notice: Notice, topup: Topup) -> Report | None:
        """What a notice means for ``topup`` (pure); None: nothing to act on."""
        ...

    async def aclose(self) -> None: ...


def waiting_for(method: str, provider: str) -> str:
    """What a pending payment waits for, in the user's words."""
    if method == "wechat_pay":
        return "WeChat Pay confirmation: scan the QR code and confirm the payment on your phone"
    if method == "alipay":
        return "Alipay confirmation: finish the payment in Alipay"
    where = {"stripe": "Stripe Checkout", "hosted": "the hosted checkout"}.get(
        provider, "the checkout page"
    )
    return f"you to finish paying on {where}"
