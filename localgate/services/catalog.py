"""The catalog the gateway serves: bundled snapshot + local [[models]], with price versions.

Every distinct price of a route is a price version with an id derived from its
content (``pv_`` + fingerprint), stored once and never changed, so a receipt
keeps the price it was charged at whatever the catalog says later.

:class:`CatalogView` (the base of the running ``Gateway``) answers what a key
may use from one immutable :class:`Serving`; :meth:`CatalogView.reconfigure` is
the one way the Settings page's changes reach it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from localgate.catalog_data import bundled_catalog_version, load_bundled_catalog
from localgate.config import Settings
from localgate.core import keys as core_keys
from localgate.core.catalog import Catalog, Model, Route, merge, parse_catalog, price_fingerprint
from localgate.core.keys import KeyPolicy
from localgate.errors import NotFound
from localgate.store.db import utcnow

if TYPE_CHECKING:
    from localgate.providers.base import Provider


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


@dataclass(frozen=True)
class Serving:
    """What requests are routed by, all derived from one :class:`Settings`: the
    catalog, a provider per ready channel, the price versions, the wallet of each
    settlement. Never changed in place; :meth:`CatalogView.reconfigure` replaces it
    whole, so whoever holds one sees one consistent configuration throughout."""

    settings: Settings
    catalog: Catalog
    providers: Mapping[str, Provider]
    price_versions: Mapping[str, str]
    wallet_by_settlement: Mapping[str, str]
    wallet_currency: Mapping[str, str]

    @classmethod
    def of(
        cls,
        settings: Settings,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        price_versions: Mapping[str, str],
    ) -> Serving:
        by_settlement: dict[str, str] = {}
        for wallet in settings.wallets:
            by_settlement.setdefault(wallet.settlement, wallet.id)
        return cls(
            settings,
            catalog,
            MappingProxyType(dict(providers)),
            MappingProxyType(dict(price_versions)),
            MappingProxyType(by_settlement),
            MappingProxyType({w.id: w.currency for w in settings.wallets}),
        )

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


class CatalogView:
    """What a key can see and use: models whose routes have a configured channel
    and a wallet in the price's currency, filtered by the key's scope.

    Everything it answers from is one :class:`Serving` in ``self.serving``;
    settings changes at run time go through :meth:`reconfigure` alone. The
    attributes below read the current one; a request that must not see a change
    halfway takes ``serving`` once and keeps it."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        price_versions: Mapping[str, str],
    ) -> None:
        self.serving = Serving.of(settings, catalog, providers, price_versions)

    def reconfigure(
        self,
        settings: Settings,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        price_versions: Mapping[str, str],
    ) -> None:
        """Serve from now on by ``settings`` and what was derived from it.

        The switch is one assignment of a new :class:`Serving`, between two
        requests' steps (no await here): a request in flight keeps the provider
        objects it already took, the next request gets the new ones."""
        self.serving = Serving.of(settings, catalog, providers, price_versions)

    @property
    def settings(self) -> Settings:
        return self.serving.settings

    @property
    def catalog(self) -> Catalog:
        return self.serving.catalog

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self.serving.providers

    @property
    def price_versions(self) -> Mapping[str, str]:
        return self.serving.price_versions

    @property
    def wallet_by_settlement(self) -> Mapping[str, str]:
        return self.serving.wallet_by_settlement

    @property
    def wallet_currency(self) -> Mapping[str, str]:
        return self.serving.wallet_currency

    def usable_routes(self, model: Model) -> list[Route]:
        """Routes with a configured channel and a wallet of the price's currency."""
        return self.serving.usable_routes(model)

    def route_payable(self, route: Route) -> bool:
        return self.serving.route_payable(route)

    def visible_models(self, policy: KeyPolicy) -> list[dict[str, Any]]:
        view = self.serving
        out = []
        for model in view.catalog.models():
            if not core_keys.model_allowed(policy, model.id):
                continue
            routes = [
                r
                for r in view.usable_routes(model)
                if core_keys.settlement_allowed(policy, r.settlement)
            ]
            if routes:
                out.append(_model_object(view, model, routes))
        return out

    def model_object(self, model: Model, routes: list[Route]) -> dict[str, Any]:
        return _model_object(self.serving, model, routes)

    def find_model(self, policy: KeyPolicy, model_id: str) -> dict[str, Any]:
        view = self.serving
        model = view.catalog.get(model_id)
        routes = (
            []
            if model is None
            else [
                r
                for r in view.usable_routes(model)
                if core_keys.settlement_allowed(policy, r.settlement)
            ]
        )
        if model is None or not routes or not core_keys.model_allowed(policy, model.id):
            raise NotFound(
                f"The model '{model_id}' does not exist or this key may not use it",
                code="model_not_found",
            )
        return _model_object(view, model, routes)


def _model_object(view: Serving, model: Model, routes: list[Route]) -> dict[str, Any]:
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
                    "wallet": view.wallet_by_settlement.get(r.settlement),
                    "priority": r.priority,
                    "price": r.price.as_dict(),
                    "price_version": view.price_versions.get(r.id),
                }
                for r in routes
            ],
        },
    }
