"""Assembling the gateway from settings: catalog, price versions, channels, keys.

Used by the web app's lifespan and by `localgate doctor`-style checks; channels
whose key is not set are left out with a note, so real providers light up as
soon as their keys are set while the offline default keeps working.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field

import httpx

from localgate.config import Settings
from localgate.core.catalog import Catalog
from localgate.errors import ConfigError
from localgate.providers import Provider, make_provider
from localgate.services.catalog import build_catalog, ensure_price_versions
from localgate.services.keys import KeyService
from localgate.services.proxy import Gateway
from localgate.store import Store

log = logging.getLogger(__name__)

# One client for every upstream: keep-alive connections are what make a proxy
# fast. httpcore's pool scans all of its connections on every request, so the
# connections are spread over a few small pools (shards) to keep each scan short.
SHARDS = 16
SHARD_LIMITS = httpx.Limits(max_connections=64, max_keepalive_connections=8, keepalive_expiry=30.0)
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


class ShardedTransport(httpx.AsyncBaseTransport):
    """Round-robin over several connection pools; behaves as one transport."""

    def __init__(self, shards: int = SHARDS, limits: httpx.Limits = SHARD_LIMITS) -> None:
        # One TLS context for every pool: loading the CA bundle costs ~25 ms each.
        tls = httpx.create_ssl_context()
        self._pools = [httpx.AsyncHTTPTransport(verify=tls, limits=limits) for _ in range(shards)]
        self._next = itertools.cycle(self._pools)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await next(self._next).handle_async_request(request)

    async def aclose(self) -> None:
        for pool in self._pools:
            await pool.aclose()


@dataclass
class Assembled:
    gateway: Gateway
    client: httpx.AsyncClient
    channel_notes: dict[str, str] = field(default_factory=dict)


def make_http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=ShardedTransport(),
        timeout=DEFAULT_TIMEOUT,
        follow_redirects=False,
        trust_env=False,
    )


def assemble(settings: Settings, store: Store, client: httpx.AsyncClient) -> Assembled:
    catalog = check_config(settings)
    versions = store.write_sync(ensure_price_versions, catalog)
    providers: dict[str, Provider] = {}
    notes: dict[str, str] = {}
    for channel in settings.channels:
        try:
            providers[channel.id] = make_provider(channel, client)
            notes[channel.id] = "ready"
        except ConfigError as exc:
            notes[channel.id] = str(exc)
            log.warning("channel %s is off: %s", channel.id, exc)
    gateway = Gateway(settings, store, KeyService(store), catalog, providers, versions)
    return Assembled(gateway, client, notes)


def check_config(settings: Settings) -> Catalog:
    """Everything about the config that can be checked before serving: the merged
    catalog parses, and every route is priced in its wallet's currency (a USD
    price charged to a CNY wallet would be wrong by the exchange rate). Local
    [[models]] that break this stop start-up; catalog routes that do are left out
    at request time (Gateway.route_payable) and logged here."""
    catalog = build_catalog(settings)
    local = {m["id"] for m in settings.models}
    wallets = {w.settlement: w for w in reversed(settings.wallets)}
    for model in catalog.models():
        for route in model.routes:
            wallet = wallets.get(route.settlement)
            if wallet is None or wallet.currency == route.price.currency:
                continue
            message = (
                f"model {model.id} route {route.id}: priced in {route.price.currency} "
                f"but {route.settlement} routes are paid from wallet {wallet.id!r} in "
                f"{wallet.currency}; price it in {wallet.currency}"
            )
            if model.id in local:
                raise ConfigError(f"{settings.config_path or 'config'}: [[models]] {message}")
            log.warning("route left out: %s", message)
    return catalog
