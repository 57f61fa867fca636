"""UI pages: API keys (/keys), the model marketplace (/models).

A key's secret appears in exactly one response: the one that created (or
rotated) it, sent with ``Cache-Control: no-store``. Every later page shows its
prefix (``lg_AbCd…wXyZ``), also as the placeholder in the tool snippets.
*Send a test request* goes through the real ``/v1/chat/completions`` path
(in-process, see ``web.loopback``) and shows the receipt it produced.

Pages read SQLite (keys, spend, receipts) in a worker thread: sync handlers
with ``sync_to_thread=True``, async ones through ``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Redirect, Template

from localgate.core.keys import WINDOWS, KeyPolicy
from localgate.errors import BadRequest, LocalgateError
from localgate.services import playground as pg
from localgate.services.inbound import INBOUND
from localgate.services.tool_setup import pick_model, setups
from localgate.store import keys as key_store
from localgate.store import receipts as receipt_store
from localgate.web.api import whole_number
from localgate.web.loopback import V1Call, error_message
from localgate.web.ui import form_data, page_guard, render

NO_STORE = {"cache-control": "no-store"}
TEST_PROMPT = (
    "Say hello in one short sentence: this is a test request from the localgate Keys page."
)
TEST_MAX_TOKENS = 48
DONE = {
    "saved": "Saved. The new limits apply to the key's next request.",
    "pause": "Paused: requests with this key are refused (403 key_paused) until you resume it.",
    "resume": "Resumed: the key works again.",
    "revoke": "Revoked for good: requests with this key get 401.",
}


# -- helpers -------------------------------------------------------------------


def page(
    request: Request[Any, Any, Any],
    name: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> Template:
    """``render`` with a status code and extra headers."""
    template = render(request, name, **context)
    template.status_code = status
    for k, v in (headers or {}).items():
        template.headers[k] = v
    return template


def policy_of(state: State, key_id: str) -> KeyPolicy:
    return key_store.policy_from_row(key_store.get_key_row(state.store.read(), key_id))


def chat_model_ids(state: State, policy: KeyPolicy) -> list[str]:
    return [m["id"] for m in pg.chat_models(state.gateway, policy)]


def pays(state: State) -> dict[str, str]:
    """Settlement path -> the wallet it pays from, e.g. {"official": "Credit (USD)"}."""
    out: dict[str, str] = {}
    for wallet in state.settings.wallets:
        out.setdefault(wallet.settlement, f"{wallet.name} ({wallet.currency})")
    return out


def budget_currencies(state: State, key: dict[str, Any] | None = None) -> list[str]:
    codes = {w.currency for w in state.settings.wallets}
    if key:
        codes |= set(key["budgets"])
    return sorted(codes)


def key_form(data: dict[str, str], currencies: list[str]) -> dict[str, Any]:
    """The API-shaped key request from the create / edit form."""
    models = [m for m in data.get("models", "").replace(",", " ").split() if m]
    budgets = {
        cur: {w: data.get(f"budget_{cur}_{w}", "").strip() or None for w in WINDOWS}
        for cur in currencies
    }
    rpm_text = data.get("rpm", "").strip()
    rpm = whole_number(rpm_text) if rpm_text else None
    if rpm_text and rpm is None:
        raise BadRequest("rate limit: a whole number of requests per minute", param="rpm")
    return {
        "label": data.get("label", ""),
        "project": data.get("project", "").strip() or None,
        "models": models,
        "settlement": data.get("settlement") or "any",
        "budgets": budgets,
        "rpm": rpm,
        "expires_at": data.get("expires_at", "").strip() or None,
    }


def form_from_key(key: dict[str, Any]) -> dict[str, str]:
    """Form values showing a stored key (the edit form starts from these)."""
    values = {
        "label": key["label"],
        "project": key["project"] or "",
        "models": " ".join(key["models"]),
        "settlement": key["settlement"],
        "rpm": str(key["rpm"] or ""),
        "expires_at": _local_expiry(key["expires_at"]),
    }
    for cur, budget in key["budgets"].items():
        for w in WINDOWS:
            values[f"budget_{cur}_{w}"] = budget[w] or ""
    return values


def _local_expiry(ts: float | None) -> str:
    if ts is None:
        return ""
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M")


def with_spend(state: State, key: dict[str, Any]) -> dict[str, Any]:
    key["spend_report"] = state.gateway.keys.spend_report(key["id"])
    key["is_playground"] = pg.is_playground_key(key["id"])
    return key


def tool_endpoints_missing() -> frozenset[str]:
    """Endpoints some tools need that ``/v1`` does not serve, to say so by the tool
    (the inbound registry is what ``/v1`` serves)."""
    served = {api.path for api in INBOUND.values()}
    return frozenset(t.endpoint for t in setups("", "", []) if t.endpoint not in served)


async def created_page(
    request: Request[Any, Any, Any], state: State, key: dict[str, Any], *, rotated: bool
) -> Template:
    policy = await asyncio.to_thread(policy_of, state, key["id"])
    models = chat_model_ids(state, policy)
    return page(
        request,
        "key_created.html",
        headers=NO_STORE,
        title="Copy your new key" if not rotated else "Key rotated",
        key=key,
        rotated=rotated,
        tools=setups(key["key"], state.settings.base_url, models),
        missing=tool_endpoints_missing(),
        models=models,
        test_model=pick_model(models) if models else None,
    )


def keys_page(
    request: Request[Any, Any, Any],
    state: State,
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
) -> Template:
    q = request.query_params
    preset = q.get("settlement") if q.get("settlement") in ("official", "routed") else "any"
    keys = [with_spend(state, k) for k in state.gateway.keys.list()]
    paused = q.get("paused")
    return page(
        request,
        "keys.html",
        status=status,
        title="API keys",
        keys=keys,
        live=sum(1 for k in keys if k["status"] == "active"),
        form=form or {"settlement": preset},
        currencies=budget_currencies(state),
        pays=pays(state),
        error=error,
        paused=whole_number(paused) if paused else None,
    )


# -- keys --------------------------------------------------------------------------


# Async with a thread rather than sync_to_thread=True: Litestar (2.25) registers
# a handler again when another one joins its path, and a sync_to_thread handler
# registered twice is wrapped twice (it would answer with an unawaited coroutine).
@get("/keys", guards=[page_guard])
async def keys_index(request: Request[Any, Any, Any], state: State) -> Template:
    return await asyncio.to_thread(keys_page, request, state)


@post("/keys", guards=[page_guard], status_code=200)
async def keys_create(request: Request[Any, Any, Any], state: State) -> Template:
    data = await form_data(request)
    try:
        key = await state.gateway.keys.create(key_form(data, budget_currencies(state)))
    except LocalgateError as exc:
        return await asyncio.to_thread(
            keys_page, request, state, form=data, error=exc.message, status=400
        )
    return await created_page(request, state, key, rotated=False)


@post("/keys/pause-all", guards=[page_guard])
async def keys_pause_all(request: Request[Any, Any, Any], state: State) -> Redirect:
    await form_data(request)
    count = await state.gateway.keys.pause_all()
    return Redirect(f"/keys?paused={count}", status_code=303)


@get("/keys/{key_id:str}", guards=[page_guard])
async def key_detail(
    request: Request[Any, Any, Any], state: State, key_id: FromPath[str]
) -> Template:
    missing = tool_endpoints_missing()
    return await asyncio.to_thread(key_page, request, state, key_id, missing=missing)


def key_page(
    request: Request[Any, Any, Any],
    state: State,
    key_id: str,
    *,
    form: dict[str, str] | None = None,
    error: str | None = None,
    status: int = 200,
    missing: frozenset[str] = frozenset(),
) -> Template:
    key = with_spend(state, state.gateway.keys.get(key_id))
    models = chat_model_ids(state, policy_of(state, key_id))
    done = request.query_params.get("done")
    return page(
        request,
        "key.html",
        status=status,
        title=f"Key {key['label']}",
        key=key,
        form=form or form_from_key(key),
        currencies=budget_currencies(state, key),
        pays=pays(state),
        expires=_local_expiry(key["expires_at"]),
        tools=setups(key["prefix"], state.settings.base_url, models),
        missing=missing,
        models=models,
        test_model=pick_model(models) if models else None,
        done=DONE.get(done or ""),
        error=error,
    )


@post("/keys/{key_id:str}/edit", guards=[page_guard], status_code=200)
async def key_edit(
    request: Request[Any, Any, Any], state: State, key_id: FromPath[str]
) -> Response[Any]:
    data = await form_data(request)
    key = await asyncio.to_thread(state.gateway.keys.get, key_id)
    try:
        await state.gateway.keys.update(key_id, key_form(data, budget_currencies(state, key)))
    except LocalgateError as exc:
        return await asyncio.to_thread(
            key_page, request, state, key_id, form=data, error=exc.message, status=400
        )
    return Redirect(f"/keys/{key_id}?done=saved", status_code=303)


@post("/keys/{key_id:str}/{action:str}", guards=[page_guard], status_code=200)
async def key_action(
    request: Request[Any, Any, Any], state: State, key_id: FromPath[str], action: FromPath[str]
) -> Response[Any]:
    data = await form_data(request)
    if action == "rotate":
        key = await state.gateway.keys.rotate(key_id)
        return await created_page(request, state, key, rotated=True)
    if action == "test":
        return await test_request(request, state, key_id, data)
    try:
        await state.gateway.keys.set_state(key_id, action)
    except BadRequest as exc:
        return await asyncio.to_thread(
            key_page, request, state, key_id, error=exc.message, status=400
        )
    if data.get("back") == "list":
        return Redirect("/keys", status_code=303)
    return Redirect(f"/keys/{key_id}?done={action}", status_code=303)


async def test_request(
    request: Request[Any, Any, Any], state: State, key_id: str, data: dict[str, str]
) -> Template:
    """One small chat completion with the key, through /v1, and the receipt it left."""
    key = await asyncio.to_thread(state.gateway.keys.get, key_id)
    secret = data.get("secret", "").strip()
    model = data.get("model", "")
    outcome: dict[str, Any] = {"model": model}
    try:
        if not secret:
            raise BadRequest(
                "paste the key's secret: it was shown once, when the key was created "
                "(rotate the key to get a new one)"
            )
        owner = state.gateway.keys.authenticate(secret)
        if owner.id != key_id:
            raise BadRequest(f"that secret belongs to another key ({owner.label!r})")
        body = pg.chat_body(TEST_PROMPT, model, TEST_MAX_TOKENS, stream=False)
        async with V1Call(
            request.app,
            "/v1/chat/completions",
            body,
            token=secret,
            host=request.headers.get("host", "127.0.0.1"),
        ) as call:
            raw = await call.read()
        answer = call.json(raw)
        outcome.update(
            await asyncio.to_thread(v1_outcome, state, call.status, call.headers, answer)
        )
    except LocalgateError as exc:
        outcome["error"] = exc.message
    return render(request, "key_test.html", title="Test request", key=key, outcome=outcome)


def v1_outcome(
    state: State, status: int, headers: dict[str, str], data: dict[str, Any]
) -> dict[str, Any]:
    """What a /v1 answer means to a person: the text, or the error, and the receipt."""
    out: dict[str, Any] = {"status": status, "charge": headers.get("x-localgate-charge")}
    if status == 200:
        choices = data.get("choices") or [{}]
        out["answer"] = (choices[0].get("message") or {}).get("content") or ""
    else:
        error = data.get("error") if isinstance(data.get("error"), dict) else {}
        out["error"] = error_message(data, status)
        out["code"] = error.get("code")
        out["wallet"] = error.get("wallet")  # 402 names the wallet to top up
    receipt_id = headers.get("x-localgate-receipt")
    if receipt_id:
        out["receipt"] = receipt_store.get(state.store.read(), receipt_id)
    return out


# -- models --------------------------------------------------------------------------


@get("/models", guards=[page_guard], sync_to_thread=True)
def models_page(request: Request[Any, Any, Any], state: State) -> Template:
    """The marketplace: every model with its routes, wallet and price per 1M tokens,
    narrowed to what one key may call when a key is chosen."""
    gateway = state.gateway
    q = request.query_params
    keys = [k for k in gateway.keys.list() if k["status"] != "revoked"]
    chosen = next((k for k in keys if k["id"] == q.get("key")), None)
    search = (q.get("q") or "").strip().lower()
    show_all = q.get("all") == "1" and chosen is None
    if chosen is not None:
        models = gateway.visible_models(policy_of(state, chosen["id"]))
    else:
        everyone = KeyPolicy(id="", label="")
        models = gateway.visible_models(everyone)
        if show_all:
            usable = {m["id"] for m in models}
            models += [
                gateway.model_object(m, gateway.catalog.routes_for(m.id))
                for m in gateway.catalog.models()
                if m.id not in usable and gateway.catalog.routes_for(m.id)
            ]
            models.sort(key=lambda m: m["id"])
    if search:
        models = [
            m
            for m in models
            if search in m["id"].lower() or search in m["localgate"]["name"].lower()
        ]
    for m in models:
        for r in m["localgate"]["routes"]:
            r["usable"] = r["channel"] in gateway.providers
    return render(
        request,
        "models.html",
        title="Models",
        models=models,
        keys=keys,
        chosen=chosen,
        search=q.get("q") or "",
        show_all=show_all,
        catalog_size=len(gateway.catalog),
    )


KEY_HANDLERS = [
    keys_index,
    keys_create,
    keys_pause_all,
    key_detail,
    key_edit,
    key_action,
    models_page,
]
