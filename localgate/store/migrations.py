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
