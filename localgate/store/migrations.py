"""Numbered schema migrations. Never edit one that has shipped: add the next.

Each is a few sqlite-utils / SQL calls; ``apply(conn)`` runs the pending ones,
each in its own transaction together with the record that it ran.
"""

from __future__ import annotations

import sqlite3

import sqlite_utils
from sqlite_utils.migrations import Migrations

migrations = Migrations("localgate")


@migrations()
def m001_ledger(db: sqlite_utils.Database) -> None:
    db.execute("""
        CREATE TABLE wallets (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            settlement TEXT NOT NULL CHECK (settlement IN ('official', 'routed')),
            currency TEXT NOT NULL,
            frozen INTEGER NOT NULL DEFAULT 0,
            frozen_reason TEXT,
            low_balance_micros INTEGER,
            created_at TEXT NOT NULL
        )""")
    db.execute("""
        CREATE TABLE accounts (
            id TEXT NOT NULL,
            currency TEXT NOT NULL,
            balance_micros INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (id, currency)
        ) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE entries (
            id INTEGER PRIMARY KEY,
            created_at TEXT NOT NULL,
            kind TEXT NOT NULL,
            wallet_id TEXT REFERENCES wallets(id),
            currency TEXT NOT NULL,
            amount_micros INTEGER NOT NULL,
            balance_after_micros INTEGER NOT NULL,
            held_after_micros INTEGER NOT NULL,
            memo TEXT NOT NULL DEFAULT '',
            idempotency_key TEXT UNIQUE,
            reverses_id INTEGER REFERENCES entries(id),
            hold_id TEXT,
            receipt_id TEXT,
            topup_id TEXT,
            prev_hash TEXT NOT NULL,
            hash TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX entries_wallet ON entries (wallet_id, id)")
    db.execute("CREATE INDEX entries_receipt ON entries (receipt_id) WHERE receipt_id IS NOT NULL")
    db.execute("CREATE INDEX entries_topup ON entries (topup_id) WHERE topup_id IS NOT NULL")
    db.execute("""
        CREATE TABLE postings (
            entry_id INTEGER NOT NULL REFERENCES entries(id),
            seq INTEGER NOT NULL,
            account TEXT NOT NULL,
            currency TEXT NOT NULL,
            amount_micros INTEGER NOT NULL,
            PRIMARY KEY (entry_id, seq)
        ) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE holds (
            id TEXT PRIMARY KEY,
            wallet_id TEXT NOT NULL REFERENCES wallets(id),
            currency TEXT NOT NULL,
            amount_micros INTEGER NOT NULL CHECK (amount_micros > 0),
            status TEXT NOT NULL CHECK (status IN ('open', 'settled', 'released')),
            owner TEXT NOT NULL,
            receipt_id TEXT,
            reason TEXT,
            charge_micros INTEGER,
            created_at TEXT NOT NULL,
            closed_at TEXT,
            open_entry_id INTEGER NOT NULL REFERENCES entries(id),
            close_entry_id INTEGER REFERENCES entries(id)
        )""")
    db.execute("CREATE INDEX holds_open ON holds (wallet_id) WHERE status = 'open'")
    # Append-only: the ledger refuses edits; corrections are new entries.
    for table in ("entries", "postings"):
        for action in ("UPDATE", "DELETE"):
            db.execute(f"""
                CREATE TRIGGER {table}_no_{action.lower()} BEFORE {action} ON {table}
                BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: post a reversing entry'); END""")


@migrations()
def m002_gateway(db: sqlite_utils.Database) -> None:
    db.execute("""
        CREATE TABLE meta (
            name TEXT PRIMARY KEY,
            value INTEGER NOT NULL
        )""")
    db.execute("INSERT INTO meta (name, value) VALUES ('keys_generation', 0)")
    db.execute("""
        CREATE TABLE api_keys (
            id TEXT PRIMARY KEY,
            key_hash TEXT NOT NULL UNIQUE,
            prefix TEXT NOT NULL,
            label TEXT NOT NULL,
            project TEXT,
            models TEXT NOT NULL DEFAULT '[]',
            settlement TEXT NOT NULL DEFAULT 'any',
            budgets TEXT NOT NULL DEFAULT '{}',
            rpm INTEGER,
            expires_at REAL,
            paused INTEGER NOT NULL DEFAULT 0,
            revoked INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            revoked_at TEXT,
            last_used_at TEXT
        )""")
    db.execute("""
        CREATE TABLE key_spend (
            key_id TEXT NOT NULL REFERENCES api_keys(id),
            currency TEXT NOT NULL,
            period TEXT NOT NULL,
            micros INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (key_id, currency, period)
        ) WITHOUT ROWID""")
    db.execute("ALTER TABLE holds ADD COLUMN key_id TEXT")
    db.execute("CREATE INDEX holds_open_key ON holds (key_id) WHERE status = 'open'")
    db.execute("""
        CREATE TABLE price_versions (
            id TEXT PRIMARY KEY,
            route_id TEXT NOT NULL,
            model_id TEXT NOT NULL,
            fingerprint TEXT NOT NULL,
            price TEXT NOT NULL,
            source TEXT NOT NULL,
            created_at TEXT NOT NULL
        )""")
    db.execute("CREATE INDEX price_versions_route ON price_versions (route_id, created_at)")
    db.execute("""
        CREATE TABLE receipts (
            id TEXT PRIMARY KEY,
            request_id TEXT NOT NULL,
            created_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL,
            http_status INTEGER,
            key_id TEXT,
            key_label TEXT,
            key_project TEXT,
            client TEXT,
            user_agent TEXT,
            endpoint TEXT NOT NULL,
            stream INTEGER NOT NULL DEFAULT 0,
            requested_model TEXT,
            catalog_model TEXT,
            route_id TEXT,
            route_type TEXT,
            channel TEXT,
            upstream_model TEXT,
            attempts TEXT NOT NULL DEFAULT '[]',
            fallback_used INTEGER NOT NULL DEFAULT 0,
            retry_count INTEGER NOT NULL DEFAULT 0,
            usage_input INTEGER NOT NULL DEFAULT 0,
            usage_cached_input INTEGER NOT NULL DEFAULT 0,
            usage_cache_write INTEGER NOT NULL DEFAULT 0,
            usage_output INTEGER NOT NULL DEFAULT 0,
            usage_reasoning INTEGER NOT NULL DEFAULT 0,
            usage_source TEXT,
            price_version_id TEXT,
            price TEXT,
            cost_exact TEXT NOT NULL DEFAULT '0',
            charge_micros INTEGER NOT NULL DEFAULT 0,
            currency TEXT,
            wallet_id TEXT,
            balance_before_micros INTEGER,
            balance_after_micros INTEGER,
            hold_id TEXT,
            hold_micros INTEGER NOT NULL DEFAULT 0,
            ledger_entry_id INTEGER,
            latency_ms INTEGER,
            ttft_ms INTEGER,
            error TEXT,
            charge_policy TEXT,
            prompt TEXT,
            completion TEXT
        )""")
    db.execute("CREATE INDEX receipts_created ON receipts (created_at)")
    db.execute("CREATE INDEX receipts_key ON receipts (key_id, id)")
    db.execute("CREATE INDEX receipts_model ON receipts (requested_model, id)")
    db.execute("CREATE INDEX receipts_wallet ON receipts (wallet_id, id)")
    db.execute("CREATE INDEX receipts_status ON receipts (status, id)")


@migrations()
def m003_topups(db: sqlite_utils.Database) -> None:
    """Top-ups with their status history, provider event de-duplication, sync
    cursors, and the sandbox provider's simulated payments."""
    db.execute("""
        CREATE TABLE topups (
            id TEXT PRIMARY KEY,
            wallet_id TEXT NOT NULL REFERENCES wallets(id),
            currency TEXT NOT NULL,
            amount_micros INTEGER NOT NULL CHECK (amount_micros > 0),
            method TEXT NOT NULL,
            provider TEXT NOT NULL,
            reference TEXT,
            payment_id TEXT,
            status TEXT NOT NULL CHECK (status IN ('created', 'pending', 'completed', 'failed',
                'canceled', 'expired', 'refunded', 'disputed', 'reinstated')),
            reason TEXT,
            checkout_url TEXT,
            receipt_url TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            expires_at TEXT,
            completed_at TEXT,
            ledger_entry_id INTEGER REFERENCES entries(id),
            balance_before_micros INTEGER,
            balance_after_micros INTEGER,
            refunded_micros INTEGER NOT NULL DEFAULT 0,
            disputed_micros INTEGER NOT NULL DEFAULT 0,
            dispute_uncovered_micros INTEGER NOT NULL DEFAULT 0,
            dispute_id TEXT,
            dispute_state TEXT,
            shortfall_micros INTEGER NOT NULL DEFAULT 0,
            shortfall_seq INTEGER NOT NULL DEFAULT 0,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            retry_of TEXT,
            sync_attempts INTEGER NOT NULL DEFAULT 0,
            next_sync_at TEXT,
            last_sync_at TEXT,
            last_sync_error TEXT
        )""")
    db.execute(
        "CREATE UNIQUE INDEX topups_reference ON topups (provider, reference) "
        "WHERE reference IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX topups_payment ON topups (provider, payment_id) WHERE payment_id IS NOT NULL"
    )
    db.execute(
        "CREATE INDEX topups_open ON topups (next_sync_at) WHERE status IN ('created', 'pending')"
    )
    db.execute("CREATE INDEX topups_wallet ON topups (wallet_id, created_at)")
    db.execute("""
        CREATE TABLE topup_events (
            id INTEGER PRIMARY KEY,
            topup_id TEXT NOT NULL REFERENCES topups(id),
            at TEXT NOT NULL,
            from_status TEXT,
            to_status TEXT NOT NULL,
            source TEXT NOT NULL CHECK (source IN ('return', 'webhook', 'sync', 'user')),
            applied INTEGER NOT NULL DEFAULT 1,
            detail TEXT NOT NULL DEFAULT '',
            ledger_entry_id INTEGER REFERENCES entries(id)
        )""")
    db.execute("CREATE INDEX topup_events_topup ON topup_events (topup_id, id)")
    db.execute("""
        CREATE TABLE payment_events (
            provider TEXT NOT NULL,
            event_id TEXT NOT NULL,
            type TEXT NOT NULL,
            source TEXT NOT NULL,
            received_at TEXT NOT NULL,
            topup_id TEXT,
            outcome TEXT NOT NULL,
            PRIMARY KEY (provider, event_id)
        ) WITHOUT ROWID""")
    db.execute("""
        CREATE TABLE payment_sync (
            provider TEXT PRIMARY KEY,
            cursor TEXT,
            updated_at TEXT NOT NULL
        )""")
    db.execute("""
        CREATE TABLE sandbox_payments (
            id TEXT PRIMARY KEY,
            topup_id TEXT NOT NULL UNIQUE,
            amount_micros INTEGER NOT NULL,
            currency TEXT NOT NULL,
            method TEXT NOT NULL,
            status TEXT NOT NULL,
            settle_at TEXT,
            expires_at TEXT NOT NULL,
            refunded_micros INTEGER NOT NULL DEFAULT 0,
            dispute_id TEXT,
            dispute_amount_micros INTEGER,
            dispute_state TEXT,
            failure_reason TEXT,
            updated_at TEXT NOT NULL
        )""")


# The dashboard's daily rollup: one row per (day, wallet, dimension, value) for
# the dimensions it ranks, so a day holds wallets x (models + keys + tools) rows.
_DAILY_DIMS = (("model", "requested_model"), ("key", "key_id"), ("client", "client"))


def _daily_share(r: str, source: str = "") -> str:
    """One receipt's share of the rollup, a row per dimension. ``r`` names the
    receipt (NEW, OLD or a table alias); ``source`` is a FROM clause if needed."""
    return " UNION ALL ".join(
        f"SELECT substr({r}.created_at, 1, 10) AS day, coalesce({r}.wallet_id, '') AS wallet_id, "
        f"'{dim}' AS dim, coalesce({r}.{column}, '') AS value, "
        f"({r}.status IN ('failed', 'rejected', 'interrupted')) AS errors, "
        f"{r}.charge_micros AS charge_micros{source}"
        for dim, column in _DAILY_DIMS
    )


def _daily_add(r: str) -> str:
    # "WHERE true" tells the parser the ON CONFLICT belongs to the INSERT.
    return (
        "INSERT INTO receipt_daily (day, wallet_id, dim, value, requests, errors, charge_micros) "
        f"SELECT day, wallet_id, dim, value, 1, errors, charge_micros FROM ({_daily_share(r)}) "
        "WHERE true ON CONFLICT DO UPDATE SET requests = receipt_daily.requests + 1, "
        "errors = receipt_daily.errors + excluded.errors, "
        "charge_micros = receipt_daily.charge_micros + excluded.charge_micros;"
    )


def _daily_remove(r: str, source: str = "") -> str:
    return (
        "UPDATE receipt_daily SET requests = receipt_daily.requests - 1, "
        "errors = receipt_daily.errors - s.errors, "
        "charge_micros = receipt_daily.charge_micros - s.charge_micros "
        f"FROM ({_daily_share(r, source)}) AS s WHERE receipt_daily.day = s.day "
        "AND receipt_daily.wallet_id = s.wallet_id AND receipt_daily.dim = s.dim "
        "AND receipt_daily.value = s.value;"
    )


@migrations()
def m004_ui(db: sqlite_utils.Database) -> None:
    """Indexes for the receipts filters and the ledger's kind filter, and a daily
    rollup of receipts that keeps the dashboard fast at millions of receipts."""
    for column in ("client", "route_type", "channel", "key_project"):
        db.execute(f"CREATE INDEX receipts_{column} ON receipts ({column}, id)")
    db.execute("CREATE INDEX receipts_request ON receipts (request_id)")
    db.execute("CREATE INDEX entries_wallet_kind ON entries (wallet_id, kind, id)")
    db.execute("""
        CREATE TABLE receipt_daily (
            day TEXT NOT NULL,
            wallet_id TEXT NOT NULL,
            dim TEXT NOT NULL,
            value TEXT NOT NULL,
            requests INTEGER NOT NULL DEFAULT 0,
            errors INTEGER NOT NULL DEFAULT 0,
            charge_micros INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (day, wallet_id, dim, value)
        ) WITHOUT ROWID""")
    # Kept by triggers, so no write path can forget it. A receipt is saved with
    # INSERT OR REPLACE as it finishes: the BEFORE INSERT trigger takes the old
    # row's share out, the AFTER INSERT trigger adds the new one. There is no
    # DELETE trigger on purpose: REPLACE fires DELETE triggers when
    # recursive_triggers is on (sqlite-utils turns it on), which would take the
    # old share out twice. Receipts are never deleted; a retention job would
    # have to subtract its rows from receipt_daily itself.
    old = _daily_remove("o", " FROM receipts AS o WHERE o.id = NEW.id")
    db.execute(f"""
        CREATE TRIGGER receipt_daily_replace BEFORE INSERT ON receipts
        WHEN EXISTS (SELECT 1 FROM receipts WHERE id = NEW.id)
        BEGIN {old} END""")
    db.execute(
        f"CREATE TRIGGER receipt_daily_insert AFTER INSERT ON receipts BEGIN {_daily_add('NEW')} END"
    )
    db.execute(f"""
        CREATE TRIGGER receipt_daily_update AFTER UPDATE OF created_at, wallet_id,
            requested_model, key_id, client, status, charge_micros ON receipts
        BEGIN {_daily_remove("OLD")} {_daily_add("NEW")} END""")
    db.execute(f"""
        INSERT INTO receipt_daily (day, wallet_id, dim, value, requests, errors, charge_micros)
        SELECT day, wallet_id, dim, value, count(*), sum(errors), sum(charge_micros)
        FROM ({_daily_share("r", " FROM receipts AS r")}) GROUP BY day, wallet_id, dim, value""")


@migrations()
def m005_dialects(db: sqlite_utils.Database) -> None:
    """Receipts say which API the caller spoke, which kind of upstream answered,
    and what a translation between the two had to leave out."""
    for column in ("dialect", "upstream_kind", "notes"):
        db.execute(f"ALTER TABLE receipts ADD COLUMN {column} TEXT")


def apply(conn: sqlite3.Connection) -> list[str]:
    """Apply pending migrations; returns the names applied."""
    db = sqlite_utils.Database(conn)
    pending = [m.name for m in migrations.pending(db)]
    migrations.apply(db)
    return pending


def schema(conn: sqlite3.Connection) -> dict[str, list[str]]:
    """Table -> ["column TYPE [NOT NULL] [PK]"], plus indexes and triggers: for tests."""
    out: dict[str, list[str]] = {}
    tables = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name != '_sqlite_migrations' ORDER BY name"
    ).fetchall()
    for (name,) in tables:
        cols = conn.execute(f"PRAGMA table_info({name})").fetchall()
        out[name] = [
            f"{c[1]} {c[2]}" + (" NOT NULL" if c[3] else "") + (" PK" if c[5] else "") for c in cols
        ]
    others = conn.execute(
        "SELECT type, name FROM sqlite_master WHERE type IN ('index', 'trigger') "
        "AND name NOT LIKE 'sqlite_%' ORDER BY type, name"
    ).fetchall()
    out["_indexes_and_triggers"] = [f"{t}:{n}" for t, n in others]
    return out
