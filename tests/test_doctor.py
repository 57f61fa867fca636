"""`localgate doctor`: each check finds what it should, and the exit code follows."""

from __future__ import annotations

import json
import socket
import sqlite3
from datetime import date

import httpx
import pytest
from click.testing import CliRunner

from localgate import doctor
from localgate.cli import main
from localgate.config import load_settings
from localgate.store import Store
from localgate.store import ledger as ledger_store
from tests.upstream import FakeUpstream


def by_name(report: doctor.Report) -> dict[str, doctor.Check]:
    return {c.name: c for c in report.checks}


def write_config(data_dir, text: str) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "config.toml").write_text(text)


def open_store(data_dir) -> Store:
    settings = load_settings(data_dir=data_dir)
    return Store.open(settings.db_path, wallets=settings.wallets)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fresh_install_passes(_tmp_home):
    report = doctor.run()
    checks = by_name(report)
    assert report.ok and report.exit_code() == 0
    assert all(c.status == doctor.OK for c in report.checks), report.checks
    assert "no database yet" in checks["database"].detail
    assert "offline default" in checks["config"].detail
    assert "built-in demo answered offline" in checks["channel demo"].detail
    assert checks["payments"].detail.startswith("sandbox")
    assert "tokenizer ok" in checks["resources"].detail
    assert "bundled-" in checks["catalog"].detail


def test_database_and_ledger_are_verified(_tmp_home):
    store = open_store(_tmp_home)
    try:
        from localgate.services.wallets import Wallets

        Wallets(store).adjust_sync("routed", "5", "test")
    finally:
        store.close()
    checks = by_name(doctor.run())
    assert checks["database"].status == doctor.OK
    assert "schema current" in checks["database"].detail
    assert checks["ledger"].status == doctor.OK
    assert checks["ledger"].detail.startswith("1 entries")
    assert checks["holds"].detail == "none open"


def test_a_tampered_ledger_fails(_tmp_home):
    store = open_store(_tmp_home)
    try:
        from localgate.services.wallets import Wallets

        Wallets(store).adjust_sync("routed", "5", "test")
    finally:
        store.close()
    with sqlite3.connect(_tmp_home / "localgate.db") as conn:
        conn.execute("DROP TRIGGER entries_no_update")
        conn.execute("UPDATE entries SET memo = 'edited' WHERE id = 1")
    report = doctor.run()
    ledger = by_name(report)["ledger"]
    assert ledger.status == doctor.FAIL
    assert "hash mismatch" in ledger.detail
    assert report.exit_code() == 1


def test_a_damaged_database_fails(_tmp_home):
    open_store(_tmp_home).close()
    db = _tmp_home / "localgate.db"
    with sqlite3.connect(db) as conn:  # fold the WAL in, so the damage is in the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        (root,) = conn.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'wallets'"
        ).fetchone()
    conn.close()
    raw = bytearray(db.read_bytes())
    start = (root - 1) * page_size
    raw[start : start + 64] = b"\xff" * 64  # scribble over the wallets table's b-tree page
    db.write_bytes(bytes(raw))
    report = doctor.run()
    assert by_name(report)["database"].status == doctor.FAIL
    assert report.exit_code() == 1


def test_open_holds_without_a_server_warn(_tmp_home):
    store = open_store(_tmp_home)
    try:
        from localgate.services.wallets import Wallets

        Wallets(store).adjust_sync("routed", "5", "test")
        store.write_sync(
            lambda conn: ledger_store.place_hold(conn, "routed", 1000, owner="gone-process")
        )
    finally:
        store.close()
    report = doctor.run()
    holds = by_name(report)["holds"]
    assert holds.status == doctor.WARN
    assert "released at the next start" in holds.detail
    assert by_name(report)["ledger"].status == doctor.OK
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1


def test_data_dir_not_writable_fails(_tmp_home):
    _tmp_home.mkdir(parents=True)
    # Root ignores permission bits; a directory where the probe file goes cannot be written.
    (_tmp_home / doctor.PROBE_FILE).mkdir()
    report = doctor.run()
    check = by_name(report)["data dir"]
    assert check.status == doctor.FAIL
    assert "not writable" in check.detail and "LOCALGATE_DATA_DIR" in check.detail
    assert report.exit_code() == 1


def test_a_bad_config_is_one_failed_check(_tmp_home):
    write_config(_tmp_home, "[server]\nport = 'many'\n")
    report = doctor.run()
    assert [c.name for c in report.checks] == ["version", "config"]
    assert report.checks[-1].status == doctor.FAIL
    assert "server.port" in report.checks[-1].detail


def test_channels_reachable_unreachable_and_off(_tmp_home):
    dead = closed_port()
    with FakeUpstream() as upstream:
        write_config(
            _tmp_home,
            f"""
[[channels]]
id = "up"
kind = "openai_compatible"
base_url = "{upstream.base_url}"

[[channels]]
id = "dead"
kind = "openai_compatible"
base_url = "http://127.0.0.1:{dead}/v1"

[[channels]]
id = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
""",
        )
        report = doctor.run(timeout=2)
        assert upstream.requests and upstream.requests[-1].path.endswith("/models")
        assert "authorization" not in upstream.requests[-1].headers  # no key is sent
    checks = by_name(report)
    assert checks["channel up"].status == doctor.OK
    assert "reachable" in checks["channel up"].detail
    assert checks["channel dead"].status == doctor.WARN
    assert checks["channel dead"].detail.startswith("unreachable")
    assert checks["channel openai"].status == doctor.WARN
    assert "No key for channel openai" in checks["channel openai"].detail
    assert checks["channel demo"].status == doctor.OK  # the demo stays available
    assert report.exit_code() == 0 and report.exit_code(strict=True) == 1


def test_a_channel_that_does_not_answer_in_time_is_unreachable(_tmp_home):
    write_config(
        _tmp_home,
        '[[channels]]\nid = "slow"\nkind = "openai_compatible"\nbase_url = "http://slow.test/v1"\n',
    )

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("too slow", request=request)

    report = doctor.run(transport=httpx.MockTransport(handler))
    check = by_name(report)["channel slow"]
    assert check.status == doctor.WARN
    assert "did not answer in time" in check.detail


@pytest.mark.parametrize(
    ("provider", "env", "status", "words"),
    [
        ("sandbox", {}, doctor.OK, "no real money"),
        ("stripe", {}, doctor.FAIL, "STRIPE_SECRET_KEY is not set"),
        ("stripe", {"STRIPE_SECRET_KEY": "sk_test_x"}, doctor.WARN, "webhooks are refused"),
        (
            "stripe",
            {"STRIPE_SECRET_KEY": "sk_test_x", "STRIPE_WEBHOOK_SECRET": "whsec_x"},
            doctor.OK,
            "test mode",
        ),
        ("hosted", {}, doctor.FAIL, "set [hosted] base_url and LOCALGATE_HOSTED_TOKEN"),
    ],
)
def test_payments(_tmp_home, monkeypatch, provider, env, status, words):
    for name in ("STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    write_config(_tmp_home, f'[payments]\nprovider = "{provider}"\n')
    check = by_name(doctor.run())["payments"]
    assert check.status == status
    assert words in check.detail
    assert "sk_test_x" not in check.detail and "whsec_x" not in check.detail


def test_an_old_catalog_warns(_tmp_home):
    settings = load_settings()
    fresh = doctor.check_catalog(settings)
    old = doctor.check_catalog(settings, today=date(2099, 1, 1))
    assert fresh.status == doctor.OK
    assert old.status == doctor.WARN
    assert "out of date" in old.detail


def test_cli_json_and_exit_code(_tmp_home):
    result = CliRunner().invoke(main, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["ok"] is True and data["failures"] == 0
    assert {"name", "status", "detail"} <= set(data["checks"][0])

    (_tmp_home / doctor.PROBE_FILE).mkdir()
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 1
    assert "fail  data dir" in result.output
    assert result.output.rstrip().endswith("1 check(s) failed")
