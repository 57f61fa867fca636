"""Payment providers behind one protocol (``base.PaymentProvider``), chosen by
``[payments] provider`` through the :data:`PROVIDERS` registry — the sandbox
registers the same way Stripe and the hosted service do.

A factory takes ``(settings, store, http_client)`` and imports its module only
when called, so ``import localgate.payments`` loads no SDK.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import httpx

from localgate.config import Settings
from localgate.errors import ConfigError

if TYPE_CHECKING:
    from localgate.payments.base import PaymentProvider
    from localgate.store import Store

Factory = Callable[[Settings, "Store", httpx.AsyncClient], "PaymentProvider"]


def _sandbox(settings: Settings, store: Store, client: httpx.AsyncClient) -> PaymentProvider:
    from localgate.payments.sandbox import SandboxProvider

    return SandboxProvider(settings, store)


def _stripe(settings: Settings, store: Store, client: httpx.AsyncClient) -> PaymentProvider:
    from localgate.payments.stripe import StripeProvider

    return StripeProvider(settings)


def _hosted(settings: Settings, store: Store, client: httpx.AsyncClient) -> PaymentProvider:
    from localgate.payments.hosted import HostedProvider

    return HostedProvider(settings, client)


PROVIDERS: dict[str, Factory] = {
    "sandbox": _sandbox,
    "stripe": _stripe,
    "hosted": _hosted,
}


def make_provider(settings: Settings, store: Store, client: httpx.AsyncClient) -> PaymentProvider:
    name = settings.get("payments.provider")
    try:
        factory = PROVIDERS[name]
    except KeyError:
        raise ConfigError(
            f"payments.provider: unknown provider {name!r}; use one of {', '.join(PROVIDERS)}"
        ) from None
    return factory(settings, store, client)
