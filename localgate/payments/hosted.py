"""Top-ups through the hosted service (hosted-api.md): it runs the checkout,
localgate asks it how each top-up went.

``POST /v1/topups`` opens one (idempotent by ``client_reference`` = our id);
``GET /v1/topups/{id}`` and ``GET /v1/topups?updated_since=`` report them.
Hosted statuses map onto the top-up machine: ``refunded`` and
``partially_refunded`` carry the cumulative ``refunded_amount``; ``disputed``
opens a dispute, and a disputed top-up reported ``completed`` again is a
dispute won. The hosted service has no cancel call, so a pending hosted
top-up ends by paying, failing or expiring there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from localgate.config import Settings
from localgate.core.topups import METHODS, Dispute, Report, Topup
from localgate.errors import ConfigError, MoneyError, PaymentError
from localgate.hosted import HostedClient, HostedError
from localgate.money import decimal_str, parse_amount
from localgate.payments.base import CatchUp, Checkout, CheckoutUrls, Notice, waiting_for
from localgate.store.db import utcnow

STATES = {
    "pending": "pending",
    "completed": "completed",
    "failed": "failed",
    "canceled": "canceled",
    "expired": "expired",
    "refunded": "completed",
    "partially_refunded": "completed",
    "disputed": "completed",
}


class HostedProvider:
    name = "hosted"
    label = "the hosted service"
    methods = METHODS
    can_cancel = False
    sync_interval = 5.0

    def __init__(self, settings: Settings, client: httpx.AsyncClient) -> None:
        base = settings.get("hosted.base_url")
        token_env = settings.get("hosted.token_env")
        if not base:
            raise ConfigError(
                "payments.provider is hosted but hosted.base_url is empty: set it to the "
                "hosted service's URL (see docs/payments.md)"
            )
        token = settings.secret(token_env)
        if not token:
            raise ConfigError(
                f"payments.provider is hosted but {token_env} is not set: export your hosted "
                f"account token as {token_env} (or put it in the [env] table of secrets.toml) "
                "and restart"
            )
        self.api = HostedClient(base, token, client)

    async def open_checkout(self, topup: Topup, urls: CheckoutUrls) -> Checkout:
        try:
            obj = await self.api.create_topup(
                wallet=topup.wallet_id,
                amount=_units(topup.amount),
                currency=topup.currency,
                method=topup.method,
                success_url=urls.success,
                cancel_url=urls.cancel,
                client_reference=topup.id,
            )
        except HostedError as exc:
            raise PaymentError(f"could not open the hosted checkout: {exc}") from exc
        if not obj.get("id") or not obj.get("checkout_url"):
            raise PaymentError("the hosted service opened a top-up without an id or checkout_url")
        return Checkout(str(obj["id"]), str(obj["checkout_url"]), obj.get("expires_at"))

    async def fetch(self, topup: Topup) -> Report:
        if not topup.reference:
            return Report("pending", reason="the hosted checkout is being opened")
        try:
            obj = await self.api.get_topup(topup.reference)
        except HostedError as exc:
            raise PaymentError(f"could not ask the hosted service: {exc}") from exc
        return hosted_report(obj, topup)

    async def cancel(self, topup: Topup) -> Report:
        return await self.fetch(topup)

    async def catch_up(self, cursor: str | None, since: str | None) -> CatchUp:
        start = cursor or since
        if start is None:
            return CatchUp(cursor=utcnow())
        try:
            items = await self.api.topups_since(start)
        except HostedError as exc:
            raise PaymentError(f"could not ask the hosted service: {exc}") from exc
        notices = [
            Notice(
                type="hosted.topup",
                data=item,
                topup_id=item.get("client_reference"),
                reference=item.get("id"),
            )
            for item in items
        ]
        stamps = [str(i["updated_at"]) for i in items if i.get("updated_at")]
        return CatchUp(notices, max([start, *stamps]))

    def report(self, notice: Notice, topup: Topup) -> Report | None:
        return hosted_report(notice.data, topup)

    async def aclose(self) -> None:
        return None


def hosted_report(obj: Mapping[str, Any], topup: Topup) -> Report:
    status = str(obj.get("status"))
    if status not in STATES:
        raise PaymentError(f"the hosted service reported an unknown status {status!r}")
    ref = str(obj.get("id") or topup.reference or "")
    state = STATES[status]
    reason = obj.get("failure_reason") or ""
    if state == "pending":
        return Report("pending", ref, reason=waiting_for(topup.method, "hosted"))
    if state != "completed":
        return Report(
            state,
            ref,
            reason=reason or f"the hosted service reports {status}",
            detail=f"hosted: {status}" + (f" ({reason})" if reason else ""),
        )
    cur = str(obj.get("currency") or "")
    received = _micros(obj.get("amount_received"))
    refunded = _micros(obj.get("refunded_amount")) or 0
    dispute = None
    dispute_id = f"{ref}:dispute"
    if status == "disputed":
        dispute = Dispute(dispute_id, (received or 0) - refunded, "open")
    elif topup.dispute_state == "open" and topup.dispute_id:
        dispute = Dispute(topup.dispute_id, topup.disputed, "won")
    return Report(
        "completed",
        ref,
        amount=received,
        currency=cur.upper() or None,
        refunded=refunded,
        dispute=dispute,
        detail=f"hosted: {status}",
    )


def _units(micros: int) -> str:
    text = decimal_str(micros).rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"


def _micros(value: Any) -> int | None:
    if value in (None, ""):
        return None
    try:
        return parse_amount(str(value), what="hosted amount")
    except MoneyError:
        return None
