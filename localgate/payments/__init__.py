"""Payment providers behind one protocol (``base.PaymentProvider``), chosen by
``[payments] provider`` through the :data:`PROVIDERS` registry — the sandbox
registers the same way Stripe and the hosted service do.

Each entry is a :class:`PaymentKind`: a factory taking ``(settings, store,
http_client)``, which imports its module only when called, and the check
`localgate doctor` runs on the settings. The config, doctor and the top-up
service all ask this registry which providers exist; none keeps a list.
Importing this package loads no SDK and no HTTP client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from localgate.errors import ConfigError

if TYPE_CHECKING:
    import httpx

    from localgate.config import Settings
    from localgate.payments.base import PaymentProvider
    from localgate.store import Store

Factory = Callable[["Settings", "Store", "httpx.AsyncClient"], "PaymentProvider"]
# What doctor reports: ok, warn or fail, and one line saying what was found and
# what to do about it.
Readiness = tuple[Literal["ok", "warn", "fail"], str]


@dataclass(frozen=True)
class PaymentKind:
    make: Factory
    check: Callable[[Settings], Readiness]


def _sandbox(settings: Settings, store: Store, client: httpx.AsyncClient) -> PaymentProvider:
    from localgate.payments.sandbox import SandboxProvider

    return SandboxProvider(settings, store)


def _sandbox_ready(settings: Settings) -> Readiness:
    return "ok", "sandbox: offline test top-ups, no real money moves"


def _stripe(settings: Settings, store: Store, client: httpx.AsyncClient) -> PaymentProvider:
    from localgate.payments.stripe import StripeProvider

    return StripeProvider(settings)


def _stripe_ready(settings: Settings) -> Readiness:
    key_env = settings.get("payments.stripe.secret_key_env")
    hook_env = settings.get("payments.stripe.webhook_secret_env")
    key = settings.secret(key_env)
    if not key:
        return "fail", (
            f"stripe: {key_env} is not set; set it (or add it to secrets.toml [env]) or use "
            'payments.provider = "sandbox"'
        )
    mode = "test mode" if key.startswith("sk_test") else "live"
    base = settings.get("payments.stripe.api_base") or "api.stripe.com"
    if not settings.secret(hook_env):
        return "warn", (
            f"stripe ({mode}, {base}): {hook_env} is not set, so webhooks are refused; "
            "top-ups still complete through the return page and the background sync"
        )
    return "ok", f"stripe ({mode}, {base}): secret key and webhook secret set"


def _hosted(settings: Settings, store: Store, client: httpx.AsyncClient) -> PaymentProvider:
    from localgate.payments.hosted import HostedProvider

    return HostedProvider(settings, client)


def _hosted_ready(settings: Settings) -> Readiness:
    base = settings.get("hosted.base_url")
    token_env = settings.get("hosted.token_env")
    missing = [
        what
        for what, present in (
            ("[hosted] base_url", bool(base)),
            (token_env, bool(settings.secret(token_env))),
        )
        if not present
    ]
    if missing:
        return "fail", f"hosted: set {' and '.join(missing)}"
    return "ok", f"hosted: {base}, token set"


PROVIDERS: dict[str, PaymentKind] = {
    "sandbox": PaymentKind(_sandbox, _sandbox_ready),
    "stripe": PaymentKind(_stripe, _stripe_ready),
    "hosted": PaymentKind(_hosted, _hosted_ready),
}


def payment_kind(name: object) -> PaymentKind:
    """The registered provider called ``name``; ConfigError naming the ones there are."""
    kind = PROVIDERS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ConfigError(
            f"payments.provider: unknown provider {name!r}; use one of {', '.join(PROVIDERS)}"
        )
    return kind


def make_provider(settings: Settings, store: Store, client: httpx.AsyncClient) -> PaymentProvider:
    return payment_kind(settings.get("payments.provider")).make(settings, store, client)
