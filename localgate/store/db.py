"""Opening the SQLite database: one place for the pragmas every connection needs."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000


def open_db(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with foreign keys on and a busy timeout.

    Connections are in autocommit mode (``isolation_level=None``): transactions
    are begun explicitly (the writer uses ``BEGIN IMMEDIATE``), so nothing
    holds a lock by accident. ``synchronous=FULL`` makes every commit durable
    before anyone is told about it.
    """
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(
            f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def utcnow() -> str:
    """Timestamps are ISO 8601 UTC text with microseconds: they sort as they read."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
