"""UI page: settings (/settings) — channels and their keys, payments, the hosted
account, the data dir.

Channels can be added, tested and given a key here (``services.settings``
writes channels.toml and the 0600 secrets.toml; config.toml is never
rewritten). A saved key is never shown back, not even in part. A change
reaches the running gateway through its ``reconfigure`` alone (see
:func:`publisher`). The other settings are shown with where they come from and
how to change them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Redirect, Template

from localgate import __version__
from localgate.catalog_data import bundled_catalog_version
from localgate.config import Settings
from localgate.errors import LocalgateError
from localgate.payments import PROVIDERS as PAYMENT_KINDS
from localgate.payments import payment_kind
from localgate.providers import provider_class
from localgate.services.settings import (
    SettingsService,
    apply_settings,
    configurable_kinds,
    test_connection,
)
from localgate.web.pages_keys import page
from localgate.web.ui import form_data, page_guard

STATUS_CLASS = {"ok": "ok", "warn": "paused", "fail": "bad"}  # the page's status colours
DONE = {
    "added": "Channel added.",
    "key_saved": "Key saved to secrets.toml (mode 0600). It will not be shown again.",
    "key_cleared": "Saved key removed.",
    "removed": "Channel removed.",
}


def service(state: State) -> SettingsService:
    """The app's one settings service: its lock orders every change, from the files
    to the gateway, so it is made once and kept."""
    svc = getattr(state, "settings_service", None)
    if svc is None:
        svc = SettingsService(state.settings, publisher(state))
        state.settings_service = svc
    return svc


def publisher(state: State) -> Callable[[Settings], Awaitable[None]]:
    """What the service calls after each change: the gateway is reconfigured first,
    then the page's own view (settings, channel notes) follows."""

    async def publish(settings: Settings) -> None:
        notes = await apply_settings(state.gateway, settings, state.http_client)
        state.settings = settings
        state.channel_notes = notes

    return publish


def channel_rows(state: State) -> list[dict[str, Any]]:
    view = state.gateway.serving  # one configuration for the whole table
    routed: dict[str, int] = {}
    for model in view.catalog.models():
        for channel_id in {r.channel for r in model.routes}:
            routed[channel_id] = routed.get(channel_id, 0) + 1
    rows = []
    for c in view.settings.channels:
        rows.append(
            {
                "id": c.id,
                "kind": c.kind,
                "base_url": c.base_url,
                "settlement": c.settlement,
                "source": c.source,
                "key_set": bool(c.api_key),
                "key_source": c.key_source,
                "key_env": c.api_key_env,
                "needs_key": not provider_class(c.kind).offline,
                "ready": c.id in view.providers,
                "note": state.channel_notes.get(c.id, ""),
                "models": routed.get(c.id, 0),
            }
        )
    return rows


def payments_info(settings: Settings) -> dict[str, Any]:
    """The configured payment provider and what the registry's check says of it
    (the line `localgate doctor` prints); the providers there are, for the hint."""
    # The config was checked at start-up: the provider is a registered one.
    status, detail = payment_kind(settings.get("payments.provider")).check(settings)
    return {
        "provider": settings.get("payments.provider"),
        "status_class": STATUS_CLASS[status],
        "status_word": status,
        "detail": detail,
        "kinds": list(PAYMENT_KINDS),
    }


def file_info(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"path": str(path), "exists": False}
    mode = path.stat().st_mode & 0o777
    return {"path": str(path), "exists": True, "mode": f"{mode:04o}", "private": not mode & 0o077}


def settings_page(
    request: Request[Any, Any, Any],
    state: State,
    *,
    test: dict[str, Any] | None = None,
    error: str | None = None,
    form: dict[str, str] | None = None,
    status: int = 200,
) -> Template:
    s = state.settings
    token_env = s.get("hosted.token_env")
    done = request.query_params.get("done")
    return page(
        request,
        "settings.html",
        status=status,
        title="Settings",
        channels=channel_rows(state),
        kinds=configurable_kinds(),
        test=test,
        error=error,
        form=form or {},
        done=DONE.get(done or ""),
        payments=payments_info(s),
        hosted={
            "base_url": s.get("hosted.base_url"),
            "token_env": token_env,
            "token_set": bool(s.secret(token_env)),
            "catalog_version": bundled_catalog_version(),
            "catalog_models": len(state.gateway.catalog),
        },
        files={
            "data_dir": str(s.data_dir),
            "db": file_info(s.db_path),
            "config": file_info(s.config_path) if s.config_path else None,
            "config_default": str(s.data_dir / "config.toml"),
            "channels": file_info(s.channels_path),
            "secrets": file_info(s.secrets_path),
            "admin_token": file_info(s.data_dir / "admin-token"),
            "env_admin_token": "LOCALGATE_ADMIN_TOKEN" in s.environ,
        },
        version=__version__,
    )


@get("/settings", guards=[page_guard], sync_to_thread=False)
def settings_index(request: Request[Any, Any, Any], state: State) -> Template:
    return settings_page(request, state)


@post("/settings/channels", guards=[page_guard], status_code=200)
async def channel_add(request: Request[Any, Any, Any], state: State) -> Response[Any]:
    data = await form_data(request)
    try:
        await service(state).add_channel(data)
    except LocalgateError as exc:
        data.pop("api_key", None)  # never echo a key back into the page
        return settings_page(request, state, error=exc.message, form=data, status=400)
    return Redirect("/settings?done=added#channels", status_code=303)


@post("/settings/channels/{channel_id:str}/{action:str}", guards=[page_guard], status_code=200)
async def channel_action(
    request: Request[Any, Any, Any], state: State, channel_id: FromPath[str], action: FromPath[str]
) -> Response[Any]:
    data = await form_data(request)
    svc = service(state)
    try:
        if action == "test":
            result = await test_connection(svc.channel(channel_id))
            return settings_page(request, state, test={"channel": channel_id, **result})
        if action == "key":
            await svc.set_key(channel_id, data.get("api_key", ""))
            done = "key_saved"
        elif action == "clear-key":
            await svc.clear_key(channel_id)
            done = "key_cleared"
        elif action == "remove":
            await svc.remove_channel(channel_id)
            done = "removed"
        else:
            return settings_page(request, state, error=f"unknown action {action!r}", status=404)
    except LocalgateError as exc:
        return settings_page(request, state, error=exc.message, status=exc.http_status)
    return Redirect(f"/settings?done={done}#channels", status_code=303)


SETTINGS_HANDLERS = [settings_index, channel_add, channel_action]
