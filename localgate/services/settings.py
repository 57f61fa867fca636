"""Settings the UI may change: channels and their keys. The user's config.toml is never
rewritten.

- Channels added on the Settings page go to ``<data dir>/channels.toml``
  (``[[channels]]``, the same shape as config.toml's), which ``load_settings``
  merges after config.toml's channels.
- Upstream keys go to ``<data dir>/secrets.toml`` as ``[channels.<id>] api_key``,
  written atomically with mode 0600. They are never read back out to a page.

Changes apply at once: :func:`apply_settings` derives providers, catalog and
price versions from the new settings and hands them to the running gateway's
one ``reconfigure``, so a channel lights up as soon as its key is saved. Which
kinds may be added here, and which take a key at all, the provider registry
and its classes say.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import tempfile
import time
import tomllib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from localgate.config import CHANNELS_FILE, ChannelSettings, Settings, parse_channel
from localgate.config_files import SecretsFile, read_secrets
from localgate.errors import BadRequest, ConfigError, NotFound
from localgate.providers import PROVIDERS, make_providers, provider_class
from localgate.providers.openai import redact
from localgate.services.catalog import build_catalog, ensure_price_versions

if TYPE_CHECKING:
    from localgate.services.proxy import Gateway

CHANNEL_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
TEST_TIMEOUT = httpx.Timeout(8.0, connect=4.0)
HEADER = (
    "# Written by localgate (the Settings page, `localgate channels`).\n"
    "# Your config.toml is never rewritten; this file is merged after it.\n"
)


def configurable_kinds() -> tuple[str, ...]:
    """The kinds a channel may be added with here: those whose class says so."""
    return tuple(kind for kind, cls in PROVIDERS.items() if cls.configurable)


# -- TOML out (just the shapes these two files hold) ---------------------------


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` atomically with a 0600 file: a crash leaves the old file or
    the new one, never half of either; no one else can read it at any moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file 0600 from the start: no moment where others can read it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise BadRequest(f"{path} is not valid TOML ({exc}); fix or delete it") from None


# -- the service ---------------------------------------------------------------


class SettingsService:
    """Reads and changes channels. ``settings`` always reflects the files on disk.

    ``publish`` (the web layer's; the CLI has none) is awaited with the new
    settings after every change, under the same lock as the change itself, so
    two changes reach the running gateway in the order they were written."""

    def __init__(
        self,
        settings: Settings,
        publish: Callable[[Settings], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self._publish = publish
        self._lock = asyncio.Lock()

    @property
    def channels_path(self) -> Path:
        return self.settings.channels_path

    @property
    def secrets_path(self) -> Path:
        return self.settings.secrets_path

    def channel(self, channel_id: str) -> ChannelSettings:
        found = next((c for c in self.settings.channels if c.id == channel_id), None)
        if found is None:
            raise NotFound(f"no channel {channel_id!r}", code="unknown_channel")
        return found

    # -- files -----------------------------------------------------------------

    def _overlay(self) -> list[dict[str, Any]]:
        return list(_read(self.channels_path).get("channels", []))

    def _write_overlay(self, channels: list[dict[str, Any]]) -> None:
        lines = [HEADER]
        for ch in channels:
            lines.append("[[channels]]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in ch.items()]
            lines.append("")
        write_private(self.channels_path, "\n".join(lines))

    def _write_secrets(self, keys: Mapping[str, str], env: Mapping[str, str]) -> None:
        lines = [HEADER, "# Keep this file private (mode 0600). Keys are never shown back.\n"]
        for cid, key in sorted(keys.items()):
            lines += [f"[channels.{_key(cid)}]", f"api_key = {_value(key)}", ""]
        if env:
            lines.append("[env]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in sorted(env.items())]
            lines.append("")
        write_private(self.secrets_path, "\n".join(lines))

    def _save_key(self, channel_id: str, key: str | None) -> None:
        current = read_secrets(self.secrets_path)
        keys = {k: v for k, v in current.channels.items() if k != channel_id}
        if key:
            keys[channel_id] = key
        if keys != dict(current.channels):
            self._write_secrets(keys, current.env)

    async def _with_channels(self, channels: list[ChannelSettings]) -> None:
        self.settings = dataclasses.replace(self.settings, channels=tuple(channels))
        if self._publish is not None:
            await self._publish(self.settings)

    def _rekeyed(self, channel: ChannelSettings) -> ChannelSettings:
        """The channel with its key resolved again (env, then secrets.toml)."""
        secrets = read_secrets(self.secrets_path)
        key, source = secrets.channel_key(channel.id, channel.api_key_env, self.settings.environ)
        return dataclasses.replace(channel, api_key=key, key_source=source)

    # -- changes ---------------------------------------------------------------

    async def add_channel(self, data: Mapping[str, str]) -> ChannelSettings:
        """Add a channel to channels.toml (and its key to secrets.toml, if given)."""
        cid = (data.get("id") or "").strip()
        if not CHANNEL_ID.fullmatch(cid):
            raise BadRequest(
                "channel id: 1-40 lower-case letters, digits, '-' or '_', e.g. 'openrouter'",
                param="id",
            )
        kind = data.get("kind") or ""
        kinds = configurable_kinds()
        if kind not in kinds:
            raise BadRequest(f"kind: use one of {', '.join(kinds)}", param="kind")
        base_url = (data.get("base_url") or "").strip()
        entry = {
            "id": cid,
            "kind": kind,
            "base_url": base_url,
            "settlement": data.get("settlement") or "official",
        }
        async with self._lock:
            if any(c.id == cid for c in self.settings.channels):
                raise BadRequest(f"a channel {cid!r} already exists", param="id")
            try:  # checked exactly as a restart would check it, before anything is written
                parse_channel(entry, "channel", {}, SecretsFile(), CHANNELS_FILE)
            except ConfigError as exc:
                raise BadRequest(str(exc).removeprefix("channel: channels[0] ")) from None
            entry["base_url"] = base_url.rstrip("/")
            self._write_overlay([*self._overlay(), entry])
            key = (data.get("api_key") or "").strip()
            if key:
                _check_key(key)
                self._save_key(cid, key)
            channel = self._rekeyed(
                parse_channel(entry, "channel", {}, SecretsFile(), CHANNELS_FILE)
            )
            others = list(self.settings.channels)
            demo = [c for c in others if c.source == "built-in"]
            await self._with_channels(
                [c for c in others if c.source != "built-in"] + [channel] + demo
            )
            return channel

    async def remove_channel(self, channel_id: str) -> None:
        """Remove a channel added here (config.toml's are the user's to edit)."""
        channel = self.channel(channel_id)
        if channel.source != CHANNELS_FILE:
            raise BadRequest(
                f"channel {channel_id!r} comes from {channel.source}; edit that file to remove it"
            )
        models = _models_routed_to(self.settings, channel_id)
        if models:
            raise BadRequest(
                f"channel {channel_id!r} serves [[models]] {', '.join(models)} in config.toml; "
                "remove those routes first (a restart would refuse a route to a missing channel)"
            )
        async with self._lock:
            self._write_overlay([c for c in self._overlay() if c.get("id") != channel_id])
            self._save_key(channel_id, None)
            await self._with_channels([c for c in self.settings.channels if c.id != channel_id])

    async def set_key(self, channel_id: str, key: str) -> ChannelSettings:
        """Save the channel's upstream key in secrets.toml (0600)."""
        channel = self.channel(channel_id)
        if provider_class(channel.kind).offline:
            raise BadRequest(f"channel {channel_id!r} calls no upstream: it takes no key")
        key = key.strip()
        _check_key(key)
        async with self._lock:
            self._save_key(channel_id, key)
            return await self._replace(self._rekeyed(channel))

    async def clear_key(self, channel_id: str) -> ChannelSettings:
        """Forget the key saved here (a key from the environment stays in use)."""
        channel = self.channel(channel_id)
        async with self._lock:
            self._save_key(channel_id, None)
            return await self._replace(self._rekeyed(channel))

    async def _replace(self, channel: ChannelSettings) -> ChannelSettings:
        await self._with_channels(
            [channel if c.id == channel.id else c for c in self.settings.channels]
        )
        return channel


def _models_routed_to(settings: Settings, channel_id: str) -> list[str]:
    """The config.toml [[models]] with a route on ``channel_id``."""
    return [
        str(m.get("id"))
        for m in settings.models
        if any(
            isinstance(r, Mapping) and r.get("channel") == channel_id for r in m.get("routes", [])
        )
    ]


def _check_key(key: str) -> None:
    if not key or any(ch.isspace() for ch in key) or len(key) > 4096:
        raise BadRequest("paste the upstream API key: one line, no spaces", param="api_key")


async def test_connection(
    channel: ChannelSettings, *, transport: httpx.AsyncBaseTransport | None = None
) -> dict[str, Any]:
    """GET {base_url}/models with a short timeout: can we reach it, does it take the key?

    The answer never contains the key: an upstream that echoes it gets it masked.
    """
    cls = provider_class(channel.kind)
    if cls.offline:
        return {"ok": True, "status": None, "detail": "built-in offline model: nothing to reach"}
    headers = {"accept": "application/json", **dict(channel.headers)}
    if channel.api_key:
        key = channel.api_key
        headers.update({name: value.format(key=key) for name, value in cls.key_headers.items()})
    url = channel.base_url.rstrip("/") + "/models"
    started = time.perf_counter()
    try:
        async with httpx.AsyncClient(
            timeout=TEST_TIMEOUT, transport=transport, trust_env=False, follow_redirects=False
        ) as client:
            resp = await client.get(url, headers=headers)
    except httpx.TimeoutException:
        return {"ok": False, "status": None, "detail": f"timed out reaching {url}"}
    except httpx.HTTPError as exc:
        detail = redact(str(exc).encode(), channel.api_key) or type(exc).__name__
        return {"ok": False, "status": None, "detail": f"cannot reach {url}: {detail}"}
    latency = round((time.perf_counter() - started) * 1000)
    if resp.status_code == 200:
        count = _model_count(resp)
        what = f"{count} models listed" if count is not None else "it answered"
        return {"ok": True, "status": 200, "detail": f"{what} in {latency} ms"}
    text = redact(resp.content[:300], channel.api_key).strip()
    hint = {
        401: "the upstream refused the key: set the right key",
        403: "the key may not list models (it may still be able to call them)",
        404: "no /models here: check the base URL (it usually ends in /v1)",
    }.get(resp.status_code, "the upstream answered with an error")
    return {
        "ok": False,
        "status": resp.status_code,
        "detail": f"HTTP {resp.status_code}: {hint}. {text}".strip(),
    }


def _model_count(resp: httpx.Response) -> int | None:
    try:
        data = resp.json()
    except ValueError:
        return None
    items = data.get("data") or data.get("models") if isinstance(data, dict) else None
    return len(items) if isinstance(items, list) else None


async def apply_settings(
    gateway: Gateway, settings: Settings, client: httpx.AsyncClient
) -> dict[str, str]:
    """Make ``settings`` the running gateway's, through its one ``reconfigure``.

    Everything that derives from the channels is derived again: a provider for
    every channel that can have one (in-flight requests keep the ones they took),
    the catalog (local routes take their channel's settlement) and its price
    versions. Returns each channel's status note for the Settings page."""
    providers, notes = make_providers(settings.channels, client)
    catalog = build_catalog(settings)
    versions = await gateway.store.write(ensure_price_versions, catalog)
    gateway.reconfigure(settings, catalog, providers, versions)
    return notes
