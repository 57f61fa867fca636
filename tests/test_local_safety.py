"""Integrity and local safety (issue 13): idempotency keys namespaced by entry kind,
secrets masked in every stored header, a data dir only its owner can read, the
login link printed once, sessions that end, strict Host ports, no 500 on /static.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from topup_helpers import USD, auth
from ui_helpers import BASE, chat, ui_client

from localgate import doctor
from localgate.cli import main
from localgate.config import load_settings
from localgate.core import ledger as core
from localgate.core.receipts import mask_secrets
from localgate.errors import ConfigError, Conflict
from localgate.store import Store
from localgate.store import ledger as ledger_store
from localgate.web.security import SESSION_COOKIE, HostCheck, sign_session

# -- idempotency keys are namespaced by entry kind ---------------------------------------


@pytest.fixture
def store(tmp_path):
    st = Store.open(tmp_path / "ledger.db", wallets=load_settings().wallets)
    yield st
    st.close()


def _post(store, draft):
    return store.write_sync(ledger_store.post_entry, draft)


def test_a_replayed_key_with_another_kind_amount_or_wallet_is_a_conflict(store):
    key = "topup:sandbox:sbx_1"
    first = _post(store, core.topup_entry("credit", "USD", 5 * USD, "sandbox", idempotency_key=key))
    assert (
        _post(store, core.topup_entry("credit", "USD", 5 * USD, "sandbox", idempotency_key=key)).id
        == first.id
    )
    for draft in (
        core.topup_entry("credit", "USD", 9 * USD, "sandbox", idempotency_key=key),
        core.topup_entry("routed", "CNY", 5 * USD, "sandbox", idempotency_key=key),
        core.adjustment_entry("credit", "USD", 5 * USD, "support", idempotency_key=key),
    ):
        with pytest.raises(Conflict, match="idempotency key"):
            _post(store, draft)
    assert ledger_store.wallet_balance(store.read(), "credit").balance == 5 * USD


def test_an_adjustment_cannot_take_a_key_in_the_top_up_namespace(store):
    draft = core.adjustment_entry("credit", "USD", USD, "x", idempotency_key="topup:sandbox:sbx_2")
    with pytest.raises(Conflict, match="topup"):
        _post(store, draft)
    # Its own keys are fine, with or without a namespace of its own.
    for key in ("support-42", "adjustment:support-43"):
        _post(store, core.adjustment_entry("credit", "USD", USD, "x", idempotency_key=key))
    assert ledger_store.wallet_balance(store.read(), "credit").balance == 2 * USD


async def test_the_adjustments_api_refuses_a_top_ups_key_and_the_top_up_still_credits(
    client, settings
):
    created = await client.post(
        "/api/topups", json={"wallet": "credit", "amount": "20"}, headers=auth(settings)
    )
    topup = created.json()
    for key in (f"topup:sandbox:{topup['reference']}", "refund:sandbox:x", "close:hd_1"):
        body = {"wallet": "credit", "amount": "1", "reason": "r", "idempotency_key": key}
        resp = await client.post("/api/adjustments", json=body, headers=auth(settings))
        assert resp.status_code == 400, resp.text
        assert resp.json()["error"]["code"] == "idempotency_key_reserved"
        headers = {**auth(settings), "Idempotency-Key": key}
        body.pop("idempotency_key")
        resp = await client.post("/api/adjustments", json=body, headers=headers)
        assert resp.status_code == 400, resp.text
    paid = await client.post(
        f"/sandbox/checkout/{topup['id']}",
        data={"action": "pay"},
        headers=auth(settings),
        follow_redirects=False,
    )
    assert paid.status_code == 303
    await client.get(paid.headers["location"], headers=auth(settings))
    done = (await client.get(f"/api/topups/{topup['id']}", headers=auth(settings))).json()
    entry = (
        await client.get(f"/api/ledger/entries/{done['ledger_entry_id']}", headers=auth(settings))
    ).json()
    assert done["status"] == "completed" and entry["kind"] == "topup"
    assert entry["topup_id"] == topup["id"] and entry["amount_micros"] == 20 * USD


# -- secrets in stored headers are masked -----------------------------------------------


def test_mask_secrets_hides_what_looks_like_the_admin_token(tmp_path):
    token = load_settings(data_dir=tmp_path / "d").admin_token
    assert token not in mask_secrets(f"id {token} end")
    assert token not in mask_secrets(f"{token}")
    # Ids, hashes and ordinary words are left alone.
    for text in ("rc_0123456789abcdefghjk", "a" * 64, "req_8f3a", "curl/8.5 (x86_64-pc-linux)"):
        assert mask_secrets(text) == text


async def test_a_key_sent_as_request_id_is_masked_in_the_receipt_api_page_and_export(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("credit", "2")
        key = (await ui.api("POST", "/api/keys", json={"label": "t"}))["key"]
        token = ui.settings.admin_token
        resp = await ui.client.post(
            "/v1/chat/completions",
            json=chat(),
            headers={
                "authorization": f"Bearer {key}",
                "x-request-id": key,
                "user-agent": f"tool/1.0 {token}",
            },
        )
        assert resp.status_code == 200, resp.text
        rid = resp.headers["x-localgate-receipt"]
        stored = ui.state.store.read().execute(
            "SELECT request_id, user_agent FROM receipts WHERE id = ?", (rid,)
        )
        assert all(key not in v and token not in v for v in stored.fetchone())
        shown = [
            (await ui.client.get(f"/api/receipts/{rid}", headers=ui.admin_headers)).text,
            (await ui.get(f"/receipts/{rid}")).text,
            (await ui.get("/receipts/export.csv")).text,
            (await ui.get("/receipts/export.jsonl")).text,
        ]
        for text in shown:
            assert rid in text
            assert key not in text and token not in text
            assert key[3:20] not in text  # not even a piece of the secret


# -- a data dir only its owner can read ----------------------------------------------------


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_data_dir_and_every_file_in_it_are_private(tmp_path, umask_022):
    settings = load_settings(data_dir=tmp_path / "new")
    st = Store.open(settings.db_path, wallets=settings.wallets)
    try:
        st.write_sync(lambda c: c.execute("UPDATE meta SET value = value WHERE 0"))
        files = sorted(p.name for p in settings.data_dir.iterdir())
        assert {"admin-token", "localgate.db", "localgate.db-wal", "localgate.db-shm"} <= set(files)
        assert "localgate.db-keys" in files
        assert _mode(settings.data_dir) == 0o700
        for path in settings.data_dir.iterdir():
            assert _mode(path) == 0o600, path.name
    finally:
        st.close()


def test_loose_files_are_reported_by_doctor_and_tightened_at_start_up(tmp_path, umask_022):
    ddir = tmp_path / "old"
    settings = load_settings(data_dir=ddir)
    Store.open(settings.db_path, wallets=settings.wallets).close()
    os.chmod(ddir, 0o755)
    for name in ("localgate.db", "localgate.db-keys"):
        os.chmod(ddir / name, 0o644)
    (ddir / "config.toml").write_text("")
    checks = {c.name: c for c in doctor.run(str(ddir)).checks}
    assert checks["permissions"].status == doctor.WARN
    assert "localgate.db 0644" in checks["permissions"].detail
    assert "config.toml 0644" in checks["permissions"].detail
    assert "chmod" in checks["permissions"].detail

    from localgate.config_files import tighten_data_dir

    tightened = tighten_data_dir(ddir)
    assert {p.name for p in tightened} >= {"localgate.db", "localgate.db-keys", "config.toml"}
    assert _mode(ddir) == 0o700
    assert all(_mode(p) == 0o600 for p in ddir.iterdir())
    assert {c.name: c for c in doctor.run(str(ddir)).checks}["permissions"].status == doctor.OK


def test_an_admin_token_file_others_can_read_is_refused_like_secrets_toml(tmp_path):
    ddir = tmp_path / "d"
    load_settings(data_dir=ddir)
    os.chmod(ddir / "admin-token", 0o644)
    with pytest.raises(ConfigError) as refused:
        load_settings(data_dir=ddir)
    message = str(refused.value)
    assert str(ddir / "admin-token") in message and "chmod 600" in message
    assert "\n" not in message
    # With the token from the environment the file is not read, so not refused.
    assert load_settings(data_dir=ddir, env={"LOCALGATE_ADMIN_TOKEN": "t" * 20}).admin_token


# -- the login link: printed once, or on request, never into a log file --------------------


def _serve_until_started(data: Path, out: Path) -> str:
    """Start `localgate serve` with stdout going to the file ``out``; its output once up."""
    env = {**os.environ, "LOCALGATE_DATA_DIR": str(data)}
    with out.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "localgate", "serve", "--port", "0", "--no-browser"],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        deadline = time.monotonic() + 30
        while "Base URL" not in out.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out.read_text()
            time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(30)
    return out.read_text()


def test_the_login_link_never_goes_into_a_log_file_and_localgate_login_prints_it(tmp_path):
    data = tmp_path / "d"
    first = _serve_until_started(data, tmp_path / "serve.log")
    token = (data / "admin-token").read_text().strip()
    assert "Base URL" in first and token not in first
    assert "localgate login" in first
    printed = CliRunner().invoke(main, ["--data-dir", str(data), "login"])
    assert printed.exit_code == 0, printed.output
    assert re.search(rf"http://127\.0\.0\.1:\d+/login\?token={re.escape(token)}", printed.output)


def test_serve_prints_the_link_only_when_the_token_is_new(tmp_path):
    from localgate.cli.serve import banner

    settings = load_settings(data_dir=tmp_path / "d")
    link = f"/login?token={settings.admin_token}"
    assert settings.admin_token_created
    assert any(link in line for line in banner(settings, to_terminal=True))
    assert not any(settings.admin_token in line for line in banner(settings, to_terminal=False))
    again = load_settings(data_dir=tmp_path / "d")
    assert not again.admin_token_created
    lines = banner(again, to_terminal=True)
    assert not any(again.admin_token in line for line in lines)
    assert any("localgate login" in line for line in lines)


# -- sessions: idle timeout, logout, a new session at each login -------------------------


IDLE = "session_idle_minutes = 30\n"


async def _status(ui, cookie: str) -> int:
    """What /receipts answers to a browser holding only ``cookie``."""
    ui.client.cookies.clear()
    ui.client.cookies.set(SESSION_COOKIE, cookie)
    return (await ui.get("/receipts", follow_redirects=False)).status_code


async def test_a_session_idle_longer_than_the_timeout_ends(tmp_path):
    async with ui_client(tmp_path, IDLE, login=False) as ui:
        token = ui.settings.admin_token
        assert ui.settings.get("server.session_idle_minutes") == 30
        assert await _status(ui, sign_session(token, stamp=int(time.time()) - 29 * 60)) == 200
        assert await _status(ui, sign_session(token, stamp=int(time.time()) - 31 * 60)) in (
            302,
            303,
        )


async def test_a_used_session_is_renewed_so_activity_keeps_it_open(tmp_path):
    async with ui_client(tmp_path, IDLE, login=False) as ui:
        old = sign_session(ui.settings.admin_token, stamp=int(time.time()) - 20 * 60)
        ui.client.cookies.set(SESSION_COOKIE, old)
        resp = await ui.get("/receipts", follow_redirects=False)
        assert resp.status_code == 200
        renewed = resp.cookies.get(SESSION_COOKIE)
        assert renewed and renewed != old
        assert renewed.split(".")[0] == old.split(".")[0]  # the same session, a later stamp
        assert int(renewed.split(".")[1]) >= int(time.time()) - 5


async def test_logout_needs_the_csrf_token_and_ends_the_session(tmp_path):
    async with ui_client(tmp_path) as ui:
        page = await ui.get("/receipts")
        assert 'action="/logout"' in page.text
        cookie = ui.client.cookies.get(SESSION_COOKIE)
        refused = await ui.client.post("/logout", data={}, headers={"origin": BASE})
        assert refused.status_code == 403
        assert await _status(ui, cookie) == 200
        out = await ui.post("/logout", follow_redirects=False)
        assert out.status_code == 303
        assert await _status(ui, cookie) in (302, 303), "the old cookie must not work any more"


async def test_logging_in_again_starts_a_new_session_and_ends_the_old_one(tmp_path):
    async with ui_client(tmp_path) as ui:
        before = ui.client.cookies.get(SESSION_COOKIE)
        await ui.login()
        after = ui.client.cookies.get(SESSION_COOKIE)
        assert after and after.split(".")[0] != before.split(".")[0]
        assert await _status(ui, after) == 200
        assert await _status(ui, before) in (302, 303)


def test_the_idle_timeout_setting_must_be_positive(tmp_path):
    with pytest.raises(ConfigError, match="session_idle_minutes"):
        load_settings(data_dir=tmp_path / "d", overrides={"server.session_idle_minutes": 0})


# -- Host ports must be ports --------------------------------------------------------------


async def _host_status(host: str) -> int:
    sent: list[dict] = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def send(message):
        sent.append(message)

    check = HostCheck(app, frozenset({"127.0.0.1", "localhost", "::1"}))
    scope = {"type": "http", "headers": [(b"host", host.encode())]}
    await check(scope, None, send)
    return sent[0]["status"]


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:4311@evil.example",
        "localhost:evil.example",
        "localhost:",
        "localhost:0",
        "localhost:65536",
        "localhost:+80",
        "[::1]:80x",
        "[::1]evil",
        "localhost:４３１１",
    ],
)
async def test_a_host_whose_port_is_not_a_port_is_refused(host):
    assert await _host_status(host) == 403


@pytest.mark.parametrize("host", ["127.0.0.1:4311", "localhost", "[::1]:1", "localhost:65535"])
async def test_loopback_hosts_with_real_ports_are_accepted(host):
    assert await _host_status(host) == 200


# -- /static never answers 500 --------------------------------------------------------------


async def test_a_null_byte_in_a_static_path_is_404(client):
    for path in ("/static/%00", "/static/css/%00app.css", "/static/css/app.css%00"):
        resp = await client.get(path)
        assert resp.status_code == 404, (path, resp.status_code)
    assert (await client.get("/static/css/app.css")).status_code == 200
