"""Receipts in SQLite: written with the hold and the settle; one by id, in the API's shape.

Lists of receipts (filters and pages) are read by ``services.receipts``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from localgate.core.receipts import Receipt, mask_secrets
from localgate.errors import NotFound
from localgate.money import decimal_or_none, decimal_str

_COLUMNS = (
    "id",
    "request_id",
    "created_at",
    "finished_at",
    "status",
    "http_status",
    "key_id",
    "key_label",
    "key_project",
    "client",
    "user_agent",
    "endpoint",
    "stream",
    "requested_model",
    "catalog_model",
    "route_id",
    "route_type",
    "channel",
    "upstream_model",
    "attempts",
    "fallback_used",
    "retry_count",
    "usage_input",
    "usage_cached_input",
    "usage_cache_write",
    "usage_output",
    "usage_reasoning",
    "usage_source",
    "price_version_id",
    "price",
    "cost_exact",
    "charge_micros",
    "currency",
    "wallet_id",
    "balance_before_micros",
    "balance_after_micros",
    "hold_id",
    "hold_micros",
    "ledger_entry_id",
    "latency_ms",
    "ttft_ms",
    "error",
    "charge_policy",
    "dialect",
    "upstream_kind",
    "notes",
)
_INSERT = (
    f"INSERT OR REPLACE INTO receipts ({', '.join(_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in _COLUMNS)})"
)


def _row(r: Receipt) -> tuple[Any, ...]:
    u = r.usage
    values = {
        **r.as_fields(),
        # Free text from upstreams and clients: never store a credential that leaked into it.
        # request_id and user_agent are the caller's headers, shown on pages and in exports.
        "error": mask_secrets(r.error),
        "request_id": mask_secrets(r.request_id) or "",
        "user_agent": mask_secrets(r.user_agent),
        "stream": int(r.stream),
        "attempts": json.dumps([{**a, "error": mask_secrets(a.get("error"))} for a in r.attempts]),
        "fallback_used": int(r.fallback_used),
        "retry_count": r.retry_count,
        "usage_input": u.input,
        "usage_cached_input": u.cached_input,
        "usage_cache_write": u.cache_write,
        "usage_output": u.output,
        "usage_reasoning": u.reasoning,
        # No usage to speak of when nothing ran or nothing was charged.
        "usage_source": None
        if r.status == "rejected" or (r.status == "failed" and not r.charge_micros)
        else u.source,
        "price": json.dumps(r.price.as_dict()) if r.price else None,
        "notes": json.dumps(r.notes) if r.notes else None,
        # Stored in currency units, exactly (micros would hide the unit).
        "cost_exact": f"{r.cost_exact.scaleb(-6).normalize():f}",
    }
    return tuple(values[c] for c in _COLUMNS)


def save(conn: sqlite3.Connection, receipt: Receipt) -> None:
    """Insert or overwrite the receipt row (a receipt is rewritten as it finishes)."""
    conn.execute(_INSERT, _row(receipt))


def interrupt_pending(conn: sqlite3.Connection, hold_ids: list[str], finished_at: str) -> int:
    """Receipts whose hold was recovered at start-up finish as ``interrupted``."""
    from localgate.core.receipts import INTERRUPTED_ERROR, POLICY_INTERRUPTED

    count = 0
    for hold_id in hold_ids:
        cur = conn.execute(
            "UPDATE receipts SET status = 'interrupted', finished_at = ?, charge_policy = ?, "
            "error = ?, "
            "ledger_entry_id = (SELECT close_entry_id FROM holds WHERE id = ?), "
            "balance_after_micros = (SELECT balance_after_micros FROM entries WHERE id = "
            "(SELECT close_entry_id FROM holds WHERE id = ?)) "
            "WHERE hold_id = ? AND status = 'pending'",
            (finished_at, POLICY_INTERRUPTED, INTERRUPTED_ERROR, hold_id, hold_id, hold_id),
        )
        count += cur.rowcount
    # Pending receipts with no hold (the process died before placing it).
    cur = conn.execute(
        "UPDATE receipts SET status = 'interrupted', finished_at = ?, charge_policy = ? "
        "WHERE status = 'pending' AND hold_id IS NULL",
        (finished_at, POLICY_INTERRUPTED),
    )
    return count + cur.rowcount


def receipt_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """The API form of ARCHITECTURE.md section 4: amounts as decimal strings and micros."""
    price = json.loads(row["price"]) if row["price"] else None
    view = {
        "id": row["id"],
        "request_id": row["request_id"],
        "status": row["status"],
        "http_status": row["http_status"],
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
        "endpoint": row["endpoint"],
        "stream": bool(row["stream"]),
        "key": {"id": row["key_id"], "label": row["key_label"], "project": row["key_project"]},
        "client": row["client"],
        "user_agent": row["user_agent"],
        "model": row["requested_model"],
        "catalog_model": row["catalog_model"],
        "upstream_model": row["upstream_model"],
        "route_id": row["route_id"],
        "route_type": row["route_type"],
        "channel": row["channel"],
        "wallet": row["wallet_id"],
        "currency": row["currency"],
        "usage": {
            "input": row["usage_input"],
            "cached_input": row["usage_cached_input"],
            "cache_write": row["usage_cache_write"],
            "output": row["usage_output"],
            "reasoning": row["usage_reasoning"],
            "source": row["usage_source"],
        },
        "price": {"version": row["price_version_id"], **(price or {})}
        if price
        else {"version": row["price_version_id"]},
        "cost_exact": row["cost_exact"],
        "charge": decimal_str(row["charge_micros"]),
        "charge_micros": row["charge_micros"],
        "balance_before_micros": row["balance_before_micros"],
        "balance_after_micros": row["balance_after_micros"],
        "balance_before": decimal_or_none(row["balance_before_micros"]),
        "balance_after": decimal_or_none(row["balance_after_micros"]),
        "hold_micros": row["hold_micros"],
        "ledger_entry_id": row["ledger_entry_id"],
        "latency_ms": row["latency_ms"],
        "ttft_ms": row["ttft_ms"],
        "attempts": json.loads(row["attempts"]),
        "fallback_used": bool(row["fallback_used"]),
        "retry_count": row["retry_count"],
        "error": row["error"],
        "charge_policy": row["charge_policy"],
        "dialect": row["dialect"],
        "upstream_kind": row["upstream_kind"],
        "notes": json.loads(row["notes"]) if row["notes"] else [],
    }
    return view


def get(conn: sqlite3.Connection, receipt_id: str) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM receipts WHERE id = ?", (receipt_id,)).fetchone()
    if row is None:
        raise NotFound(f"no receipt {receipt_id!r}", code="unknown_receipt")
    return receipt_view(row)
