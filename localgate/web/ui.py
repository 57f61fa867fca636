"""The wallet UI's base: templates, the login wall, CSRF-checked forms.

Pages are server-rendered Jinja and work without JavaScript. Every page needs
the session cookie (set by the login link ``serve`` prints on the first run and
``localgate login`` prints on request); without it the browser is sent to
``/login/help``, which explains how to log in. Form posts need the page's CSRF
token and a same-origin Origin (``security.check_csrf``); so does ``/logout``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from litestar import Request, Response, get, post
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Template
from litestar.template.config import TemplateConfig

from localgate import __version__, resources
from localgate.errors import LoginRequired
from localgate.money import format_money
from localgate.web.security import (
    CSRF_FIELD,
    SESSION_COOKIE,
    check_csrf,
    csrf_token,
    end_session,
    session_value,
)

NAV = (
    ("/", "Dashboard"),
    ("/billing", "Billing"),
    ("/keys", "Keys"),
    ("/models", "Models"),
    ("/playground", "Playground"),
    ("/receipts", "Receipts"),
    ("/settings", "Settings"),
)


def page_guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    if session_value(connection) is None:
        raise LoginRequired("log in with the link that 'localgate login' prints")


def login_redirect(request: Request[Any, Any, Any], exc: LoginRequired) -> Response[Any]:
    return Redirect(f"/login/help?next={quote(request.url.path)}")


def when(stamp: str | None) -> str:
    """A stored ISO time for people: ``2026-11-27 05:50:12`` (UTC, to the second)."""
    return stamp[:19].replace("T", " ") if stamp else "—"


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    def setup(engine: JinjaTemplateEngine) -> None:
        env = engine.engine
        env.filters["money"] = lambda micros, cur: format_money(int(micros or 0), cur or "USD")
        env.filters["when"] = when
        env.filters["num"] = lambda n: f"{int(n or 0):,}"
        env.globals["version"] = __version__
        env.globals["nav"] = NAV

    return TemplateConfig(
        directory=resources.templates_dir(), engine=JinjaTemplateEngine, engine_callback=setup
    )


def render(request: Request[Any, Any, Any], name: str, **context: Any) -> Template:
    """A page with what every page needs: CSRF token, current path, sandbox flag."""
    state = request.app.state
    session = session_value(request) or ""
    context.setdefault("title", "localgate")
    return Template(
        template_name=name,
        context={
            "request_path": request.url.path,
            "csrf_field": CSRF_FIELD,
            "csrf_token": csrf_token(state.settings.admin_token, session) if session else "",
            "sandbox": state.settings.get("payments.provider") == "sandbox",
            "base_url": state.settings.base_url,
            **context,
        },
    )


async def form_data(request: Request[Any, Any, Any]) -> dict[str, str]:
    """A posted form, CSRF-checked; repeated fields keep their last value."""
    session = session_value(request)
    if session is None:
        raise LoginRequired("log in first")
    form = await request.form()
    data = {k: v for k, v in form.items() if isinstance(v, str)}
    check_csrf(request, session, data.get(CSRF_FIELD) or request.headers.get("x-csrf-token"))
    return data


@get("/login/help", sync_to_thread=False)
def login_help(request: Request[Any, Any, Any]) -> Template:
    return render(
        request,
        "login_help.html",
        title="Log in to localgate",
        next=request.query_params.get("next", "/"),
    )


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    """End this browser's session for good (a copy of its cookie stops working too)."""
    await form_data(request)  # the session, its CSRF token and a same-origin Origin
    session = session_value(request)
    if session is not None:
        end_session(request.app.state, session)
    response: Response[Any] = Redirect("/login/help", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


UI_HANDLERS = [login_help, logout]  # the dashboard lives in web/pages.py
