"""How a top-up is shown by the API and the pages: amounts twice (decimal and
micros), its events, its ledger entries and the wallet as it is now."""

from __future__ import annotations

import sqlite3
from typing import Any

from localgate.core import topups as core
from localgate.money import decimal_or_none, decimal_str
from localgate.payments.base import PaymentProvider
from localgate.store import ledger as ledger_store
from localgate.store import topups as topup_store


def topup_view(
    conn: sqlite3.Connection,
    row: sqlite3.Row,
    provider: PaymentProvider,
    *,
    full: bool = True,
    wallets: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A top-up as the API and the pages show it: amounts twice (decimal and micros)."""
    wallets = ledger_store.list_wallets(conn) if wallets is None else wallets
    wallet = next((w for w in wallets if w["id"] == row["wallet_id"]), None)
    out: dict[str, Any] = {
        "id": row["id"],
        "status": row["status"],
        "wallet": row["wallet_id"],
        "wallet_name": wallet["name"] if wallet else row["wallet_id"],
        "settlement": wallet["settlement"] if wallet else None,
        "currency": row["currency"],
        "amount": decimal_str(row["amount_micros"]),
        "amount_micros": row["amount_micros"],
        "amount_short": core.short_money(row["amount_micros"], row["currency"]),
        "method": row["method"],
        "method_name": core.METHOD_NAMES.get(row["method"], row["method"]),
        "provider": row["provider"],
        "reference": row["reference"],
        "checkout_url": row["checkout_url"],
        "reason": row["reason"],
        "ledger_entry_id": row["ledger_entry_id"],
        "balance_before_micros": row["balance_before_micros"],
        "balance_after_micros": row["balance_after_micros"],
        "balance_before": decimal_or_none(row["balance_before_micros"]),
        "balance_after": decimal_or_none(row["balance_after_micros"]),
        "refunded": decimal_str(row["refunded_micros"]),
        "refunded_micros": row["refunded_micros"],
        "refunded_short": core.short_money(row["refunded_micros"], row["currency"]),
        "shortfall_micros": row["shortfall_micros"],
        "dispute_id": row["dispute_id"],
        "dispute_state": row["dispute_state"],
        "receipt_url": row["receipt_url"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "completed_at": row["completed_at"],
        "expires_at": row["expires_at"],
        "retry_of": row["retry_of"],
        "last_sync_at": row["last_sync_at"],
        "last_sync_error": row["last_sync_error"],
        "next_sync_at": row["next_sync_at"],
        "can_cancel": row["status"] in core.OPEN and provider.can_cancel,
        "money_moved": row["ledger_entry_id"] is not None,
    }
    if full:
        out["events"] = topup_store.events(conn, row["id"])
        out["entries"] = [
            {
                "id": e["id"],
                "kind": e["kind"],
                "amount_micros": e["amount_micros"],
                "amount": decimal_str(e["amount_micros"]),
                "balance_after_micros": e["balance_after_micros"],
                "memo": e["memo"],
                "created_at": e["created_at"],
            }
            for e in topup_store.entries_of(conn, row["id"])
        ]
        out["wallet_now"] = (
            {
                "balance_micros": wallet["balance_micros"],
                "available_micros": wallet["available_micros"],
                "frozen": bool(wallet["frozen"]),
                "frozen_reason": wallet["frozen_reason"],
            }
            if wallet
            else None
        )
    return out
