"""The sandbox payment provider: a pretend payment processor inside localgate.

It needs no account and no network, so every top-up state can be seen
offline. Its "processor" is the ``sandbox_payments`` table; the sandbox
checkout page (``/sandbox/checkout/{id}``, clearly marked) changes a payment
with the buttons Pay, Pay later (stays pending, then completes by itself),
Decline and Cancel, and — once paid — Refund, Open a dispute, Win / Lose the
dispute. localgate then learns the outcome the way it learns Stripe's: the
return page, the background sync or the page being open ask :meth:`fetch`.

Sandbox money comes from the ledger account ``funding:sandbox``.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from localgate.config import Settings
from localgate.core.topups import METHODS, Dispute, Report, Topup
from localgate.errors import Conflict, NotFound
from localgate.money import format_money
from localgate.payments.base import CatchUp, Checkout, CheckoutUrls, Notice, waiting_for
from localgate.store import Store
from localgate.store.db import utcnow
from localgate.store.topups import later

SETTLE_AFTER = 5.0  # seconds a "Pay later" payment stays pending
EXPIRES_AFTER = 30 * 60.0  # seconds a sandbox checkout stays open

ACTIONS = (
    "pay",
    "pay_later",
    "confirm",
    "decline",
    "cancel",
    "expire",
    "refund",
    "dispute",
    "dispute_won",
    "dispute_lost",
)
# action -> the payment states it applies to
_FROM = {
    "pay": ("open",),
    "pay_later": ("open",),
    "confirm": ("processing",),
    "decline": ("open", "processing"),
    "cancel": ("open",),
    "expire": ("open",),
    "refund": ("paid",),
    "dispute": ("paid",),
    "dispute_won": ("paid",),
    "dispute_lost": ("paid",),
}


class SandboxProvider:
    name = "sandbox"
    label = "Sandbox (test money, no payment account)"
    methods = METHODS
    can_cancel = True
    sync_interval = 2.0

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        settle_after: float = SETTLE_AFTER,
        expires_after: float = EXPIRES_AFTER,
    ) -> None:
        self.settings = settings
        self.store = store
        self.settle_after = settle_after
        self.expires_after = expires_after

    async def open_checkout(self, topup: Topup, urls: CheckoutUrls) -> Checkout:
        base = urls.success.split("/billing/", 1)[0]
        expires = later(self.expires_after)
        reference = await self.store.write(self._open, topup, expires)
        return Checkout(reference, f"{base}/sandbox/checkout/{topup.id}", expires)

    def _open(self, conn: sqlite3.Connection, topup: Topup, expires: str) -> str:
        row = conn.execute(
            "SELECT id FROM sandbox_payments WHERE topup_id = ?", (topup.id,)
        ).fetchone()
        if row is not None:  # opened before: the same checkout (idempotent)
            return str(row[0])
        reference = "sbx_" + os.urandom(8).hex()
        conn.execute(
            "INSERT INTO sandbox_payments (id, topup_id, amount_micros, currency, method, "
            "status, expires_at, updated_at) VALUES (?,?,?,?,?,'open',?,?)",
            (reference, topup.id, topup.amount, topup.currency, topup.method, expires, utcnow()),
        )
        return reference

    def payment(self, topup_id: str) -> dict[str, Any]:
        """The sandbox payment of a top-up, with its state as of now."""
        row = (
            self.store.read()
            .execute("SELECT * FROM sandbox_payments WHERE topup_id = ?", (topup_id,))
            .fetchone()
        )
        if row is None:
            raise NotFound(f"no sandbox payment for top-up {topup_id!r}", code="unknown_topup")
        out = dict(row)
        out["status"] = _effective(out, utcnow())
        return out

    async def fetch(self, topup: Topup) -> Report:
        return self._report(self.payment(topup.id), topup)

    async def cancel(self, topup: Topup) -> Report:
        pay = self.payment(topup.id)
        if pay["status"] == "open":
            await self.act(topup.id, "cancel")
        return await self.fetch(topup)

    async def catch_up(self, cursor: str | None, since: str | None) -> CatchUp:
        return CatchUp()  # nothing happens here while localgate is not running

    def report(self, notice: Notice, topup: Topup) -> Report | None:
        return self._report(dict(notice.data), topup)

    async def aclose(self) -> None:
        return None

    async def act(self, topup_id: str, action: str, amount: int | None = None) -> dict[str, Any]:
        """Do what a sandbox checkout button says; returns the payment after."""
        if action not in ACTIONS:
            raise Conflict(f"unknown sandbox action {action!r}; use one of {', '.join(ACTIONS)}")
        await self.store.write(self._act, topup_id, action, amount, self.settle_after)
        return self.payment(topup_id)

    @staticmethod
    def _act(
        conn: sqlite3.Connection, topup_id: str, action: str, amount: int | None, settle: float
    ) -> None:
        row = conn.execute(
            "SELECT * FROM sandbox_payments WHERE topup_id = ?", (topup_id,)
        ).fetchone()
        if row is None:
            raise NotFound(f"no sandbox payment for top-up {topup_id!r}", code="unknown_topup")
        now = utcnow()
        pay = dict(row)
        state = _effective(pay, now)
        if state not in _FROM[action]:
            raise Conflict(
                f"the sandbox payment is {state}: {action.replace('_', ' ')} needs it "
                f"{' or '.join(_FROM[action])}",
                code="sandbox_action_refused",
            )
        disputed = pay["dispute_state"]
        changes: dict[str, Any] = {"status": state}
        if action == "pay" or action == "confirm":
            changes["status"] = "paid"
        elif action == "pay_later":
            changes.update(status="processing", settle_at=later(settle, now))
        elif action == "decline":
            reason = (
                "the payment was not confirmed in time (sandbox: Decline)"
                if state == "processing"
                else "your card was declined (sandbox: Decline)"
            )
            changes.update(status="declined", failure_reason=reason)
        elif action in ("cancel", "expire"):
            changes["status"] = {"cancel": "canceled", "expire": "expired"}[action]
        elif action == "refund":
            left = pay["amount_micros"] - pay["refunded_micros"]
            take = left if amount is None else amount
            if take <= 0 or take > left:
                raise Conflict(
                    f"a refund must be more than zero and at most what is left to refund "
                    f"({format_money(left, pay['currency'])})",
                    code="sandbox_action_refused",
                )
            changes["refunded_micros"] = pay["refunded_micros"] + take
        elif action == "dispute":
            if disputed == "open":
                raise Conflict("a dispute is already open", code="sandbox_action_refused")
            changes.update(
                dispute_id="dp_sbx_" + os.urandom(6).hex(),
                dispute_amount_micros=pay["amount_micros"] - pay["refunded_micros"],
                dispute_state="open",
            )
        else:  # dispute_won / dispute_lost
            if disputed != "open":
                raise Conflict("no dispute is open", code="sandbox_action_refused")
            changes["dispute_state"] = "won" if action == "dispute_won" else "lost"
        changes["updated_at"] = now
        sets = ", ".join(f"{k} = ?" for k in changes)
        conn.execute(
            f"UPDATE sandbox_payments SET {sets} WHERE topup_id = ?",
            (*changes.values(), topup_id),
        )

    def _report(self, pay: dict[str, Any], topup: Topup) -> Report:
        state = _effective(pay, utcnow())
        ref = pay["id"]
        if state == "open":
            return Report(
                "pending",
                ref,
                reason="you to choose Pay, Pay later, Decline or Cancel on the sandbox checkout page",
            )
        if state == "processing":
            return Report(
                "pending",
                ref,
                reason=f"{waiting_for(topup.method, 'sandbox')} (sandbox: Pay later confirms "
                f"by itself at {pay['settle_at'][11:19]} UTC)",
            )
        if state == "declined":
            return Report("failed", ref, reason=pay["failure_reason"], detail=pay["failure_reason"])
        if state == "canceled":
            return Report(
                "canceled",
                ref,
                reason="you canceled on the sandbox checkout page",
                detail="canceled on the sandbox checkout page",
            )
        if state == "expired":
            return Report(
                "expired",
                ref,
                reason="the sandbox checkout expired before payment",
                detail="the sandbox checkout expired",
            )
        dispute = None
        if pay["dispute_id"]:
            dispute = Dispute(pay["dispute_id"], pay["dispute_amount_micros"], pay["dispute_state"])
        return Report(
            "completed",
            ref,
            amount=pay["amount_micros"],
            currency=pay["currency"],
            refunded=pay["refunded_micros"],
            dispute=dispute,
            detail="sandbox payment confirmed",
        )


def _effective(pay: dict[str, Any], now: str) -> str:
    """The state as of ``now``: pay-later payments settle and open ones expire by time."""
    state = str(pay["status"])
    if state == "processing" and pay["settle_at"] and pay["settle_at"] <= now:
        return "paid"
    if state == "open" and pay["expires_at"] <= now:
        return "expired"
    return state
