"""A wallet's statement: ledger pages with filters, entry details, the chain position.

Entries are numbered by the one writer in the order it posts them, so ids
follow time: a date filter becomes an id range found by binary search on the
primary key, and every page is a keyset range scan of ``entries (wallet_id,
id)`` or ``(wallet_id, kind, id)``. Nothing here counts or offsets, so the
1,000th page costs what the first does.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from localgate.core.ledger import ENTRY_KINDS
from localgate.errors import BadRequest, NotFound
from localgate.money import MAX_AMOUNT_MICROS, decimal_str, parse_amount
from localgate.services.receipts import iso, parse_time

PAGE_SIZE = 50
# "moves": entries that change the balance (holds and releases only move money
# between available and held).
KIND_CHOICES = ("moves", *ENTRY_KINDS)


@dataclass(frozen=True)
class StatementFilter:
    kind: str | None = None
    since: str | None = None
    until: str | None = None

    @classmethod
    def from_params(cls, params: Any) -> StatementFilter:
        def get(name: str) -> str | None:
            value = (params.get(name) or "").strip()
            return value or None

        flt = cls(get("kind"), get("since"), get("until"))
        if flt.kind and flt.kind not in KIND_CHOICES:
            raise BadRequest(
                f"unknown entry kind {flt.kind!r}; use one of {', '.join(KIND_CHOICES)}",
                param="kind",
            )
        flt.time_range()
        return flt

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        since = parse_time(self.since) if self.since else None
        until = parse_time(self.until, end=True) if self.until else None
        return since, until

    def active(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (("kind", self.kind), ("since", self.since), ("until", self.until))
            if v
        }


def first_entry_at_or_after(conn: sqlite3.Connection, moment: str) -> int:
    """The smallest entry id created at or after ``moment`` (max id + 1 if none)."""
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()
    lo, hi = 1, top + 1
    while lo < hi:
        mid = (lo + hi) // 2
        row = conn.execute("SELECT created_at FROM entries WHERE id = ?", (mid,)).fetchone()
        if row is None or row[0] >= moment:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class StatementPage:
    entries: list[dict[str, Any]]
    newer: int | None  # ?after=
    older: int | None  # ?before=
    chain_length: int


def statement(
    conn: sqlite3.Connection,
    wallet_id: str,
    flt: StatementFilter,
    *,
    before: int | None = None,
    after: int | None = None,
    limit: int = PAGE_SIZE,
) -> StatementPage:
    clauses, args = ["wallet_id = ?"], [wallet_id]
    if flt.kind == "moves":
        clauses.append("amount_micros != 0")
    elif flt.kind:
        clauses.append("kind = ?")
        args.append(flt.kind)
    since, until = flt.time_range()
    if since is not None:
        clauses += ["id >= ?", "created_at >= ?"]
        args += [first_entry_at_or_after(conn, iso(since)), iso(since)]
    if until is not None:
        clauses += ["id < ?", "created_at < ?"]
        args += [first_entry_at_or_after(conn, iso(until)), iso(until)]
    if before is not None:
        clauses.append("id < ?")
        args.append(before)
    elif after is not None:
        clauses.append("id > ?")
        args.append(after)
    order = "ASC" if after is not None and before is None else "DESC"
    rows = conn.execute(
        f"SELECT * FROM entries WHERE {' AND '.join(clauses)} ORDER BY id {order} LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    if order == "ASC":
        rows.reverse()
        newer = rows[0]["id"] if more and rows else None
        older = rows[-1]["id"] if rows else None
    else:
        newer = None
        if before is not None:
            top = rows[0]["id"] if rows else before - 1
            ahead = conn.execute(
                f"SELECT 1 FROM entries WHERE {' AND '.join(clauses[:-1])} AND id > ? LIMIT 1",
                (*args[:-1], top),
            ).fetchone()
            newer = top if ahead else None
        older = rows[-1]["id"] if more else None
    (chain,) = conn.execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()
    return StatementPage(_with_postings(conn, rows), newer, older, chain)


def _with_postings(conn: sqlite3.Connection, rows: list[sqlite3.Row]) -> list[dict[str, Any]]:
    if not rows:
        return []
    ids = [r["id"] for r in rows]
    postings: dict[int, list[dict[str, Any]]] = defaultdict(list)
    marks = ",".join("?" for _ in ids)
    for p in conn.execute(
        f"SELECT entry_id, account, currency, amount_micros FROM postings "
        f"WHERE entry_id IN ({marks}) ORDER BY entry_id, seq",
        ids,
    ):
        postings[p["entry_id"]].append(dict(p))
    out = []
    for r in rows:
        entry = dict(r)
        entry["available_after_micros"] = r["balance_after_micros"] - r["held_after_micros"]
        entry["postings"] = postings[r["id"]]
        entry["held_delta_micros"] = sum(
            p["amount_micros"]
            for p in entry["postings"]
            if p["account"] == f"hold:{r['wallet_id']}"
        )
        out.append(entry)
    return out


def wallet_settings(conn: sqlite3.Connection, wallet_id: str) -> dict[str, Any]:
    row = conn.execute(
        "SELECT id, low_balance_micros FROM wallets WHERE id = ?", (wallet_id,)
    ).fetchone()
    if row is None:
        raise NotFound(f"no wallet {wallet_id!r}", code="unknown_wallet")
    return dict(row)


def parse_threshold(value: str | None) -> int | None:
    """The low-balance threshold from the form: blank turns it off."""
    if value is None or not value.strip():
        return None
    micros = parse_amount(value.strip(), what="threshold")
    if micros < 0 or micros > MAX_AMOUNT_MICROS:
        raise BadRequest("the threshold must be zero or more", param="amount")
    return micros


def set_threshold(conn: sqlite3.Connection, wallet_id: str, micros: int | None) -> None:
    """A writer job: store the wallet's low-balance threshold (``None``: no warning)."""
    cur = conn.execute(
        "UPDATE wallets SET low_balance_micros = ? WHERE id = ?", (micros, wallet_id)
    )
    if cur.rowcount == 0:
        raise NotFound(f"no wallet {wallet_id!r}", code="unknown_wallet")


def amount_text(micros: int) -> str:
    """Micros as the shortest exact decimal: 5000000 -> "5", 2500 -> "0.0025"."""
    text = decimal_str(micros)
    return text.rstrip("0").rstrip(".") if "." in text else text


def low_balance(wallet: dict[str, Any], threshold: int | None) -> bool:
    return threshold is not None and wallet["available_micros"] < threshold
