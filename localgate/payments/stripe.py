"""Stripe Checkout through the official ``stripe`` SDK.

- A top-up opens a Checkout Session in payment mode (idempotency key per
  top-up, ``client_reference_id`` = our id, metadata, ``success_url`` with
  ``{CHECKOUT_SESSION_ID}``, ``cancel_url``, the configured payment method
  types, WeChat Pay's ``client = web`` when it is on, ``expires_at``).
- Its state comes from the session (``status`` x ``payment_status``, and the
  PaymentIntent for async methods that failed).
- Webhooks are verified with ``stripe.Webhook.construct_event`` over the raw
  body; events missed while localgate was not running are read back through
  the Events API. Refund and dispute events carry the cumulative refunded
  amount and the dispute's state.

``[payments.stripe] api_base`` points the SDK at a Stripe-compatible server
(the tests run one on 127.0.0.1). The SDK is synchronous here and called in a
worker thread; its errors become :class:`~localgate.errors.PaymentError` once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import stripe

from localgate.config import Settings
from localgate.core.topups import METHOD_NAMES, Dispute, Report, Topup
from localgate.errors import ConfigError, PaymentError, WebhookRejected
from localgate.money import from_minor_units, to_minor_units
from localgate.payments.base import CatchUp, Checkout, CheckoutUrls, Notice, waiting_for

log = logging.getLogger(__name__)
T = TypeVar("T")

SESSION_LIFETIME = 60 * 60  # seconds; Stripe accepts 30 minutes to 24 hours
CATCH_UP_SLACK = 120  # seconds looked back before the cursor (clock skew, same-second events)
EVENT_TYPES = (
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.refunded",
    "charge.dispute.created",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_reinstated",
    "charge.dispute.funds_withdrawn",
)


class StripeProvider:
    name = "stripe"
    label = "Stripe Checkout"
    can_cancel = True
    sync_interval = 5.0

    def __init__(self, settings: Settings) -> None:
        key_env = settings.get("payments.stripe.secret_key_env")
        secret = settings.secret(key_env)
        if not secret:
            raise ConfigError(
                f"payments.provider is stripe but {key_env} is not set: export your Stripe "
                f"secret key (sk_test_... or sk_live_...) as {key_env}, or put it in the "
                "[env] table of secrets.toml, and restart; see docs/payments.md"
            )
        self._webhook_env = settings.get("payments.stripe.webhook_secret_env")
        self._webhook_secret = settings.secret(self._webhook_env)
        self.methods: tuple[str, ...] = tuple(settings.get("payments.stripe.methods"))
        api_base = settings.get("payments.stripe.api_base") or None
        self.test_mode = secret.startswith(("sk_test_", "rk_test_"))
        # The stdlib client: no extra dependency (the binary too), honours proxy env.
        self._http = stripe.UrllibClient()
        self._client = stripe.StripeClient(
            secret,
            base_addresses={"api": api_base} if api_base else {},
            http_client=self._http,
            max_network_retries=2,
        )

    def __repr__(self) -> str:  # never show the key
        return f"StripeProvider(methods={self.methods!r})"

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(fn)
        except stripe.APIConnectionError as exc:
            raise PaymentError(f"cannot reach Stripe to {what}: {exc.user_message or exc}") from exc
        except stripe.StripeError as exc:
            message = exc.user_message or str(exc) or exc.__class__.__name__
            raise PaymentError(f"Stripe refused to {what}: {message}") from exc

    # -- checkout -------------------------------------------------------------------

    async def open_checkout(self, topup: Topup, urls: CheckoutUrls) -> Checkout:
        sep = "&" if "?" in urls.success else "?"
        meta = {"topup_id": topup.id, "wallet": topup.wallet_id, "source": "localgate"}
        methods = [topup.method] + [m for m in self.methods if m != topup.method]
        params: dict[str, Any] = {
            "mode": "payment",
            "client_reference_id": topup.id,
            "metadata": meta,
            "payment_intent_data": {"metadata": meta},
            "line_items": [
                {
                    "quantity": 1,
                    "price_data": {
                        "currency": topup.currency.lower(),
                        "unit_amount": to_minor_units(topup.amount, topup.currency),
                        "product_data": {"name": f"localgate top-up: {topup.wallet_id} wallet"},
                    },
                }
            ],
            "payment_method_types": methods,
            "success_url": f"{urls.success}{sep}session_id={{CHECKOUT_SESSION_ID}}",
            "cancel_url": urls.cancel,
            "expires_at": int(time.time()) + SESSION_LIFETIME,
        }
        if "wechat_pay" in methods:
            params["payment_method_options"] = {"wechat_pay": {"client": "web"}}
        session = await self._call(
            "open a checkout session",
            lambda: self._client.v1.checkout.sessions.create(
                params,  # type: ignore[arg-type]
                {"idempotency_key": f"localgate-topup-{topup.id}"},
            ),
        )
        data = session.to_dict()
        return Checkout(
            reference=data["id"],
            url=data.get("url") or "",
            expires_at=_iso(data.get("expires_at")),
            payment_id=_id(data.get("payment_intent")),
        )

    async def fetch(self, topup: Topup) -> Report:
        if not topup.reference:
            return Report("pending", reason="the checkout session is being opened")
        session = await self._call(
            "read the checkout session",
            lambda: self._client.v1.checkout.sessions.retrieve(
                topup.reference or "",
                {"expand": ["payment_intent", "payment_intent.latest_charge"]},
            ),
        )
        return session_report(session.to_dict(), topup.method)

    async def cancel(self, topup: Topup) -> Report:
        if topup.reference:
            try:
                await self._call(
                    "expire the checkout session",
                    lambda: self._client.v1.checkout.sessions.expire(topup.reference or ""),
                )
            except PaymentError as exc:  # already complete or expired: the session says which
                log.info("expiring %s: %s", topup.reference, exc)
        return await self.fetch(topup)

    # -- events -------------------------------------------------------------------

    def verify_webhook(self, payload: bytes, signature: str | None) -> Notice:
        """The event in a webhook body, after checking its signature and age."""
        if not self._webhook_secret:
            raise WebhookRejected(
                f"webhook refused: {self._webhook_env} is not set, so its signature cannot be "
                "checked; set it to the signing secret (whsec_...) of your endpoint or of "
                "`stripe listen`",
                code="webhook_secret_missing",
            )
        try:
            stripe.Webhook.construct_event(payload, signature, self._webhook_secret)
        except stripe.SignatureVerificationError as exc:
            raise WebhookRejected(
                f"webhook refused: bad Stripe-Signature ({exc.user_message or exc})",
                code="bad_signature",
            ) from exc
        except ValueError as exc:
            raise WebhookRejected("webhook refused: the body is not a JSON event") from exc
        return event_notice(json.loads(payload))

    async def catch_up(self, cursor: str | None, since: str | None) -> CatchUp:
        if cursor is None and since is None:
            return CatchUp(cursor=str(int(time.time())))
        start = int(cursor) if cursor else int(_ts(since or ""))
        params = {
            "types": list(EVENT_TYPES),
            "created": {"gte": max(0, start - CATCH_UP_SLACK)},
            "limit": 100,
        }

        def read() -> list[dict[str, Any]]:
            page = self._client.v1.events.list(params)  # type: ignore[arg-type]
            return [e.to_dict() for e in page.auto_paging_iter()]

        events = await self._call("read missed events", read)
        events.reverse()  # Stripe lists newest first; apply them in the order they happened
        newest = max([int(e.get("created", 0)) for e in events] + [start])
        return CatchUp([event_notice(e) for e in events], str(newest))

    async def resolve(self, notice: Notice) -> Notice:
        """A charge or dispute event names only its PaymentIntent; when that is not
        known locally yet (events arrive in any order), its metadata names the top-up."""
        if notice.topup_id or not notice.payment_id:
            return notice
        intent = await self._call(
            "read the payment intent",
            lambda: self._client.v1.payment_intents.retrieve(notice.payment_id or ""),
        )
        topup_id = (intent.to_dict().get("metadata") or {}).get("topup_id")
        return replace(notice, topup_id=topup_id) if topup_id else notice

    def report(self, notice: Notice, topup: Topup) -> Report | None:
        obj = notice.data
        kind = notice.type
        if kind.startswith("checkout.session."):
            report = session_report(obj, topup.method)
            if kind == "checkout.session.async_payment_failed":
                return Report(
                    "failed",
                    report.reference,
                    reason=f"the {METHOD_NAMES.get(topup.method, topup.method)} payment failed "
                    "after checkout (Stripe: async_payment_failed)",
                    detail="Stripe: checkout.session.async_payment_failed",
                    payment_id=report.payment_id,
                )
            return report
        if kind == "charge.refunded":
            return _charge_report(obj, f"Stripe: {kind}")
        if kind.startswith("charge.dispute."):
            state = "open"
            if kind == "charge.dispute.funds_reinstated" or obj.get("status") == "won":
                state = "won"
            elif obj.get("status") == "lost":
                state = "lost"
            cur = str(obj.get("currency") or topup.currency)
            return Report(
                "completed",
                topup.reference,
                dispute=Dispute(
                    str(obj["id"]),
                    from_minor_units(int(obj.get("amount") or 0), cur),
                    state,  # type: ignore[arg-type]
                ),
                detail=f"Stripe: {kind}",
            )
        return None

    async def aclose(self) -> None:
        return None


# -- Stripe objects -> reports (pure) ---------------------------------------------


def session_report(s: Mapping[str, Any], method: str) -> Report:
    ref = str(s.get("id"))
    pi = s.get("payment_intent")
    payment_id = _id(pi)
    status, paid = s.get("status"), s.get("payment_status")
    if status == "expired":
        return Report(
            "expired",
            ref,
            reason="the Stripe checkout session expired before payment",
            detail="Stripe: checkout session expired",
            payment_id=payment_id,
        )
    if status == "complete" and paid in ("paid", "no_payment_required"):
        cur = str(s.get("currency") or "")
        amount = s.get("amount_total")
        charge = pi.get("latest_charge") if isinstance(pi, Mapping) else None
        refunded = None
        receipt = None
        if isinstance(charge, Mapping):
            refunded = from_minor_units(int(charge.get("amount_refunded") or 0), cur)
            receipt = charge.get("receipt_url")
        return Report(
            "completed",
            ref,
            amount=from_minor_units(int(amount), cur) if isinstance(amount, int) and cur else None,
            currency=cur.upper() or None,
            refunded=refunded,
            detail="Stripe: checkout session complete, paid",
            payment_id=payment_id,
            receipt_url=receipt,
        )
    if status == "complete" and isinstance(pi, Mapping):
        error = pi.get("last_payment_error")
        if pi.get("status") in ("requires_payment_method", "canceled") and error:
            message = error.get("message") if isinstance(error, Mapping) else None
            return Report(
                "failed",
                ref,
                reason=f"the payment failed: {message or pi.get('status')}",
                detail="Stripe: payment intent failed after checkout",
                payment_id=payment_id,
            )
    if status == "complete":
        return Report(
            "pending",
            ref,
            reason=f"{waiting_for(method, 'stripe')} (Stripe: checkout complete, payment processing)",
            payment_id=payment_id,
        )
    return Report("pending", ref, reason=waiting_for(method, "stripe"), payment_id=payment_id)


def _charge_report(charge: Mapping[str, Any], detail: str) -> Report:
    cur = str(charge.get("currency") or "")
    return Report(
        "completed",
        None,
        amount=from_minor_units(int(charge.get("amount") or 0), cur),
        currency=cur.upper(),
        refunded=from_minor_units(int(charge.get("amount_refunded") or 0), cur),
        detail=detail,
        payment_id=_id(charge.get("payment_intent")),
        receipt_url=charge.get("receipt_url"),
    )


def event_notice(event: Mapping[str, Any]) -> Notice:
    obj = (event.get("data") or {}).get("object") or {}
    kind = str(event.get("type", ""))
    topup_id = reference = None
    if obj.get("object") == "checkout.session":
        topup_id = obj.get("client_reference_id") or (obj.get("metadata") or {}).get("topup_id")
        reference = obj.get("id")
    return Notice(
        type=kind,
        data=obj,
        event_id=str(event.get("id")),
        topup_id=topup_id,
        reference=reference,
        payment_id=_id(obj.get("payment_intent")),
    )


def _id(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return str(value) if value else None


def _iso(ts: Any) -> str | None:
    if not isinstance(ts, int):
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
