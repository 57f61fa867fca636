"""The admin JSON API (``/api``): wallets, ledger, adjustments, verification.

Behind the admin guard: ``Authorization: Bearer <admin token>`` or the UI session.
Every handler that reads SQLite runs on a worker thread (``sync_to_thread=True``),
so a slow read never stalls the gateway's event loop.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from localgate.errors import BadRequest
from localgate.web.security import admin_guard


async def json_object(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong."""
    return decode_json_object(await request.body())


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """Bytes -> a JSON object, or a BadRequest naming what is wrong (shared by /api and /v1)."""
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def field(
    data: dict[str, Any], name: str, kind: type | tuple[type, ...], *, required: bool = True
) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise BadRequest(f"missing field '{name}'", param=name)
        return None
    if not isinstance(value, kind) or (
        isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
    ):
        raise BadRequest(f"field '{name}' has the wrong type", param=name)
    return value


def int_param(value: str | None, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)  # type: ignore[arg-type]
    except ValueError:
        raise BadRequest(f"query parameter '{name}' must be a whole number", param=name) from None


class WalletsAPI(Controller):
    path = "/api"
    guards = [admin_guard]

    @get("/wallets", sync_to_thread=True)
    def wallets(self, state: State) -> dict[str, Any]:
        return {"wallets": state.wallets.list()}

    @get("/wallets/{wallet_id:str}", sync_to_thread=True)
    def wallet(self, state: State, wallet_id: FromPath[str]) -> dict[str, Any]:
        return state.wallets.get(wallet_id)

    @get("/wallets/{wallet_id:str}/ledger", sync_to_thread=True)
    def ledger(
        self, request: Request[Any, Any, Any], state: State, wallet_id: FromPath[str]
    ) -> dict[str, Any]:
        q = request.query_params
        return state.wallets.ledger(
            wallet_id,
            cursor=q.get("cursor"),
            limit=int_param(q.get("limit"), "limit", 50),
            kind=q.get("kind") or None,
        )

    @get("/ledger/entries/{entry_id:int}", sync_to_thread=True)
    def entry(self, state: State, entry_id: FromPath[int]) -> dict[str, Any]:
        return state.wallets.entry(entry_id)

    @post("/adjustments", status_code=201)
    async def adjust(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        data = await json_object(request)
        amount = field(data, "amount", (str, int))
        return await state.wallets.adjust(
            field(data, "wallet", str),
            str(amount),
            field(data, "reason", str),
            idempotency_key=field(data, "idempotency_key", str, required=False)
            or request.headers.get("idempotency-key"),
        )

    @get("/ledger/verify", sync_to_thread=True)
    def verify(self, state: State) -> dict[str, Any]:
        return state.wallets.verify().as_dict()
