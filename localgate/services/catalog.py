"""The catalog the gateway serves: bundled snapshot + local [[models]], with price versions.

Every distinct price of a route is a price version with an id derived from its
content (``pv_`` + fingerprint), stored once and never changed, so a receipt
keeps the price it was charged at whatever the catalog says later.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from typing import Any

from localgate.catalog_data import bundled_catalog_version, load_bundled_catalog
from localgate.config import Settings
from localgate.core import keys as core_keys
from localgate.core.catalog import Catalog, Model, Route, merge, parse_catalog, price_fingerprint
from localgate.core.keys import KeyPolicy
from localgate.errors import NotFound
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


class CatalogView:
    """What a key can see and use: models whose routes have a configured channel
    and a wallet in the price's currency, filtered by the key's scope."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        providers: Mapping[str, Any],
        price_versions: Mapping[str, str],
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.providers = providers
        self.price_versions = price_versions
        self.wallet_by_settlement: dict[str, str] = {}
        self.wallet_currency = {w.id: w.currency for w in settings.wallets}
        for wallet in settings.wallets:
            self.wallet_by_settlement.setdefault(wallet.settlement, wallet.id)

    def usable_routes(self, model: Model) -> list[Route]:
        """Routes with a configured channel and a wallet of the price's currency."""
        return [r for r in self.catalog.routes_for(model.id) if self.route_payable(r)]

    def route_payable(self, route: Route) -> bool:
        wallet = self.wallet_by_settlement.get(route.settlement)
        return (
            route.channel in self.providers
            and wallet is not None
            and self.wallet_currency[wallet] == route.price.currency
        )

    def visible_models(self, policy: KeyPolicy) -> list[dict[str, Any]]:
        out = []
        for model in self.catalog.models():
            if not core_keys.model_allowed(policy, model.id):
                continue
            routes = [
                r
                for r in self.usable_routes(model)
                if core_keys.settlement_allowed(policy, r.settlement)
            ]
            if routes:
                out.append(self.model_object(model, routes))
        return out

    def model_object(self, model: Model, routes: list[Route]) -> dict[str, Any]:
        return {
            "id": model.id,
            "object": "model",
            "created": 0,
            "owned_by": model.family,
            "localgate": {
                "name": model.name,
                "kind": model.kind,
                "context_length": model.context_length,
                "max_output_tokens": model.max_output_tokens,
                "route_types": sorted({r.settlement for r in routes}),
                "routes": [
                    {
                        "id": r.id,
                        "route_type": r.settlement,
                        "channel": r.channel,
                        "wallet": self.wallet_by_settlement.get(r.settlement),
                        "priority": r.priority,
                        "price": r.price.as_dict(),
                        "price_version": self.price_versions.get(r.id),
                    }
                    for r in routes
                ],
            },
        }

    def find_model(self, policy: KeyPolicy, model_id: str) -> dict[str, Any]:
        model = self.catalog.get(model_id)
        routes = (
            []
            if model is None
            else [
                r
                for r in self.usable_routes(model)
                if core_keys.settlement_allowed(policy, r.settlement)
            ]
        )
        if model is None or not routes or not core_keys.model_allowed(policy, model.id):
            raise NotFound(
                f"The model '{model_id}' does not exist or this key may not use it",
                code="model_not_found",
            )
        return self.model_object(model, routes)
