"""The admin JSON API (``/api``): wallets, ledger, adjustments, verification.

Behind the admin guard: ``Authorization: Bearer <admin token>`` or the UI session.
Every handler that reads SQLite runs on a worker thread (``sync_to_thread=True``),
so a slow read never stalls the gateway's event loop.
"""

from __future__ import annotations

import json
import re
from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath

from localgate.errors import BadRequest, NotFound
from localgate.web.security import admin_guard


async def json_object(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 that says what is wrong."""
    return decode_json_object(await request.body())


def decode_json_object(raw: bytes) -> dict[str, Any]:
    """Bytes -> a JSON object, or a BadRequest naming what is wrong (shared by /api and /v1).

    Besides malformed JSON it refuses what Python's decoder lets through but no
    JSON text may carry: ``NaN`` / ``Infinity`` and lone UTF-16 surrogates
    (``"\\ud800"``), which cannot be stored, hashed or sent back as UTF-8.
    """
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except RecursionError:
        raise BadRequest("the request body is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    # The walk only runs when a surrogate could be there: an escape of one, or
    # bytes beyond ASCII (the decoder passes UTF-8-encoded surrogates through).
    if not raw.isascii() or _SURROGATE_ESCAPE.search(raw):
        try:
            where = _surrogate_at(data, "")
        except RecursionError:
            raise BadRequest("the request body is nested too deeply") from None
        if where is not None:
            raise BadRequest(
                f"field '{where}' contains a lone UTF-16 surrogate (like \\ud800), which is "
                "not text; send valid Unicode",
                param=where,
            )
    return data


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")


def _surrogate_at(value: Any, path: str) -> str | None:
    """The path of the first string (or object key) holding a lone surrogate, or None."""
    if isinstance(value, str):
        return None if value.isascii() or not _SURROGATE.search(value) else path
    if isinstance(value, dict):
        for key, item in value.items():
            inner = f"{path}.{key}" if path else str(key)
            if not key.isascii() and _SURROGATE.search(key):
                return path or "(a key)"
            found = _surrogate_at(item, inner)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _surrogate_at(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


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


# SQLite's integers: an id, cursor or limit beyond them cannot be stored or looked up.
SQLITE_MAX_INT = 2**63 - 1
SQLITE_MIN_INT = -(2**63)
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,19}", re.ASCII)


def whole_number(
    value: str, *, low: int = SQLITE_MIN_INT, high: int = SQLITE_MAX_INT
) -> int | None:
    """``value`` as an int in ``low..high``, or None: ASCII digits only (``int()``
    also takes "1_000", fullwidth digits and any number of them)."""
    text = value.strip()
    if not _WHOLE_NUMBER.fullmatch(text):
        return None
    number = int(text)
    return number if low <= number <= high else None


def int_param(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    number = whole_number(value)
    if number is None:
        raise BadRequest(f"query parameter '{name}' must be a whole number", param=name)
    return number


def entry_cursor(value: str | None) -> str | None:
    """A ledger ``cursor`` checked to be an entry id SQLite can compare against."""
    if value is None or value == "":
        return None
    if whole_number(value, low=1) is None:
        raise BadRequest(
            f"bad cursor {value[:40]!r}: pass the 'next' value of the previous page",
            param="cursor",
            code="invalid_cursor",
        )
    return value


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
            cursor=entry_cursor(q.get("cursor")),
            limit=int_param(q.get("limit"), "limit", 50),
            kind=q.get("kind") or None,
        )

    @get("/ledger/entries/{entry_id:int}", sync_to_thread=True)
    def entry(self, state: State, entry_id: FromPath[int]) -> dict[str, Any]:
        if not 1 <= entry_id <= SQLITE_MAX_INT:  # no such entry can exist
            raise NotFound(f"no ledger entry {entry_id}")
        return state.wallets.entry(entry_id)

    @post("/adjustments", status_code=201)
    async def adjust(self, request: Request[Any, Any, Any], state: State) -> dict[str, Any]:
        from localgate.store.ledger import key_namespace_owner

        data = await json_object(request)
        amount = field(data, "amount", (str, int))
        key = field(data, "idempotency_key", str, required=False) or request.headers.get(
            "idempotency-key"
        )
        # Keys such as topup:<provider>:<reference> are localgate's own: an adjustment
        # under one would pass for that top-up's credit.
        taken = key_namespace_owner("adjustment", key) if key else None
        if taken is not None:
            raise BadRequest(
                f"idempotency key {key!r} is in the {taken!r} namespace, which localgate "
                "keeps for its own entries; choose a key without that prefix",
                code="idempotency_key_reserved",
                param="idempotency_key",
            )
        return await state.wallets.adjust(
            field(data, "wallet", str),
            str(amount),
            field(data, "reason", str),
            idempotency_key=key,
        )

    @get("/ledger/verify", sync_to_thread=True)
    def verify(self, state: State) -> dict[str, Any]:
        return state.wallets.verify().as_dict()
