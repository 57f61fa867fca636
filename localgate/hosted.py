"""Client of the hosted service (hosted-api.md): top-ups and wallet balances.

One :class:`HostedClient` per base URL and account token, over an injected
``httpx.AsyncClient`` (tests pass one bound to a local server). Every call goes
through :meth:`HostedClient.request`, which adds the token, decodes JSON and
turns transport failures and ``{"error": {...}}`` bodies into
:class:`HostedError` once — the seam that catalog sync (``GET /v1/catalog``
with ETags) builds on as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from localgate.errors import ConfigError, HostedError

DEFAULT_TIMEOUT = httpx.Timeout(20.0, connect=5.0)


@dataclass(frozen=True)
class HostedResponse:
    status: int
    body: Any
    headers: Mapping[str, str]


class HostedClient:
    def __init__(self, base_url: str, token: str, client: httpx.AsyncClient) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"hosted.base_url must be an http(s) URL, got {base_url!r}; "
                "leave it empty to run offline"
            )
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._client = client

    def __repr__(self) -> str:  # never show the token
        return f"HostedClient({self.base_url!r})"

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> HostedResponse:
        """One call; statuses in ``ok`` (and 304) come back, others raise HostedError."""
        url = f"{self.base_url}{path}"
        sent = {"authorization": f"Bearer {self._token}", "accept": "application/json"}
        sent.update(headers or {})
        try:
            resp = await self._client.request(
                method, url, json=json, params=params, headers=sent, timeout=DEFAULT_TIMEOUT
            )
        except httpx.TimeoutException as exc:
            raise HostedError(
                f"the hosted service at {self.base_url} did not answer in time",
                retryable=True,
                timeout=True,
            ) from exc
        except httpx.HTTPError as exc:
            raise HostedError(
                f"cannot reach the hosted service at {self.base_url}: {exc.__class__.__name__}",
                retryable=True,
            ) from exc
        if resp.status_code == 304:
            return HostedResponse(304, None, resp.headers)
        try:
            body = resp.json() if resp.content else None
        except ValueError:
            body = None
        if resp.status_code not in ok:
            error = body.get("error") if isinstance(body, dict) else None
            message = (
                error.get("message") if isinstance(error, dict) else None
            ) or f"HTTP {resp.status_code}"
            code = error.get("code") if isinstance(error, dict) else None
            raise HostedError(
                f"the hosted service refused {method} {path}: {message}"
                + (f" ({code})" if code else ""),
                status=resp.status_code,
                retryable=resp.status_code >= 500 or resp.status_code == 429,
            )
        if body is None or not isinstance(body, dict | list):
            raise HostedError(
                f"the hosted service answered {method} {path} without a JSON body",
                status=resp.status_code,
            )
        return HostedResponse(resp.status_code, body, resp.headers)

    # -- top-ups ----------------------------------------------------------------

    async def create_topup(
        self,
        *,
        wallet: str,
        amount: str,
        currency: str,
        method: str,
        success_url: str,
        cancel_url: str,
        client_reference: str,
    ) -> dict[str, Any]:
        """``POST /v1/topups``; the same client_reference twice is the same top-up."""
        resp = await self.request(
            "POST",
            "/v1/topups",
            json={
                "wallet": wallet,
                "amount": amount,
                "currency": currency,
                "method": method,
                "success_url": success_url,
                "cancel_url": cancel_url,
                "client_reference": client_reference,
            },
        )
        return _object(resp.body, "POST /v1/topups")

    async def get_topup(self, hosted_id: str) -> dict[str, Any]:
        resp = await self.request("GET", f"/v1/topups/{hosted_id}")
        return _object(resp.body, "GET /v1/topups/{id}")

    async def topups_since(self, updated_since: str) -> list[dict[str, Any]]:
        """``GET /v1/topups?updated_since=...``: a list, bare or under ``topups``."""
        resp = await self.request("GET", "/v1/topups", params={"updated_since": updated_since})
        body = resp.body
        items = body.get("topups", body.get("data")) if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise HostedError("GET /v1/topups answered without a list of top-ups")
        return [item for item in items if isinstance(item, dict)]

    # -- wallets ----------------------------------------------------------------

    async def wallets(self) -> dict[str, Any]:
        """``GET /v1/wallets``: the hosted side's balances, for showing the difference."""
        resp = await self.request("GET", "/v1/wallets")
        return _object(resp.body, "GET /v1/wallets")


def _object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise HostedError(f"{what} answered with something other than a JSON object")
    return body
