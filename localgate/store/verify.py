"""Verifying the ledger: recompute the hash chain, every balance and every hold.

``localgate ledger verify``, ``GET /api/ledger/verify`` and ``localgate doctor``
run this; it reports the first mismatch it meets, naming the entry or account.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from localgate.core import ledger as core
from localgate.core.ledger import Posting
from localgate.store.ledger import stored_entry


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    entries: int
    first_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "entries": self.entries, "first_error": self.first_error}


def verify(conn: sqlite3.Connection) -> VerifyReport:
    """Recompute the hash chain, every balance and every hold; report the first mismatch.

    Reads in one transaction so it sees a consistent snapshot while the
    gateway keeps writing.
    """
    conn.execute("BEGIN")
    try:
        return _verify(conn)
    finally:
        conn.execute("COMMIT")


def _verify(conn: sqlite3.Connection) -> VerifyReport:
    sums: dict[tuple[str, str], int] = defaultdict(int)
    prev_hash = core.GENESIS_HASH
    expected_id = 1
    count = 0
    postings = conn.execute(
        "SELECT entry_id, account, currency, amount_micros FROM postings ORDER BY entry_id, seq"
    )
    pending = next(postings, None)
    for row in conn.execute("SELECT * FROM entries ORDER BY id"):
        count += 1
        entry_postings: list[Posting] = []
        while pending is not None and pending[0] <= row["id"]:
            if pending[0] == row["id"]:
                entry_postings.append(Posting(pending[1], pending[2], pending[3]))
            pending = next(postings, None)
        entry = stored_entry(row, entry_postings)
        where = f"entry {entry.id} ({entry.draft.kind}, {entry.created_at})"
        if entry.id != expected_id:
            return VerifyReport(False, count, f"{where}: expected entry id {expected_id}")
        expected_id += 1
        if entry.prev_hash != prev_hash:
            return VerifyReport(
                False, count, f"{where}: prev_hash does not match entry {entry.id - 1}"
            )
        try:
            core.check_balanced(entry.draft.postings)
        except core.LedgerError as exc:
            return VerifyReport(False, count, f"{where}: {exc}")
        digest = core.entry_hash(
            prev_hash,
            entry.id,
            entry.created_at,
            entry.draft,
            entry.balance_after,
            entry.held_after,
        )
        if digest != entry.hash:
            return VerifyReport(False, count, f"{where}: hash mismatch (the entry was edited)")
        if row["amount_micros"] != entry.draft.wallet_deltas()[0]:
            # Not hashed: it is derived from the postings, so check it against them.
            return VerifyReport(False, count, f"{where}: amount does not match its postings")
        for p in entry.draft.postings:
            sums[(p.account, p.currency)] += p.amount
            if p.account.startswith("wallet:") and sums[(p.account, p.currency)] < 0:
                return VerifyReport(False, count, f"{where}: {p.account} went below zero")
        wid = entry.draft.wallet_id
        if wid is not None:
            free = sums[(core.wallet_account(wid), entry.draft.currency)]
            held = sums[(core.hold_account(wid), entry.draft.currency)]
            if (free + held, held) != (entry.balance_after, entry.held_after):
                return VerifyReport(
                    False, count, f"{where}: recorded balance after does not match postings"
                )
        prev_hash = entry.hash
    if pending is not None:
        return VerifyReport(False, count, f"posting of unknown entry {pending[0]}")
    for row in conn.execute(
        "SELECT id, currency, balance_micros FROM accounts ORDER BY id, currency"
    ):
        if sums.get((row[0], row[1]), 0) != row[2]:
            return VerifyReport(
                False,
                count,
                f"account {row[0]} {row[1]}: stored balance {row[2]} != sum of postings "
                f"{sums.get((row[0], row[1]), 0)}",
            )
    open_holds: dict[tuple[str, str], int] = defaultdict(int)
    for row in conn.execute(
        "SELECT wallet_id, currency, amount_micros FROM holds WHERE status = 'open'"
    ):
        open_holds[(core.hold_account(row[0]), row[1])] += row[2]
    for (account, cur), total in sums.items():
        if account.startswith("hold:") and total != open_holds.get((account, cur), 0):
            return VerifyReport(
                False,
                count,
                f"{account} {cur}: {total} held but open holds sum to "
                f"{open_holds.get((account, cur), 0)}",
            )
    return VerifyReport(True, count, None)
