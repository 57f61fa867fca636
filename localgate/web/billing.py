"""Billing: the top-up form, the post-payment page, the sandbox checkout, the
top-up JSON API and the Stripe webhook.

Pages are server-rendered and work without JavaScript (a pending top-up page
refreshes itself with a ``<noscript>`` meta refresh; ``topup.js`` polls
instead when scripts run). ``/billing/topups/{id}/return`` is where payment
providers send the payer back; it needs no session, because a browser coming
back from another site does not send our SameSite=Strict cookie — it checks
the payment, then hands over to the post-payment page.

Whatever reads SQLite runs in a worker thread (``sync_to_thread=True``, or
``asyncio.to_thread`` inside async handlers), never on the event loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Redirect, Template

from localgate.core import topups as core
from localgate.errors import BadRequest, LocalgateError, NotFound
from localgate.money import parse_amount
from localgate.services.topups import PAGE_SYNC_GAP
from localgate.web.api import field, int_param, json_object
from localgate.web.security import admin_guard, bearer, session_value, valid_admin_token
from localgate.web.ui import form_data, page_guard, render

PURPOSE = {
    "official": "Credit pays official routes (direct to the model's maker)",
    "routed": "Routed balance pays routed channels (cheaper relays)",
}
MODELS_SHOWN = 8


def _base(request: Request[Any, Any, Any]) -> str:
    """The origin the user is on, so provider redirects come back to the same host
    (and its cookie) rather than to a differently spelled loopback name."""
    return str(request.base_url).rstrip("/")


def models_paid_by(state: State, wallet_id: str, settlement: str | None) -> list[str]:
    """Models the gateway would charge to this wallet right now."""
    gateway = getattr(state, "gateway", None)
    if gateway is None or settlement is None:
        return []
    if gateway.wallet_by_settlement.get(settlement) != wallet_id:
        return []
    return [
        model.id
        for model in gateway.catalog.models()
        if any(r.settlement == settlement for r in gateway.usable_routes(model))
    ]


def _wallet_choices(state: State) -> list[dict[str, Any]]:
    out = []
    for w in state.wallets.list():
        low, high = core.amount_bounds(w["currency"])
        out.append(
            {
                **w,
                "purpose": PURPOSE.get(w["settlement"], w["settlement"]),
                "min": core.short_money(low, w["currency"]),
                "max": core.short_money(high, w["currency"]),
            }
        )
    return out


def _billing(request: Request[Any, Any, Any], state: State, **extra: Any) -> Template:
    topups = state.topups
    q = request.query_params
    return render(
        request,
        "billing.html",
        title="Billing",
        wallets=_wallet_choices(state),
        selected=extra.pop("selected", None) or q.get("wallet") or "credit",
        method_names=core.METHOD_NAMES,
        methods=topups.provider.methods,
        provider=topups.provider,
        problem=topups.problem,
        history=topups.list(limit=50),
        **extra,
    )


# -- pages ------------------------------------------------------------------------


# Async with a thread, not sync_to_thread=True: POST shares the path (see
# pages_keys.keys_index for why that matters).
@get("/billing", guards=[page_guard])
async def billing_page(request: Request[Any, Any, Any], state: State) -> Template:
    return await asyncio.to_thread(_billing, request, state)


@post("/billing", guards=[page_guard], status_code=303)
async def billing_create(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    form = await form_data(request)
    try:
        topup = await state.topups.create(
            form.get("wallet", ""),
            form.get("amount", "").strip(),
            form.get("method") or None,
            base_url=_base(request),
        )
    except LocalgateError as exc:
        page = await asyncio.to_thread(
            _billing,
            request,
            state,
            error=exc.message,
            selected=form.get("wallet"),
            amount=form.get("amount", ""),
            method=form.get("method"),
        )
        page.status_code = 400 if exc.http_status < 500 else 502
        return page
    return Redirect(topup["checkout_url"] or f"/billing/topups/{topup['id']}", status_code=303)


@get("/billing/topups/{topup_id:str}", guards=[page_guard])
async def topup_page(
    request: Request[Any, Any, Any], state: State, topup_id: FromPath[str]
) -> Template:
    # The page is open: ask the provider now (at most once a second per top-up).
    topup = await state.topups.refresh(topup_id, source="sync", min_gap=PAGE_SYNC_GAP)
    models = models_paid_by(state, topup["wallet"], topup["settlement"])
    return render(
        request,
        "topup.html",
        title=f"Top-up {topup['id']}",
        t=topup,
        models=models[:MODELS_SHOWN],
        more_models=max(0, len(models) - MODELS_SHOWN),
        purpose=PURPOSE.get(topup["settlement"] or "", ""),
        provider=state.topups.provider,
        open_states=core.OPEN,
        no_money=core.NO_MONEY,
    )


@get("/billing/topups/{topup_id:str}/return")
async def topup_return(
    request: Request[Any, Any, Any], state: State, topup_id: FromPath[str]
) -> Response[Any]:
    canceled = request.query_params.get("canceled") in ("1", "true")
    try:
        await state.topups.handle_return(topup_id, canceled=canceled)
    except NotFound:
        raise
    except LocalgateError as exc:  # the provider is unreachable: the page says so and retries
        request.logger.warning("return page for %s: %s", topup_id, exc)
    target = f"/billing/topups/{topup_id}"
    if session_value(request) is not None:
        return Redirect(target, status_code=303)
    # Arrived from the provider's site: our SameSite=Strict cookie was not sent.
    # A same-site navigation from this page carries it.
    return render(request, "topup_return.html", title="Payment checked", target=target)


@post("/billing/topups/{topup_id:str}/cancel", guards=[page_guard], status_code=303)
async def topup_cancel(
    request: Request[Any, Any, Any], state: State, topup_id: FromPath[str]
) -> Redirect:
    await form_data(request)
    await state.topups.cancel(topup_id, source="user")
    return Redirect(f"/billing/topups/{topup_id}", status_code=303)


@post("/billing/topups/{topup_id:str}/retry", guards=[page_guard], status_code=303)
async def topup_retry(
    request: Request[Any, Any, Any], state: State, topup_id: FromPath[str]
) -> Redirect:
    await form_data(request)
    topup = await state.topups.retry(topup_id, base_url=_base(request))
    return Redirect(topup["checkout_url"] or f"/billing/topups/{topup['id']}", status_code=303)


# -- the sandbox checkout -----------------------------------------------------------


def _sandbox(state: State) -> Any:
    provider = state.topups.provider
    if provider.name != "sandbox":
        raise NotFound(
            f"the sandbox checkout is off: payments.provider is {provider.name}",
            code="sandbox_off",
        )
    return provider


# Async with a thread, not sync_to_thread=True: POST shares the path (see
# pages_keys.keys_index for why that matters).
@get("/sandbox/checkout/{topup_id:str}", guards=[page_guard])
async def sandbox_checkout(
    request: Request[Any, Any, Any], state: State, topup_id: FromPath[str]
) -> Template:
    provider = _sandbox(state)
    topup, pay = await asyncio.to_thread(
        lambda: (state.topups.get(topup_id), provider.payment(topup_id))
    )
    return render(
        request,
        "sandbox_checkout.html",
        title="Sandbox checkout",
        t=topup,
        pay=pay,
        settle_after=int(provider.settle_after),
    )


@post("/sandbox/checkout/{topup_id:str}", status_code=303)
async def sandbox_act(
    request: Request[Any, Any, Any], state: State, topup_id: FromPath[str]
) -> Redirect:
    """A sandbox button: admin bearer token, or the UI session with its CSRF token."""
    provider = _sandbox(state)
    if valid_admin_token(state.settings.admin_token, bearer(request.headers)):
        form = await request.form()
        data = {k: v for k, v in form.items() if isinstance(v, str)}
    else:
        data = await form_data(request)
    topup = await asyncio.to_thread(state.topups.get, topup_id)
    amount = None
    if data.get("amount"):
        amount = parse_amount(data["amount"], what="refund amount")
    await provider.act(topup_id, data.get("action", ""), amount)
    if topup["status"] in core.OPEN:
        return Redirect(f"/billing/topups/{topup_id}/return", status_code=303)
    # After payment (refunds, disputes) the processor would tell us by webhook;
    # the sandbox's equivalent is an immediate check.
    await state.topups.refresh(topup_id, source="webhook", any_state=True)
    return Redirect(f"/billing/topups/{topup_id}", status_code=303)


# -- JSON --------------------------------------------------------------------------


class TopupsAPI(Controller):
    path = "/api/topups"
    guards = [admin_guard]

    @get("/", sync_to_thread=True)
    def list_topups(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        q = request.query_params
        limit = max(1, min(int_param(q.get("limit"), "limit", 50), 500))
        return {"topups": state.topups.list(wallet=q.get("wallet") or None, limit=limit)}

    @post("/", status_code=201)
    async def create(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        data = await json_object(request)
        amount = field(data, "amount", (str, int))
        if isinstance(amount, int) and not isinstance(amount, bool):
            amount = str(amount)
        return await state.topups.create(
            field(data, "wallet", str),
            amount,
            field(data, "method", str, required=False),
            base_url=_base(request),
        )

    @get("/{topup_id:str}", sync_to_thread=True)
    def get_topup(self, state: State, topup_id: FromPath[str]) -> dict[str, Any]:
        return state.topups.get(topup_id)

    @post("/{topup_id:str}/sync", status_code=200)
    async def sync(self, state: State, topup_id: FromPath[str]) -> dict[str, Any]:
        return await state.topups.refresh(topup_id, source="sync", any_state=True)

    @post("/{topup_id:str}/cancel", status_code=200)
    async def cancel(self, state: State, topup_id: FromPath[str]) -> dict[str, Any]:
        return await state.topups.cancel(topup_id, source="user")


@post("/webhooks/stripe", status_code=200)
async def stripe_webhook(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """Verified over the raw body: any re-encoding would break the signature."""
    payload = await request.body()
    if not payload:
        raise BadRequest("empty webhook body")
    result = await state.topups.webhook(payload, request.headers.get("stripe-signature"))
    return Response(result, status_code=200, media_type=MediaType.JSON)


BILLING_HANDLERS = [
    billing_page,
    billing_create,
    topup_page,
    topup_return,
    topup_cancel,
    topup_retry,
    sandbox_checkout,
    sandbox_act,
    TopupsAPI,
    stripe_webhook,
]
