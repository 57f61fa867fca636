"""The ledger in SQLite: posting entries, holds, balances, verification.

Write functions take the writer's connection (they run inside its
transaction); read functions take any connection. Rules are checked here,
inside the transaction, so no interleaving can break them:

- postings balance (``core.ledger`` refuses the draft otherwise);
- a ``wallet:`` account never goes below zero;
- the same idempotency key twice returns the first entry, if it is the same
  entry (kind, wallet, currency, amount); anything else under that key is a 409;
- keys localgate makes itself (``topup:...``, ``close:...``) belong to one
  entry kind each: no other kind may post under them (:data:`KEY_NAMESPACES`);
- each entry carries the hash of the one before.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from localgate.core import ledger as core
from localgate.core.ids import random_hex
from localgate.core.ledger import EntryDraft, Posting, StoredEntry, WalletBalance
from localgate.errors import Conflict, HoldClosed, InsufficientFunds, NotFound, WalletFrozen
from localgate.store.db import utcnow


def new_hold_id() -> str:
    return "hd_" + random_hex(8)


# The namespaces of the idempotency keys localgate makes (the text before the
# first ':') and the entry kinds that may post under each. A key outside them
# is free for any kind (an adjustment's own key, e.g. "support-42").
KEY_NAMESPACES: dict[str, frozenset[str]] = {
    "topup": frozenset({"topup"}),
    "reinstate": frozenset({"topup"}),
    "refund": frozenset({"refund"}),
    "shortfall": frozenset({"refund"}),
    "dispute": frozenset({"reversal"}),
    "reverse": frozenset({"reversal"}),
    "hold": frozenset({"hold"}),
    "close": frozenset({"settle", "release"}),
    **{kind: frozenset({kind}) for kind in core.ENTRY_KINDS},
}


def key_namespace_owner(kind: str, key: str) -> str | None:
    """The namespace ``key`` is in when it belongs to kinds other than ``kind``, else None."""
    namespace = key.partition(":")[0] if ":" in key else ""
    kinds = KEY_NAMESPACES.get(namespace)
    return namespace if kinds is not None and kind not in kinds else None


def _replay(conn: sqlite3.Connection, draft: EntryDraft) -> StoredEntry | None:
    """The entry stored under ``draft``'s key if it is the same entry; a Conflict if
    the key holds another one (never hand back the other entry as this one's)."""
    key = draft.idempotency_key
    assert key is not None
    taken = key_namespace_owner(draft.kind, key)
    if taken is not None:
        raise Conflict(
            f"idempotency key {key!r} is in the {taken!r} namespace, which {draft.kind} "
            "entries may not use",
            code="idempotency_key_reserved",
        )
    row = conn.execute(
        "SELECT id, kind, wallet_id, currency, amount_micros FROM entries "
        "WHERE idempotency_key = ?",
        (key,),
    ).fetchone()
    if row is None:
        return None
    if tuple(row)[1:] != (draft.kind, draft.wallet_id, draft.currency, draft.wallet_deltas()[0]):
        raise Conflict(
            f"idempotency key {key!r} was used for ledger entry {row[0]} ({row[1]}, "
            f"{row[4]} micros, wallet {row[2]}); a different entry needs a different key",
            code="idempotency_key_reused",
        )
    return load_entry(conn, row[0])


# -- writes (inside the writer's transaction) ---------------------------------


def post_entry(
    conn: sqlite3.Connection,
    draft: EntryDraft,
    *,
    now: str | None = None,
    fresh_key: bool = False,
    wallet_currency: str | None = None,
) -> StoredEntry:
    """Store ``draft``; with an idempotency key seen before, return that entry instead.

    ``fresh_key``: the caller made the key from an id it just generated, so the
    lookup is skipped (the UNIQUE index still guards it). ``wallet_currency``:
    the caller has just read the wallet row.
    """
    if draft.idempotency_key is not None and not fresh_key:
        replayed = _replay(conn, draft)
        if replayed is not None:
            return replayed
    if draft.wallet_id is not None:
        held_in = wallet_currency or _wallet_row(conn, draft.wallet_id)["currency"]
        if held_in != draft.currency:
            raise core.LedgerError(
                f"wallet {draft.wallet_id} holds {held_in}, not {draft.currency}"
            )

    balances = {p.account: _apply_posting(conn, p) for p in draft.postings}

    balance_after = held_after = 0
    if draft.wallet_id is not None:
        free_account = core.wallet_account(draft.wallet_id)
        held_account = core.hold_account(draft.wallet_id)
        free = balances.get(free_account)
        if free is None:
            free = _account_balance(conn, free_account, draft.currency)
        held_after = balances.get(held_account)
        if held_after is None:
            held_after = _account_balance(conn, held_account, draft.currency)
        balance_after = free + held_after
    prev = conn.execute("SELECT id, hash FROM entries ORDER BY id DESC LIMIT 1").fetchone()
    entry_id = (prev[0] + 1) if prev else 1
    prev_hash = prev[1] if prev else core.GENESIS_HASH
    created_at = now or utcnow()
    digest = core.entry_hash(prev_hash, entry_id, created_at, draft, balance_after, held_after)
    amount, _held = draft.wallet_deltas()
    conn.execute(
        "INSERT INTO entries (id, created_at, kind, wallet_id, currency, amount_micros, "
        "balance_after_micros, held_after_micros, memo, idempotency_key, reverses_id, hold_id, "
        "receipt_id, topup_id, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            entry_id,
            created_at,
            draft.kind,
            draft.wallet_id,
            draft.currency,
            amount,
            balance_after,
            held_after,
            draft.memo,
            draft.idempotency_key,
            draft.reverses_id,
            draft.hold_id,
            draft.receipt_id,
            draft.topup_id,
            prev_hash,
            digest,
        ),
    )
    conn.executemany(
        "INSERT INTO postings (entry_id, seq, account, currency, amount_micros) VALUES (?,?,?,?,?)",
        [(entry_id, i, p.account, p.currency, p.amount) for i, p in enumerate(draft.postings)],
    )
    return StoredEntry(entry_id, created_at, draft, balance_after, held_after, prev_hash, digest)


def _apply_posting(conn: sqlite3.Connection, posting: Posting) -> int:
    """Add the posting to its account; returns the account's new balance."""
    (balance,) = conn.execute(
        "INSERT INTO accounts (id, currency, balance_micros) VALUES (?, ?, ?) "
        "ON CONFLICT (id, currency) DO UPDATE SET balance_micros = balance_micros + excluded.balance_micros "
        "RETURNING balance_micros",
        (posting.account, posting.currency, posting.amount),
    ).fetchone()
    if posting.amount < 0 and posting.account.startswith(("wallet:", "hold:")) and balance < 0:
        wallet_id = posting.account.partition(":")[2]
        available = balance - posting.amount
        raise InsufficientFunds.for_wallet(
            wallet_id, posting.currency, needed=-posting.amount, available=available
        )
    return balance


def place_hold(
    conn: sqlite3.Connection,
    wallet_id: str,
    amount: int,
    *,
    owner: str,
    receipt_id: str | None = None,
    hold_id: str | None = None,
    key_id: str | None = None,
) -> str:
    """Reserve ``amount`` of the wallet's available money; returns the hold id.
    ``key_id`` names the API key the hold counts against (budgets)."""
    wallet = _wallet_row(conn, wallet_id)
    if hold_id is not None:
        # The same hold placed again (a retry) returns it instead of a second one.
        same = conn.execute(
            "SELECT wallet_id, amount_micros FROM holds WHERE id = ?", (hold_id,)
        ).fetchone()
        if same is not None:
            if (same[0], same[1]) != (wallet_id, amount):
                raise Conflict(f"hold {hold_id} already exists for another wallet or amount")
            return hold_id
    if wallet["frozen"]:
        raise WalletFrozen(
            f"wallet {wallet_id!r} is frozen ({wallet['frozen_reason'] or 'see its ledger'}); "
            "it takes no new requests until it is settled"
        )
    fresh = hold_id is None
    hold_id = hold_id or new_hold_id()
    now = utcnow()
    entry = post_entry(
        conn,
        core.hold_entry(wallet_id, wallet["currency"], amount, hold_id, receipt_id=receipt_id),
        now=now,
        fresh_key=fresh,
        wallet_currency=wallet["currency"],
    )
    conn.execute(
        "INSERT INTO holds (id, wallet_id, currency, amount_micros, status, owner, receipt_id, "
        "created_at, open_entry_id, key_id) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?, ?)",
        (hold_id, wallet_id, wallet["currency"], amount, owner, receipt_id, now, entry.id, key_id),
    )
    return hold_id


@dataclass(frozen=True)
class HoldOutcome:
    entry: StoredEntry
    charged: int  # what was actually charged (may be capped; see settle_hold)
    capped: bool


def settle_hold(
    conn: sqlite3.Connection,
    hold_id: str,
    charge: int,
    *,
    receipt_id: str | None = None,
    memo: str = "",
) -> HoldOutcome:
    """Charge ``charge`` against the hold and release the rest, in one entry.

    A charge above the hold is taken from the wallet's free money as far as it
    goes and capped there: the wallet never goes negative. Settling a closed
    hold again returns the first outcome (idempotent).
    """
    hold = _hold_row(conn, hold_id)
    if hold["status"] != "open":
        if hold["close_entry_id"] is None:
            raise HoldClosed(f"hold {hold_id} is {hold['status']}")
        return HoldOutcome(
            load_entry(conn, hold["close_entry_id"]), hold["charge_micros"] or 0, False
        )
    held, currency = hold["amount_micros"], hold["currency"]
    receipt_id = receipt_id or hold["receipt_id"]  # the entry links to the hold's receipt
    capped = False
    if charge > held:
        free = _account_balance(conn, core.wallet_account(hold["wallet_id"]), currency)
        if charge - held > free:
            charge, capped = held + free, True
    draft = core.settle_entry(
        hold["wallet_id"], currency, held, charge, hold_id, receipt_id=receipt_id, memo=memo
    )
    # The hold is open, so its closing entry cannot exist yet: skip that lookup.
    entry = post_entry(conn, draft, fresh_key=True, wallet_currency=hold["currency"])
    _close_hold(
        conn,
        hold_id,
        "settled" if charge else "released",
        memo or None,
        charge,
        entry.id,
        receipt_id,
    )
    return HoldOutcome(entry, charge, capped)


def release_hold(
    conn: sqlite3.Connection,
    hold_id: str,
    *,
    reason: str,
    receipt_id: str | None = None,
) -> StoredEntry:
    hold = _hold_row(conn, hold_id)
    if hold["status"] != "open":
        if hold["close_entry_id"] is None:
            raise HoldClosed(f"hold {hold_id} is {hold['status']}")
        return load_entry(conn, hold["close_entry_id"])
    receipt_id = receipt_id or hold["receipt_id"]
    draft = core.release_entry(
        hold["wallet_id"],
        hold["currency"],
        hold["amount_micros"],
        hold_id,
        reason=reason,
        receipt_id=receipt_id,
    )
    # The hold is open, so its closing entry cannot exist yet: skip that lookup.
    entry = post_entry(conn, draft, fresh_key=True, wallet_currency=hold["currency"])
    _close_hold(conn, hold_id, "released", reason, 0, entry.id, receipt_id)
    return entry


def release_open_holds(
    conn: sqlite3.Connection, *, reason: str, owner: str | None = None, not_owner: str | None = None
) -> list[str]:
    """Release open holds (of ``owner``, or of everyone but ``not_owner``) with ``reason``."""
    if owner is not None:
        rows = conn.execute(
            "SELECT id FROM holds WHERE status = 'open' AND owner = ?", (owner,)
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT id FROM holds WHERE status = 'open' AND owner IS NOT ?", (not_owner,)
        ).fetchall()
    for (hold_id,) in rows:
        release_hold(conn, hold_id, reason=reason)
    return [r[0] for r in rows]


def _close_hold(
    conn: sqlite3.Connection,
    hold_id: str,
    status: str,
    reason: str | None,
    charge: int,
    entry_id: int,
    receipt_id: str | None,
) -> None:
    conn.execute(
        "UPDATE holds SET status = ?, reason = ?, charge_micros = ?, closed_at = ?, "
        "close_entry_id = ?, receipt_id = COALESCE(?, receipt_id) WHERE id = ?",
        (status, reason, charge, utcnow(), entry_id, receipt_id, hold_id),
    )


def ensure_wallets(conn: sqlite3.Connection, wallets: Any) -> None:
    """Create configured wallets that do not exist yet (never changes existing ones)."""
    now = utcnow()
    for w in wallets:
        conn.execute(
            "INSERT INTO wallets (id, name, settlement, currency, created_at) VALUES (?,?,?,?,?) "
            "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
            (w.id, w.name, w.settlement, w.currency, now),
        )


# -- reads --------------------------------------------------------------------


def _wallet_row(conn: sqlite3.Connection, wallet_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM wallets WHERE id = ?", (wallet_id,)).fetchone()
    if row is None:
        raise NotFound(f"no wallet {wallet_id!r}", code="unknown_wallet")
    return row


def _hold_row(conn: sqlite3.Connection, hold_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM holds WHERE id = ?", (hold_id,)).fetchone()
    if row is None:
        raise NotFound(f"no hold {hold_id!r}")
    return row


def _account_balance(conn: sqlite3.Connection, account: str, currency: str) -> int:
    row = conn.execute(
        "SELECT balance_micros FROM accounts WHERE id = ? AND currency = ?", (account, currency)
    ).fetchone()
    return row[0] if row else 0


def _wallet_sums(conn: sqlite3.Connection, wallet_id: str, currency: str) -> tuple[int, int]:
    free = _account_balance(conn, core.wallet_account(wallet_id), currency)
    held = _account_balance(conn, core.hold_account(wallet_id), currency)
    return free + held, held


def wallet_balance(conn: sqlite3.Connection, wallet_id: str) -> WalletBalance:
    wallet = _wallet_row(conn, wallet_id)
    balance, held = _wallet_sums(conn, wallet_id, wallet["currency"])
    return WalletBalance(wallet_id, wallet["currency"], balance, held)


def list_wallets(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    rows = conn.execute("SELECT * FROM wallets ORDER BY created_at, id").fetchall()
    out = []
    for row in rows:
        bal = wallet_balance(conn, row["id"])
        out.append(
            {
                **dict(row),
                "balance_micros": bal.balance,
                "held_micros": bal.held,
                "available_micros": bal.available,
            }
        )
    return out


def load_entry(conn: sqlite3.Connection, entry_id: int) -> StoredEntry:
    row = conn.execute("SELECT * FROM entries WHERE id = ?", (entry_id,)).fetchone()
    if row is None:
        raise NotFound(f"no ledger entry {entry_id}")
    postings = conn.execute(
        "SELECT account, currency, amount_micros FROM postings WHERE entry_id = ? ORDER BY seq",
        (entry_id,),
    ).fetchall()
    return stored_entry(row, [Posting(*p) for p in postings])


def stored_entry(row: sqlite3.Row, postings: list[Posting]) -> StoredEntry:
    # Built without EntryDraft's checks: a tampered row must reach verify(), not crash it.
    draft = object.__new__(EntryDraft)
    for name, value in (
        ("kind", row["kind"]),
        ("wallet_id", row["wallet_id"]),
        ("currency", row["currency"]),
        ("postings", tuple(postings)),
        ("memo", row["memo"]),
        ("idempotency_key", row["idempotency_key"]),
        ("reverses_id", row["reverses_id"]),
        ("hold_id", row["hold_id"]),
        ("receipt_id", row["receipt_id"]),
        ("topup_id", row["topup_id"]),
    ):
        object.__setattr__(draft, name, value)
    return StoredEntry(
        row["id"],
        row["created_at"],
        draft,
        row["balance_after_micros"],
        row["held_after_micros"],
        row["prev_hash"],
        row["hash"],
    )


def entry_dict(entry: StoredEntry) -> dict[str, Any]:
    d = entry.draft
    amount, held = d.wallet_deltas()
    return {
        "id": entry.id,
        "kind": d.kind,
        "wallet": d.wallet_id,
        "currency": d.currency,
        "amount_micros": amount,
        "held_delta_micros": held,
        "balance_after_micros": entry.balance_after,
        "held_after_micros": entry.held_after,
        "memo": d.memo,
        "created_at": entry.created_at,
        "receipt_id": d.receipt_id,
        "topup_id": d.topup_id,
        "hold_id": d.hold_id,
        "reverses_id": d.reverses_id,
        "idempotency_key": d.idempotency_key,
        "hash": entry.hash,
        "prev_hash": entry.prev_hash,
        "postings": [
            {"account": p.account, "currency": p.currency, "amount_micros": p.amount}
            for p in d.postings
        ],
    }


def wallet_entries(
    conn: sqlite3.Connection,
    wallet_id: str,
    *,
    before: int | None = None,
    limit: int = 50,
    kind: str | None = None,
) -> list[sqlite3.Row]:
    """A page of a wallet's statement, newest first (keyset pagination on id)."""
    _wallet_row(conn, wallet_id)
    sql = "SELECT * FROM entries WHERE wallet_id = ?"
    args: list[Any] = [wallet_id]
    if before is not None:
        sql += " AND id < ?"
        args.append(before)
    if kind is not None:
        sql += " AND kind = ?"
        args.append(kind)
    sql += " ORDER BY id DESC LIMIT ?"
    args.append(limit)
    return conn.execute(sql, args).fetchall()
