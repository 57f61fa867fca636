"""UI page: the playground (/playground).

Pick a key and a model it may call, see the routes it would try with their
prices and the cost estimate, send, read the answer (streamed with JS, whole
without), then open the receipt of that very request. Requests go through the
real ``/v1/chat/completions`` (in-process, ``web.loopback``), so the receipt is
a production receipt. Keys: the playground's own key (``services.playground``)
or one of the user's, whose secret the page asks for, since secrets are not
stored (the browser remembers it per tab in sessionStorage).

The page and its preview read SQLite (keys, wallets, receipts) in a worker
thread, never on the event loop that serves ``/v1``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Stream, Template

from localgate.core.keys import KeyPolicy
from localgate.errors import BadRequest, LocalgateError
from localgate.money import format_money
from localgate.services import playground as pg
from localgate.store import receipts as receipt_store
from localgate.web.loopback import V1Call
from localgate.web.pages_keys import page, policy_of, v1_outcome
from localgate.web.ui import form_data, page_guard

PLAYGROUND = "playground"
DEFAULT_PROMPT = "Write a haiku about receipts that match a ledger."
MAX_TOKENS_LIMIT = 32_000


def playground_state(state: State) -> pg.PlaygroundKey:
    """The playground key keeper of this app (created on first use)."""
    keeper = getattr(state, "playground_key", None)
    if keeper is None or keeper.keys is not state.gateway.keys:
        keeper = pg.PlaygroundKey(state.gateway.keys)
        state.playground_key = keeper
    return keeper


def chosen_policy(state: State, key_choice: str) -> KeyPolicy:
    """The policy behind the key picker's choice (the playground key may not exist yet)."""
    if key_choice == PLAYGROUND:
        current = playground_state(state).current()
        if current is None:
            return KeyPolicy(id=pg.PLAYGROUND_ID, label=pg.PLAYGROUND_LABEL)
        return policy_of(state, current["id"])
    return policy_of(state, key_choice)


def user_keys(state: State) -> list[dict[str, Any]]:
    return [
        k
        for k in state.gateway.keys.list()
        if k["status"] != "revoked" and not pg.is_playground_key(k["id"])
    ]


def max_tokens_of(text: str | None) -> int:
    if not text:
        return pg.DEFAULT_MAX_TOKENS
    try:
        value = int(text)
    except ValueError:
        raise BadRequest("max tokens: a whole number", param="max_tokens") from None
    if not 1 <= value <= MAX_TOKENS_LIMIT:
        raise BadRequest(f"max tokens: 1 to {MAX_TOKENS_LIMIT}", param="max_tokens")
    return value


def selection(state: State, params: Any) -> dict[str, Any]:
    """Key choice, its models, the chosen model and its route preview."""
    key_choice = params.get("key") or PLAYGROUND
    known = {k["id"] for k in user_keys(state)}
    if key_choice != PLAYGROUND and key_choice not in known:
        key_choice = PLAYGROUND
    policy = chosen_policy(state, key_choice)
    models = pg.chat_models(state.gateway, policy)
    ids = [m["id"] for m in models]
    model = params.get("model") if params.get("model") in ids else (ids[0] if ids else None)
    prompt = params.get("prompt") if params.get("prompt") is not None else DEFAULT_PROMPT
    max_tokens = max_tokens_of(params.get("max_tokens"))
    wallets = {w["id"]: w for w in state.wallets.list()}
    preview = (
        pg.preview(
            state.gateway, policy, model, prompt=prompt, max_tokens=max_tokens, wallets=wallets
        )
        if model
        else None
    )
    return {
        "key_choice": key_choice,
        "policy": policy,
        "models": models,
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "preview": preview,
        "wallets": wallets,
    }


def playground_page(
    request: Request[Any, Any, Any],
    state: State,
    params: Any,
    *,
    outcome: dict[str, Any] | None = None,
    status: int = 200,
) -> Template:
    try:
        sel = selection(state, params)
    except BadRequest as exc:
        sel = selection(state, {"key": params.get("key"), "model": params.get("model")})
        outcome = {"error": exc.message}
        status = 400
    return page(
        request,
        "playground.html",
        status=status,
        title="Playground",
        keys=user_keys(state),
        playground_key=playground_state(state).current(),
        outcome=outcome,
        **sel,
    )


async def token_for(state: State, data: dict[str, str]) -> str:
    """The secret to send with: the playground's own, or the one the user typed."""
    key_choice = data.get("key") or PLAYGROUND
    if key_choice == PLAYGROUND:
        return (await playground_state(state).secret())[1]
    secret = data.get("secret", "").strip()
    if not secret:
        raise BadRequest(
            "type this key's secret (it was shown once, when the key was created), "
            "or pick the playground key",
            param="secret",
        )
    owner = state.gateway.keys.authenticate(secret)
    if owner.id != key_choice:
        raise BadRequest(f"that secret belongs to another key ({owner.label!r})", param="secret")
    return secret


# Async with a thread, not sync_to_thread=True: POST shares the path (see
# pages_keys.keys_index for why that matters).
@get("/playground", guards=[page_guard])
async def playground_index(request: Request[Any, Any, Any], state: State) -> Template:
    return await asyncio.to_thread(playground_page, request, state, request.query_params)


@get("/playground/preview", guards=[page_guard], sync_to_thread=True)
def playground_preview(request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
    """The route preview and cost estimate as JSON, for the page's script."""
    sel = selection(state, request.query_params)
    preview = sel["preview"]
    for route in preview["routes"] if preview else ():
        route["input_cost"] = format_money(route["input_cost_micros"], route["currency"])
        route["max_cost"] = format_money(route["max_cost_micros"], route["currency"])
    return {"model": sel["model"], "preview": preview}


@get("/playground/receipt/{receipt_id:str}", guards=[page_guard], sync_to_thread=True)
def playground_receipt(
    request: Request[Any, Any, Any], state: State, receipt_id: FromPath[str]
) -> Response[Any]:
    """A receipt's summary as an HTML fragment (202 while the request is still settling)."""
    receipt = receipt_store.get(state.store.read(), receipt_id)
    if receipt["status"] == "pending":
        return Response("", status_code=202)
    return page(request, "_partials/receipt_summary.html", r=receipt)


@post("/playground", guards=[page_guard], status_code=200)
async def playground_send(request: Request[Any, Any, Any], state: State) -> Template:
    """The no-JS path: one whole (non-stream) answer, rendered with its receipt."""
    data = await form_data(request)
    try:
        sel = await asyncio.to_thread(selection, state, data)
        if sel["model"] is None:
            raise BadRequest("this key may not call any chat model")
        token = await token_for(state, data)
        body = pg.chat_body(sel["prompt"], sel["model"], sel["max_tokens"], stream=False)
        async with V1Call(
            request.app, "/v1/chat/completions", body, token=token, host=_host(request)
        ) as call:
            raw = await call.read()
        answer = call.json(raw)
        outcome = await asyncio.to_thread(v1_outcome, state, call.status, call.headers, answer)
    except LocalgateError as exc:
        outcome, status = {"error": exc.message}, 400
    else:
        status = 200
    return await asyncio.to_thread(
        playground_page, request, state, data, outcome=outcome, status=status
    )


@post("/playground/stream", guards=[page_guard], status_code=200)
async def playground_stream(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    """The JS path: the /v1 stream passed through as it comes, receipt comment included."""
    data = await form_data(request)
    try:
        sel = await asyncio.to_thread(selection, state, data)
        if sel["model"] is None:
            raise BadRequest("this key may not call any chat model")
        token = await token_for(state, data)
    except LocalgateError as exc:
        return Response(
            {"error": {"message": exc.message, "code": exc.code}},
            status_code=exc.http_status,
        )
    body = pg.chat_body(sel["prompt"], sel["model"], sel["max_tokens"], stream=True)
    call = V1Call(request.app, "/v1/chat/completions", body, token=token, host=_host(request))
    await call.__aenter__()
    passed = {k: v for k, v in call.headers.items() if k.startswith("x-localgate-")}

    async def relay() -> AsyncIterator[bytes]:
        try:
            async for chunk in call.chunks():
                yield chunk
        finally:
            await call.aclose()  # early end = the browser went away: a client cancel

    return Stream(
        relay(),
        status_code=call.status,
        media_type=call.headers.get("content-type", "application/json"),
        headers={"cache-control": "no-store", **passed},
    )


def _host(request: Request[Any, Any, Any]) -> str:
    return request.headers.get("host", "127.0.0.1")


PLAYGROUND_HANDLERS = [
    playground_index,
    playground_preview,
    playground_receipt,
    playground_send,
    playground_stream,
]
