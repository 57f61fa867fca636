"""The store: schema from migrations, connection pragmas, the one writer."""

from __future__ import annotations

import sqlite3
import threading

import pytest
import sqlite_utils

from localgate.config import DEFAULT_WALLETS
from localgate.store import Store, migrations
from localgate.store.db import BUSY_TIMEOUT_MS, open_db
from localgate.store.writer import Writer, WriterClosed

# The schema m001 creates. Shipped migrations are never edited, so this never changes.
EXPECTED_M001 = {
    "accounts": [
        "id TEXT NOT NULL PK",
        "currency TEXT NOT NULL PK",
        "balance_micros INTEGER NOT NULL",
    ],
    "entries": [
        "id INTEGER PK",
        "created_at TEXT NOT NULL",
        "kind TEXT NOT NULL",
        "wallet_id TEXT",
        "currency TEXT NOT NULL",
        "amount_micros INTEGER NOT NULL",
        "balance_after_micros INTEGER NOT NULL",
        "held_after_micros INTEGER NOT NULL",
        "memo TEXT NOT NULL",
        "idempotency_key TEXT",
        "reverses_id INTEGER",
        "hold_id TEXT",
        "receipt_id TEXT",
        "topup_id TEXT",
        "prev_hash TEXT NOT NULL",
        "hash TEXT NOT NULL",
    ],
    "holds": [
        "id TEXT PK",
        "wallet_id TEXT NOT NULL",
        "currency TEXT NOT NULL",
        "amount_micros INTEGER NOT NULL",
        "status TEXT NOT NULL",
        "owner TEXT NOT NULL",
        "receipt_id TEXT",
        "reason TEXT",
        "charge_micros INTEGER",
        "created_at TEXT NOT NULL",
        "closed_at TEXT",
        "open_entry_id INTEGER NOT NULL",
        "close_entry_id INTEGER",
    ],
    "postings": [
        "entry_id INTEGER NOT NULL PK",
        "seq INTEGER NOT NULL PK",
        "account TEXT NOT NULL",
        "currency TEXT NOT NULL",
        "amount_micros INTEGER NOT NULL",
    ],
    "wallets": [
        "id TEXT PK",
        "name TEXT NOT NULL",
        "settlement TEXT NOT NULL",
        "currency TEXT NOT NULL",
        "frozen INTEGER NOT NULL",
        "frozen_reason TEXT",
        "low_balance_micros INTEGER",
        "created_at TEXT NOT NULL",
    ],
    "_indexes_and_triggers": [
        "index:entries_receipt",
        "index:entries_topup",
        "index:entries_wallet",
        "index:holds_open",
        "index:idx__sqlite_migrations_migration_set_name",
        "trigger:entries_no_delete",
        "trigger:entries_no_update",
        "trigger:postings_no_delete",
        "trigger:postings_no_update",
    ],
}


def _after_m002(m001):
    """m002_gateway: API keys and their spend, price versions, receipts, holds.key_id."""
    out = {k: list(v) for k, v in m001.items()}
    out["holds"].append("key_id TEXT")
    out["meta"] = ["name TEXT PK", "value INTEGER NOT NULL"]
    out["api_keys"] = [
        "id TEXT PK",
        "key_hash TEXT NOT NULL",
        "prefix TEXT NOT NULL",
        "label TEXT NOT NULL",
        "project TEXT",
        "models TEXT NOT NULL",
        "settlement TEXT NOT NULL",
        "budgets TEXT NOT NULL",
        "rpm INTEGER",
        "expires_at REAL",
        "paused INTEGER NOT NULL",
        "revoked INTEGER NOT NULL",
        "created_at TEXT NOT NULL",
        "revoked_at TEXT",
        "last_used_at TEXT",
    ]
    out["key_spend"] = [
        "key_id TEXT NOT NULL PK",
        "currency TEXT NOT NULL PK",
        "period TEXT NOT NULL PK",
        "micros INTEGER NOT NULL",
    ]
    out["price_versions"] = [
        "id TEXT PK",
        "route_id TEXT NOT NULL",
        "model_id TEXT NOT NULL",
        "fingerprint TEXT NOT NULL",
        "price TEXT NOT NULL",
        "source TEXT NOT NULL",
        "created_at TEXT NOT NULL",
    ]
    out["receipts"] = [
        "id TEXT PK",
        "request_id TEXT NOT NULL",
        "created_at TEXT NOT NULL",
        "finished_at TEXT",
        "status TEXT NOT NULL",
        "http_status INTEGER",
        "key_id TEXT",
        "key_label TEXT",
        "key_project TEXT",
        "client TEXT",
        "user_agent TEXT",
        "endpoint TEXT NOT NULL",
        "stream INTEGER NOT NULL",
        "requested_model TEXT",
        "catalog_model TEXT",
        "route_id TEXT",
        "route_type TEXT",
        "channel TEXT",
        "upstream_model TEXT",
        "attempts TEXT NOT NULL",
        "fallback_used INTEGER NOT NULL",
        "retry_count INTEGER NOT NULL",
        "usage_input INTEGER NOT NULL",
        "usage_cached_input INTEGER NOT NULL",
        "usage_cache_write INTEGER NOT NULL",
        "usage_output INTEGER NOT NULL",
        "usage_reasoning INTEGER NOT NULL",
        "usage_source TEXT",
        "price_version_id TEXT",
        "price TEXT",
        "cost_exact TEXT NOT NULL",
        "charge_micros INTEGER NOT NULL",
        "currency TEXT",
        "wallet_id TEXT",
        "balance_before_micros INTEGER",
        "balance_after_micros INTEGER",
        "hold_id TEXT",
        "hold_micros INTEGER NOT NULL",
        "ledger_entry_id INTEGER",
        "latency_ms INTEGER",
        "ttft_ms INTEGER",
        "error TEXT",
        "charge_policy TEXT",
        "prompt TEXT",
        "completion TEXT",
    ]
    out["_indexes_and_triggers"] = sorted(
        [
            *out["_indexes_and_triggers"],
            "index:holds_open_key",
            "index:price_versions_route",
            "index:receipts_created",
            "index:receipts_key",
            "index:receipts_model",
            "index:receipts_status",
            "index:receipts_wallet",
        ],
        key=lambda s: (s.split(":")[0], s.split(":")[1]),
    )
    return out


def _after(before, *, tables=None, objects=()):
    """The schema ``before`` plus new tables and new indexes/triggers."""
    out = {k: list(v) for k, v in before.items()}
    out.update(tables or {})
    out["_indexes_and_triggers"] = sorted(
        [*out["_indexes_and_triggers"], *objects], key=lambda s: tuple(s.split(":"))
    )
    return out


def _after_m003(m002):
    """m003_topups: top-ups, their events, payment event de-duplication, sandbox payments."""
    return _after(
        m002,
        tables={
            "payment_events": [
                "provider TEXT NOT NULL PK",
                "event_id TEXT NOT NULL PK",
                "type TEXT NOT NULL",
                "source TEXT NOT NULL",
                "received_at TEXT NOT NULL",
                "topup_id TEXT",
                "outcome TEXT NOT NULL",
            ],
            "payment_sync": ["provider TEXT PK", "cursor TEXT", "updated_at TEXT NOT NULL"],
            "sandbox_payments": [
                "id TEXT PK",
                "topup_id TEXT NOT NULL",
                "amount_micros INTEGER NOT NULL",
                "currency TEXT NOT NULL",
                "method TEXT NOT NULL",
                "status TEXT NOT NULL",
                "settle_at TEXT",
                "expires_at TEXT NOT NULL",
                "refunded_micros INTEGER NOT NULL",
                "dispute_id TEXT",
                "dispute_amount_micros INTEGER",
                "dispute_state TEXT",
                "failure_reason TEXT",
                "updated_at TEXT NOT NULL",
            ],
            "topup_events": [
                "id INTEGER PK",
                "topup_id TEXT NOT NULL",
                "at TEXT NOT NULL",
                "from_status TEXT",
                "to_status TEXT NOT NULL",
                "source TEXT NOT NULL",
                "applied INTEGER NOT NULL",
                "detail TEXT NOT NULL",
                "ledger_entry_id INTEGER",
            ],
            "topups": [
                "id TEXT PK",
                "wallet_id TEXT NOT NULL",
                "currency TEXT NOT NULL",
                "amount_micros INTEGER NOT NULL",
                "method TEXT NOT NULL",
                "provider TEXT NOT NULL",
                "reference TEXT",
                "payment_id TEXT",
                "status TEXT NOT NULL",
                "reason TEXT",
                "checkout_url TEXT",
                "receipt_url TEXT",
                "created_at TEXT NOT NULL",
                "updated_at TEXT NOT NULL",
                "expires_at TEXT",
                "completed_at TEXT",
                "ledger_entry_id INTEGER",
                "balance_before_micros INTEGER",
                "balance_after_micros INTEGER",
                "refunded_micros INTEGER NOT NULL",
                "disputed_micros INTEGER NOT NULL",
                "dispute_uncovered_micros INTEGER NOT NULL",
                "dispute_id TEXT",
                "dispute_state TEXT",
                "shortfall_micros INTEGER NOT NULL",
                "shortfall_seq INTEGER NOT NULL",
                "cancel_requested INTEGER NOT NULL",
                "retry_of TEXT",
                "sync_attempts INTEGER NOT NULL",
                "next_sync_at TEXT",
                "last_sync_at TEXT",
                "last_sync_error TEXT",
            ],
        },
        objects=[
            "index:topup_events_topup",
            "index:topups_open",
            "index:topups_payment",
            "index:topups_reference",
            "index:topups_wallet",
        ],
    )


def _after_m004(m003):
    """m004_ui: daily receipt roll-ups for the dashboard, indexes for receipt filters."""
    return _after(
        m003,
        tables={
            "receipt_daily": [
                "day TEXT NOT NULL PK",
                "wallet_id TEXT NOT NULL PK",
                "dim TEXT NOT NULL PK",
                "value TEXT NOT NULL PK",
                "requests INTEGER NOT NULL",
                "errors INTEGER NOT NULL",
                "charge_micros INTEGER NOT NULL",
            ]
        },
        objects=[
            "index:entries_wallet_kind",
            "index:receipts_channel",
            "index:receipts_client",
            "index:receipts_key_project",
            "index:receipts_request",
            "index:receipts_route_type",
            "trigger:receipt_daily_insert",
            "trigger:receipt_daily_replace",
            "trigger:receipt_daily_update",
        ],
    )


# Every migration, in order, with the schema after it. A new migration adds a line
# (and shipped ones are never edited, so their lines never change).
EXPECTED_AFTER = {"m001_ledger": EXPECTED_M001}
EXPECTED_AFTER["m002_gateway"] = _after_m002(EXPECTED_AFTER["m001_ledger"])
EXPECTED_AFTER["m003_topups"] = _after_m003(EXPECTED_AFTER["m002_gateway"])
EXPECTED_AFTER["m004_ui"] = _after_m004(EXPECTED_AFTER["m003_topups"])
EXPECTED_AFTER["m005_dialects"] = {
    **EXPECTED_AFTER["m004_ui"],
    "receipts": [
        *EXPECTED_AFTER["m004_ui"]["receipts"],
        "dialect TEXT",
        "upstream_kind TEXT",
        "notes TEXT",
    ],
}


@pytest.fixture
def conn(tmp_path):
    c = open_db(tmp_path / "t.db")
    yield c
    c.close()


def test_every_migration_has_an_expected_schema():
    names = [m.name for m in migrations.migrations._migrations]
    assert names == list(EXPECTED_AFTER), "add the new migration's schema to EXPECTED_AFTER"


@pytest.mark.parametrize("index", range(len(EXPECTED_AFTER)))
def test_each_migration_gives_exactly_the_expected_schema(conn, index):
    names = [m.name for m in migrations.migrations._migrations]
    later = names[index + 1 :]
    migrations.migrations.apply(sqlite_utils.Database(conn), stop_before=later or None)
    assert migrations.schema(conn) == EXPECTED_AFTER[names[index]]


def test_migrating_an_empty_database(conn):
    assert migrations.apply(conn) == list(EXPECTED_AFTER)
    assert migrations.schema(conn) == list(EXPECTED_AFTER.values())[-1]
    assert not conn.in_transaction


def test_migrations_are_idempotent(conn):
    migrations.apply(conn)
    before = migrations.schema(conn)
    assert migrations.apply(conn) == []
    assert migrations.schema(conn) == before
    rows = conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id").fetchall()
    assert [r[0] for r in rows] == list(EXPECTED_AFTER)


def test_store_open_twice_keeps_data(tmp_path):
    path = tmp_path / "s.db"
    st = Store.open(path, wallets=DEFAULT_WALLETS)
    st.close()
    st = Store.open(path, wallets=DEFAULT_WALLETS)
    try:
        rows = st.read().execute("SELECT id, settlement, currency FROM wallets ORDER BY id")
        assert [tuple(r) for r in rows] == [
            ("credit", "official", "USD"),
            ("routed", "routed", "CNY"),
        ]
    finally:
        st.close()


def test_ledger_tables_are_append_only(tmp_path):
    from localgate.core.ledger import adjustment_entry
    from localgate.store.ledger import post_entry

    st = Store.open(tmp_path / "s.db", wallets=DEFAULT_WALLETS)
    try:
        st.write_sync(post_entry, adjustment_entry("credit", "USD", 5, "seed"))
        for sql in (
            "UPDATE entries SET amount_micros = 1",
            "DELETE FROM entries",
            "UPDATE postings SET amount_micros = 1",
            "DELETE FROM postings",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                st.write_sync(lambda c, sql=sql: c.execute(sql))
    finally:
        st.close()


def test_open_db_pragmas(tmp_path):
    c = open_db(tmp_path / "sub" / "p.db")  # creates the parent dir
    try:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert c.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert c.execute("PRAGMA busy_timeout").fetchone()[0] == BUSY_TIMEOUT_MS >= 5000
        assert c.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: durable commits
        assert c.isolation_level is None  # transactions are explicit
        assert isinstance(c.execute("SELECT 1 AS one").fetchone()["one"], int)  # Row factory
    finally:
        c.close()


def test_foreign_keys_are_enforced(tmp_path):
    st = Store.open(tmp_path / "s.db", wallets=DEFAULT_WALLETS)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
            st.write_sync(
                lambda c: c.execute(
                    "INSERT INTO holds (id, wallet_id, currency, amount_micros, status, owner, "
                    "created_at, open_entry_id) VALUES ('h', 'nope', 'USD', 1, 'open', 'o', 't', 999)"
                )
            )
    finally:
        st.close()


def test_readonly_open_db(tmp_path):
    path = tmp_path / "ro.db"
    open_db(path).close()
    c = open_db(path, readonly=True)
    try:
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            c.execute("CREATE TABLE t (x)")
    finally:
        c.close()


# -- the writer -------------------------------------------------------------------


@pytest.fixture
def writer(tmp_path):
    path = tmp_path / "w.db"
    c = open_db(path)
    c.execute("CREATE TABLE t (name TEXT PRIMARY KEY)")
    c.close()
    w = Writer(path).start()
    yield w
    w.close()


def insert(conn, name):
    conn.execute("INSERT INTO t (name) VALUES (?)", (name,))
    return name


def insert_then_fail(conn, name):
    conn.execute("INSERT INTO t (name) VALUES (?)", (name,))
    raise ValueError(f"job {name} failed")


def names(path):
    c = open_db(path)
    try:
        return sorted(r[0] for r in c.execute("SELECT name FROM t"))
    finally:
        c.close()


def gate(writer):
    """Occupy the writer until the returned event is set, so what is submitted
    meanwhile is committed together as one batch."""
    entered, release = threading.Event(), threading.Event()

    def hold(conn):
        entered.set()
        release.wait(10)

    fut = writer.submit(hold)
    assert entered.wait(10)
    return release, fut


def test_a_failing_job_rolls_back_alone(writer):
    release, gate_future = gate(writer)
    commits = writer.commits
    futures = [
        writer.submit(insert, "a"),
        writer.submit(insert_then_fail, "b"),
        writer.submit(insert, "c"),
        writer.submit(insert, "a"),
    ]  # duplicate key
    release.set()
    gate_future.result(10)
    assert futures[0].result(10) == "a"
    with pytest.raises(ValueError, match="job b failed"):
        futures[1].result(10)
    assert futures[2].result(10) == "c"
    with pytest.raises(sqlite3.IntegrityError):
        futures[3].result(10)
    assert names(writer.path) == ["a", "c"]
    assert writer.commits == commits + 2  # the gate's batch, then the four jobs in one


def test_results_come_only_after_commit(writer):
    release, gate_future = gate(writer)
    entered, go_on = threading.Event(), threading.Event()

    def slow(conn):
        entered.set()
        go_on.wait(10)
        return "slow"

    first = writer.submit(insert, "x")
    second = writer.submit(slow)
    release.set()
    gate_future.result(10)
    assert entered.wait(10)
    # "x" ran already, but its batch has not committed: no result, nothing visible.
    assert not first.done()
    assert names(writer.path) == []
    go_on.set()
    assert first.result(10) == "x"
    assert names(writer.path) == ["x"]  # visible to another connection once answered
    assert second.result(10) == "slow"


def test_a_job_that_ends_the_transaction_does_not_kill_the_writer(writer):
    """SQLite rolls the whole transaction back by itself on some errors (disk
    full, I/O errors); the writer must answer every caller and keep working."""
    release, gate_future = gate(writer)
    before = writer.submit(insert, "before")
    breaker = writer.submit(lambda c: c.execute("ROLLBACK") and 1 / 0)
    after = writer.submit(insert, "after")
    release.set()
    gate_future.result(10)
    with pytest.raises(ZeroDivisionError):
        breaker.result(10)
    # Lost with the transaction: told so, never left hanging.
    with pytest.raises(sqlite3.Error):
        before.result(10)
    # Not yet run when it happened: runs in a transaction of its own.
    assert after.result(10) == "after"
    assert writer.submit(insert, "later").result(10) == "later"
    assert names(writer.path) == ["after", "later"]


async def test_async_run_and_sync_run(writer):
    assert await writer.run(insert, "async") == "async"
    assert writer.run_sync(insert, "sync") == "sync"
    with pytest.raises(ValueError):
        await writer.run(insert_then_fail, "nope")
    assert names(writer.path) == ["async", "sync"]


def test_closed_writer_refuses_jobs_and_finishes_queued_ones(tmp_path):
    path = tmp_path / "w.db"
    c = open_db(path)
    c.execute("CREATE TABLE t (name TEXT PRIMARY KEY)")
    c.close()
    w = Writer(path).start()
    futures = [w.submit(insert, f"n{i}") for i in range(20)]
    w.close()
    assert [f.result(1) for f in futures] == [f"n{i}" for i in range(20)]
    with pytest.raises(WriterClosed):
        w.submit(insert, "late")
    w.close()  # twice is fine
