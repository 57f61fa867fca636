"""Settings: defaults < config.toml < LOCALGATE_* env < command-line flags.

Scalar settings are data: :data:`SETTINGS` lists each one with its default and
help text (docs/config.md documents every one, and a test checks that). Lists
(``[[channels]]``, ``[[models]]``) come from the TOML file only.

Errors name the file, the key and the fix, and are raised as
:class:`~localgate.errors.ConfigError`; the CLI prints them as one line.
Nothing here runs at import time, and importing this module stays cheap: the
channel kinds and payment providers there are come from their registries
(``localgate.providers.PROVIDERS``, ``localgate.payments.PROVIDERS``), imported
inside the functions that check them, when there is something to check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from localgate import config_files as files
from localgate.config_files import SecretsFile
from localgate.errors import ConfigError, MoneyError
from localgate.money import currency

SETTLEMENTS = ("official", "routed")
PAYMENT_METHODS = ("card", "wechat_pay", "alipay")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CHANNEL_FIELDS = frozenset(
    {"id", "kind", "base_url", "api_key_env", "settlement", "timeout", "headers", "options"}
)
# Files in the data dir that localgate itself writes (the Settings page, the CLI):
CHANNELS_FILE = "channels.toml"  # channels added in the UI, merged after config.toml's


@dataclass(frozen=True)
class Setting:
    name: str  # dotted TOML path; env is LOCALGATE_ + name upper-cased, dots -> _
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "LOCALGATE_" + self.name.upper().replace(".", "_")


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "server.host", "127.0.0.1", "Address to bind. Anything but loopback needs --allow-remote."
    ),
    Setting("server.port", 4311, "Port for the gateway and the wallet UI."),
    Setting("server.allowed_hosts", [], "Extra Host names accepted besides loopback names."),
    Setting(
        "server.max_body_bytes", 20 * 1024 * 1024, "Largest request body accepted (413 above)."
    ),
    Setting("server.session_idle_minutes", 480, "A UI session unused this long is logged out."),
    Setting("payments.provider", "sandbox", "Payment provider: sandbox, stripe or hosted."),
    Setting(
        "payments.stripe.secret_key_env",
        "STRIPE_SECRET_KEY",
        "Env var holding the Stripe secret key.",
    ),
    Setting(
        "payments.stripe.webhook_secret_env",
        "STRIPE_WEBHOOK_SECRET",
        "Env var holding the webhook signing secret.",
    ),
    Setting(
        "payments.stripe.api_base",
        "",
        "A Stripe-compatible API base URL (tests); empty for Stripe.",
    ),
    Setting(
        "payments.stripe.methods",
        ["card", "wechat_pay", "alipay"],
        "Payment methods offered at checkout.",
    ),
    Setting("hosted.base_url", "", "Base URL of the hosted service; empty means offline."),
    Setting(
        "hosted.token_env", "LOCALGATE_HOSTED_TOKEN", "Env var holding the hosted account token."
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class ChannelSettings:
    id: str
    kind: str
    base_url: str
    api_key: str | None
    settlement: str
    timeout: float = 600.0
    connect_timeout: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    # Where the channel and its key come from, for the Settings page (never the key):
    source: str = "config.toml"  # config.toml | channels.toml | built-in
    key_source: str = ""  # e.g. "env OPENAI_API_KEY", "secrets.toml"; "" when no key
    api_key_env: str | None = None

    def __repr__(self) -> str:  # never print the key
        key = "set" if self.api_key else "none"
        return f"ChannelSettings(id={self.id!r}, kind={self.kind!r}, base_url={self.base_url!r}, api_key={key})"


@dataclass(frozen=True)
class WalletSettings:
    id: str
    name: str
    settlement: str
    currency: str


DEFAULT_WALLETS = (
    WalletSettings("credit", "Credit", "official", "USD"),
    WalletSettings("routed", "Routed balance", "routed", "CNY"),
)
DEFAULT_CHANNELS = (ChannelSettings("demo", "demo", "", None, "official", source="built-in"),)


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    config_path: Path | None
    values: Mapping[str, Any]
    channels: tuple[ChannelSettings, ...] = DEFAULT_CHANNELS
    models: tuple[Mapping[str, Any], ...] = ()  # raw [[models]]; validated by the catalog
    wallets: tuple[WalletSettings, ...] = DEFAULT_WALLETS
    admin_token: str = field(default="", repr=False)
    admin_token_created: bool = False  # made by this load: the first run of this data dir
    # The [env] table of secrets.toml and the environment it was loaded with; read
    # them through secret(), never directly.
    env_secrets: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)
    environ: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    def get(self, name: str) -> Any:
        return self.values[name]

    def secret(self, env_name: str) -> str | None:
        """The value of a secret named by a ``*_env`` setting (``STRIPE_SECRET_KEY``):
        the environment first, then the ``[env]`` table of secrets.toml."""
        return self.environ.get(env_name) or self.env_secrets.get(env_name) or None

    @property
    def secrets_path(self) -> Path:
        return self.data_dir / files.SECRETS_FILE

    @property
    def channels_path(self) -> Path:
        return self.data_dir / CHANNELS_FILE

    @property
    def host(self) -> str:
        return str(self.values["server.host"])

    @property
    def port(self) -> int:
        return int(self.values["server.port"])

    @property
    def db_path(self) -> Path:
        return self.data_dir / "localgate.db"

    @property
    def base_url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def wallet(self, wallet_id: str) -> WalletSettings | None:
        return next((w for w in self.wallets if w.id == wallet_id), None)


def default_data_dir() -> Path:
    import platformdirs  # imported late: only needed when no dir is given

    return Path(platformdirs.user_data_dir("localgate", appauthor=False))


def resolve_data_dir(flag: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path:
    if flag:
        return Path(flag).expanduser()
    if env.get("LOCALGATE_DATA_DIR"):
        return Path(env["LOCALGATE_DATA_DIR"]).expanduser()
    return default_data_dir()


def load_settings(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    create: bool = True,
) -> Settings:
    """Build :class:`Settings` from every source, validating as it goes.

    ``overrides`` are command-line flags by setting name (``{"server.port": 8080}``).
    With ``create`` the data dir and the admin token file are made if missing.
    """
    env = os.environ if env is None else env
    ddir = resolve_data_dir(data_dir, env)
    path = _config_path(config_path, ddir, env)
    raw = files.read_toml(path) if path else {}
    where = str(path) if path else "defaults"

    values = {s.name: s.default for s in SETTINGS}
    _apply_file_values(values, raw, where)
    for s in SETTINGS:
        if s.env in env:
            values[s.name] = _coerce(s, env[s.env], s.env)
    for name, value in (overrides or {}).items():
        if value is not None:
            values[name] = _check_type(_BY_NAME[name], value, f"--{name.split('.')[-1]}")
    _validate_values(values, where)

    secrets_file = files.read_secrets(ddir / files.SECRETS_FILE)
    channels = _parse_channels(raw.get("channels"), where, env, secrets_file, ddir)
    models = _parse_models(raw.get("models"), where, {c.id for c in channels})
    wallets = _parse_wallets(raw.get("wallets"), where)
    if create:
        files.make_data_dir(ddir)
    token = env.get("LOCALGATE_ADMIN_TOKEN")
    token, created = (token, False) if token else files.admin_token(ddir, create=create)
    return Settings(
        ddir,
        path,
        values,
        channels,
        models,
        wallets,
        token,
        created,
        env_secrets=dict(secrets_file.env),
        environ=env,
    )


def _config_path(flag: Any, ddir: Path, env: Mapping[str, str]) -> Path | None:
    if flag:
        return Path(flag).expanduser()
    if env.get("LOCALGATE_CONFIG"):
        return Path(env["LOCALGATE_CONFIG"]).expanduser()
    candidate = ddir / "config.toml"
    return candidate if candidate.exists() else None


def _apply_file_values(values: dict[str, Any], raw: Mapping[str, Any], where: str) -> None:
    known_tables = {"server", "payments", "hosted", "channels", "models", "wallets"}
    for key in raw:
        if key not in known_tables:
            raise ConfigError(
                f"{where}: unknown table [{key}]; known: {', '.join(sorted(known_tables))}"
            )

    def walk(table: Mapping[str, Any], prefix: str) -> None:
        for key, value in table.items():
            name = f"{prefix}.{key}"
            if name in _BY_NAME:
                values[name] = _check_type(_BY_NAME[name], value, f"{where}: {name}")
            elif isinstance(value, dict) and any(s.startswith(name + ".") for s in _BY_NAME):
                walk(value, name)
            else:
                raise ConfigError(
                    f"{where}: unknown key {name}; see docs/config.md for the settings"
                )

    for table in ("server", "payments", "hosted"):
        section = raw.get(table, {})
        if not isinstance(section, dict):
            raise ConfigError(f"{where}: [{table}] must be a table")
        walk(section, table)


def _check_type(setting: Setting, value: Any, where: str) -> Any:
    expected = type(setting.default)
    if expected is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"{where}: expected {expected.__name__}, got {value!r}; default is {setting.default!r}"
    )


def _coerce(setting: Setting, text: str, where: str) -> Any:
    expected = type(setting.default)
    if expected is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{where}: expected true or false, got {text!r}")
    if expected is int:
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"{where}: expected a whole number, got {text!r}") from None
    if expected is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _validate_values(values: Mapping[str, Any], where: str) -> None:
    from localgate.payments import payment_kind  # the registry; importing it loads no SDK

    port = values["server.port"]
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where}: server.port must be 0-65535, got {port}")
    try:
        payment_kind(values["payments.provider"])
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    for method in values["payments.stripe.methods"]:
        if method not in PAYMENT_METHODS:
            raise ConfigError(
                f"{where}: payments.stripe.methods: unknown method {method!r}; use {', '.join(PAYMENT_METHODS)}"
            )
    if values["server.max_body_bytes"] < 1024:
        raise ConfigError(f"{where}: server.max_body_bytes must be at least 1024")
    if values["server.session_idle_minutes"] < 1:
        raise ConfigError(f"{where}: server.session_idle_minutes must be at least 1")


def _parse_channels(
    raw: Any,
    where: str,
    env: Mapping[str, str],
    secrets: SecretsFile | None = None,
    ddir: Path | None = None,
) -> tuple[ChannelSettings, ...]:
    """config.toml's [[channels]], then <data dir>/channels.toml's, then the demo."""
    secrets = secrets or SecretsFile()
    channels = _parse_channel_list(raw, where, env, secrets, "config.toml", [])
    overlay = ddir / CHANNELS_FILE if ddir is not None else None
    if overlay is not None and overlay.exists():
        data = files.read_toml(overlay)
        unknown = sorted(set(data) - {"channels"})
        if unknown:
            raise ConfigError(
                f"{overlay}: unknown table [{unknown[0]}]; only [[channels]] belongs here"
            )
        _parse_channel_list(
            data.get("channels"), str(overlay), env, secrets, CHANNELS_FILE, channels
        )
    # The offline demo channel stays available unless a channel takes its id.
    if not any(c.id == "demo" for c in channels):
        channels.extend(DEFAULT_CHANNELS)
    return tuple(channels)


def _parse_channel_list(
    raw: Any,
    where: str,
    env: Mapping[str, str],
    secrets: SecretsFile,
    source: str,
    channels: list[ChannelSettings],
) -> list[ChannelSettings]:
    """Append the channels of one file to ``channels`` (ids stay unique across files)."""
    if raw is None:
        return channels
    # The registry decides which kinds exist; imported here, not at the top, as it
    # brings the adapters (and httpx) with it and most commands load no channels.
    from localgate.providers import provider_class

    if not isinstance(raw, list):
        raise ConfigError(f"{where}: channels must be an array of tables: [[channels]]")
    for i, item in enumerate(raw):
        at = f"{where}: channels[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{at} must be a table")
        cid = item.get("id")
        if not isinstance(cid, str) or not cid:
            raise ConfigError(f'{at}.id is required (a short name such as "openai")')
        at = f"{where}: channels[{i}] ({cid})"
        if cid in {c.id for c in channels}:
            other = next(c for c in channels if c.id == cid)
            also = "" if other.source == source else f" (it is also defined in {other.source})"
            raise ConfigError(f"{at}.id: duplicate channel id {cid!r}{also}; remove one")
        unknown = sorted(set(item) - CHANNEL_FIELDS - {"api_key"})
        if unknown:  # a typo such as api_key_evn would otherwise be ignored silently
            raise ConfigError(
                f"{at}.{unknown[0]}: unknown field; channels take {', '.join(sorted(CHANNEL_FIELDS))}"
            )
        try:
            provider = provider_class(item.get("kind"))
        except ConfigError as exc:
            raise ConfigError(f"{at}.kind: {exc}") from None
        settlement = item.get("settlement", "official")
        if settlement not in SETTLEMENTS:
            raise ConfigError(f"{at}.settlement: must be official or routed, got {settlement!r}")
        base_url = item.get("base_url", "")
        if not provider.offline and not (
            isinstance(base_url, str) and base_url.startswith(("http://", "https://"))
        ):
            raise ConfigError(
                f"{at}.base_url: must be an http(s) URL such as https://api.openai.com/v1"
            )
        key_env = item.get("api_key_env")
        if key_env is not None and not isinstance(key_env, str):
            raise ConfigError(f"{at}.api_key_env: must be the name of an environment variable")
        api_key, key_source = secrets.channel_key(cid, key_env, env)
        if "api_key" in item:
            raise ConfigError(
                f"{at}.api_key: keys do not belong in config.toml; set api_key_env instead"
            )
        timeout = item.get("timeout", 600.0)
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
            raise ConfigError(f"{at}.timeout: must be a positive number of seconds")
        headers = item.get("headers", {})
        options = item.get("options", {})
        if not isinstance(headers, dict) or not isinstance(options, dict):
            raise ConfigError(f"{at}: headers and options must be tables")
        channels.append(
            ChannelSettings(
                cid,
                item["kind"],
                base_url.rstrip("/") if isinstance(base_url, str) else "",
                api_key,
                settlement,
                float(timeout),
                headers=headers,
                options=options,
                source=source,
                key_source=key_source,
                api_key_env=key_env,
            )
        )
    return channels


def parse_channel(
    item: Mapping[str, Any], where: str, env: Mapping[str, str], secrets: SecretsFile, source: str
) -> ChannelSettings:
    """One [[channels]] entry, checked exactly as at start-up (the Settings page uses it)."""
    return _parse_channel_list([dict(item)], where, env, secrets, source, [])[0]


def _parse_models(raw: Any, where: str, channel_ids: set[str]) -> tuple[Mapping[str, Any], ...]:
    """Check the [[models]] shape and prices here so start-up fails early and clearly."""
    from localgate.core.pricing import Price

    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: models must be an array of tables: [[models]]")
    for i, model in enumerate(raw):
        at = f"{where}: models[{i}]"
        if not isinstance(model, dict) or not isinstance(model.get("id"), str) or not model["id"]:
            raise ConfigError(f"{at}.id is required (the model id clients send)")
        at = f"{where}: models[{i}] ({model['id']})"
        routes = model.get("routes", [])
        if not isinstance(routes, list):
            raise ConfigError(f"{at}.routes must be an array of tables: [[models.routes]]")
        for j, route in enumerate(routes):
            rat = f"{at}.routes[{j}]"
            if not isinstance(route, dict):
                raise ConfigError(f"{rat} must be a table")
            channel = route.get("channel")
            if channel not in channel_ids and channel not in {"demo", "hosted"}:
                raise ConfigError(
                    f"{rat}.channel: no channel {channel!r}; define it under [[channels]]"
                )
            if "settlement" in route and route["settlement"] not in SETTLEMENTS:
                raise ConfigError(f"{rat}.settlement: must be official or routed")
            price = route.get("price")
            if not isinstance(price, dict):
                raise ConfigError(
                    f'{rat}.price is required, e.g. {{ currency = "USD", input = "0.15", output = "0.60" }}'
                )
            try:
                currency(price.get("currency", ""))
                Price.from_mapping(price, what=f"{rat}.price")
            except (MoneyError, ValueError) as exc:
                raise ConfigError(
                    f'{exc}; prices are decimal strings per 1M tokens, e.g. "0.15"'
                ) from None
    return tuple(raw)


def _parse_wallets(raw: Any, where: str) -> tuple[WalletSettings, ...]:
    if raw is None:
        return DEFAULT_WALLETS
    if not isinstance(raw, list):
        raise ConfigError(f"{where}: wallets must be an array of tables: [[wallets]]")
    wallets = list(DEFAULT_WALLETS)
    for i, item in enumerate(raw):
        at = f"{where}: wallets[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("id"), str):
            raise ConfigError(f"{at}.id is required")
        if item.get("settlement") not in SETTLEMENTS:
            raise ConfigError(f"{at}.settlement: must be official or routed")
        try:
            code = currency(item.get("currency", "")).code
        except MoneyError as exc:
            raise ConfigError(f"{at}.currency: {exc}") from None
        wallet = WalletSettings(
            item["id"], str(item.get("name", item["id"])), item["settlement"], code
        )
        wallets = [w for w in wallets if w.id != wallet.id] + [wallet]
    return tuple(wallets)
