"""The money pages: dashboard, wallet statements, receipts, receipt exports.

Handlers parse the query, call ``services.receipts`` / ``services.statements``
and render one template each. Reads run on a worker thread
(``sync_to_thread=True``; an export reads as its stream is pulled, which
Litestar does on a worker thread) so a page never stalls the gateway's event loop.
A bad filter value renders the page again with the message (400); an unknown
wallet or receipt renders a 404 page.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import urlencode

from litestar import MediaType, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Redirect, Stream, Template
from markupsafe import Markup

from localgate.core.receipts import STATUSES
from localgate.errors import BadRequest, LocalgateError, NotFound
from localgate.services import dashboard as figures
from localgate.services import exports, statements
from localgate.services import receipts as receipt_service
from localgate.services.receipts import PAGE_SIZE, ReceiptFilter, ReceiptQuery
from localgate.services.statements import StatementFilter
from localgate.services.svg import spend_chart
from localgate.web.api import SQLITE_MAX_INT, whole_number
from localgate.web.ui import form_data, page_guard, render

CHART_DAYS = 30


def link(path: str, params: dict[str, Any], **extra: Any) -> str:
    query = {k: v for k, v in {**params, **extra}.items() if v not in (None, "")}
    return f"{path}?{urlencode(query)}" if query else path


def not_found(request: Request[Any, Any, Any], exc: NotFound) -> Template:
    page = render(request, "error.html", title="Not found", message=exc.message)
    page.status_code = 404
    return page


def _int_param(value: str | None, name: str, *, high: int = SQLITE_MAX_INT) -> int | None:
    if value is None or value == "":
        return None
    number = whole_number(value, low=1, high=high)
    if number is None:
        raise BadRequest(f"'{name}' must be a ledger entry number", param=name)
    return number


# -- dashboard ------------------------------------------------------------------


@get("/", guards=[page_guard], sync_to_thread=True)
def dashboard(request: Request[Any, Any, Any], state: State) -> Template:
    conn = state.store.read()
    wallets = state.wallets.list()
    thresholds = {
        r["id"]: r["low_balance_micros"]
        for r in conn.execute("SELECT id, low_balance_micros FROM wallets")
    }
    models = figures.usable_models(state.gateway)
    spend = figures.spend(conn, days=CHART_DAYS)
    for w in wallets:
        w["threshold_micros"] = thresholds.get(w["id"])
        w["low"] = statements.low_balance(w, w["threshold_micros"])
        w["models"] = models.get(w["settlement"], [])
        w["ready"] = bool(w["models"]) and w["available_micros"] > 0 and not w["frozen"]
        w["spend_micros"] = spend.wallet_totals.get(w["id"], 0)
        w["chart"] = Markup(
            spend_chart(
                spend.days,
                spend.per_wallet_day.get(w["id"], [0] * len(spend.days)),
                w["currency"],
                label=f"{w['name']} spend per day",
                css_class=f"chart-{w['settlement']}",
            )
        )
    return render(
        request,
        "dashboard.html",
        title="Dashboard",
        wallets=wallets,
        currency_of={w["id"]: w["currency"] for w in wallets},
        spend=spend,
        keys=figures.key_names(conn),
        recent=receipt_service.recent(conn),
    )


# -- wallets ----------------------------------------------------------------------


@get("/wallets/{wallet_id:str}", guards=[page_guard], sync_to_thread=True)
def wallet_page(
    request: Request[Any, Any, Any], state: State, wallet_id: FromPath[str]
) -> Template:
    try:
        wallet = state.wallets.get(wallet_id)
    except NotFound as exc:
        return not_found(request, exc)
    conn = state.store.read()
    q = request.query_params
    error = None
    flt = StatementFilter()
    focus = None
    try:
        flt = StatementFilter.from_params(q)
        before = _int_param(q.get("before"), "before")
        after = _int_param(q.get("after"), "after")
        focus = _int_param(q.get("at"), "at", high=SQLITE_MAX_INT - 1)  # before = at + 1
        if focus is not None:
            before, after = focus + 1, None
        page = statements.statement(conn, wallet_id, flt, before=before, after=after)
    except LocalgateError as exc:
        error = exc.message
        page = statements.StatementPage([], None, None, 0)
    threshold = statements.wallet_settings(conn, wallet_id)["low_balance_micros"]
    params = flt.active()
    path = f"/wallets/{wallet_id}"
    response = render(
        request,
        "wallet.html",
        title=wallet["name"],
        wallet=wallet,
        threshold_micros=threshold,
        threshold_text=None if threshold is None else statements.amount_text(threshold),
        low=statements.low_balance(wallet, threshold),
        page=page,
        flt=flt,
        focus=focus,
        error=error,
        kinds=statements.KIND_CHOICES,
        notice=q.get("notice"),
        threshold_error=q.get("threshold_error"),
        newer_url=link(path, params, after=page.newer) if page.newer else None,
        older_url=link(path, params, before=page.older) if page.older else None,
        newest_url=link(path, params),
    )
    if error:
        response.status_code = 400
    return response


@post("/wallets/{wallet_id:str}/threshold", guards=[page_guard], media_type=MediaType.HTML)
async def set_threshold(
    request: Request[Any, Any, Any], state: State, wallet_id: FromPath[str]
) -> Any:
    """The low-balance warning level (form post, CSRF-checked); blank turns it off."""
    data = await form_data(request)
    path = f"/wallets/{wallet_id}"
    try:
        micros = statements.parse_threshold(data.get("amount"))
        await state.store.write(statements.set_threshold, wallet_id, micros)
    except NotFound as exc:
        return not_found(request, exc)
    except LocalgateError as exc:
        return Redirect(link(path, {"threshold_error": exc.message}), status_code=303)
    notice = "threshold-saved" if micros is not None else "threshold-off"
    return Redirect(link(path, {"notice": notice}), status_code=303)


# -- receipts ----------------------------------------------------------------------


@get("/receipts", guards=[page_guard], sync_to_thread=True, media_type=MediaType.HTML)
def receipts_page(request: Request[Any, Any, Any], state: State) -> Any:
    conn = state.store.read()
    q = request.query_params
    search = (q.get("q") or "").strip()
    error = None
    if search:
        row = conn.execute(
            "SELECT id FROM receipts WHERE id = ? UNION ALL "
            "SELECT id FROM receipts WHERE request_id = ? LIMIT 1",
            (search, search),
        ).fetchone()
        if row is not None:
            return Redirect(f"/receipts/{row[0]}", status_code=303)
        error = f"No receipt has the id or request id {search!r}."
    query = ReceiptQuery(ReceiptFilter())
    page = receipt_service.ReceiptPage([], None, None)
    try:
        query = replace(query, flt=ReceiptFilter.from_params(q))  # kept if a cursor is bad
        query = ReceiptQuery.from_params(q)
        if not error:
            page = receipt_service.page(
                conn, query.flt, before=query.before, after=query.after, limit=query.limit
            )
    except LocalgateError as exc:
        error = exc.message
    flt = query.flt
    params = flt.active()
    # Paging keeps a page size asked for in the address (?limit=).
    sized = {**params, "limit": query.limit} if query.limit != PAGE_SIZE else params
    response = render(
        request,
        "receipts.html",
        title="Receipts",
        flt=flt,
        params=params,
        page=page,
        error=error,
        search=search,
        choices=receipt_service.filter_choices(conn),
        keys=figures.key_names(conn),
        remove_links={name: link("/receipts", flt.without(name).active()) for name in params},
        newer_url=link("/receipts", sized, after=page.newer) if page.newer else None,
        older_url=link("/receipts", sized, before=page.older) if page.older else None,
        newest_url=link("/receipts", sized),
        csv_url=link("/receipts/export.csv", params),
        jsonl_url=link("/receipts/export.jsonl", params),
        paged=bool(query.before or query.after),
    )
    if error:
        response.status_code = 404 if search else 400
    return response


def _export(request: Request[Any, Any, Any], state: State, fmt: str) -> Stream:
    # No read here: the stream pulls each batch on a worker thread, so the
    # export handlers need no thread of their own (sync_to_thread=False).
    flt = ReceiptFilter.from_params(request.query_params)
    chunks = exports.export_chunks(state.store.read, flt, fmt)
    return Stream(
        (data for data, _ in chunks),
        media_type="text/csv; charset=utf-8" if fmt == "csv" else "application/x-ndjson",
        headers={
            "content-disposition": (f'attachment; filename="{exports.export_filename(fmt)}"'),
            "cache-control": "no-store",
            "x-content-type-options": "nosniff",
        },
    )


@get("/receipts/export.csv", guards=[page_guard], sync_to_thread=False)
def export_csv(request: Request[Any, Any, Any], state: State) -> Stream:
    """Every receipt of the current filter as CSV, streamed in batches."""
    return _export(request, state, "csv")


@get("/receipts/export.jsonl", guards=[page_guard], sync_to_thread=False)
def export_jsonl(request: Request[Any, Any, Any], state: State) -> Stream:
    """Every receipt of the current filter as JSON Lines (the API's receipt shape)."""
    return _export(request, state, "jsonl")


@get("/receipts/{receipt_id:str}", guards=[page_guard], sync_to_thread=True)
def receipt_page(
    request: Request[Any, Any, Any], state: State, receipt_id: FromPath[str]
) -> Template:
    conn = state.store.read()
    try:
        view = receipt_service.detail(conn, receipt_id)
    except NotFound as exc:
        return not_found(request, exc)
    gateway = state.gateway
    other = receipt_service.counterfactual(
        view, gateway.catalog, gateway.wallet_by_settlement, set(gateway.providers)
    )
    wallet = None
    if view["wallet"]:
        try:
            wallet = state.wallets.get(view["wallet"])
        except NotFound:
            wallet = None
    return render(
        request,
        "receipt.html",
        title=f"Receipt {receipt_id}",
        r=view,
        wallet=wallet,
        other=other,
        statuses=STATUSES,
    )


PAGE_HANDLERS = [
    dashboard,
    wallet_page,
    set_threshold,
    receipts_page,
    export_csv,
    export_jsonl,
    receipt_page,
]
