"""The command line: wallets, adjust, ledger, ledger verify; bad config as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from localgate.cli import main
from localgate.store.db import open_db

USD = 1_000_000


@pytest.fixture
def data(tmp_path):
    return tmp_path / "cli-data"


def run(data, *args, ok=True):
    result = CliRunner().invoke(main, ["--data-dir", str(data), *args])
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


# -- bad config stops start-up with one line -----------------------------------------


BAD = {
    "unknown channel kind": (
        '[[channels]]\nid = "x"\nkind = "opnai"\nbase_url = "https://a.example"\n',
        "channels[0] (x).kind",
    ),
    "bad price string": (
        '[[models]]\nid = "m"\n[[models.routes]]\nchannel = "demo"\n'
        'price = { currency="USD", input="abc", output="1" }\n',
        "models[0] (m).routes[0].price.input",
    ),
    "unknown key": ("[server]\nprot = 4311\n", "server.prot"),
    "invalid TOML": ("[server\n", "not valid TOML"),
}


def run_module(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "localgate", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_is_one_line_naming_the_key(tmp_path, case):
    text, key = BAD[case]
    path = tmp_path / "bad.toml"
    path.write_text(text)
    proc = run_module("--config", str(path), "wallets")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert key in lines[0]
    assert str(path) in lines[0]
    assert lines[0].startswith("localgate: ")
    assert proc.stdout == ""


def test_unreadable_config_is_one_line(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    proc = run_module("--config", str(path), "wallets")
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"localgate: {path}: not valid UTF-8 text; save the file as UTF-8"
    ]
    # A directory given through the environment (root can read any file, so
    # chmod 000 would not make it unreadable here).
    proc = run_module("wallets", env_extra={"LOCALGATE_CONFIG": str(tmp_path)})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "is a directory" in lines[0], proc.stderr


def test_bad_config_in_the_data_dir_stops_serve(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "config.toml").write_text(BAD["bad price string"][0])
    proc = run_module("--data-dir", str(data), "serve", "--no-browser", "--port", "0")
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "price.input" in lines[0], proc.stderr


# -- wallets, adjust, ledger ------------------------------------------------------------


def test_wallets_json(data):
    out = json.loads(run(data, "wallets", "--json").output)
    assert [
        (
            w["id"],
            w["settlement"],
            w["currency"],
            w["balance_micros"],
            w["held_micros"],
            w["available_micros"],
            w["balance"],
        )
        for w in out["wallets"]
    ] == [
        ("credit", "official", "USD", 0, 0, 0, "0.000000"),
        ("routed", "routed", "CNY", 0, 0, 0, "0.000000"),
    ]
    assert (data / "localgate.db").exists()
    assert (data / "admin-token").exists()


def test_wallets_table(data):
    run(data, "adjust", "--wallet", "routed", "--amount", "8.5", "--reason", "seed")
    out = run(data, "wallets").output
    header, credit, routed = out.splitlines()
    assert header.split()[:2] == ["WALLET", "NAME"]
    assert credit.startswith("credit") and "$0.000000" in credit
    assert routed.startswith("routed") and "¥8.500000" in routed


def test_adjust_up_and_down(data):
    out = run(data, "adjust", "--wallet", "credit", "--amount", "5", "--reason", "support").output
    assert out.strip() == "entry 1: $5.000000 on credit, balance now $5.000000"
    entry = json.loads(
        run(
            data, "adjust", "--wallet", "credit", "--amount", "-0.25", "--reason", "fix", "--json"
        ).output
    )
    assert (
        entry["id"],
        entry["kind"],
        entry["amount_micros"],
        entry["balance_after_micros"],
        entry["memo"],
    ) == (2, "adjustment", -250_000, 4_750_000, "fix")
    wallets = json.loads(run(data, "wallets", "--json").output)["wallets"]
    assert wallets[0]["balance_micros"] == 4_750_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--wallet", "credit", "--amount", "-1", "--reason", "r"], "available"),
        (["--wallet", "credit", "--amount", "1.0000001", "--reason", "r"], "more than 6 decimals"),
        (["--wallet", "credit", "--amount", "lots", "--reason", "r"], "not a decimal number"),
        (["--wallet", "nope", "--amount", "1", "--reason", "r"], "no wallet 'nope'"),
    ],
)
def test_adjust_refusals_are_one_line(data, args, message):
    result = run(data, "adjust", *args, ok=False)
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    conn = open_db(data / "localgate.db")
    try:
        assert conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] == 0
    finally:
        conn.close()


def test_ledger_json_and_table(data):
    for amount in ("3", "-1", "2.5"):
        run(data, "adjust", "--wallet", "credit", "--amount", amount, "--reason", f"r{amount}")
    run(data, "adjust", "--wallet", "routed", "--amount", "7", "--reason", "cny")
    out = json.loads(run(data, "ledger", "--json").output)
    pages = {p["wallet"]: p for p in out["ledgers"]}
    assert set(pages) == {"credit", "routed"}
    credit = pages["credit"]["entries"]
    assert [e["amount_micros"] for e in credit] == [2_500_000, -USD, 3 * USD]
    assert [e["balance_after_micros"] for e in credit] == [4_500_000, 2 * USD, 3 * USD]
    assert pages["routed"]["entries"][0]["currency"] == "CNY"

    only = json.loads(run(data, "ledger", "--wallet", "credit", "--limit", "2", "--json").output)
    assert len(only["ledgers"]) == 1
    assert len(only["ledgers"][0]["entries"]) == 2
    assert only["ledgers"][0]["next"] is not None

    table = run(data, "ledger", "--wallet", "credit").output
    assert table.splitlines()[0] == "== credit"
    assert "$4.500000" in table and "r2.5" in table


def test_ledger_verify(data):
    out = run(data, "ledger", "verify").output
    assert out.strip() == "ledger ok: 0 entries, hash chain and balances verified"
    run(data, "adjust", "--wallet", "credit", "--amount", "1", "--reason", "r")
    assert json.loads(run(data, "ledger", "verify", "--json").output) == {
        "ok": True,
        "entries": 1,
        "first_error": None,
    }


def test_ledger_verify_fails_with_exit_1(data):
    run(data, "adjust", "--wallet", "credit", "--amount", "1", "--reason", "r")
    import sqlite3

    conn = sqlite3.connect(data / "localgate.db", isolation_level=None)
    conn.execute("DROP TRIGGER postings_no_update")
    conn.execute("UPDATE postings SET amount_micros = 2000000 WHERE entry_id = 1 AND seq = 1")
    conn.close()
    result = run(data, "ledger", "verify", ok=False)
    assert result.exit_code == 1
    assert "ledger NOT ok" in result.output and "entry 1" in result.output
    proc = run_module("--data-dir", str(data), "ledger", "verify")
    assert proc.returncode == 1
    assert "entry 1" in proc.stdout


def test_data_dir_from_env(_tmp_home):
    result = CliRunner().invoke(
        main, ["adjust", "--wallet", "credit", "--amount", "1", "--reason", "r"]
    )
    assert result.exit_code == 0, result.output
    assert (Path(_tmp_home) / "localgate.db").exists()


def test_help_is_readable():
    out = CliRunner().invoke(main, ["--help"]).output
    for command in ("serve", "wallets", "ledger", "adjust"):
        assert command in out
    assert "127.0.0.1:4311/v1" in out
    adjust_help = CliRunner().invoke(main, ["adjust", "--help"]).output
    assert "--wallet" in adjust_help and "Negative amounts debit" in adjust_help
