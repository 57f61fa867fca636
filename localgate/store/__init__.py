"""SQLite storage: the database file, its one writer and its readers.

``Store.open(path)`` migrates the schema, creates the configured wallets and
starts the writer thread. Writes go through ``await store.write(fn, ...)`` (or
``store.write_sync``); reads use ``store.read()``, a per-thread connection.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from localgate.store import ledger as ledger_store
from localgate.store import migrations
from localgate.store.db import make_private, open_db
from localgate.store.writer import Writer

T = TypeVar("T")


class Store:
    def __init__(self, path: str | Path, writer: Writer) -> None:
        self.path = Path(path)
        self.writer = writer
        # Identifies this process's holds, so start-up recovery knows whose they are.
        self.owner = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path, *, wallets: Iterable[Any] = ()) -> Store:
        conn = open_db(path)
        make_private(path)
        try:
            migrations.apply(conn)
            conn.execute("BEGIN IMMEDIATE")
            ledger_store.ensure_wallets(conn, wallets)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return cls(path, Writer(path).start())

    def read(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = open_db(self.path)
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)
        return conn

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.writer.run(fn, *args)

    def write_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self.writer.run_sync(fn, *args)

    def recover(self) -> list[str]:
        """At start-up: release the holds an earlier process left open (reason
        ``recovered``); their receipts finish as ``interrupted``."""
        return self.write_sync(_interrupt, "recovered", None, self.owner)

    async def release_in_flight(self) -> list[str]:
        """At shutdown, once the server has stopped every request: release the
        holds this process still has open (reason ``shutdown``), not charged."""
        return await self.write(_interrupt, "shutdown", self.owner, None)

    def close(self) -> None:
        self.writer.close()
        with self._lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


def _interrupt(
    conn: sqlite3.Connection, reason: str, owner: str | None, not_owner: str | None
) -> list[str]:
    from localgate.store import receipts
    from localgate.store.db import utcnow

    released = ledger_store.release_open_holds(
        conn, reason=reason, owner=owner, not_owner=not_owner
    )
    receipts.interrupt_pending(conn, released, utcnow())
    return released
