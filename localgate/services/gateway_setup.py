"""Assembling the gateway from settings: catalog, price versions, channels, keys.

Used by the web app's lifespan and by `localgate doctor`-style checks; channels
whose key is not set are left out with a note, so real providers light up as
soon as their keys are set while the offline default keeps working.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import httpx

from localgate.config import Settings
from localgate.errors import ConfigError
from localgate.providers import Provider, make_provider
from localgate.services.catalog import build_catalog, ensure_price_versions
from localgate.services.keys import KeyService
from localgate.services.proxy import Gateway
from localgate.store import Store

log = logging.getLogger(__name__)

# One pool for every upstream: keep-alive connections are what make a proxy fast.
POOL_LIMITS = httpx.Limits(
    max_connections=512, max_keepalive_connections=128, keepalive_expiry=30.0
)
DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)


@dataclass
class Assembled:
    gateway: Gateway
    client: httpx.AsyncClient
    channel_notes: dict[str, str] = field(default_factory=dict)


def make_http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        limits=POOL_LIMITS, timeout=DEFAULT_TIMEOUT, follow_redirects=False, trust_env=False
    )


def assemble(settings: Settings, store: Store, client: httpx.AsyncClient) -> Assembled:
    catalog = build_catalog(settings)
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
