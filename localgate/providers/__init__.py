"""Upstream adapters behind one interface, chosen through the PROVIDERS registry.

Every kind registers here the same way, the built-in demo included; adding a
kind is one import and one entry, never an ``if kind == ...`` chain. The rest
of localgate learns which kinds exist, and what each one needs, by asking this
registry and the classes' attributes (``Provider.offline``, ``configurable``...).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from localgate.errors import ConfigError
from localgate.providers.anthropic import AnthropicProvider
from localgate.providers.base import (
    Provider,
    ProviderRequest,
    StreamEvent,
    UpstreamResponse,
    UpstreamStream,
)
from localgate.providers.demo import DemoProvider
from localgate.providers.gemini import GeminiProvider
from localgate.providers.openai import OpenAICompatibleProvider, OpenAIProvider

if TYPE_CHECKING:
    from collections.abc import Iterable

    import httpx

    from localgate.config import ChannelSettings

PROVIDERS: dict[str, type[Provider]] = {
    OpenAIProvider.kind: OpenAIProvider,
    OpenAICompatibleProvider.kind: OpenAICompatibleProvider,
    AnthropicProvider.kind: AnthropicProvider,
    GeminiProvider.kind: GeminiProvider,
    DemoProvider.kind: DemoProvider,
}

__all__ = [
    "PROVIDERS",
    "Provider",
    "ProviderRequest",
    "StreamEvent",
    "UpstreamResponse",
    "UpstreamStream",
    "make_provider",
    "make_providers",
    "provider_class",
]


def provider_class(kind: object) -> type[Provider]:
    """The registered class for ``kind``; ConfigError naming the kinds there are."""
    cls = PROVIDERS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ConfigError(f"unknown channel kind {kind!r}; use one of {', '.join(PROVIDERS)}")
    return cls


def make_provider(channel: ChannelSettings, client: httpx.AsyncClient) -> Provider:
    """The adapter for ``channel``; ConfigError when its kind is unknown or it lacks a key."""
    try:
        cls = provider_class(channel.kind)
    except ConfigError as exc:
        raise ConfigError(f"channel {channel.id}: {exc}") from None
    return cls(channel, client)


def make_providers(
    channels: Iterable[ChannelSettings], client: httpx.AsyncClient
) -> tuple[dict[str, Provider], dict[str, str]]:
    """An adapter for every channel that can have one, and each channel's status note
    ("ready", or why it is off: a channel without its key stays configured but off)."""
    providers: dict[str, Provider] = {}
    notes: dict[str, str] = {}
    for channel in channels:
        try:
            providers[channel.id] = make_provider(channel, client)
            notes[channel.id] = "ready"
        except ConfigError as exc:
            notes[channel.id] = str(exc)
    return providers, notes
