"""Admin JSON for the gateway: API keys and receipts (behind the admin guard).

The sync handlers read SQLite, so they run in a worker thread (``sync_to_thread``),
never on the event loop that serves ``/v1``.
"""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from localgate.services import receipts as receipt_service
from localgate.store import receipts as receipt_store
from localgate.web.api import json_object
from localgate.web.security import admin_guard


class KeysAPI(Controller):
    path = "/api/keys"
    guards = [admin_guard]

    @get("/", sync_to_thread=True)
    def list_keys(self, state: State) -> dict[str, Any]:
        return {"keys": state.gateway.keys.list()}

    @post("/", status_code=201)
    async def create(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        return await state.gateway.keys.create(await json_object(request))

    @get("/{key_id:str}", sync_to_thread=True)
    def get_key(self, state: State, key_id: FromPath[str]) -> dict[str, Any]:
        return state.gateway.keys.get(key_id)

    @post("/pause-all", status_code=200)
    async def pause_all(self, state: State) -> dict[str, Any]:
        """The kill switch: pause every live key at once."""
        return {"paused": await state.gateway.keys.pause_all()}

    @post("/{key_id:str}/{action:str}", status_code=200)
    async def change(
        self, state: State, key_id: FromPath[str], action: FromPath[str]
    ) -> dict[str, Any]:
        if action == "rotate":  # a new secret for the same key; shown only in this answer
            return await state.gateway.keys.rotate(key_id)
        return await state.gateway.keys.set_state(key_id, action)


class ReceiptsAPI(Controller):
    path = "/api/receipts"
    guards = [admin_guard]

    @get("/", sync_to_thread=True)
    def list_receipts(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        query = receipt_service.ReceiptQuery.from_params(request.query_params)
        return receipt_service.api_page(state.store.read(), query)

    @get("/{receipt_id:str}", sync_to_thread=True)
    def get_receipt(self, state: State, receipt_id: FromPath[str]) -> dict[str, Any]:
        return receipt_store.get(state.store.read(), receipt_id)
