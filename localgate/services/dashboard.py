"""The dashboard's figures: spend per wallet and day, top models, keys and clients.

They come from ``receipt_daily``, a per-day rollup that triggers keep
(migration ``m004_ui``), never from the receipts themselves, so the dashboard
stays fast at millions of receipts.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any


@dataclass
class Spend:
    """30 days of receipts, from the daily rollup."""

    days: list[str]  # oldest first, UTC
    per_wallet_day: dict[str, list[int]]  # wallet -> micros per day
    wallet_totals: dict[str, int]
    requests: int
    errors: int
    models: list[dict[str, Any]]  # {"name", "requests", "spend": {wallet: micros}}
    keys: list[dict[str, Any]]
    clients: list[dict[str, Any]]


def spend(conn: sqlite3.Connection, *, days: int = 30, today: date | None = None) -> Spend:
    today = today or datetime.now(UTC).date()
    day_list = [(today - timedelta(days=days - 1 - i)).isoformat() for i in range(days)]
    index = {d: i for i, d in enumerate(day_list)}
    per_day: dict[str, list[int]] = defaultdict(lambda: [0] * days)
    totals: dict[str, int] = defaultdict(int)
    groups: dict[str, dict[str, dict[str, Any]]] = {"model": {}, "key": {}, "client": {}}
    requests = errors = 0
    rows = conn.execute(
        "SELECT day, wallet_id, dim, value, requests, errors, charge_micros FROM receipt_daily "
        "WHERE day >= ? AND day <= ? AND requests != 0",
        (day_list[0], day_list[-1]),
    )
    for day, wallet, dim, value, n, failed, micros in rows:
        if dim not in groups:
            continue
        if dim == "model":  # every receipt has one row per dimension: count it once
            requests += n
            errors += failed
            if wallet:
                per_day[wallet][index[day]] += micros
                totals[wallet] += micros
        item = groups[dim].setdefault(
            value, {"name": value, "requests": 0, "errors": 0, "spend": defaultdict(int)}
        )
        item["requests"] += n
        item["errors"] += failed
        if wallet:
            item["spend"][wallet] += micros
    return Spend(
        day_list,
        dict(per_day),
        dict(totals),
        requests,
        errors,
        *(_ranked(list(groups[k].values()), totals) for k in ("model", "key", "client")),
    )


def _ranked(items: list[dict[str, Any]], totals: Mapping[str, int], top: int = 8) -> list[Any]:
    """By share of each wallet's spend (currencies cannot be added), then requests."""

    def share(item: dict[str, Any]) -> float:
        return sum(m / totals[w] for w, m in item["spend"].items() if totals.get(w))

    items.sort(key=lambda i: (share(i), i["requests"]), reverse=True)
    for item in items:
        item["spend"] = dict(item["spend"])
        item["share"] = share(item)
    return items[:top]


def key_names(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
    return {
        r["id"]: {"label": r["label"], "project": r["project"]}
        for r in conn.execute("SELECT id, label, project FROM api_keys")
    }


def usable_models(gateway: Any) -> dict[str, list[str]]:
    """Settlement path -> the models a configured channel can serve on it."""
    out: dict[str, list[str]] = defaultdict(list)
    for model in gateway.catalog.models():
        for settlement in sorted({r.settlement for r in gateway.usable_routes(model)}):
            out[settlement].append(model.id)
    return dict(out)
