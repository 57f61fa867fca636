"""Receipt exports: CSV and JSON Lines of a filter, streamed in batches.

Exports walk the receipts newest first through the list's own keyset pager
(``services.receipts.page``), one batch of rows at a time, so memory stays flat
however many match, and an export holds exactly what the list, the API and
``localgate receipts`` show for the same filter.
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
from localgate.services import receipts as receipt_service
from localgate.services.receipts import FULL_ROW, ReceiptFilter

EXPORT_BATCH = 1000

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
    "charge_policy", "dialect", "upstream_kind", "notes",
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
        "notes": "; ".join(view["notes"]) or None,
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
    if fmt not in _FORMATS:
        raise BadRequest(f"unknown export format {fmt!r}; use csv or jsonl", param="format")
    head, encode = _FORMATS[fmt]
    if head:
        yield head, 0
    before: str | None = None
    while True:
        result = receipt_service.page(
            read(), flt, before=before, limit=batch, shape=FULL_ROW, look_newer=False
        )
        before, count = result.older, len(result.rows)
        data = encode(result.rows) if count else b""
        del result  # the next batch is read with nothing of this one held here
        if count:  # a page of a bounded scan can be empty and still go on
            yield data, count
        del data
        if before is None:
            return


def _csv_text(views: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n")
    writer.writerows(
        [_cell(record.get(c)) for c in CSV_COLUMNS] for record in map(csv_record, views)
    )
    return buf.getvalue().encode()


def _jsonl_text(views: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in views).encode()


# Export format -> (what comes before the receipts, how a batch of them is written).
_FORMATS: dict[str, tuple[bytes, Callable[[list[dict[str, Any]]], bytes]]] = {
    "csv": (",".join(CSV_COLUMNS).encode() + b"\r\n", _csv_text),
    "jsonl": (b"", _jsonl_text),
}


EXPORT_FORMATS = tuple(_FORMATS)


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
