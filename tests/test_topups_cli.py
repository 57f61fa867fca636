"""`localgate topup`: prints the checkout URL, waits, shows the final state."""

from __future__ import annotations

import json
import threading
import time

import pytest
from click.testing import CliRunner
from topup_helpers import USD, balance, ledger, make_settings

from localgate.cli import main
from localgate.payments.sandbox import SandboxProvider
from localgate.store import Store


def _pay_when_created(settings, action: str) -> threading.Thread:
    """Play the payer: once the top-up exists, press a sandbox checkout button.
    (Its store is opened first, so the two never migrate the new database at once.)"""
    store = Store.open(settings.db_path, wallets=settings.wallets)

    def run() -> None:
        try:
            for _ in range(200):
                row = store.read().execute("SELECT topup_id FROM sandbox_payments").fetchone()
                if row:
                    store.write_sync(SandboxProvider._act, row[0], action, None, 0.0)
                    return
                time.sleep(0.02)
        finally:
            store.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow  # the command polls once a second
def test_topup_waits_and_shows_the_arrival():
    settings = make_settings()
    payer = _pay_when_created(settings, "pay")
    result = CliRunner().invoke(main, ["topup", "--wallet", "credit", "--amount", "20"])
    payer.join(5)
    assert result.exit_code == 0, result.output
    assert "Pay here: http://127.0.0.1:4311/sandbox/checkout/tu_" in result.output
    assert "completed: $20.00 arrived in Credit. Balance $0.000000 -> $20.000000" in result.output
    assert balance(settings) == 20 * USD and len(ledger(settings, kind="topup")) == 1


@pytest.mark.slow  # the command polls once a second
def test_topup_declined_exits_1():
    settings = make_settings()
    payer = _pay_when_created(settings, "decline")
    result = CliRunner().invoke(
        main, ["topup", "--wallet", "credit", "--amount", "20", "--method", "card"]
    )
    payer.join(5)
    assert (
        result.exit_code == 1 and "failed: no money moved (your card was declined" in result.output
    )


def test_topup_no_wait_json_and_timeout():
    result = CliRunner().invoke(
        main, ["topup", "--wallet", "routed", "--amount", "50", "--no-wait", "--json"]
    )
    assert result.exit_code == 0, result.output
    t = json.loads(result.output)
    assert t["status"] == "pending" and t["currency"] == "CNY" and t["checkout_url"]
    result = CliRunner().invoke(
        main, ["topup", "--wallet", "credit", "--amount", "5", "--timeout", "0.2"]
    )
    assert result.exit_code == 3 and "pending: waiting for you to choose" in result.output


def test_topup_bad_amount_is_one_line():
    result = CliRunner().invoke(main, ["topup", "--wallet", "credit", "--amount", "0.1"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1] == (
        "localgate: the smallest top-up in USD is $1.00; you asked for $0.10"
    )
