"""The playground's use cases: its own key, the route preview and the cost estimate.

The playground sends real requests through ``/v1`` with a real key, so each run
ends in a receipt identical in kind to a tool's. Secrets are never stored, so
the user either types the secret of one of their keys, or lets the playground
use its own key: created on demand with the label ``playground`` and an id
starting ``key_playground`` (user keys are ``key_`` + hex, so the two never
meet). Its secret lives in this process's memory only; after a restart the key
is rotated to get a fresh one — same id, same receipts and spend. It is a key
like any other: the kill switch pauses it, a revoke retires it (the next run
makes a new one).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from localgate import tokens
from localgate.core import keys as core_keys
from localgate.core import routing
from localgate.core.keys import KeyPolicy
from localgate.core.pricing import Usage, charge_micros, worst_case_micros
from localgate.errors import NotFound
from localgate.services.keys import KeyService
from localgate.services.proxy import Gateway

PLAYGROUND_ID = "key_playground"
PLAYGROUND_LABEL = "playground"
DEFAULT_MAX_TOKENS = 256
MAX_PROMPT_CHARS = 200_000


def is_playground_key(key_id: str) -> bool:
    return key_id.startswith(PLAYGROUND_ID)


class PlaygroundKey:
    """The playground's own key and, while this process lives, its secret."""

    def __init__(self, keys: KeyService) -> None:
        self.keys = keys
        self._secrets: dict[str, str] = {}
        self._lock = asyncio.Lock()

    def current(self) -> dict[str, Any] | None:
        """The live playground key (not revoked), if there is one."""
        live = [
            k for k in self.keys.list() if is_playground_key(k["id"]) and k["status"] != "revoked"
        ]
        return live[0] if live else None

    async def secret(self) -> tuple[str, str]:
        """(key id, secret), creating or rotating the key when needed."""
        async with self._lock:
            key = self.current()
            if key is not None and key["id"] in self._secrets:
                return key["id"], self._secrets[key["id"]]
            if key is not None:
                fresh = await self.keys.rotate(key["id"])
            else:
                taken = {k["id"] for k in self.keys.list() if is_playground_key(k["id"])}
                key_id = PLAYGROUND_ID
                n = 1
                while key_id in taken:
                    n += 1
                    key_id = f"{PLAYGROUND_ID}{n}"
                fresh = await self.keys.create(
                    {"label": PLAYGROUND_LABEL, "project": PLAYGROUND_LABEL}, key_id=key_id
                )
            self._secrets = {fresh["id"]: fresh["key"]}
            return fresh["id"], fresh["key"]


def chat_body(prompt: str, model: str, max_tokens: int, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": prompt[:MAX_PROMPT_CHARS]}],
        "max_tokens": max_tokens,
    }
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def chat_models(gateway: Gateway, policy: KeyPolicy) -> list[dict[str, Any]]:
    """The chat models the key may call (the playground and test requests are chat)."""
    return [m for m in gateway.visible_models(policy) if m["localgate"]["kind"] == "chat"]


def preview(
    gateway: Gateway,
    policy: KeyPolicy,
    model_id: str,
    *,
    prompt: str,
    max_tokens: int,
    wallets: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The routes a request would try, in order, with what each would cost.

    ``wallets`` are the wallet views by id (balance and available money). For
    each route: the input's cost, the most the request can cost (input plus
    ``max_tokens`` of output: the hold), and whether its wallet can pay that.
    """
    model = gateway.catalog.get(model_id)
    if model is None or not core_keys.model_allowed(policy, model_id):
        raise NotFound(f"API key {policy.label!r} may not use model {model_id!r}")
    body = chat_body(prompt, model_id, max_tokens, stream=False)
    input_tokens = tokens.count_chat_input_tokens(body)
    routes = routing.candidate_routes(
        gateway.usable_routes(model), policy.settlement, gateway.health, time.time()
    )
    rows = []
    for order, route in enumerate(routes, start=1):
        wallet_id = gateway.wallet_by_settlement.get(route.settlement)
        wallet = wallets.get(wallet_id or "")
        most = worst_case_micros(input_tokens, max_tokens, route.price)
        available = wallet["available_micros"] if wallet else 0
        rows.append(
            {
                "order": order,
                "route_id": route.id,
                "route_type": route.settlement,
                "channel": route.channel,
                "upstream_model": route.upstream_model,
                "wallet": wallet_id,
                "currency": route.price.currency,
                "price": route.price.as_dict(),
                "input_cost_micros": charge_micros(Usage(input=input_tokens), route.price),
                "max_cost_micros": most,
                "available_micros": available,
                "can_pay": available >= most,
                "cooling": gateway.health.in_cooldown(route.channel, time.time()),
            }
        )
    return {
        "model": model_id,
        "name": model.name,
        "input_tokens": input_tokens,
        "max_tokens": max_tokens,
        "routes": rows,
    }
