"""Wallet use cases: balances, statements, manual adjustments, ledger verification.

Shared by the CLI and the web layer; amounts come out twice, as decimal strings
and integer micros, the way the admin API shows them.
"""

from __future__ import annotations

from typing import Any

from localgate.core import ledger as core
from localgate.errors import BadRequest, NotFound
from localgate.money import decimal_str, format_money, parse_amount
from localgate.store import Store
from localgate.store import ledger as ledger_store
from localgate.store.verify import VerifyReport, verify

MAX_PAGE = 500


def wallet_view(row: dict[str, Any]) -> dict[str, Any]:
    cur = row["currency"]
    return {
        "id": row["id"],
        "name": row["name"],
        "settlement": row["settlement"],
        "currency": cur,
        "balance": decimal_str(row["balance_micros"]),
        "balance_micros": row["balance_micros"],
        "held": decimal_str(row["held_micros"]),
        "held_micros": row["held_micros"],
        "available": decimal_str(row["available_micros"]),
        "available_micros": row["available_micros"],
        "display": format_money(row["balance_micros"], cur),
        "frozen": bool(row["frozen"]),
        "frozen_reason": row["frozen_reason"],
    }


def entry_view(entry: core.StoredEntry) -> dict[str, Any]:
    out = ledger_store.entry_dict(entry)
    out["amount"] = decimal_str(out["amount_micros"])
    out["balance_after"] = decimal_str(out["balance_after_micros"])
    return out


class Wallets:
    def __init__(self, store: Store) -> None:
        self.store = store

    def list(self) -> list[dict[str, Any]]:
        return [wallet_view(w) for w in ledger_store.list_wallets(self.store.read())]

    def get(self, wallet_id: str) -> dict[str, Any]:
        for wallet in self.list():
            if wallet["id"] == wallet_id:
                return wallet
        raise NotFound(f"no wallet {wallet_id!r}", code="unknown_wallet")

    def ledger(
        self, wallet_id: str, *, cursor: str | None = None, limit: int = 50, kind: str | None = None
    ) -> dict[str, Any]:
        before = _cursor(cursor)
        limit = max(1, min(limit, MAX_PAGE))
        conn = self.store.read()
        rows = ledger_store.wallet_entries(
            conn, wallet_id, before=before, limit=limit + 1, kind=kind
        )
        page = [entry_view(ledger_store.load_entry(conn, r["id"])) for r in rows[:limit]]
        nxt = str(page[-1]["id"]) if len(rows) > limit else None
        return {"wallet": wallet_id, "entries": page, "next": nxt}

    def entry(self, entry_id: int) -> dict[str, Any]:
        return entry_view(ledger_store.load_entry(self.store.read(), entry_id))

    def _adjustment(
        self, wallet_id: str, amount: str, reason: str, idempotency_key: str | None
    ) -> core.EntryDraft:
        wallet = self.get(wallet_id)
        micros = parse_amount(amount, what="amount")
        return core.adjustment_entry(
            wallet_id, wallet["currency"], micros, reason, idempotency_key=idempotency_key
        )

    async def adjust(
        self, wallet_id: str, amount: str, reason: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        draft = self._adjustment(wallet_id, amount, reason, idempotency_key)
        return entry_view(await self.store.write(ledger_store.post_entry, draft))

    def adjust_sync(
        self, wallet_id: str, amount: str, reason: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        draft = self._adjustment(wallet_id, amount, reason, idempotency_key)
        return entry_view(self.store.write_sync(ledger_store.post_entry, draft))

    def verify(self) -> VerifyReport:
        # Its own connection: verify reads in a transaction of its own.
        from localgate.store.db import open_db

        conn = open_db(self.store.path)
        try:
            return verify(conn)
        finally:
            conn.close()


def _cursor(cursor: str | None) -> int | None:
    if cursor in (None, ""):
        return None
    try:
        value = int(cursor)  # type: ignore[arg-type]
    except ValueError:
        raise BadRequest(
            f"bad cursor {cursor!r}: pass the 'next' value of the previous page",
            code="invalid_cursor",
        ) from None
    if value < 1:
        raise BadRequest("bad cursor", code="invalid_cursor")
    return value
