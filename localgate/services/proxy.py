"""The gateway's heart: authenticate, route, hold, call, settle, receipt — every request.

``Gateway.handle`` takes an OpenAI-format request and answers with a
:class:`Reply`: a whole body, or a :class:`~localgate.services.relay.StreamRelay`
that the web layer pumps. Every path that identified a key ends in exactly one
stored receipt; every hold placed is settled or released exactly once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from localgate import tokens
from localgate.config import Settings
from localgate.core import keys as core_keys
from localgate.core import routing
from localgate.core.catalog import Catalog, Model, Route
from localgate.core.keys import KeyPolicy
from localgate.core.pricing import Usage
from localgate.core.receipts import (
    POLICY_CHARGED,
    POLICY_ESTIMATED,
    Receipt,
    new_receipt_id,
    recognise_client,
)
from localgate.errors import (
    BadRequest,
    Forbidden,
    InsufficientFunds,
    InternalError,
    LocalgateError,
    NotFound,
    RateLimited,
    UpstreamError,
    WalletFrozen,
)
from localgate.providers.base import Provider, ProviderRequest, UpstreamResponse, UpstreamStream
from localgate.services import charging
from localgate.services.catalog import CatalogView
from localgate.services.keys import KeyService
from localgate.services.relay import StreamRelay
from localgate.store import Store
from localgate.store.db import utcnow

MAX_N = 16
log = logging.getLogger(__name__)


@dataclass
class Caller:
    token: str | None
    user_agent: str = ""
    request_id: str = ""


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    relay: StreamRelay | None = None


@dataclass
class Attempted:
    """The state of one request as routes are tried."""

    receipt: Receipt
    policy: KeyPolicy
    model: Model
    input_tokens: int
    requested_output: int | None
    n: int
    stream: bool
    wants_usage: bool
    started: float
    grant: charging.HoldGrant | None = None
    upstream_error: UpstreamError | None = None
    errors: list[LocalgateError] = field(default_factory=list)


class Gateway(CatalogView):
    """Handles one request at a time, for many at once; what a key can see
    (models, routes, prices) comes from :class:`CatalogView`."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        keys: KeyService,
        catalog: Catalog,
        providers: Mapping[str, Provider],
        price_versions: Mapping[str, str],
    ) -> None:
        super().__init__(settings, catalog, providers, price_versions)
        self.store = store
        self.keys = keys
        self.health = routing.ChannelHealth()
        self.limiter = core_keys.RateLimiter()

    # -- one request ------------------------------------------------------------

    async def handle(self, endpoint: str, body: dict[str, Any], caller: Caller) -> Reply:
        policy = self.keys.authenticate(caller.token)  # unknown key: no receipt to write
        stream = bool(body.get("stream")) and endpoint == "chat"
        receipt = Receipt(
            id=new_receipt_id(),
            request_id=caller.request_id or "",
            created_at=utcnow(),
            endpoint=f"/v1/{'chat/completions' if endpoint == 'chat' else endpoint}",
            stream=stream,
            key_id=policy.id,
            key_label=policy.label,
            key_project=policy.project,
            user_agent=caller.user_agent[:300] or None,
            client=recognise_client(caller.user_agent),
            requested_model=body.get("model") if isinstance(body.get("model"), str) else None,
        )
        try:
            state = self._admit(endpoint, body, policy, receipt, stream)
            return await self._attempt_routes(endpoint, body, state)
        except BaseException as exc:
            # Whatever went wrong, the request ends with one stored receipt and
            # no open hold; cancellation included (the cleanup still runs).
            if not receipt.closed:
                await self._close_out(receipt, exc)
            if isinstance(exc, LocalgateError):
                exc.headers = receipt.headers()
                raise
            if not isinstance(exc, Exception):
                raise  # cancellation: let it go on
            log.exception("request %s failed unexpectedly", receipt.id)
            internal = InternalError(
                f"localgate failed while handling this request ({type(exc).__name__}); "
                f"not charged. Receipt {receipt.id}"
            )
            internal.headers = receipt.headers()
            raise internal from exc

    async def _close_out(self, receipt: Receipt, exc: BaseException) -> None:
        status = exc.http_status if isinstance(exc, LocalgateError) else 500
        message = str(exc) or type(exc).__name__
        if receipt.hold_id is None:
            if isinstance(exc, LocalgateError):
                receipt.reject(status, message)
            else:
                receipt.fail(status, message)
            receipt.closed = True
            await asyncio.shield(self.store.write(charging.record, receipt))
            return
        receipt.fail(status, message)
        await self._finish(receipt, 0, "request failed: not charged")

    async def _finish(self, receipt: Receipt, charge: int, memo: str) -> None:
        # From here the outcome is decided: mark it before awaiting, and shield
        # the write, so a cancellation (client gone, server stopping) while it
        # waits for the writer can neither lose the settle nor start a second one.
        receipt.closed = True
        await asyncio.shield(self.store.write(charging.finish, receipt, charge, memo))

    def _admit(
        self, endpoint: str, body: dict[str, Any], policy: KeyPolicy, receipt: Receipt, stream: bool
    ) -> Attempted:
        now = time.time()
        core_keys.check_usable(policy, now)
        wait = self.limiter.check(policy.id, policy.rpm, now)
        if wait is not None:
            raise RateLimited(
                f"API key {policy.label!r} is limited to {policy.rpm} requests per "
                f"minute; retry in {wait:.0f}s",
                retry_after=int(wait) + 1,
                code="rate_limit_exceeded",
            )
        model_id = receipt.requested_model
        model = self.catalog.get(model_id) if model_id else None
        if model is None:
            raise NotFound(
                f"The model '{model_id}' does not exist; GET /v1/models lists the "
                "models this key may use",
                code="model_not_found",
            )
        receipt.catalog_model = model.id
        if not core_keys.model_allowed(policy, model.id):
            raise Forbidden(
                f"API key {policy.label!r} may not use model '{model.id}' (allowed: "
                f"{', '.join(policy.models)})",
                code="model_not_allowed",
            )
        if (model.kind == "embedding") != (endpoint == "embeddings"):
            raise BadRequest(
                f"model '{model.id}' is a {model.kind} model; use "
                f"/v1/{'embeddings' if model.kind == 'embedding' else 'chat/completions'}",
                param="model",
            )
        n = body.get("n", 1) if endpoint == "chat" else 1
        if n is None:
            n = 1
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise BadRequest(f"'n' must be a whole number from 1 to {MAX_N}", param="n")
        requested = _requested_output(body) if endpoint == "chat" else 0
        input_tokens = (
            tokens.count_chat_input_tokens(body)
            if endpoint == "chat"
            else tokens.count_embedding_input_tokens(body)
        )
        options = body.get("stream_options")
        wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        return Attempted(
            receipt,
            policy,
            model,
            input_tokens,
            None if requested is None else requested * n,
            n,
            stream,
            wants_usage,
            time.perf_counter(),
        )

    async def _attempt_routes(self, endpoint: str, body: dict[str, Any], st: Attempted) -> Reply:
        routes = self.usable_routes(st.model)
        candidates = routing.candidate_routes(
            routes, st.policy.settlement, self.health, time.time()
        )
        if not candidates:
            if routes:
                raise Forbidden(
                    f"model '{st.model.id}' has only {', '.join(sorted({r.settlement for r in routes}))} "
                    f"routes and API key {st.policy.label!r} may use {st.policy.settlement} only",
                    code="settlement_not_allowed",
                )
            raise NotFound(
                f"no configured channel serves model '{st.model.id}'; add a channel "
                "with its key under [[channels]] in config.toml",
                code="model_not_available",
            )
        for index, route in enumerate(candidates):
            last = index == len(candidates) - 1
            if not await self._hold_for(route, st, last):
                continue
            provider = self.providers[route.channel]
            request = ProviderRequest(endpoint, self._upstream_body(body, route, st), st.stream)  # type: ignore[arg-type]
            t0 = time.perf_counter()
            try:
                if st.stream:
                    upstream = await provider.open_stream(request)
                else:
                    response = await provider.complete(request)
            except UpstreamError as exc:
                latency = time.perf_counter() - t0
                retry = routing.should_retry(exc, first_byte_sent=False)
                if retry:
                    self.health.record_failure(route.channel, time.time())
                self._attempt(
                    route,
                    st,
                    exc.status,
                    str(exc),
                    latency,
                    routing.why_next(exc) if retry and not last else None,
                )
                if retry and not last:
                    st.upstream_error = exc
                    continue
                return await self._fail(st, exc)
            latency = time.perf_counter() - t0
            self.health.record_success(route.channel, latency, time.time())
            self._attempt(route, st, 200, None, latency, None)
            if st.stream:
                return self._stream_reply(st, upstream)
            return await self._complete_reply(st, response)
        # Every remaining route was refused for money (wallet or budget). If an
        # earlier route failed upstream, that failure is the story; else the first refusal.
        if st.upstream_error is not None:
            return await self._fail(st, st.upstream_error)
        raise st.errors[0]

    async def _hold_for(self, route: Route, st: Attempted, last: bool) -> bool:
        """Place (or move) the hold for ``route``; False if its wallet cannot pay."""
        wallet = self.wallet_by_settlement.get(route.settlement)
        receipt = st.receipt
        if wallet is None:
            st.errors.append(
                NotFound(f"no wallet pays for {route.settlement} routes", code="no_wallet")
            )
            return False
        limit = st.model.max_output_tokens or 0
        plan = charging.HoldPlan(
            route,
            self.price_versions.get(route.id),
            wallet,
            st.input_tokens,
            st.requested_output,
            max(limit, 1) * st.n if st.model.kind == "chat" else 0,
            f"{self.settings.base_url}/billing?wallet={wallet}",
        )
        try:
            if st.grant is None:
                st.grant = await self.store.write(
                    charging.begin, receipt, st.policy, plan, self.store.owner
                )
            else:
                st.grant = await self.store.write(
                    charging.switch,
                    receipt,
                    st.policy,
                    plan,
                    self.store.owner,
                    "fallback to another route",
                )
        except (InsufficientFunds, WalletFrozen, RateLimited) as exc:
            # The job was rolled back and left the receipt as it was: an earlier
            # hold, if any, is still open and still named there.
            receipt.refused(wallet, self.wallet_currency[wallet])
            st.errors.append(exc)
            self._attempt(
                route,
                st,
                None,
                exc.message,
                0.0,
                None if last else "wallet or budget cannot pay, trying next route",
            )
            return False
        return True

    def _attempt(
        self,
        route: Route,
        st: Attempted,
        status: int | None,
        error: str | None,
        latency: float,
        why_next: str | None,
    ) -> None:
        st.receipt.attempted(
            routing.Attempt(
                channel=route.channel,
                route_id=route.id,
                upstream_model=route.upstream_model,
                settlement=route.settlement,
                status=status,
                error=error,
                latency_ms=round(latency * 1000),
                why_next=why_next,
            )
        )

    def _upstream_body(self, body: dict[str, Any], route: Route, st: Attempted) -> dict[str, Any]:
        out = dict(body)
        out["model"] = route.upstream_model
        if st.model.kind == "chat" and st.requested_output is None and st.grant is not None:
            # The hold covers this many output tokens; the upstream must not exceed it.
            per_choice = max(1, st.grant.max_output // st.n)
            out[self.providers[route.channel].output_limit_field] = per_choice
        if st.stream:
            options = dict(out.get("stream_options") or {})
            options["include_usage"] = True
            out["stream_options"] = options
        return out

    async def _fail(self, st: Attempted, exc: UpstreamError) -> Reply:
        receipt = st.receipt
        retried = len(receipt.attempts) > 1
        if exc.status in (401, 403):
            # The channel's credentials, not the caller's key: a 401 would read as
            # "your lg_ key is wrong" in every SDK.
            http_status = 502
            exc = UpstreamError(
                f"upstream channel {receipt.channel} refused localgate's credentials "
                f"({exc.status}); check the channel's API key in Settings or config.toml",
                status=exc.status,
            )
        elif exc.status is not None and 400 <= exc.status < 500 and exc.status != 429:
            http_status = exc.status  # the upstream refused the request itself
        else:
            http_status = 504 if exc.timeout else 502
        receipt.fail(http_status, str(exc), self._elapsed_ms(st))
        await self._finish(receipt, 0, "failed upstream: not charged")
        if http_status < 500 and exc.body:
            return Reply(
                http_status,
                {"content-type": "application/json", **receipt.headers()},
                exc.body.encode(),
            )
        summary = "; ".join(
            f"{a['channel']} ({a['upstream_model']}): {a['error'] or a['status']}"
            for a in receipt.attempts
        )
        raise UpstreamError(
            f"upstream failed after {len(receipt.attempts)} attempt{'s' if retried else ''}: "
            f"{summary}. Not charged.",
            status=http_status,
            timeout=exc.timeout,
        )

    async def _complete_reply(self, st: Attempted, response: UpstreamResponse) -> Reply:
        receipt = st.receipt
        usage = response.usage
        policy = POLICY_CHARGED
        if usage is None:
            usage = Usage(
                input=st.input_tokens,
                output=tokens.count_completion_tokens(response.body),
                source="estimated",
            )
            policy = POLICY_ESTIMATED
        await self._settle(st, usage, "succeeded", policy, 200)
        headers = {
            "content-type": response.headers.get("content-type", "application/json"),
            **receipt.headers(),
        }
        return Reply(200, headers, response.content)

    async def _settle(
        self, st: Attempted, usage: Usage, status: str, policy: str, http_status: int
    ) -> None:
        receipt = st.receipt
        charge = receipt.settle(usage, status, policy, http_status, self._elapsed_ms(st))
        await self._finish(receipt, charge, f"{receipt.catalog_model} via {receipt.channel}")

    @staticmethod
    def _elapsed_ms(st: Attempted) -> int:
        return round((time.perf_counter() - st.started) * 1000)

    def _stream_reply(self, st: Attempted, upstream: UpstreamStream) -> Reply:
        relay = StreamRelay(
            upstream,
            st.receipt,
            functools.partial(self._settle, st),
            started=st.started,
            input_tokens=st.input_tokens,
            wants_usage=st.wants_usage,
        )
        headers = {
            "content-type": "text/event-stream",
            "cache-control": "no-cache",
            "x-accel-buffering": "no",
            **st.receipt.headers(pending=True),
        }
        return Reply(200, headers, relay=relay)


def _requested_output(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise BadRequest(f"'{name}' must be a positive whole number", param=name)
        return value
    return None
