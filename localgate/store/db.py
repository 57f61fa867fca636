"""Opening the SQLite database: one place for the pragmas every connection needs,
and for the database's files being readable by their owner only."""

from __future__ import annotations

import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000
# The files of one database: SQLite's -wal and -shm, and store/keys.py's change marker.
SIDE_FILES = ("-wal", "-shm", "-keys")


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
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            # Created 0600 here, not by SQLite under the umask: SQLite gives the
            # -wal and -shm files the database file's mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def make_private(path: str | Path) -> None:
    """The database and its side files readable by their owner only: the change
    marker is created 0600 (it is appended to, never re-created), loose modes tightened."""
    if os.name != "posix":
        return
    path = Path(path)
    marker = path.with_name(path.name + "-keys")
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    for file in (path, *(path.with_name(path.name + s) for s in SIDE_FILES)):
        try:
            if file.stat().st_mode & 0o077:
                os.chmod(file, 0o600)
        except FileNotFoundError:
            continue


def utcnow() -> str:
    """Timestamps are ISO 8601 UTC text with microseconds: they sort as they read."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
