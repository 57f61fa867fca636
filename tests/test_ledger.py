"""The ledger: balanced entries, holds, idempotency, the hash chain, concurrency.

Every test runs on a real SQLite file through the one writer, as the gateway does.
"""

from __future__ import annotations

import asyncio
import random
import shutil
import sqlite3
import tempfile
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, currently_in_test_context, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from localgate.config import DEFAULT_WALLETS, WalletSettings
from localgate.core import ledger as core
from localgate.core.ledger import EntryDraft, Posting
from localgate.errors import (
    Conflict,
    HoldClosed,
    InsufficientFunds,
    LedgerError,
    NotFound,
    UnbalancedEntry,
    WalletFrozen,
)
from localgate.store import Store
from localgate.store import ledger as ls
from localgate.store.db import open_db
from localgate.store.verify import verify as verify_ledger

USD = 1_000_000
WALLETS = (*DEFAULT_WALLETS, WalletSettings("team", "Team", "official", "USD"))


@pytest.fixture
def store(tmp_path):
    st_ = Store.open(tmp_path / "ledger.db", wallets=WALLETS)
    yield st_
    st_.close()


def w(store, fn, *args, **kwargs):
    """Run a write through the writer (keyword arguments bound here)."""
    return store.write_sync(lambda conn: fn(conn, *args, **kwargs))


def topup(store, wallet, amount, currency="USD", **kw):
    return w(store, ls.post_entry, core.topup_entry(wallet, currency, amount, "sandbox", **kw))


def adjust(store, wallet, amount, currency="USD", **kw):
    return w(store, ls.post_entry, core.adjustment_entry(wallet, currency, amount, "test", **kw))


def hold(store, wallet, amount, **kw):
    return w(store, ls.place_hold, wallet, amount, owner=store.owner, **kw)


def balance(store, wallet):
    return ls.wallet_balance(store.read(), wallet)


def entry_count(store):
    return store.read().execute("SELECT COUNT(*) FROM entries").fetchone()[0]


def snapshot(conn):
    """Everything the ledger stores, to prove a refused write left no trace."""
    return {
        table: [tuple(r) for r in conn.execute(f"SELECT * FROM {table} ORDER BY 1, 2")]
        for table in ("entries", "postings", "accounts", "holds")
    }


def verify(path):
    conn = open_db(path)
    try:
        return verify_ledger(conn)
    finally:
        conn.close()


def check_invariants(conn, path):
    """The ledger's rules, recomputed from the rows with plain SQL."""
    unbalanced = conn.execute(
        "SELECT entry_id, currency, SUM(amount_micros) FROM postings "
        "GROUP BY entry_id, currency HAVING SUM(amount_micros) != 0"
    ).fetchall()
    assert unbalanced == []
    lonely = conn.execute(
        "SELECT e.id FROM entries e LEFT JOIN postings p ON p.entry_id = e.id "
        "GROUP BY e.id HAVING COUNT(p.seq) < 2"
    ).fetchall()
    assert lonely == []
    sums = dict(
        ((r[0], r[1]), r[2])
        for r in conn.execute(
            "SELECT account, currency, SUM(amount_micros) FROM postings GROUP BY account, currency"
        )
    )
    stored = dict(
        ((r[0], r[1]), r[2])
        for r in conn.execute("SELECT id, currency, balance_micros FROM accounts")
    )
    assert stored == sums
    for (wallet_id,) in conn.execute("SELECT id FROM wallets").fetchall():
        bal = ls.wallet_balance(conn, wallet_id)
        assert bal.available == bal.balance - bal.held >= 0
        assert bal.held >= 0
        open_sum = conn.execute(
            "SELECT COALESCE(SUM(amount_micros), 0) FROM holds "
            "WHERE wallet_id = ? AND status = 'open'",
            (wallet_id,),
        ).fetchone()[0]
        assert bal.held == open_sum
    last = conn.execute(
        "SELECT wallet_id, balance_after_micros, held_after_micros FROM entries "
        "WHERE id IN (SELECT MAX(id) FROM entries GROUP BY wallet_id)"
    ).fetchall()
    for wallet_id, after, held_after in last:
        if wallet_id is not None:
            bal = ls.wallet_balance(conn, wallet_id)
            assert (bal.balance, bal.held) == (after, held_after)
    report = verify(path)
    assert report.ok, report.first_error


# -- the rules, one at a time ------------------------------------------------------


def test_default_wallets_start_empty(store):
    conn = store.read()
    wallets = ls.list_wallets(conn)
    assert [
        (
            x["id"],
            x["settlement"],
            x["currency"],
            x["balance_micros"],
            x["held_micros"],
            x["available_micros"],
        )
        for x in wallets
    ] == [
        ("credit", "official", "USD", 0, 0, 0),
        ("routed", "routed", "CNY", 0, 0, 0),
        ("team", "official", "USD", 0, 0, 0),
    ]
    assert verify(store.path).as_dict() == {"ok": True, "entries": 0, "first_error": None}


def test_unbalanced_entries_are_refused():
    with pytest.raises(UnbalancedEntry):
        EntryDraft(
            "adjustment",
            "credit",
            "USD",
            (Posting("wallet:credit", "USD", 5), Posting("adjustment", "USD", -4)),
        )
    with pytest.raises(UnbalancedEntry):  # balanced in total, not per currency
        EntryDraft("adjustment", None, "USD", (Posting("a", "USD", 5), Posting("b", "CNY", -5)))
    with pytest.raises(UnbalancedEntry):
        EntryDraft("adjustment", None, "USD", ())
    with pytest.raises(UnbalancedEntry):
        EntryDraft("adjustment", None, "USD", (Posting("a", "USD", 0.5), Posting("b", "USD", -0.5)))
    with pytest.raises(LedgerError, match="posts to 'wallet:routed'"):
        EntryDraft(
            "adjustment",
            "credit",
            "USD",
            (Posting("wallet:routed", "USD", 5), Posting("adjustment", "USD", -5)),
        )
    with pytest.raises(LedgerError, match="unknown entry kind"):
        EntryDraft("gift", None, "USD", (Posting("a", "USD", 5), Posting("b", "USD", -5)))


def test_wrong_currency_and_unknown_wallet_write_nothing(store):
    before = snapshot(store.read())
    with pytest.raises(LedgerError, match="holds USD, not CNY"):
        topup(store, "credit", USD, currency="CNY")
    with pytest.raises(NotFound):
        topup(store, "nope", USD)
    with pytest.raises(NotFound):
        hold(store, "nope", 1)
    assert snapshot(store.read()) == before


def test_topup_and_adjustments(store):
    e = topup(store, "credit", 10 * USD, topup_id="tu_1")
    assert (e.balance_after, e.held_after, e.draft.kind, e.draft.topup_id) == (
        10 * USD,
        0,
        "topup",
        "tu_1",
    )
    e = adjust(store, "credit", -3 * USD)
    assert e.balance_after == 7 * USD and e.draft.wallet_deltas() == (-3 * USD, 0)
    accounts = dict(((r[0], r[1]), r[2]) for r in store.read().execute("SELECT * FROM accounts"))
    assert accounts == {
        ("funding:sandbox", "USD"): -10 * USD,
        ("wallet:credit", "USD"): 7 * USD,
        ("adjustment", "USD"): 3 * USD,
    }
    with pytest.raises(LedgerError, match="zero"):
        core.adjustment_entry("credit", "USD", 0, "nothing")
    with pytest.raises(LedgerError, match="reason"):
        core.adjustment_entry("credit", "USD", 5, "  ")
    with pytest.raises(LedgerError):
        core.topup_entry("credit", "USD", -5, "sandbox")


def test_never_below_zero_and_nothing_written(store):
    topup(store, "credit", 5 * USD)
    hold(store, "credit", 2 * USD)
    before = snapshot(store.read())
    with pytest.raises(InsufficientFunds) as info:
        adjust(store, "credit", -(3 * USD + 1))  # only 3 of the 5 are available
    assert (info.value.wallet, info.value.needed, info.value.available) == (
        "credit",
        3 * USD + 1,
        3 * USD,
    )
    assert "$3.000000 available" in str(info.value)
    with pytest.raises(InsufficientFunds):
        hold(store, "credit", 3 * USD + 1)
    with pytest.raises(InsufficientFunds):
        w(store, ls.post_entry, core.refund_entry("credit", "USD", 4 * USD, "sandbox"))
    assert snapshot(store.read()) == before
    adjust(store, "credit", -3 * USD)  # exactly what is available is fine
    assert balance(store, "credit").available == 0
    check_invariants(store.read(), store.path)


def test_settle_below_equal_and_above_the_hold(store):
    topup(store, "credit", 10 * USD)
    h1 = hold(store, "credit", 2 * USD, receipt_id="rc_1")
    h2 = hold(store, "credit", 2 * USD)
    h3 = hold(store, "credit", 2 * USD)
    assert balance(store, "credit") == core.WalletBalance("credit", "USD", 10 * USD, 6 * USD)

    below = w(store, ls.settle_hold, h1, 420)
    assert (below.charged, below.capped) == (420, False)
    assert below.entry.draft.receipt_id == "rc_1"
    assert below.entry.draft.wallet_deltas() == (-420, -2 * USD)
    equal = w(store, ls.settle_hold, h2, 2 * USD)
    assert (equal.charged, equal.capped) == (2 * USD, False)
    assert len(equal.entry.draft.postings) == 2  # nothing returns to the wallet
    # Above the hold: taken from the free money (4 USD - 420 micros here) when it fits.
    above = w(store, ls.settle_hold, h3, 3 * USD)
    assert (above.charged, above.capped) == (3 * USD, False)
    bal = balance(store, "credit")
    assert (bal.balance, bal.held) == (10 * USD - 420 - 5 * USD, 0)
    usage = (
        store.read()
        .execute("SELECT balance_micros FROM accounts WHERE id = 'usage:credit'")
        .fetchone()[0]
    )
    assert usage == 420 + 5 * USD
    rows = (
        store.read()
        .execute("SELECT id, status, charge_micros, reason FROM holds ORDER BY created_at")
        .fetchall()
    )
    assert {r[0]: (r[1], r[2]) for r in rows} == {
        h1: ("settled", 420),
        h2: ("settled", 2 * USD),
        h3: ("settled", 3 * USD),
    }
    check_invariants(store.read(), store.path)


def test_settle_above_the_hold_is_capped_at_the_wallet(store):
    topup(store, "credit", 3 * USD)
    h = hold(store, "credit", 2 * USD)
    out = w(store, ls.settle_hold, h, 7 * USD)
    assert (out.charged, out.capped) == (3 * USD, True)  # the hold plus the 1 USD free
    bal = balance(store, "credit")
    assert (bal.balance, bal.held, bal.available) == (0, 0, 0)
    # With nothing free, the hold is the cap.
    topup(store, "credit", USD)
    h = hold(store, "credit", USD)
    out = w(store, ls.settle_hold, h, 5 * USD)
    assert (out.charged, out.capped) == (USD, True)
    check_invariants(store.read(), store.path)


def test_settle_zero_is_a_release_and_closing_twice_is_idempotent(store):
    topup(store, "credit", USD)
    h = hold(store, "credit", 500)
    out = w(store, ls.settle_hold, h, 0, memo="failed upstream: not charged")
    assert (out.entry.draft.kind, out.charged) == ("release", 0)
    count = entry_count(store)
    again = w(store, ls.settle_hold, h, 400)  # a retry of the settle: the first outcome
    assert again.entry.id == out.entry.id and again.charged == 0
    assert w(store, ls.release_hold, h, reason="again").id == out.entry.id
    assert entry_count(store) == count
    assert balance(store, "credit").balance == USD

    h = hold(store, "credit", 500)
    settled = w(store, ls.settle_hold, h, 300)
    assert w(store, ls.settle_hold, h, 300).entry.id == settled.entry.id
    assert w(store, ls.settle_hold, h, 999).charged == 300
    assert w(store, ls.release_hold, h, reason="late").id == settled.entry.id
    assert balance(store, "credit").balance == USD - 300
    with pytest.raises(LedgerError, match="negative"):
        w(store, ls.settle_hold, hold(store, "credit", 1), -1)
    with pytest.raises(NotFound):
        w(store, ls.settle_hold, "hd_missing", 1)
    check_invariants(store.read(), store.path)


def test_release_returns_the_hold(store):
    topup(store, "routed", 8 * USD, currency="CNY")
    h = hold(store, "routed", 5 * USD)
    assert balance(store, "routed").available == 3 * USD
    e = w(store, ls.release_hold, h, reason="client canceled")
    assert (e.draft.kind, e.draft.memo, e.balance_after, e.held_after) == (
        "release",
        "client canceled",
        8 * USD,
        0,
    )
    row = store.read().execute("SELECT status, reason FROM holds WHERE id = ?", (h,)).fetchone()
    assert tuple(row) == ("released", "client canceled")


def test_placing_the_same_hold_twice_returns_it(store):
    topup(store, "credit", USD)
    assert hold(store, "credit", 400, hold_id="hd_fixed") == "hd_fixed"
    count = entry_count(store)
    assert hold(store, "credit", 400, hold_id="hd_fixed") == "hd_fixed"
    assert entry_count(store) == count
    assert balance(store, "credit").held == 400
    with pytest.raises(Conflict):
        hold(store, "credit", 500, hold_id="hd_fixed")
    w(store, ls.settle_hold, "hd_fixed", 100)
    assert hold(store, "credit", 400, hold_id="hd_fixed") == "hd_fixed"  # still no new hold
    assert balance(store, "credit").held == 0
    check_invariants(store.read(), store.path)


def test_frozen_wallet_takes_no_holds(store):
    topup(store, "credit", USD)
    store.write_sync(
        lambda c: c.execute(
            "UPDATE wallets SET frozen = 1, frozen_reason = 'disputed top-up' WHERE id = 'credit'"
        )
    )
    with pytest.raises(WalletFrozen, match="disputed top-up"):
        hold(store, "credit", 1)


def test_idempotency_key_returns_the_first_entry(store):
    first = topup(store, "credit", 5 * USD, idempotency_key="pay_123")
    count = entry_count(store)
    again = topup(store, "credit", 5 * USD, idempotency_key="pay_123")
    assert again.id == first.id
    # The same key for another entry is a 409, never the first entry passed off as it.
    with pytest.raises(Conflict, match="pay_123"):
        topup(store, "credit", 9 * USD, idempotency_key="pay_123")
    assert again.draft.postings == first.draft.postings
    assert entry_count(store) == count
    assert balance(store, "credit").balance == 5 * USD
    # Concurrent deliveries of the same key (webhook + return page + sync) credit once.
    with_threads = [None] * 20

    def deliver(i):
        with_threads[i] = topup(store, "credit", USD, idempotency_key="pay_456")

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({e.id for e in with_threads}) == 1
    assert balance(store, "credit").balance == 6 * USD
    check_invariants(store.read(), store.path)


def test_reversals(store):
    t = topup(store, "credit", 5 * USD)
    a = adjust(store, "credit", -USD)
    rev = w(store, ls.post_entry, core.reversal_of(a, "undo the debit"))
    assert (rev.draft.kind, rev.draft.reverses_id, rev.balance_after) == ("reversal", a.id, 5 * USD)
    assert w(store, ls.post_entry, core.reversal_of(a, "again")).id == rev.id  # idempotent
    with pytest.raises(LedgerError, match="itself a reversal"):
        core.reversal_of(rev, "no")
    h = hold(store, "credit", 4 * USD)
    hold_entry = ls.load_entry(
        store.read(),
        store.read().execute("SELECT open_entry_id FROM holds WHERE id = ?", (h,)).fetchone()[0],
    )
    with pytest.raises(HoldClosed):
        core.reversal_of(hold_entry, "no")
    before = snapshot(store.read())
    with pytest.raises(InsufficientFunds):  # 4 of the 5 are held: the top-up cannot go
        w(store, ls.post_entry, core.reversal_of(t, "chargeback"))
    assert snapshot(store.read()) == before
    w(store, ls.release_hold, h, reason="done")
    w(store, ls.post_entry, core.reversal_of(t, "chargeback"))
    assert balance(store, "credit").balance == 0
    check_invariants(store.read(), store.path)


def test_entries_are_chained(store):
    topup(store, "credit", USD)
    adjust(store, "routed", USD, currency="CNY")
    rows = store.read().execute("SELECT id, prev_hash, hash FROM entries ORDER BY id").fetchall()
    assert rows[0][1] == core.GENESIS_HASH
    assert rows[1][1] == rows[0][2]
    assert len({r[2] for r in rows}) == 2


# -- tampering ---------------------------------------------------------------------


def seeded(store):
    topup(store, "credit", 10 * USD)
    h = hold(store, "credit", USD)
    w(store, ls.settle_hold, h, 420)
    adjust(store, "routed", 3 * USD, currency="CNY")
    adjust(store, "credit", -2 * USD)
    assert verify(store.path).ok


def tamper(path, *sql):
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for table in ("entries", "postings"):
            for action in ("update", "delete"):
                conn.execute(f"DROP TRIGGER IF EXISTS {table}_no_{action}")
        for statement in sql:
            conn.execute(statement)
    finally:
        conn.close()


@pytest.mark.parametrize(
    ("sql", "names"),
    [
        (["UPDATE entries SET amount_micros = amount_micros + 1 WHERE id = 3"], "entry 3 "),
        (
            [
                "UPDATE postings SET amount_micros = amount_micros + 1 WHERE entry_id = 4 AND seq = 1"
            ],
            "entry 4 ",
        ),
        (
            [
                "UPDATE postings SET amount_micros = amount_micros + 5 WHERE entry_id = 3 AND seq = 0",
                "UPDATE postings SET amount_micros = amount_micros - 5 WHERE entry_id = 3 AND seq = 1",
            ],
            "entry 3 ",
        ),  # still balanced, but not what was hashed
        (
            ["UPDATE postings SET account = 'wallet:routed' WHERE entry_id = 5 AND seq = 1"],
            "entry 5 ",
        ),
        (["UPDATE entries SET memo = 'nothing to see' WHERE id = 2"], "entry 2 "),
        (["UPDATE entries SET balance_after_micros = 1 WHERE id = 1"], "entry 1 "),
        (
            ["UPDATE entries SET created_at = '2020-01-01T00:00:00.000000Z' WHERE id = 5"],
            "entry 5 ",
        ),
        (["UPDATE entries SET hash = prev_hash WHERE id = 2"], "entry 2 "),
        (["DELETE FROM postings WHERE entry_id = 2"], "entry 2 "),
        (
            ["DELETE FROM entries WHERE id = 5", "DELETE FROM postings WHERE entry_id = 5"],
            "account",
        ),
        (
            ["UPDATE accounts SET balance_micros = balance_micros + 1 WHERE id = 'wallet:credit'"],
            "account wallet:credit",
        ),
        (["UPDATE holds SET status = 'open'"], "hold:credit"),
    ],
)
def test_a_hand_edited_row_fails_verify_naming_it(store, sql, names):
    seeded(store)
    store.close()
    tamper(store.path, *sql)
    report = verify(store.path)
    assert not report.ok
    assert names in report.first_error, report.first_error


def test_cli_ledger_verify_exits_1_on_tampering(store, tmp_path):
    from localgate.cli import main

    data = tmp_path / "cli"
    st_ = Store.open(data / "localgate.db", wallets=DEFAULT_WALLETS)
    try:
        topup(st_, "credit", 10 * USD)
        adjust(st_, "credit", -USD)
    finally:
        st_.close()
    runner = CliRunner()
    ok = runner.invoke(main, ["--data-dir", str(data), "ledger", "verify"])
    assert ok.exit_code == 0, ok.output
    assert "ledger ok: 2 entries" in ok.output
    tamper(data / "localgate.db", "UPDATE entries SET amount_micros = 5 WHERE id = 2")
    bad = runner.invoke(main, ["--data-dir", str(data), "ledger", "verify"])
    assert bad.exit_code == 1
    assert "entry 2" in bad.output
    bad_json = runner.invoke(main, ["--data-dir", str(data), "ledger", "verify", "--json"])
    assert bad_json.exit_code == 1
    assert '"ok": false' in bad_json.output


# -- concurrency ---------------------------------------------------------------------

HOLD = 3 * USD + 7


def test_200_threads_race_for_50_holds(store):
    topup(store, "credit", 50 * HOLD)
    results: list[object] = [None] * 200
    start = threading.Barrier(200)

    def attempt(i):
        start.wait()
        try:
            results[i] = store.write_sync(
                lambda c: ls.place_hold(c, "credit", HOLD, owner=store.owner)
            )
        except InsufficientFunds as exc:
            results[i] = exc

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(200)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    held = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, InsufficientFunds)]
    assert (len(held), len(refused)) == (50, 150)
    assert len(set(held)) == 50
    bal = balance(store, "credit")
    assert (bal.balance, bal.held, bal.available) == (50 * HOLD, 50 * HOLD, 0)
    opened = store.read().execute("SELECT COUNT(*) FROM holds WHERE status = 'open'").fetchone()
    assert opened[0] == 50
    check_invariants(store.read(), store.path)


async def test_200_tasks_race_for_50_holds(store):
    topup(store, "credit", 50 * HOLD)

    async def attempt():
        try:
            return await store.write(lambda c: ls.place_hold(c, "credit", HOLD, owner=store.owner))
        except InsufficientFunds as exc:
            return exc

    results = await asyncio.gather(*(attempt() for _ in range(200)))
    assert sum(isinstance(r, str) for r in results) == 50
    assert sum(isinstance(r, InsufficientFunds) for r in results) == 150
    assert balance(store, "credit").available == 0
    # ...and settling them all concurrently, some above their hold, never overdraws.
    holds = [r for r in results if isinstance(r, str)]
    outs = await asyncio.gather(*(store.write(ls.settle_hold, h, HOLD * 2) for h in holds))
    assert all(o.capped for o in outs)  # nothing free: each is capped at its hold
    assert balance(store, "credit") == core.WalletBalance("credit", "USD", 0, 0)
    check_invariants(store.read(), store.path)


# -- random sequences ------------------------------------------------------------------

MONEY_WALLETS = {"credit": "USD", "routed": "CNY", "team": "USD"}
# Mostly small amounts (that fit), sometimes large ones (that often do not).
amounts = st.integers(1, 2 * USD) | st.integers(min_value=1, max_value=20 * USD)


def note(text):
    if currently_in_test_context():  # the machine also runs outside Hypothesis, below
        event(text)


class LedgerMachine(RuleBasedStateMachine):
    """Random top-ups, holds, settles, releases, adjustments, refunds, reversals and
    re-posts, against a model of what each wallet should hold."""

    holds = Bundle("holds")
    closed = Bundle("closed")
    reversible = Bundle("reversible")

    def __init__(self):
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="ledger-machine-"))
        self.store = Store.open(self.dir / "l.db", wallets=WALLETS)
        self.balance = dict.fromkeys(MONEY_WALLETS, 0)
        self.held = dict.fromkeys(MONEY_WALLETS, 0)
        self.open: dict[str, tuple[str, int]] = {}
        self.keys: dict[str, tuple[int, tuple[str, int]]] = {}  # key -> (entry, its wallet+amount)
        self.recovered: set[str] = set()
        self.reversed: dict[int, int] = {}

    def teardown(self):
        self.store.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def available(self, wallet):
        return self.balance[wallet] - self.held[wallet]

    def refused(self, fn):
        """The write must fail with InsufficientFunds and leave no trace."""
        note("refused: insufficient funds")
        before = snapshot(self.store.read())
        with pytest.raises(InsufficientFunds):
            self.store.write_sync(fn)
        assert snapshot(self.store.read()) == before

    @rule(
        target=reversible,
        wallet=st.sampled_from(list(MONEY_WALLETS)),
        amount=amounts,
        key=st.none() | st.sampled_from(["k1", "k2", "k3"]),
    )
    def top_up(self, wallet, amount, key):
        draft = core.topup_entry(
            wallet, MONEY_WALLETS[wallet], amount, "sandbox", idempotency_key=key
        )
        if key is not None and key in self.keys:
            first_id, first = self.keys[key]
            if first != (wallet, amount):
                # The key of another entry: a 409 and nothing written.
                note("refused: the key of another entry")
                before = snapshot(self.store.read())
                with pytest.raises(Conflict):
                    self.store.write_sync(lambda c: ls.post_entry(c, draft))
                assert snapshot(self.store.read()) == before
                return None
            e = self.store.write_sync(lambda c: ls.post_entry(c, draft))
            assert e.id == first_id  # the same entry again: the first one, nothing new
            return e
        e = self.store.write_sync(lambda c: ls.post_entry(c, draft))
        self.balance[wallet] += amount
        if key is not None:
            self.keys[key] = (e.id, (wallet, amount))
        return e

    @rule(
        target=reversible,
        wallet=st.sampled_from(list(MONEY_WALLETS)),
        amount=st.builds(lambda a, sign: a * sign, amounts, st.sampled_from([1, -1])),
    )
    def adjust(self, wallet, amount):
        draft = core.adjustment_entry(wallet, MONEY_WALLETS[wallet], amount, "random")
        if -amount > self.available(wallet):
            self.refused(lambda c: ls.post_entry(c, draft))
            return None
        e = self.store.write_sync(lambda c: ls.post_entry(c, draft))
        self.balance[wallet] += amount
        return e

    @rule(target=reversible, wallet=st.sampled_from(list(MONEY_WALLETS)), amount=amounts)
    def refund(self, wallet, amount):
        draft = core.refund_entry(wallet, MONEY_WALLETS[wallet], amount, "sandbox")
        if amount > self.available(wallet):
            self.refused(lambda c: ls.post_entry(c, draft))
            return None
        e = self.store.write_sync(lambda c: ls.post_entry(c, draft))
        self.balance[wallet] -= amount
        return e

    @initialize(
        credit=st.integers(USD, 30 * USD),
        routed=st.integers(0, 30 * USD),
        team=st.integers(0, 3 * USD),
    )
    def fund(self, credit, routed, team):
        """Start with money, so holds and settles happen often."""
        for wallet, amount in (("credit", credit), ("routed", routed), ("team", team)):
            if amount:
                self.top_up(wallet, amount, None)

    @rule(target=holds, wallet=st.sampled_from(list(MONEY_WALLETS)), amount=amounts)
    def place_hold(self, wallet, amount):
        owner = self.store.owner
        if amount > self.available(wallet):
            self.refused(lambda c: ls.place_hold(c, wallet, amount, owner=owner))
            return None
        hold_id = self.store.write_sync(lambda c: ls.place_hold(c, wallet, amount, owner=owner))
        self.held[wallet] += amount
        self.open[hold_id] = (wallet, amount)
        return hold_id

    @rule(
        target=closed,
        hold_id=consumes(holds),
        how=st.sampled_from(["below", "equal", "above"]),
        delta=st.integers(0, 25 * USD),
    )
    def settle(self, hold_id, how, delta):
        if hold_id is None:
            return None
        if hold_id in self.recovered:
            return self.closed_by_recovery(hold_id)
        wallet, amount = self.open.pop(hold_id)
        charge = {"below": max(0, amount - delta), "equal": amount, "above": amount + delta}[how]
        free = self.available(wallet)
        out = self.store.write_sync(lambda c: ls.settle_hold(c, hold_id, charge))
        expected = min(charge, amount + free)
        assert out.charged == expected
        assert out.capped == (charge > amount + free)
        note(f"settle {how}{' capped' if out.capped else ''}")
        self.held[wallet] -= amount
        self.balance[wallet] -= expected
        return (hold_id, out.entry.id, expected)

    @rule(target=closed, hold_id=consumes(holds))
    def release(self, hold_id):
        if hold_id is None:
            return None
        if hold_id in self.recovered:
            return self.closed_by_recovery(hold_id)
        wallet, amount = self.open.pop(hold_id)
        e = self.store.write_sync(lambda c: ls.release_hold(c, hold_id, reason="random"))
        self.held[wallet] -= amount
        return (hold_id, e.id, 0)

    def closed_by_recovery(self, hold_id):
        """A hold released at start-up: a late settle charges nothing, writes nothing."""
        count = entry_count(self.store)
        out = self.store.write_sync(lambda c: ls.settle_hold(c, hold_id, 1))
        assert (out.entry.draft.kind, out.entry.draft.memo, out.charged) == (
            "release",
            "recovered",
            0,
        )
        assert entry_count(self.store) == count
        return (hold_id, out.entry.id, 0)

    @rule(done=closed, charge=st.integers(0, 5 * USD))
    def close_again(self, done, charge):
        """A retried settle or release returns the first outcome and writes nothing."""
        if done is None:
            return
        hold_id, entry_id, charged = done
        count = entry_count(self.store)
        out = self.store.write_sync(lambda c: ls.settle_hold(c, hold_id, charge))
        assert (out.entry.id, out.charged) == (entry_id, charged)
        e = self.store.write_sync(lambda c: ls.release_hold(c, hold_id, reason="retry"))
        assert e.id == entry_id
        assert entry_count(self.store) == count

    @rule(entry=consumes(reversible))
    def reverse(self, entry):
        if entry is None:
            return
        draft = core.reversal_of(entry, "random reversal")
        wallet = entry.draft.wallet_id
        if entry.id in self.reversed:  # the same entry again (an idempotent top-up)
            count = entry_count(self.store)
            e = self.store.write_sync(lambda c: ls.post_entry(c, draft))
            assert e.id == self.reversed[entry.id]
            assert entry_count(self.store) == count
            return
        delta = -entry.draft.wallet_deltas()[0]
        if -delta > self.available(wallet):
            self.refused(lambda c: ls.post_entry(c, draft))
            return
        e = self.store.write_sync(lambda c: ls.post_entry(c, draft))
        self.balance[wallet] += delta
        self.reversed[entry.id] = e.id
        # Reversing the same entry again returns the first reversal.
        assert self.store.write_sync(lambda c: ls.post_entry(c, draft)).id == e.id

    @precondition(lambda self: self.open)
    @rule()
    def restart_and_recover(self):
        """A new process: open holds of the old one are released as 'recovered'."""
        self.store.close()
        self.store = Store.open(self.dir / "l.db", wallets=WALLETS)
        released = self.store.recover()
        assert sorted(released) == sorted(self.open)
        marks = ",".join("?" * len(released))
        reasons = {
            r[0]
            for r in self.store.read().execute(
                f"SELECT reason FROM holds WHERE id IN ({marks})", released
            )
        }
        assert reasons == {"recovered"}
        for wallet, amount in self.open.values():
            self.held[wallet] -= amount
        self.recovered.update(self.open)
        self.open.clear()

    @invariant()
    def ledger_holds(self):
        conn = self.store.read()
        for wallet in MONEY_WALLETS:
            bal = ls.wallet_balance(conn, wallet)
            assert (bal.balance, bal.held) == (self.balance[wallet], self.held[wallet])
        check_invariants(conn, self.store.path)


LedgerMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_ledger_random_sequences = pytest.mark.slow(LedgerMachine.TestCase)  # seconds of steps


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(6))
def test_ledger_seeded_random_walks(seed):
    """Longer walks than the machine's, weighted towards holds and settles, with
    the same model and the same checks after every step."""
    rng = random.Random(seed)
    m = LedgerMachine()
    holds: list[str] = []
    closed: list[tuple[str, int, int]] = []
    reversible: list[core.StoredEntry] = []
    wallets = list(MONEY_WALLETS)

    def amount():
        return rng.randint(1, 2 * USD) if rng.random() < 0.8 else rng.randint(1, 20 * USD)

    def keep(bag, value):
        if value is not None:
            bag.append(value)

    def take(bag):
        return bag.pop(rng.randrange(len(bag))) if bag else None

    try:
        m.fund(rng.randint(USD, 30 * USD), rng.randint(0, 30 * USD), rng.randint(0, 3 * USD))
        m.ledger_holds()
        ops = {
            "top_up": (
                1,
                lambda: keep(
                    reversible,
                    m.top_up(rng.choice(wallets), amount(), rng.choice([None, None, "k1", "k2"])),
                ),
            ),
            "adjust": (
                2,
                lambda: keep(
                    reversible, m.adjust(rng.choice(wallets), amount() * rng.choice([1, -1]))
                ),
            ),
            "refund": (1, lambda: keep(reversible, m.refund(rng.choice(wallets), amount()))),
            "place_hold": (5, lambda: keep(holds, m.place_hold(rng.choice(wallets), amount()))),
            "settle": (
                3,
                lambda: keep(
                    closed,
                    m.settle(
                        take(holds),
                        rng.choice(["below", "equal", "above"]),
                        rng.randint(0, 3 * USD),
                    ),
                ),
            ),
            "release": (1, lambda: keep(closed, m.release(take(holds)))),
            "close_again": (
                1,
                lambda: m.close_again(rng.choice(closed), rng.randint(0, USD)) if closed else None,
            ),
            "reverse": (1, lambda: m.reverse(take(reversible))),
            "restart_and_recover": (0.2, lambda: m.restart_and_recover() if m.open else None),
        }
        names = list(ops)
        weights = [ops[n][0] for n in names]
        for _ in range(200):
            ops[rng.choices(names, weights)[0]][1]()
            m.ledger_holds()
    finally:
        m.teardown()
