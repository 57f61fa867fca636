"""SIGKILL in the middle of a burst of ledger writes, then restart: the ledger
verifies, nothing claimed committed is lost, and no hold is left open."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from localgate.config import DEFAULT_WALLETS
from localgate.store import Store
from localgate.store import ledger as ls
from localgate.store.db import open_db
from localgate.store.verify import verify as verify_ledger

pytestmark = [
    pytest.mark.slow,  # a writer process killed mid-burst, three times
    pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL"),
]

# Four threads share the one writer: holds are placed, settled (below, at and
# above the hold), released, adjusted up and down, so batches of mixed jobs
# are in flight when the kill lands. Each thread keeps a few holds open.
WORKER = r"""
import random, sys, threading
from localgate.config import DEFAULT_WALLETS
from localgate.core import ledger as core
from localgate.errors import InsufficientFunds
from localgate.store import Store
from localgate.store import ledger as ls

store = Store.open(sys.argv[1], wallets=DEFAULT_WALLETS)
USD = 1_000_000
store.write_sync(lambda c: ls.post_entry(c, core.topup_entry("credit", "USD", 1000 * USD, "sandbox")))
store.write_sync(lambda c: ls.post_entry(c, core.topup_entry("routed", "CNY", 1000 * USD, "sandbox")))

def place(rng, wallet):
    amount = rng.randint(1, 5 * USD)
    return store.write_sync(lambda c: ls.place_hold(c, wallet, amount, owner=store.owner))

def burst(seed, ready):
    rng = random.Random(seed)
    wallet = ("credit", "routed")[seed % 2]
    cur = {"credit": "USD", "routed": "CNY"}[wallet]
    pool = [place(rng, wallet) for _ in range(4)]
    ready.set()
    while True:
        try:
            pool.append(place(rng, wallet))
            hold_id = pool.pop(0)
            what = rng.random()
            if what < 0.6:
                charge = rng.randint(0, 6 * USD)
                store.write_sync(lambda c: ls.settle_hold(c, hold_id, charge))
            else:
                store.write_sync(lambda c: ls.release_hold(c, hold_id, reason="done"))
            amount = rng.randint(-2 * USD, 3 * USD) or 1
            store.write_sync(lambda c: ls.post_entry(
                c, core.adjustment_entry(wallet, cur, amount, "burst")))
        except InsufficientFunds:
            store.write_sync(lambda c: ls.post_entry(
                c, core.topup_entry(wallet, cur, 100 * USD, "sandbox")))

events = [threading.Event() for _ in range(4)]
for i, ev in enumerate(events):
    threading.Thread(target=burst, args=(i, ev), daemon=True).start()
for ev in events:
    ev.wait()
print("started", flush=True)
threading.Event().wait()
"""


def committed_entries(path) -> int:
    conn = open_db(path)
    try:
        return conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0]
    finally:
        conn.close()


def verify(path):
    conn = open_db(path)
    try:
        return verify_ledger(conn)
    finally:
        conn.close()


def run_and_kill(path, delay: float) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "started", proc.stderr.read()
        time.sleep(delay)
        seen = committed_entries(path)  # committed while the burst goes on
        time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return seen


@pytest.mark.parametrize("delays", [(0.3, 0.5, 0.15)])
def test_sigkill_mid_burst_then_recover(tmp_path, delays):
    path = tmp_path / "crash.db"
    for round_, delay in enumerate(delays):
        seen = run_and_kill(path, delay)
        assert seen > 10 * (round_ + 1), "the worker barely wrote anything before the kill"

        store = Store.open(path, wallets=DEFAULT_WALLETS)
        try:
            conn = store.read()
            # Nothing another connection saw committed is lost.
            assert conn.execute("SELECT COUNT(*) FROM entries").fetchone()[0] >= seen
            left_open = {r[0] for r in conn.execute("SELECT id FROM holds WHERE status = 'open'")}
            assert left_open, "the worker always keeps holds open; none were found"
            # The database as the crash left it already verifies.
            assert verify(path).ok

            recovered = store.recover()
            assert set(recovered) == left_open
            assert (
                conn.execute("SELECT COUNT(*) FROM holds WHERE status = 'open'").fetchone()[0] == 0
            )
            marks = ",".join("?" * len(recovered))
            rows = conn.execute(
                "SELECT h.status, h.reason, e.kind, e.memo FROM holds h "
                f"JOIN entries e ON e.id = h.close_entry_id WHERE h.id IN ({marks})",
                recovered,
            ).fetchall()
            assert {tuple(r) for r in rows} == {("released", "recovered", "release", "recovered")}
            for wallet in ("credit", "routed"):
                bal = ls.wallet_balance(conn, wallet)
                assert bal.held == 0
                assert bal.available == bal.balance >= 0
            report = verify(path)
            assert report.ok, report.first_error
            assert store.recover() == []  # a second start-up finds nothing to do
        finally:
            store.close()
