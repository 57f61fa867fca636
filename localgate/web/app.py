"""The Litestar application factory. No globals: everything lives on ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

from localgate import __version__, resources
from localgate.config import Settings
from localgate.services.gateway_setup import assemble, make_http_client
from localgate.services.wallets import Wallets
from localgate.store import Store, recover
from localgate.web.api import WalletsAPI
from localgate.web.errors import EXCEPTION_HANDLERS
from localgate.web.gateway_api import KeysAPI, ReceiptsAPI
from localgate.web.openai_api import openai_app
from localgate.web.security import (
    SESSION_COOKIE,
    HostCheck,
    allowed_host_names,
    sign_session,
    valid_admin_token,
)
from localgate.web.ui import UI_HANDLERS, LoginRequired, login_redirect, template_config


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok", "version": __version__}


@get("/login", sync_to_thread=False)
def login(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    token = request.query_params.get("token")
    if not valid_admin_token(state.settings.admin_token, token):
        return Response(
            "This login link is not valid. Use the link that 'localgate serve' printed, or "
            "the token in <data dir>/admin-token: /login?token=...",
            status_code=401,
            media_type=MediaType.TEXT,
        )
    response: Response[Any] = Redirect("/")
    response.set_cookie(
        SESSION_COOKIE,
        sign_session(state.settings.admin_token),
        httponly=True,
        samesite="strict",
        path="/",
    )
    return response


def create_app(settings: Settings, *, store: Store | None = None) -> Litestar:
    """Build the app. Pass ``store`` to share one (tests, CLI); else it is opened
    from ``settings.db_path`` at start-up and closed at shutdown."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        own = store is None
        st = store or Store.open(settings.db_path, wallets=settings.wallets)
        if own:
            recover(st)
        app.state.store = st
        app.state.wallets = Wallets(st)
        client = make_http_client()
        assembled = assemble(settings, st, client)
        app.state.gateway = assembled.gateway
        app.state.channel_notes = assembled.channel_notes
        try:
            yield
        finally:
            await client.aclose()
            if own:
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
            create_static_files_router(path="/static", directories=[resources.static_dir()]),
        ],
        lifespan=[lifespan],
        state=State({"settings": settings}),
        exception_handlers={**EXCEPTION_HANDLERS, LoginRequired: login_redirect},
        template_config=template_config(),
        middleware=[DefineMiddleware(HostCheck, allowed=allowed)],
        request_max_body_size=settings.get("server.max_body_bytes"),
        openapi_config=None,
        debug=False,
    )
