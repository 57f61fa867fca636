"""Top-up use cases: create, fulfil, cancel, retry, webhooks and the background sync.

Every confirmation path — the Stripe webhook, the return page, the page being
open, the timer, start-up catch-up, the CLI waiting — ends in the same writer
job (``store.topups.apply_report``), keyed by the provider's payment reference,
so a payment is credited exactly once however many of them run at once.

The sync loop re-checks pending top-ups with back-off (fast at first, then
every few minutes), catches up on provider events missed while localgate was
not running, and closes checkouts that outlived their expiry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from dataclasses import dataclass
from typing import Any

from localgate.config import Settings
from localgate.core import topups as core
from localgate.errors import Conflict, LocalgateError, NotFound, PaymentError, PaymentsOff
from localgate.money import parse_amount
from localgate.payments.base import CheckoutUrls, Notice, PaymentProvider
from localgate.services.topup_views import topup_view
from localgate.store import Store
from localgate.store import ledger as ledger_store
from localgate.store import topups as topup_store
from localgate.store.db import utcnow

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0  # seconds between checks of a long-pending top-up, at most
LOOP_IDLE = 30.0  # seconds the loop sleeps when nothing is due
PAGE_SYNC_GAP = 1.0  # an open page asks the provider at most this often
EXPIRY_GRACE = 60.0  # seconds past expires_at before a still-open checkout is closed


@dataclass
class Unavailable:
    """Stands in for a provider whose configuration is incomplete."""

    name: str
    problem: str
    label: str = "payments (not configured)"
    methods: tuple[str, ...] = ()
    can_cancel: bool = False
    sync_interval: float = MAX_BACKOFF

    def _fail(self) -> PaymentError:
        return PaymentsOff(self.problem)

    async def open_checkout(self, *_: Any) -> Any:
        raise self._fail()

    async def fetch(self, *_: Any) -> Any:
        raise self._fail()

    async def cancel(self, *_: Any) -> Any:
        raise self._fail()

    async def catch_up(self, *_: Any) -> Any:
        raise self._fail()

    def report(self, *_: Any) -> None:
        return None

    async def aclose(self) -> None:
        return None


class Topups:
    def __init__(self, settings: Settings, store: Store, provider: PaymentProvider) -> None:
        self.settings = settings
        self.store = store
        self.provider = provider
        self.problem: str | None = getattr(provider, "problem", None)
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None

    # -- creating ---------------------------------------------------------------

    async def create(
        self,
        wallet_id: str,
        amount: str | int,
        method: str | None = None,
        *,
        base_url: str | None = None,
        retry_of: str | None = None,
    ) -> dict[str, Any]:
        """Open a top-up and its checkout; returns its view with ``checkout_url``."""
        if self.problem:
            raise PaymentsOff(self.problem)
        wallet = self._wallet(wallet_id)
        micros = parse_amount(str(amount), what="amount")
        core.check_amount(micros, wallet["currency"])
        method = method or self.provider.methods[0]
        core.check_method(method, self.provider.methods)
        topup = core.Topup(
            id=core.new_topup_id(),
            wallet_id=wallet_id,
            currency=wallet["currency"],
            amount=micros,
            method=method,
            provider=self.provider.name,
            status="created",
        )
        await self.store.write(topup_store.insert, topup, retry_of)
        base = (base_url or self.settings.base_url).rstrip("/")
        back = f"{base}/billing/topups/{topup.id}/return"
        try:
            checkout = await self.provider.open_checkout(
                topup, CheckoutUrls(success=back, cancel=f"{back}?canceled=1")
            )
        except LocalgateError as exc:
            await self.store.write(topup_store.failed_to_open, topup.id, str(exc))
            raise
        await self.store.write(
            lambda conn: topup_store.opened(
                conn,
                topup.id,
                reference=checkout.reference,
                checkout_url=checkout.url,
                expires_at=checkout.expires_at,
                payment_id=checkout.payment_id,
                detail=f"checkout opened at {self.provider.label} ({checkout.reference})",
            )
        )
        self.wake()
        return self.get(topup.id)

    async def retry(self, topup_id: str, *, base_url: str | None = None) -> dict[str, Any]:
        old = self.get(topup_id)
        if old["status"] not in core.NO_MONEY:
            raise Conflict(
                f"top-up {topup_id} is {old['status']}: only a top-up that moved no "
                "money can be retried"
            )
        return await self.create(
            old["wallet"], old["amount"], old["method"], base_url=base_url, retry_of=topup_id
        )

    def _wallet(self, wallet_id: str) -> dict[str, Any]:
        for row in ledger_store.list_wallets(self.store.read()):
            if row["id"] == wallet_id:
                return row
        known = ", ".join(w.id for w in self.settings.wallets)
        raise NotFound(f"no wallet {wallet_id!r}; wallets: {known}", code="unknown_wallet")

    # -- reading ----------------------------------------------------------------

    def get(self, topup_id: str) -> dict[str, Any]:
        conn = self.store.read()
        return topup_view(conn, topup_store.load(conn, topup_id), self.provider)

    def list(self, *, wallet: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        conn = self.store.read()
        wallets = ledger_store.list_wallets(conn)
        return [
            topup_view(conn, row, self.provider, full=False, wallets=wallets)
            for row in topup_store.page(conn, wallet=wallet, limit=limit)
        ]

    # -- confirmation paths -----------------------------------------------------

    async def refresh(
        self,
        topup_id: str,
        source: str = "sync",
        *,
        any_state: bool = False,
        min_gap: float = 0.0,
    ) -> dict[str, Any]:
        """Ask the provider about an open top-up (or, with ``any_state``, any top-up
        of this provider: refunds and disputes come after completion) and apply it.
        ``min_gap``: skip when the last check is more recent (a page reloading)."""
        row = topup_store.load(self.store.read(), topup_id)
        wanted = any_state or row["status"] in core.OPEN
        if wanted and row["provider"] == self.provider.name and row["reference"]:
            last = row["last_sync_at"]
            if not (min_gap and last and last > topup_store.later(-min_gap)):
                await self._check(row, source)
        return self.get(topup_id)

    async def _check(self, row: sqlite3.Row, source: str, *, close: bool = False) -> None:
        topup = topup_store.record(row)
        attempts = row["sync_attempts"]
        try:
            report = await (self.provider.cancel(topup) if close else self.provider.fetch(topup))
        except LocalgateError as exc:
            log.warning("top-up %s: cannot check with %s: %s", topup.id, self.provider.name, exc)
            error, backoff = str(exc), self._backoff(attempts)
            await self.store.write(
                lambda conn: topup_store.synced(conn, topup.id, error=error, backoff=backoff)
            )
            return

        def job(conn: sqlite3.Connection) -> topup_store.Applied:
            applied = topup_store.apply_report(conn, topup.id, report, source)
            still_open = applied.status in core.OPEN
            topup_store.synced(
                conn, topup.id, error=None, backoff=self._backoff(attempts) if still_open else None
            )
            return applied

        await self.store.write(job)

    def _backoff(self, attempts: int) -> float:
        return float(min(MAX_BACKOFF, self.provider.sync_interval * 2 ** min(attempts, 16)))

    async def wait(self, topup_id: str, *, timeout: float, interval: float = 1.0) -> dict[str, Any]:
        """Check an open top-up until it settles or ``timeout`` seconds pass (the CLI)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            topup = await self.refresh(topup_id, source="sync")
            if topup["status"] not in core.OPEN or loop.time() >= deadline:
                return topup
            await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
            interval = min(interval * 1.5, 5.0)

    async def handle_return(self, topup_id: str, *, canceled: bool) -> dict[str, Any]:
        """The provider sent the payer back: learn the outcome now."""
        topup_store.load(self.store.read(), topup_id)
        if canceled and self.provider.can_cancel:
            return await self.cancel(topup_id, source="return")
        return await self.refresh(topup_id, source="return")

    async def cancel(self, topup_id: str, *, source: str = "user") -> dict[str, Any]:
        row = topup_store.load(self.store.read(), topup_id)
        if row["status"] not in core.OPEN:
            return self.get(topup_id)
        if not self.provider.can_cancel:
            raise Conflict(
                f"{self.provider.label} checkouts cannot be canceled from here; this one "
                f"expires by itself at {row['expires_at'] or 'its expiry'}",
                code="cannot_cancel",
            )
        row = await self.store.write(topup_store.request_cancel, topup_id)
        await self._check(row, source, close=True)
        return self.get(topup_id)

    async def notice(self, notice: Notice, source: str) -> topup_store.Applied:
        resolve = getattr(self.provider, "resolve", None)
        if resolve is not None and not notice.topup_id:
            known = topup_store.find(
                self.store.read(),
                self.provider.name,
                reference=notice.reference,
                payment_id=notice.payment_id,
            )
            if known is None:
                notice = await resolve(notice)
        return await self.store.write(apply_notice, self.provider, notice, source)

    async def webhook(self, payload: bytes, signature: str | None) -> dict[str, Any]:
        """A Stripe webhook: verified over the raw body, applied once per event id."""
        verify = getattr(self.provider, "verify_webhook", None)
        if verify is None:
            raise NotFound(
                f"Stripe webhooks are off: payments.provider is {self.provider.name}",
                code="webhooks_off",
            )
        try:
            notice = verify(payload, signature)
        except LocalgateError as exc:
            log.warning("stripe webhook rejected: %s", exc)
            raise
        applied = await self.notice(notice, "webhook")
        if applied.outcome in ("unknown", "refused"):
            log.warning(
                "stripe webhook %s (%s) %s: %s",
                notice.event_id,
                notice.type,
                applied.outcome,
                applied.detail,
            )
        return {
            "received": True,
            "event": notice.event_id,
            "type": notice.type,
            "outcome": applied.outcome,
            "detail": applied.detail,
            "topup": applied.topup_id,
            "status": applied.status,
        }

    async def catch_up(self) -> int:
        """Read provider events missed while localgate was not running; apply them."""
        conn = self.store.read()
        name = self.provider.name
        result = await self.provider.catch_up(
            topup_store.cursor(conn, name), topup_store.open_since(conn, name)
        )
        for notice in result.notices:
            applied = await self.notice(notice, "sync")
            if applied.outcome in ("applied", "refused"):
                log.info(
                    "catch-up %s %s: %s %s",
                    notice.type,
                    notice.event_id or notice.reference,
                    applied.outcome,
                    applied.detail,
                )
        if result.cursor is not None:
            await self.store.write(topup_store.set_cursor, name, result.cursor)
        return len(result.notices)

    async def sync_due(self) -> int:
        """Check every open top-up whose next check is due; close expired checkouts."""
        rows = topup_store.due(self.store.read(), utcnow(), self.provider.name)
        for row in rows:
            overdue = bool(
                row["expires_at"]
                and self.provider.can_cancel
                and row["expires_at"] < topup_store.later(-EXPIRY_GRACE)
            )
            await self._check(row, "sync", close=overdue)
        return len(rows)

    # -- the background loop ----------------------------------------------------

    def wake(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def start(self) -> None:
        if self._task is not None or self.problem:
            return
        await self.store.write(_recheck_open, self.provider.name)
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="localgate-topup-sync")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.provider.aclose()

    async def _run(self) -> None:
        try:
            await self.catch_up()
        except Exception as exc:  # offline at start-up: the timer keeps trying the top-ups
            log.warning("top-up catch-up with %s failed: %s", self.provider.name, exc)
        assert self._wake is not None
        while True:
            try:
                await self.sync_due()
            except Exception:
                log.exception("top-up sync failed")
            delay = self._until_next_due()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()

    def _until_next_due(self) -> float:
        nxt = topup_store.next_due(self.store.read(), self.provider.name)
        if nxt is None:
            return LOOP_IDLE
        if nxt == "":
            return 0.2
        seconds = (topup_store.parse_iso(nxt) - topup_store.parse_iso(utcnow())).total_seconds()
        return max(0.2, min(LOOP_IDLE, seconds))


def apply_notice(
    conn: sqlite3.Connection, provider: PaymentProvider, notice: Notice, source: str
) -> topup_store.Applied:
    """Writer job: find the notice's top-up and apply what it means, once per event id."""
    event = (provider.name, notice.event_id, notice.type) if notice.event_id else None
    if event is not None and topup_store.seen(conn, provider.name, event[1]):
        return topup_store.Applied(None, "duplicate")
    row = topup_store.find(
        conn,
        provider.name,
        topup_id=notice.topup_id,
        reference=notice.reference,
        payment_id=notice.payment_id,
    )
    if row is None:
        detail = f"no top-up matches {notice.reference or notice.payment_id or notice.topup_id}"
        if event is not None:
            topup_store.remember(conn, event, source, None, f"rejected: {detail}")
        return topup_store.Applied(None, "unknown", None, detail)
    report = provider.report(notice, topup_store.record(row))
    if report is None:
        if event is not None:
            topup_store.remember(conn, event, source, row["id"], "ignored")
        return topup_store.Applied(row["id"], "ignored", row["status"])
    return topup_store.apply_report(conn, row["id"], report, source, event=event)


def _recheck_open(conn: sqlite3.Connection, provider: str) -> None:
    """Start-up: every open top-up of this provider is due now."""
    conn.execute(
        "UPDATE topups SET next_sync_at = ?, sync_attempts = 0 "
        "WHERE status IN ('created', 'pending') AND provider = ?",
        (utcnow(), provider),
    )


def build(settings: Settings, store: Store, client: Any) -> Topups:
    """The service with the configured provider; a provider that cannot start
    (missing key) becomes :class:`Unavailable`, whose message the pages show."""
    from localgate.payments import make_provider

    name = settings.get("payments.provider")
    try:
        provider: PaymentProvider = make_provider(settings, store, client)
    except LocalgateError as exc:
        log.warning("payments are off: %s", exc)
        provider = Unavailable(name, str(exc))
    return Topups(settings, store, provider)
