"""Receipt exports: CSV and JSON Lines of a filter, streamed in batches.

Exports walk the receipts newest first with the same keyset pagination as the
list, one batch of rows at a time, so memory stays flat however many match.
The web layer streams the chunks; ``localgate receipts export`` writes them to
a file. The columns are documented in docs/receipts.md.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localgate.errors import BadRequest
from localgate.money import decimal_str
from localgate.services.receipts import ReceiptFilter, safe_view
from localgate.store import receipts as receipt_store

EXPORT_BATCH = 1000
EXPORT_FORMATS = ("csv", "jsonl")

CSV_COLUMNS = (
    "id", "request_id", "created_at", "finished_at", "status", "http_status", "endpoint",
    "stream", "key_id", "key_label", "key_project", "client", "user_agent", "requested_model",
    "catalog_model", "route_id", "route_type", "channel", "upstream_model", "fallback_used",
    "retry_count", "attempts", "usage_input", "usage_cached_input", "usage_cache_write",
    "usage_output", "usage_reasoning", "usage_source", "price_version", "price_currency",
    "price_input", "price_cached_input", "price_cache_write", "price_output",
    "price_per_request", "cost_exact", "charge", "charge_micros", "currency", "wallet",
    "balance_before", "balance_before_micros", "balance_after", "balance_after_micros",
    "hold", "hold_micros", "ledger_entry_id", "latency_ms", "ttft_ms", "error",
    "charge_policy",
)  # fmt: skip
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def csv_record(view: Mapping[str, Any]) -> dict[str, Any]:
    """One receipt as a flat CSV row (amounts as decimal strings and micros)."""
    usage, price, key = view["usage"], view["price"], view["key"]
    record = {
        **{c: view.get(c) for c in CSV_COLUMNS if c in view},
        "key_id": key["id"],
        "key_label": key["label"],
        "key_project": key["project"],
        "requested_model": view["model"],
        "wallet": view["wallet"],
        "stream": int(bool(view["stream"])),
        "fallback_used": int(bool(view["fallback_used"])),
        "attempts": json.dumps(view["attempts"], ensure_ascii=False, separators=(",", ":")),
        "price_version": price.get("version"),
        "hold": None if view["hold_micros"] is None else decimal_str(view["hold_micros"]),
    }
    for name in ("input", "cached_input", "cache_write", "output", "reasoning", "source"):
        record[f"usage_{name}"] = usage[name]
    for name in ("currency", "input", "cached_input", "cache_write", "output", "per_request"):
        record[f"price_{name}"] = price.get(name)
    return record


def _cell(value: Any) -> Any:
    # A cell that starts like a formula is run by spreadsheets; a tool picks its
    # own User-Agent, so such text gets a leading apostrophe (numbers do not).
    if value.__class__ is str and value[:1] in _FORMULA_START and not _NUMBER.match(value):
        return "'" + value
    return value


def export_chunks(
    read: Callable[[], sqlite3.Connection],
    flt: ReceiptFilter,
    fmt: str,
    *,
    batch: int = EXPORT_BATCH,
) -> Iterator[tuple[bytes, int]]:
    """(bytes, receipts in them) chunks of the export, newest receipt first.

    ``read`` gives a connection per batch: a web stream runs each step on
    whatever worker thread is free, and no read transaction stays open.
    """
    if fmt not in EXPORT_FORMATS:
        raise BadRequest(f"unknown export format {fmt!r}; use csv or jsonl", param="format")
    clauses, args = flt.where()
    cursor: str | None = None
    if fmt == "csv":
        yield ",".join(CSV_COLUMNS).encode() + b"\r\n", 0
    while True:
        where = list(clauses) + (["id < ?"] if cursor else [])
        sql = "SELECT * FROM receipts"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = (
            read()
            .execute(
                f"{sql} ORDER BY id DESC LIMIT ?", (*args, *([cursor] if cursor else []), batch)
            )
            .fetchall()
        )
        if not rows:
            return
        views = [safe_view(receipt_store.receipt_view(r)) for r in rows]
        if fmt == "csv":
            data = _csv_text([csv_record(v) for v in views])
        else:
            data = "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in views).encode()
        yield data, len(rows)
        if len(rows) < batch:
            return
        cursor = rows[-1]["id"]


def _csv_text(records: list[Mapping[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerows([_cell(record.get(c)) for c in CSV_COLUMNS] for record in records)
    return buf.getvalue().encode()


def export_to(
    read: Callable[[], sqlite3.Connection],
    flt: ReceiptFilter,
    fmt: str,
    out: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write the export to the file ``out`` (``-``: standard output); returns the count.

    A file is written as ``<out>.part`` and renamed when complete, so an export
    cut short never passes for a whole one.
    """
    written = 0
    if out == "-":
        for data, n in export_chunks(read, flt, fmt):
            sys.stdout.buffer.write(data)
            written += n
            if progress is not None:
                progress(n)
        sys.stdout.buffer.flush()
        return written
    target = Path(out)
    partial = target.with_name(target.name + ".part")
    try:
        with partial.open("wb") as fh:
            for data, n in export_chunks(read, flt, fmt):
                fh.write(data)
                written += n
                if progress is not None:
                    progress(n)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written


def export_filename(fmt: str, now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M%S")
    return f"localgate-receipts-{stamp}.{fmt}"
