"""Receipts for people: filtered pages and one receipt's detail.

This is the one place receipts are filtered and paged: :class:`ReceiptQuery`
parses what was asked (query parameters of ``GET /api/receipts`` and of the
/receipts page, options of ``localgate receipts`` and ``receipts export``) and
:func:`page` reads it, for the API, the CLI, the page and exports alike.

Every query is shaped for an index, so pages stay fast at millions of receipts:

- lists are newest first with keyset pagination on the receipt id, which sorts
  by creation time (``rc_`` + milliseconds); each filter column has a
  ``(column, id)`` index, and a time range becomes an id range as well;
- the choices offered by the filter form come from index skip-scans.

Free text that a tool or an upstream chose (User-Agent, error messages) has
anything that looks like a credential masked, on pages and in exports
(``services.exports``) alike.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from localgate.core.catalog import Catalog
from localgate.core.pricing import Usage, charge_micros
from localgate.core.receipts import STATUSES, mask_secrets, new_receipt_id
from localgate.errors import BadRequest
from localgate.store import receipts as receipt_store

PAGE_SIZE = 50
ROUTE_TYPES = ("official", "routed")

# Filter name -> receipts column; each has a (column, id) index.
COLUMN_FILTERS = {
    "key": "key_id",
    "project": "key_project",
    "model": "requested_model",
    "route_type": "route_type",
    "channel": "channel",
    "wallet": "wallet_id",
    "status": "status",
    "client": "client",
}
# Parameters that also go by another name -> the canonical one (docs/receipts.md):
# the API has always paged with ?cursor=, the page with ?before=.
ALIASES = {"cursor": "before"}
MAX_LIMIT = 500  # receipts in one page of the API or the CLI
_ID = re.compile(r"^rc_[0-9a-z]{20}$")
_RELATIVE = re.compile(r"^(\d{1,4})([hd])$")

# -- filters ---------------------------------------------------------------------


def parse_time(value: str, *, end: bool = False, now: datetime | None = None) -> datetime:
    """``2026-11-27`` (UTC day), ``2026-11-27T10:30[:00][Z]`` or ``24h`` / ``7d`` ago.

    With ``end`` a bare day means the end of that day, so ``until=2026-11-27``
    includes the 27th.
    """
    value = value.strip()
    rel = _RELATIVE.match(value)
    if rel:
        amount, unit = int(rel.group(1)), rel.group(2)
        base = now or datetime.now(UTC)
        return base - (timedelta(hours=amount) if unit == "h" else timedelta(days=amount))
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if end else start
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(
            f"not a time: {value!r}; use a day like 2026-11-27, a UTC time like "
            "2026-11-27T10:30, or 24h / 7d for the last hours or days",
            code="invalid_time",
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def id_floor(moment: datetime) -> str:
    """The smallest receipt id a receipt created at ``moment`` can have."""
    return new_receipt_id(moment.timestamp())[:13]


@dataclass(frozen=True)
class ReceiptFilter:
    """Which receipts: the same for the page, the API, the CLI and every export."""

    key: str | None = None
    project: str | None = None
    model: str | None = None
    route_type: str | None = None
    channel: str | None = None
    wallet: str | None = None
    status: str | None = None
    client: str | None = None
    since: str | None = None  # as the user wrote them; parsed by where()
    until: str | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> ReceiptFilter:
        """From query parameters or CLI options; blank values are no filter."""
        flt = cls(**{f.name: param(params, f.name)[1] for f in fields(cls)})
        flt.check()
        return flt

    def check(self) -> None:
        if self.status and self.status not in STATUSES:
            raise BadRequest(
                f"unknown status {self.status!r}; use one of {', '.join(STATUSES)}",
                param="status",
            )
        if self.route_type and self.route_type not in ROUTE_TYPES:
            raise BadRequest("route_type must be official or routed", param="route_type")
        self.time_range()

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        since = parse_time(self.since) if self.since else None
        until = parse_time(self.until, end=True) if self.until else None
        return since, until

    def active(self) -> dict[str, str]:
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name))}

    def without(self, name: str) -> ReceiptFilter:
        return replace(self, **{name: None})

    def equalities(self) -> list[tuple[str, str]]:
        """(column, value) of each column filter that is set."""
        return [
            (col, getattr(self, name))
            for name, col in COLUMN_FILTERS.items()
            if getattr(self, name)
        ]

    def id_bounds(self) -> tuple[str | None, str | None]:
        """The time range as an id range: ids sort by creation time. A second of
        slack either side (the id's clock reading comes just before created_at);
        the exact ``created_at`` test in :meth:`where` keeps the edges right."""
        since, until = self.time_range()
        low = id_floor(since - timedelta(seconds=1)) if since else None
        high = id_floor(until + timedelta(seconds=1)) if until else None
        return low, high

    def where(self) -> tuple[list[str], list[Any]]:
        clauses = [f"{col} = ?" for col, _ in self.equalities()]
        args: list[Any] = [value for _, value in self.equalities()]
        since, until = self.time_range()
        low, high = self.id_bounds()
        if since is not None:
            clauses += ["id >= ?", "created_at >= ?"]
            args += [low, iso(since)]
        if until is not None:
            clauses += ["id < ?", "created_at < ?"]
            args += [high, iso(until)]
        return clauses, args


def param(params: Mapping[str, Any], name: str) -> tuple[str, str | None]:
    """(the name it was given under, its value) of a parameter that may go by an
    alias; blank is no value, and the canonical name wins over its aliases."""
    for written in (name, *(a for a, canon in ALIASES.items() if canon == name)):
        raw = params.get(written)
        if raw is not None and str(raw).strip():
            return written, str(raw).strip()
    return name, None


def _cursor(params: Mapping[str, Any], name: str) -> str | None:
    written, value = param(params, name)
    if value is not None and not _ID.match(value):
        raise BadRequest(f"'{written}' must be a receipt id like rc_…", param=written)
    return value


@dataclass(frozen=True)
class ReceiptQuery:
    """What is asked of the receipts list anywhere (API, CLI, page): a filter, a
    place in the newest-first list, a page size."""

    flt: ReceiptFilter
    before: str | None = None  # receipts older than this id (the API's ``next``)
    after: str | None = None  # receipts newer than this id
    limit: int = PAGE_SIZE

    @classmethod
    def from_params(cls, params: Mapping[str, Any], *, limit: int = PAGE_SIZE) -> ReceiptQuery:
        """The one parser: names it does not know are ignored (the page also has ``q``)."""
        flt = ReceiptFilter.from_params(params)
        name, raw = param(params, "limit")
        if raw is not None:
            try:
                limit = int(raw)
            except ValueError:
                raise BadRequest(f"'{name}' must be a whole number", param=name) from None
        limit = max(1, min(limit, MAX_LIMIT))  # out of range is clamped, not refused
        return cls(flt, _cursor(params, "before"), _cursor(params, "after"), limit)


# -- the list ----------------------------------------------------------------------

LIST_COLUMNS = (
    "id, created_at, status, http_status, key_id, key_label, key_project, client, "
    "requested_model, upstream_model, route_type, channel, usage_input, usage_cached_input, "
    "usage_output, usage_source, charge_micros, currency, wallet_id, latency_ms, stream, "
    "fallback_used, retry_count, error"
)


@dataclass(frozen=True)
class RowShape:
    """What a page's rows are: the columns read and the dict each row becomes."""

    columns: str
    convert: Callable[[sqlite3.Row], dict[str, Any]]


def _list_row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["error"] = mask_secrets(out["error"])
    return out


def full_view(row: sqlite3.Row) -> dict[str, Any]:
    """A stored row as ``GET /api/receipts/{id}`` shows it, secrets masked."""
    return safe_view(receipt_store.receipt_view(row))


LIST_ROW = RowShape(LIST_COLUMNS, _list_row)  # the /receipts table: only what it shows
FULL_ROW = RowShape("*", full_view)  # the API, the CLI, exports: every field


@dataclass(frozen=True)
class ReceiptPage:
    rows: list[dict[str, Any]]
    newer: str | None  # pass as ?after= to see the page before this one
    older: str | None  # pass as ?before= to see the next page
    searched: int = 0  # > 0: the page stopped after scanning this many receipts


# With two or more column filters, a page scans at most this many receipts that
# match the most selective one and checks the others on those: a combination
# that (almost) never matches cannot make a page read a million rows. The page
# then says how far it searched and links to the next stretch.
SCAN_WINDOW = 5_000
# The index of each filter column, and the order to prefer them in as the
# driving filter (likely fewest receipts first).
_INDEX = {
    "key_id": "receipts_key",
    "client": "receipts_client",
    "key_project": "receipts_key_project",
    "requested_model": "receipts_model",
    "channel": "receipts_channel",
    "wallet_id": "receipts_wallet",
    "route_type": "receipts_route_type",
    "status": "receipts_status",
}
_DRIVERS = tuple(_INDEX)


def _driver(flt: ReceiptFilter) -> tuple[str, str] | None:
    pairs = flt.equalities()
    if len(pairs) < 2:
        return None
    if flt.status and flt.status != "succeeded":  # the rare statuses are the narrowest
        return "status", flt.status
    return min(pairs, key=lambda pair: _DRIVERS.index(pair[0]))


def _scan(
    conn: sqlite3.Connection,
    flt: ReceiptFilter,
    driver: tuple[str, str],
    order: str,
    before: str | None,
    after: str | None,
    window: int,
) -> list[str]:
    """The stretch of ids to look at: the next ``window`` receipts of the driver."""
    column, value = driver
    low, high = flt.id_bounds()
    bounds = [(">=", low), ("<", high), ("<", before), (">", None if before else after)]
    extra = [(f"id {op} ?", v) for op, v in bounds if v]
    return [
        r[0]
        for r in conn.execute(
            f"SELECT id FROM receipts WHERE {column} = ?"
            + "".join(f" AND {c}" for c, _ in extra)
            + f" ORDER BY id {order} LIMIT ?",
            (value, *(v for _, v in extra), window),
        )
    ]


def page(
    conn: sqlite3.Connection,
    flt: ReceiptFilter,
    *,
    before: str | None = None,
    after: str | None = None,
    limit: int = PAGE_SIZE,
    window: int = SCAN_WINDOW,
    shape: RowShape = LIST_ROW,
    look_newer: bool = True,
) -> ReceiptPage:
    """One page of matching receipts, newest first, from ``before`` or ``after`` a cursor.

    The one pager of receipts: the page, ``GET /api/receipts``, ``localgate
    receipts`` and exports all read through it. ``look_newer=False`` skips the
    look for a newer page (only the page offers a way back).
    """
    clauses, args = flt.where()
    ascending = bool(after and not before)
    if before:
        clauses.append("id < ?")
        args.append(before)
    elif after:
        clauses.append("id > ?")
        args.append(after)
    order = "ASC" if ascending else "DESC"
    driver = _driver(flt)
    scanned: list[str] = []
    index = ""
    if driver is not None:
        scanned = _scan(conn, flt, driver, order, before, after, window)
        if not scanned:
            return ReceiptPage([], None, None)
        clauses += ["id >= ?", "id <= ?"]
        args += [min(scanned[0], scanned[-1]), max(scanned[0], scanned[-1])]
        index = f" INDEXED BY {_INDEX[driver[0]]}"
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    rows = conn.execute(
        f"SELECT {shape.columns} FROM receipts{index}{where} ORDER BY id {order} LIMIT ?",
        (*args, limit + 1),
    ).fetchall()
    items = [shape.convert(r) for r in rows[:limit]]
    more = len(rows) > limit
    # A full window that did not fill the page: there may be more past it.
    cut = not more and len(scanned) == window
    edge = scanned[-1] if cut else (items[-1]["id"] if items else None)
    if ascending:
        items.reverse()
        newer = (items[0]["id"] if more else edge if cut else None) if items or cut else None
        older = items[-1]["id"] if items else (after or None)
    else:
        newer = None
        if before and items and look_newer:
            # Only offer "newer" when there is something there (a bounded look).
            ahead = page(conn, flt, after=items[0]["id"], limit=1, window=window)
            newer = items[0]["id"] if ahead.rows or ahead.searched else None
        older = items[-1]["id"] if more else (edge if cut else None)
    return ReceiptPage(items, newer, older, len(scanned) if cut else 0)


def api_page(conn: sqlite3.Connection, query: ReceiptQuery) -> dict[str, Any]:
    """``GET /api/receipts`` and ``localgate receipts --json``: ``{"receipts", "next"}``.

    Pass ``next`` as ``before`` (or ``cursor``) for the following page; a page
    can hold fewer than ``limit`` receipts, even none, while ``next`` is set
    (two or more filters scan a bounded window), so stop only at ``next: null``.
    """
    result = page(
        conn,
        query.flt,
        before=query.before,
        after=query.after,
        limit=query.limit,
        shape=FULL_ROW,
        look_newer=False,
    )
    return {"receipts": result.rows, "next": result.older}


def recent(conn: sqlite3.Connection, limit: int = 8) -> list[dict[str, Any]]:
    return page(conn, ReceiptFilter(), limit=limit).rows


def count(conn: sqlite3.Connection, flt: ReceiptFilter) -> int:
    """How many receipts match (for the CLI's progress bar; not used on pages)."""
    clauses, args = flt.where()
    where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
    return int(conn.execute(f"SELECT count(*) FROM receipts{where}", args).fetchone()[0])


def distinct(conn: sqlite3.Connection, column: str) -> list[str]:
    """The distinct values of an indexed receipts column: one index seek per value."""
    if column not in COLUMN_FILTERS.values():
        raise ValueError(f"not a filter column: {column}")
    rows = conn.execute(
        f"""WITH RECURSIVE v(x) AS (
                SELECT min({column}) FROM receipts
                UNION ALL
                SELECT (SELECT min({column}) FROM receipts WHERE {column} > v.x)
                FROM v WHERE v.x IS NOT NULL)
            SELECT x FROM v WHERE x IS NOT NULL"""
    ).fetchall()
    return [r[0] for r in rows]


def filter_choices(conn: sqlite3.Connection) -> dict[str, list[tuple[str, str]]]:
    """(value, label) options for the filter form, from every receipt ever written."""
    labels = {
        r["id"]: f"{r['label']} ({r['id']})"
        for r in conn.execute("SELECT id, label FROM api_keys").fetchall()
    }
    wallets = {r["id"]: r["name"] for r in conn.execute("SELECT id, name FROM wallets")}
    keys = sorted(
        ((k, labels.get(k, k)) for k in distinct(conn, "key_id")), key=lambda kv: kv[1].lower()
    )
    return {
        "key": keys,
        "project": [(v, v) for v in distinct(conn, "key_project")],
        "model": [(v, v) for v in distinct(conn, "requested_model")],
        "route_type": [(v, v) for v in ROUTE_TYPES],
        "channel": [(v, v) for v in distinct(conn, "channel")],
        "wallet": [(w, wallets.get(w, w)) for w in distinct(conn, "wallet_id")],
        "status": [(v, v.replace("_", " ")) for v in STATUSES],
        "client": [(v, v) for v in distinct(conn, "client")],
    }


# -- one receipt -------------------------------------------------------------------


def detail(conn: sqlite3.Connection, receipt_id: str) -> dict[str, Any]:
    """Every field of the receipt (the API's view, secrets masked) and its ledger entries."""
    view = safe_view(receipt_store.get(conn, receipt_id))
    view["entries"] = [
        dict(r)
        for r in conn.execute(
            "SELECT id, kind, wallet_id, currency, amount_micros, balance_after_micros, "
            "held_after_micros, memo, created_at FROM entries WHERE receipt_id = ? ORDER BY id",
            (receipt_id,),
        )
    ]
    return view


def safe_view(view: dict[str, Any]) -> dict[str, Any]:
    view["error"] = mask_secrets(view.get("error"))
    view["user_agent"] = mask_secrets(view.get("user_agent"))
    view["request_id"] = mask_secrets(view.get("request_id"))  # rows stored before masking
    for attempt in view.get("attempts") or ():
        if isinstance(attempt, dict) and isinstance(attempt.get("error"), str):
            attempt["error"] = mask_secrets(attempt["error"])
    return view


def counterfactual(
    view: Mapping[str, Any],
    catalog: Catalog,
    wallet_by_settlement: Mapping[str, str],
    configured_channels: set[str],
) -> dict[str, Any] | None:
    """What the same usage would cost on the other settlement path, at today's price.

    ``None`` when the request never reached a route; ``{"available": False}``
    when the model has no route on the other path.
    """
    route_type = view.get("route_type")
    model_id = view.get("catalog_model") or view.get("model")
    if route_type not in ROUTE_TYPES or not model_id:
        return None
    other = "routed" if route_type == "official" else "official"
    routes = [r for r in catalog.routes_for(model_id) if r.settlement == other]
    if not routes:
        return {"available": False, "settlement": other}
    usable = [r for r in routes if r.channel in configured_channels]
    route = (usable or routes)[0]
    u = view["usage"]
    usage = Usage(
        input=u["input"],
        cached_input=u["cached_input"],
        cache_write=u["cache_write"],
        output=u["output"],
        reasoning=u["reasoning"],
    )
    return {
        "available": True,
        "settlement": other,
        "route_id": route.id,
        "channel": route.channel,
        "channel_configured": route.channel in configured_channels,
        "upstream_model": route.upstream_model,
        "wallet": wallet_by_settlement.get(other),
        "currency": route.price.currency,
        "price": route.price.as_dict(),
        "charge_micros": charge_micros(usage, route.price),
        "charged_nothing": view.get("charge_micros", 0) == 0,
    }
