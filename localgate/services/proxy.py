"""The gateway's heart: authenticate, route, hold, call, settle, receipt — every request.

``Gateway.handle`` takes a request in one of the ``/v1`` APIs
(:data:`~localgate.services.inbound.INBOUND`: chat, embeddings, Anthropic
messages, Responses) and answers with a :class:`Reply`: a whole body, or a
:class:`~localgate.services.relay.StreamRelay` that the web layer pumps. A
route whose channel does not serve that API natively gets it translated to
chat and the answer translated back. Every path that identified a key ends in exactly one
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
    POLICY_SHUTDOWN,
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
    is_shutdown,
)
from localgate.providers.base import (
    Provider,
    ProviderRequest,
    StreamEvent,
    UpstreamResponse,
    UpstreamStream,
)
from localgate.services import charging
from localgate.services.catalog import CatalogView, Serving
from localgate.services.inbound import INBOUND, Inbound
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
    # Client headers an upstream of the same API may need (anthropic-beta).
    forward_headers: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    relay: StreamRelay | None = None


@dataclass
class Attempted:
    """The state of one request as routes are tried."""

    serving: Serving  # the configuration the request started with (Settings may change it)
    receipt: Receipt
    policy: KeyPolicy
    model: Model
    api: Inbound
    body: dict[str, Any]  # as the caller sent it
    chat_body: dict[str, Any]  # the same as OpenAI chat, for channels without the API
    translation_notes: list[str]
    forward_headers: Mapping[str, str]
    input_tokens: int
    requested_output: int | None
    n: int
    stream: bool
    wants_usage: bool
    started: float
    grant: charging.HoldGrant | None = None
    translated: bool = False  # the route being tried gets the request as chat
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
        api = INBOUND[endpoint]
        stream = api.is_stream(body)
        receipt = Receipt(
            id=new_receipt_id(),
            request_id=caller.request_id or "",
            created_at=utcnow(),
            endpoint=api.path,
            dialect=api.name,
            stream=stream,
            key_id=policy.id,
            key_label=policy.label,
            key_project=policy.project,
            user_agent=caller.user_agent[:300] or None,
            client=recognise_client(caller.user_agent),
            requested_model=body.get("model") if isinstance(body.get("model"), str) else None,
        )
        try:
            state = self._admit(api, body, policy, receipt, stream, caller)
            return await self._attempt_routes(state)
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

    def count_tokens(self, api: Inbound, body: dict[str, Any], caller: Caller) -> int:
        """Input tokens of a request, as localgate estimates them (``count_tokens``):
        no upstream call and no money, so no receipt."""
        policy = self.keys.authenticate(caller.token)
        core_keys.check_usable(policy, time.time())
        chat_body, _ = api.to_chat({"max_tokens": 1, **body})
        return api.input_tokens(chat_body)

    async def _close_out(self, receipt: Receipt, exc: BaseException) -> None:
        status = exc.http_status if isinstance(exc, LocalgateError) else 500
        message = str(exc) or type(exc).__name__
        if is_shutdown(exc):
            receipt.interrupt(policy=POLICY_SHUTDOWN)
            receipt.closed = True
            if receipt.route_id is None:
                await asyncio.shield(self.store.write(charging.record, receipt))
            else:
                await self._finish(receipt, 0, "interrupted by shutdown: not charged")
            return
        if receipt.route_id is None:  # refused before any route could pay
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
        self,
        api: Inbound,
        body: dict[str, Any],
        policy: KeyPolicy,
        receipt: Receipt,
        stream: bool,
        caller: Caller,
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
        serving = self.serving  # one configuration for the whole request
        model = serving.catalog.get(model_id) if model_id else None
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
        if (model.kind == "embedding") != (api.endpoint == "embeddings"):
            raise BadRequest(
                f"model '{model.id}' is a {model.kind} model; use "
                f"/v1/{'embeddings' if model.kind == 'embedding' else 'chat/completions'}",
                param="model",
            )
        n = body.get("n", 1) if api.endpoint == "chat" else 1
        if n is None:
            n = 1
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise BadRequest(f"'n' must be a whole number from 1 to {MAX_N}", param="n")
        requested = api.requested_output(body)
        chat_body, notes = api.to_chat(body)  # validates a non-chat body, before any hold
        input_tokens = api.input_tokens(chat_body)
        if api.endpoint == "chat":
            options = body.get("stream_options")
            wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        else:
            wants_usage = True  # other APIs' streams carry usage in their own last events
        return Attempted(
            serving,
            receipt,
            policy,
            model,
            api,
            body,
            chat_body,
            notes,
            caller.forward_headers,
            input_tokens,
            None if requested is None else requested * n,
            n,
            stream,
            wants_usage,
            time.perf_counter(),
        )

    async def _attempt_routes(self, st: Attempted) -> Reply:
        routes = st.serving.usable_routes(st.model)
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
            provider = st.serving.providers[route.channel]
            st.translated = st.api.endpoint not in provider.endpoints and st.api.endpoint != "chat"
            request = self._upstream_request(provider, route, st)
            t0 = time.perf_counter()
            try:
                if st.stream:
                    upstream, first = await self._open_stream(provider, request, st)
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
                return self._stream_reply(st, upstream, first)
            return await self._complete_reply(st, response)
        # Every remaining route was refused for money (wallet or budget). If an
        # earlier route failed upstream, that failure is the story; else the first refusal.
        if st.upstream_error is not None:
            return await self._fail(st, st.upstream_error)
        raise st.errors[0]

    async def _hold_for(self, route: Route, st: Attempted, last: bool) -> bool:
        """Place (or move) the hold for ``route``; False if its wallet cannot pay."""
        wallet = st.serving.wallet_by_settlement.get(route.settlement)
        receipt = st.receipt
        if wallet is None:
            st.errors.append(
                NotFound(f"no wallet pays for {route.settlement} routes", code="no_wallet")
            )
            return False
        limit = st.model.max_output_tokens or 0
        plan = charging.HoldPlan(
            route,
            st.serving.price_versions.get(route.id),
            st.serving.providers[route.channel].kind,
            wallet,
            st.input_tokens,
            st.requested_output,
            max(limit, 1) * st.n if st.model.kind == "chat" else 0,
            f"{st.serving.settings.base_url}/billing?wallet={wallet}",
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
            receipt.refused(wallet, st.serving.wallet_currency[wallet])
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

    def _upstream_request(self, provider: Provider, route: Route, st: Attempted) -> ProviderRequest:
        """The request for ``route``: the caller's body as is for a channel that
        serves its API, else its chat translation (noted on the receipt)."""
        chat = st.translated or st.api.endpoint == "chat"
        out = dict(st.chat_body if st.translated else st.body)
        out["model"] = route.upstream_model
        if st.model.kind == "chat" and st.requested_output is None and st.grant is not None:
            # The hold covers this many output tokens; the upstream must not exceed it.
            per_choice = max(1, st.grant.max_output // st.n)
            field_name = provider.output_limit_field if chat else st.api.output_field
            out[field_name or "max_tokens"] = per_choice
        limit_field = provider.output_limit_field
        if st.translated and limit_field not in out and "max_tokens" in out:
            out[limit_field] = out.pop("max_tokens")  # e.g. OpenAI's reasoning models
        if st.stream and chat:
            options = out.get("stream_options")
            out["stream_options"] = {**(options if isinstance(options, dict) else {})}
            out["stream_options"]["include_usage"] = True
        if st.translated:
            for note in st.translation_notes:
                st.receipt.note(note)
            st.receipt.note(f"{st.api.name} translated to chat for a {provider.kind} channel")
        endpoint = "chat" if chat else st.api.endpoint
        return ProviderRequest(endpoint, out, st.stream, st.forward_headers)  # type: ignore[arg-type]

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
        elif exc.status is not None and 400 <= exc.status < 500:
            # The upstream refused the request itself, or (429) has no room for it now:
            # SDKs retry a 429 after its Retry-After, so it is relayed as one.
            http_status = exc.status
        else:
            http_status = 504 if exc.timeout else 502
        receipt.fail(http_status, str(exc), self._elapsed_ms(st))
        await self._finish(receipt, 0, "failed upstream: not charged")
        if http_status < 500:
            if exc.body and not st.translated:  # the upstream's own words, in the caller's API
                headers = {**exc.response_headers(), **receipt.headers()}
                headers["content-type"] = "application/json"
                return Reply(http_status, headers, exc.body.encode())
            message = f"{exc}. Not charged."  # another API's body: say it in the caller's
        else:
            summary = "; ".join(
                f"{a['channel']} ({a['upstream_model']}): {a['error'] or a['status']}"
                for a in receipt.attempts
            )
            message = (
                f"upstream failed after {len(receipt.attempts)} attempt"
                f"{'s' if retried else ''}: {summary}. Not charged."
            )
        error = UpstreamError(message, status=http_status, timeout=exc.timeout)
        error.http_status, error.retry_after = http_status, exc.retry_after
        if http_status == 429:
            error.code = "upstream_rate_limited"
        raise error

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
        content = response.content
        content_type = response.headers.get("content-type", "application/json")
        if st.translated:
            content, content_type = (
                st.api.reply_from_chat(response.body, st.body),
                "application/json",
            )
        await self._settle(st, usage, "succeeded", policy, 200)
        headers = {"content-type": content_type, **receipt.headers()}
        return Reply(200, headers, content)

    async def _settle(
        self, st: Attempted, usage: Usage, status: str, policy: str, http_status: int
    ) -> None:
        receipt = st.receipt
        charge = receipt.settle(usage, status, policy, http_status, self._elapsed_ms(st))
        await self._finish(receipt, charge, f"{receipt.catalog_model} via {receipt.channel}")

    @staticmethod
    def _elapsed_ms(st: Attempted) -> int:
        return round((time.perf_counter() - st.started) * 1000)

    async def _open_stream(
        self, provider: Provider, request: ProviderRequest, st: Attempted
    ) -> tuple[UpstreamStream, StreamEvent]:
        """The stream and its first event. Nothing is answered before that event
        arrives, so a stream that fails before it (reset, cut, an error event)
        falls over to the next route like a whole answer would, uncharged."""
        upstream = await provider.open_stream(request)
        if st.translated:
            upstream = st.api.stream_from_chat(upstream, st.body, st.input_tokens)
        try:
            return upstream, await upstream.__anext__()
        except StopAsyncIteration:
            await upstream.aclose()
            raise UpstreamError(
                f"channel {provider.channel.id}: the stream ended before its first event",
                retryable=True,
            ) from None
        except BaseException:
            await upstream.aclose()
            raise

    def _stream_reply(self, st: Attempted, upstream: UpstreamStream, first: StreamEvent) -> Reply:
        relay = StreamRelay(
            upstream,
            st.receipt,
            functools.partial(self._settle, st),
            first=first,
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
