"""Upstream adapters behind one interface, chosen through the PROVIDERS registry.

Every kind registers here the same way, the built-in demo included; adding a
kind is one import and one entry, never an ``if kind == ...`` chain.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from localgate.errors import ConfigError
from localgate.providers.base import (
    Provider,
    ProviderRequest,
    StreamEvent,
    UpstreamResponse,
    UpstreamStream,
)
from localgate.providers.demo import DemoProvider
from localgate.providers.openai import OpenAICompatibleProvider, OpenAIProvider

if TYPE_CHECKING:
    import httpx

    from localgate.config import ChannelSettings

PROVIDERS: dict[str, type[Provider]] = {
    OpenAIProvider.kind: OpenAIProvider,
    OpenAICompatibleProvider.kind: OpenAICompatibleProvider,
    DemoProvider.kind: DemoProvider,
}
# Kinds the config accepts that a later version implements.
PLANNED_KINDS = ("anthropic", "gemini")

__all__ = [
    "PROVIDERS",
    "Provider",
    "ProviderRequest",
    "StreamEvent",
    "UpstreamResponse",
    "UpstreamStream",
    "make_provider",
]


def make_provider(channel: ChannelSettings, client: httpx.AsyncClient) -> Provider:
    """The adapter for ``channel``; ConfigError for a kind this version lacks."""
    cls = PROVIDERS.get(channel.kind)
    if cls is None:
        if channel.kind in PLANNED_KINDS:
            raise ConfigError(
                f"channel kind {channel.kind!r} is not available in this version "
                f"(channel {channel.id}); available: {', '.join(sorted(PROVIDERS))}"
            )
        raise ConfigError(
            f"channel {channel.id}: unknown kind {channel.kind!r}; "
            f"use one of {', '.join(sorted(PROVIDERS))}"
        )
    return cls(channel, client)
