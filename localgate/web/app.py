"""The Litestar application factory. No globals: everything lives on ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, MediaType, Request, Response, Router, get
from litestar.datastructures import State
from litestar.logging.config import LoggingConfig
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from localgate import __version__, resources
from localgate.config import Settings
from localgate.errors import LoginRequired, NotFound
from localgate.services import topups as topup_service
from localgate.services.gateway_setup import assemble, make_http_client
from localgate.services.wallets import Wallets
from localgate.store import Store
from localgate.web.api import WalletsAPI
from localgate.web.billing import BILLING_HANDLERS
from localgate.web.errors import EXCEPTION_HANDLERS, error_response
from localgate.web.gateway_api import KeysAPI, ReceiptsAPI
from localgate.web.openai_api import openai_app
from localgate.web.pages import PAGE_HANDLERS
from localgate.web.pages_keys import KEY_HANDLERS
from localgate.web.pages_playground import PLAYGROUND_HANDLERS
from localgate.web.pages_settings import SETTINGS_HANDLERS
from localgate.web.security import (
    SESSION_COOKIE,
    HostCheck,
    admin_guard,
    allowed_host_names,
    end_session,
    renew_session,
    session_value,
    sign_session,
    valid_admin_token,
)
from localgate.web.ui import UI_HANDLERS, login_redirect, template_config


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@get("/login", sync_to_thread=False)
def login(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    token = request.query_params.get("token")
    if not valid_admin_token(state.settings.admin_token, token):
        return Response(
            "This login link is not valid. Run 'localgate login' for the link, or use "
            "the token in <data dir>/admin-token: /login?token=...",
            status_code=401,
            media_type=MediaType.TEXT,
        )
    # A new session id at every login; the one the browser had ends here.
    previous = session_value(request)
    if previous is not None:
        end_session(state, previous)
    response: Response[Any] = Redirect("/")
    response.set_cookie(
        SESSION_COOKIE,
        sign_session(state.settings.admin_token),
        httponly=True,
        samesite="strict",
        path="/",
    )
    return response


def static_not_found(request: Request[Any, Any, Any], exc: ValueError) -> Response[Any]:
    """A static path the file system cannot even look up (an embedded NUL byte)
    names no file: 404, as for any other missing one."""
    return error_response(request.url.path, NotFound(f"no static file {request.url.path!r}"))


def create_app(settings: Settings, *, store: Store | None = None) -> Litestar:
    """Build the app. Pass ``store`` to share one (tests, CLI); else it is opened
    from ``settings.db_path`` at start-up and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = store is None
        st = store or Store.open(settings.db_path, wallets=settings.wallets)
        if own:
            st.recover()
        app.state.store = st
        app.state.wallets = Wallets(st)
        client = make_http_client()
        app.state.http_client = client  # the Settings page builds providers with it
        assembled = assemble(settings, st, client)
        app.state.gateway = assembled.gateway
        app.state.channel_notes = assembled.channel_notes
        app.state.topups = topup_service.build(settings, st, client)
        await app.state.topups.start()  # start-up catch-up, then the pending-top-up sync loop
        try:
            yield
        finally:
            await app.state.topups.stop()
            await client.aclose()
            if own:
                # The server has stopped every request by now (web/server.py); any
                # hold still open belongs to one it cut short: release it first.
                await st.release_in_flight()
                st.close()

    allowed = allowed_host_names(settings.get("server.allowed_hosts"), settings.host)
    return Litestar(
        route_handlers=[
            health,
            login,
            WalletsAPI,
            KeysAPI,
            ReceiptsAPI,
            openai_app,
            *UI_HANDLERS,
            *PAGE_HANDLERS,
            *KEY_HANDLERS,
            *PLAYGROUND_HANDLERS,
            *SETTINGS_HANDLERS,
            *BILLING_HANDLERS,
            create_static_files_router(
                path="/static",
                directories=[resources.static_dir()],
                exception_handlers={ValueError: static_not_found},
            ),
        ],
        lifespan=[lifespan],
        state=State({"settings": settings, "ended_sessions": {}}),
        before_send=[renew_session],
        exception_handlers={**EXCEPTION_HANDLERS, LoginRequired: login_redirect},
        template_config=template_config(),
        middleware=[DefineMiddleware(HostCheck, allowed=allowed)],
        request_max_body_size=settings.get("server.max_body_bytes"),
        # The schema of /api (and, for now, the pages), for schemathesis and API clients:
        # GET /api/openapi.json, behind the same admin guard as the API it describes.
        openapi_config=OpenAPIConfig(
            title="localgate admin API",
            version=__version__,
            render_plugins=[JsonRenderPlugin(path="/")],
            openapi_router=Router(
                "/api/openapi.json",
                route_handlers=[],
                guards=[admin_guard],
                include_in_schema=False,
            ),
        ),
        # WARNING and up only: a log line per request (httpx logs each upstream
        # call at INFO) costs more than the rest of the request's bookkeeping.
        logging_config=LoggingConfig(
            root={"level": "WARNING", "handlers": ["queue_listener"]}, log_exceptions="never"
        ),
        debug=False,
    )
