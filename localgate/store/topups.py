"""Top-ups in SQLite: rows, status events, provider event de-duplication, sync state.

Write functions are writer jobs (``fn(conn, ...)``, run inside the writer's
transaction). :func:`apply_report` is the one fulfilment path: it reads the
top-up and the wallet, lets ``core.topups.plan`` decide, and posts the ledger
entries, the new state and its event rows in that same transaction — so no
interleaving of webhook, return page and sync can credit a payment twice.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from localgate.core import topups as core
from localgate.errors import Conflict, NotFound
from localgate.store import ledger as ledger_store
from localgate.store.db import utcnow

log = logging.getLogger(__name__)

FREEZE_MARK = "top-up "  # frozen_reason prefix of freezes this module may lift


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def later(seconds: float, now: str | None = None) -> str:
    base = parse_iso(now) if now else datetime.now(UTC)
    return iso(base + timedelta(seconds=seconds))


# -- rows ---------------------------------------------------------------------


def load(conn: sqlite3.Connection, topup_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM topups WHERE id = ?", (topup_id,)).fetchone()
    if row is None:
        raise NotFound(f"no top-up {topup_id!r}", code="unknown_topup")
    return row


def record(row: sqlite3.Row) -> core.Topup:
    return core.Topup(
        id=row["id"],
        wallet_id=row["wallet_id"],
        currency=row["currency"],
        amount=row["amount_micros"],
        method=row["method"],
        provider=row["provider"],
        status=row["status"],
        reference=row["reference"],
        ledger_entry_id=row["ledger_entry_id"],
        refunded=row["refunded_micros"],
        disputed=row["disputed_micros"],
        dispute_uncovered=row["dispute_uncovered_micros"],
        dispute_id=row["dispute_id"],
        dispute_state=row["dispute_state"],
        shortfall=row["shortfall_micros"],
        cancel_requested=bool(row["cancel_requested"]),
    )


def find(
    conn: sqlite3.Connection,
    provider: str,
    *,
    reference: str | None = None,
    payment_id: str | None = None,
    topup_id: str | None = None,
) -> sqlite3.Row | None:
    """A top-up by our id, the provider's reference or its payment id (first that matches)."""
    if topup_id:
        row = conn.execute(
            "SELECT * FROM topups WHERE id = ? AND provider = ?", (topup_id, provider)
        ).fetchone()
        if row is not None:
            return row
    if reference:
        row = conn.execute(
            "SELECT * FROM topups WHERE provider = ? AND reference = ?", (provider, reference)
        ).fetchone()
        if row is not None:
            return row
    if payment_id:
        return conn.execute(
            "SELECT * FROM topups WHERE provider = ? AND payment_id = ?", (provider, payment_id)
        ).fetchone()
    return None


def insert(conn: sqlite3.Connection, topup: core.Topup, retry_of: str | None = None) -> None:
    ledger_store.wallet_balance(conn, topup.wallet_id)  # the wallet exists
    now = utcnow()
    conn.execute(
        "INSERT INTO topups (id, wallet_id, currency, amount_micros, method, provider, status, "
        "created_at, updated_at, retry_of, next_sync_at) VALUES (?,?,?,?,?,?,'created',?,?,?,?)",
        (
            topup.id,
            topup.wallet_id,
            topup.currency,
            topup.amount,
            topup.method,
            topup.provider,
            now,
            now,
            retry_of,
            now,
        ),
    )
    _event(
        conn,
        topup.id,
        None,
        "created",
        "user",
        True,
        f"top-up of {core.short_money(topup.amount, topup.currency)} to {topup.wallet_id} "
        f"via {topup.provider}",
        None,
    )


def opened(
    conn: sqlite3.Connection,
    topup_id: str,
    *,
    reference: str,
    checkout_url: str,
    expires_at: str | None,
    payment_id: str | None = None,
    detail: str,
) -> None:
    """The provider accepted the checkout: created -> pending with its reference."""
    row = load(conn, topup_id)
    if row["reference"] not in (None, reference):
        raise Conflict(f"top-up {topup_id} already has reference {row['reference']}")
    conn.execute(
        "UPDATE topups SET reference = ?, checkout_url = ?, expires_at = ?, "
        "payment_id = COALESCE(?, payment_id), updated_at = ? WHERE id = ?",
        (reference, checkout_url, expires_at, payment_id, utcnow(), topup_id),
    )
    if row["status"] == "created":
        conn.execute("UPDATE topups SET status = 'pending' WHERE id = ?", (topup_id,))
        _event(conn, topup_id, "created", "pending", "user", True, detail, None)


def failed_to_open(conn: sqlite3.Connection, topup_id: str, reason: str) -> None:
    row = load(conn, topup_id)
    if row["status"] == "created":
        conn.execute(
            "UPDATE topups SET status = 'failed', reason = ?, updated_at = ? WHERE id = ?",
            (reason, utcnow(), topup_id),
        )
        _event(conn, topup_id, "created", "failed", "user", True, reason, None)


def request_cancel(conn: sqlite3.Connection, topup_id: str) -> sqlite3.Row:
    conn.execute("UPDATE topups SET cancel_requested = 1 WHERE id = ?", (topup_id,))
    return load(conn, topup_id)


# -- fulfilment ---------------------------------------------------------------


@dataclass(frozen=True)
class Applied:
    topup_id: str | None
    outcome: str  # "applied", "unchanged", "refused", "duplicate", "unknown"
    status: str | None = None
    detail: str = ""


def apply_report(
    conn: sqlite3.Connection,
    topup_id: str,
    report: core.Report,
    source: str,
    *,
    event: tuple[str, str, str] | None = None,
) -> Applied:
    """Apply what the provider reported, once. ``event`` = (provider, event id, type)
    de-duplicates provider events: the same event id is applied at most once."""
    if event is not None and seen(conn, event[0], event[1]):
        return Applied(topup_id, "duplicate")
    row = load(conn, topup_id)
    before = record(row)
    wallet = ledger_store.wallet_balance(conn, before.wallet_id)
    p = core.plan(before, report, available=wallet.available)

    stored = [ledger_store.post_entry(conn, draft) for draft in p.entries]
    now = utcnow()
    after = p.topup
    fields: dict[str, Any] = {
        "status": after.status,
        "reference": after.reference,
        "refunded_micros": after.refunded,
        "disputed_micros": after.disputed,
        "dispute_uncovered_micros": after.dispute_uncovered,
        "dispute_id": after.dispute_id,
        "dispute_state": after.dispute_state,
        "shortfall_micros": after.shortfall,
    }
    if p.credit:
        credit = stored[0]
        fields.update(
            ledger_entry_id=credit.id,
            balance_before_micros=credit.balance_after - before.amount,
            balance_after_micros=credit.balance_after,
            completed_at=now,
            reason=None,
        )
    elif p.reason is not None and after.status in core.OPEN | core.NO_MONEY:
        fields["reason"] = p.reason
    if report.payment_id:
        fields["payment_id"] = report.payment_id
    if report.receipt_url:
        fields["receipt_url"] = report.receipt_url
    if p.changed:
        fields["updated_at"] = now
    if after.status not in core.OPEN:
        fields["next_sync_at"] = None
    sets = ", ".join(f"{name} = ?" for name in fields)
    conn.execute(f"UPDATE topups SET {sets} WHERE id = ?", (*fields.values(), topup_id))

    for move in p.transitions:
        entry_id = stored[move.entry].id if move.entry is not None else None
        _event(conn, topup_id, move.src, move.dst, source, True, move.detail, entry_id)
    for refused in p.refused:
        log.warning(
            "top-up %s: %s -> %s %s (%s)",
            topup_id,
            refused.src,
            refused.dst,
            refused.detail,
            source,
        )
        last = conn.execute(
            "SELECT to_status, detail, applied FROM topup_events WHERE topup_id = ? "
            "ORDER BY id DESC LIMIT 1",
            (topup_id,),
        ).fetchone()
        if last is None or tuple(last) != (refused.dst, refused.detail, 0):
            _event(conn, topup_id, refused.src, refused.dst, source, False, refused.detail, None)

    if p.freeze_reason:
        conn.execute(
            "UPDATE wallets SET frozen = 1, frozen_reason = ? WHERE id = ?",
            (p.freeze_reason, before.wallet_id),
        )
        log.warning("wallet %s frozen: %s", before.wallet_id, p.freeze_reason)
    if any(d.wallet_deltas()[0] > 0 for d in p.entries) or before.shortfall != after.shortfall:
        recover_shortfalls(conn, before.wallet_id)

    if p.refused and not p.transitions:
        outcome, detail = "refused", p.refused[0].detail
    elif p.transitions or stored:
        outcome, detail = "applied", "; ".join(m.detail for m in p.transitions)
    else:
        outcome, detail = "unchanged", ""
    if event is not None:
        remember(conn, event, source, topup_id, f"{outcome}: {detail}".rstrip(": "))
    return Applied(topup_id, outcome, after.status, detail)


def recover_shortfalls(conn: sqlite3.Connection, wallet_id: str) -> None:
    """Cover uncovered refunds/disputes from the wallet's free money; unfreeze when done."""
    rows = conn.execute(
        "SELECT id, provider, shortfall_micros, shortfall_seq FROM topups "
        "WHERE wallet_id = ? AND shortfall_micros > 0 ORDER BY created_at, id",
        (wallet_id,),
    ).fetchall()
    if rows:
        wallet = ledger_store.wallet_balance(conn, wallet_id)
        drafts, left = core.shortfall_recovery(
            wallet_id, wallet.currency, wallet.available, [tuple(r) for r in rows]
        )
        for draft in drafts:
            ledger_store.post_entry(conn, draft)
            conn.execute(
                "UPDATE topups SET shortfall_seq = shortfall_seq + 1 WHERE id = ?",
                (draft.topup_id,),
            )
        for topup_id, shortfall in left.items():
            conn.execute(
                "UPDATE topups SET shortfall_micros = ? WHERE id = ?", (shortfall, topup_id)
            )
    (owed,) = conn.execute(
        "SELECT COALESCE(SUM(shortfall_micros), 0) FROM topups WHERE wallet_id = ?",
        (wallet_id,),
    ).fetchone()
    if owed == 0:
        conn.execute(
            "UPDATE wallets SET frozen = 0, frozen_reason = NULL "
            "WHERE id = ? AND frozen = 1 AND frozen_reason LIKE ?",
            (wallet_id, FREEZE_MARK + "%"),
        )


def _event(
    conn: sqlite3.Connection,
    topup_id: str,
    src: str | None,
    dst: str,
    source: str,
    applied: bool,
    detail: str,
    entry_id: int | None,
) -> None:
    conn.execute(
        "INSERT INTO topup_events (topup_id, at, from_status, to_status, source, applied, "
        "detail, ledger_entry_id) VALUES (?,?,?,?,?,?,?,?)",
        (topup_id, utcnow(), src, dst, source, int(applied), detail, entry_id),
    )


# -- provider events and sync state -------------------------------------------


def seen(conn: sqlite3.Connection, provider: str, event_id: str) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM payment_events WHERE provider = ? AND event_id = ?",
            (provider, event_id),
        ).fetchone()
        is not None
    )


def remember(
    conn: sqlite3.Connection,
    event: tuple[str, str, str],
    source: str,
    topup_id: str | None,
    outcome: str,
) -> None:
    conn.execute(
        "INSERT OR IGNORE INTO payment_events (provider, event_id, type, source, received_at, "
        "topup_id, outcome) VALUES (?,?,?,?,?,?,?)",
        (event[0], event[1], event[2], source, utcnow(), topup_id, outcome),
    )


def cursor(conn: sqlite3.Connection, provider: str) -> str | None:
    row = conn.execute("SELECT cursor FROM payment_sync WHERE provider = ?", (provider,)).fetchone()
    return row[0] if row else None


def set_cursor(conn: sqlite3.Connection, provider: str, value: str) -> None:
    conn.execute(
        "INSERT INTO payment_sync (provider, cursor, updated_at) VALUES (?,?,?) "
        "ON CONFLICT (provider) DO UPDATE SET cursor = excluded.cursor, "
        "updated_at = excluded.updated_at",
        (provider, value, utcnow()),
    )


def synced(
    conn: sqlite3.Connection, topup_id: str, *, error: str | None, backoff: float | None
) -> None:
    """Note a sync attempt; ``backoff`` seconds until the next one (None: no more)."""
    now = utcnow()
    conn.execute(
        "UPDATE topups SET sync_attempts = sync_attempts + 1, last_sync_at = ?, "
        "last_sync_error = ?, next_sync_at = ? WHERE id = ?",
        (now, error, later(backoff, now) if backoff is not None else None, topup_id),
    )


def due(conn: sqlite3.Connection, now: str, provider: str) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT * FROM topups WHERE status IN ('created', 'pending') AND provider = ? "
        "AND (next_sync_at IS NULL OR next_sync_at <= ?) ORDER BY next_sync_at LIMIT 50",
        (provider, now),
    ).fetchall()


def next_due(conn: sqlite3.Connection, provider: str) -> str | None:
    row = conn.execute(
        "SELECT MIN(COALESCE(next_sync_at, '')) FROM topups "
        "WHERE status IN ('created', 'pending') AND provider = ?",
        (provider,),
    ).fetchone()
    return row[0]


def open_since(conn: sqlite3.Connection, provider: str) -> str | None:
    row = conn.execute(
        "SELECT MIN(created_at) FROM topups WHERE provider = ? AND status IN "
        "('created', 'pending', 'completed', 'refunded', 'disputed', 'reinstated')",
        (provider,),
    ).fetchone()
    return row[0]


# -- reads --------------------------------------------------------------------


def events(conn: sqlite3.Connection, topup_id: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT * FROM topup_events WHERE topup_id = ? ORDER BY id", (topup_id,)
    ).fetchall()
    return [
        {
            "at": r["at"],
            "from": r["from_status"],
            "to": r["to_status"],
            "source": r["source"],
            "applied": bool(r["applied"]),
            "detail": r["detail"],
            "ledger_entry_id": r["ledger_entry_id"],
        }
        for r in rows
    ]


def entries_of(conn: sqlite3.Connection, topup_id: str) -> list[sqlite3.Row]:
    return conn.execute(
        "SELECT * FROM entries WHERE topup_id = ? ORDER BY id", (topup_id,)
    ).fetchall()


def page(
    conn: sqlite3.Connection,
    *,
    wallet: str | None = None,
    limit: int = 50,
    before: str | None = None,
) -> list[sqlite3.Row]:
    sql, args = "SELECT * FROM topups WHERE 1 = 1", []
    if wallet:
        sql += " AND wallet_id = ?"
        args.append(wallet)
    if before:
        sql += " AND created_at < ?"
        args.append(before)
    sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
    args.append(limit)
    return conn.execute(sql, args).fetchall()
