"""The catalog the gateway serves: bundled snapshot + local [[models]], with price versions.

Every distinct price of a route is a price version with an id derived from its
content (``pv_`` + fingerprint), stored once and never changed, so a receipt
keeps the price it was charged at whatever the catalog says later.
"""

from __future__ import annotations

import json
import sqlite3

from localgate.catalog_data import bundled_catalog_version, load_bundled_catalog
from localgate.config import Settings
from localgate.core.catalog import Catalog, merge, parse_catalog, price_fingerprint
from localgate.store.db import utcnow


def build_catalog(settings: Settings) -> Catalog:
    """Merge local ``[[models]]`` over the bundled catalog; ConfigError names the bad field."""
    where = f"{settings.config_path}: [[models]]" if settings.config_path else "[[models]]"
    local = parse_catalog(
        {"models": [dict(m) for m in settings.models]},
        source=where,
        local=True,
        channel_settlement={c.id: c.settlement for c in settings.channels},
    )
    return merge(Catalog(load_bundled_catalog()), local)


def price_version_id(fingerprint: str) -> str:
    return "pv_" + fingerprint[:20]


def ensure_price_versions(conn: sqlite3.Connection, catalog: Catalog) -> dict[str, str]:
    """Store a version for every route price not seen before; route id -> version id."""
    versions: dict[str, str] = {}
    now = utcnow()
    source = bundled_catalog_version()
    rows = []
    for model in catalog.models(include_disabled=True):
        for route in model.routes:
            vid = price_version_id(price_fingerprint(route))
            versions[route.id] = vid
            rows.append(
                (
                    vid,
                    route.id,
                    model.id,
                    price_fingerprint(route),
                    json.dumps(route.price.as_dict()),
                    source,
                    now,
                )
            )
    conn.executemany(
        "INSERT OR IGNORE INTO price_versions (id, route_id, model_id, fingerprint, price, source, "
        "created_at) VALUES (?,?,?,?,?,?,?)",
        rows,
    )
    return versions
