"""The one writer: a thread that owns the only write connection.

Every write in the process is a job — a function ``fn(conn, *args)`` — sent to
this thread. Jobs that arrive together are committed together (group commit):
each runs inside its own SAVEPOINT, so a job that raises is rolled back alone,
and one durable COMMIT then covers the batch. A job's caller hears back only
after that commit, so nothing is claimed before it is on disk.

Async callers ``await writer.run(fn, ...)``; threads and the CLI call
``writer.run_sync(fn, ...)``.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from localgate.errors import WriterClosed
from localgate.store.db import open_db

T = TypeVar("T")
log = logging.getLogger(__name__)

MAX_BATCH = 256
_STOP = object()


class Writer:
    def __init__(self, path: str | Path, *, max_batch: int = MAX_BATCH) -> None:
        self.path = Path(path)
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="localgate-writer", daemon=True)
        self._closed = False
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.commits = 0  # batches committed; read by benchmarks

    def start(self) -> Writer:
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error
        return self

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        if self._closed:
            raise WriterClosed("the database writer is closed")
        future: Future[T] = Future()
        self._queue.put((fn, args, future))
        return future

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self.submit(fn, *args))

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return self.submit(fn, *args).result()

    def close(self) -> None:
        """Finish queued jobs, then stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        try:
            conn = open_db(self.path)
        except BaseException as exc:  # reported to start()
            self._start_error = exc
            self._started.set()
            return
        self._started.set()
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                batch = [first]
                stop = False
                while len(batch) < self.max_batch:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stop = True
                        break
                    batch.append(job)
                self._commit_batch(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit_batch(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            for _fn, _args, future in batch:
                future.set_exception(exc)
            return
        for i, (fn, args, future) in enumerate(batch):
            if not future.set_running_or_notify_cancel():
                continue
            conn.execute("SAVEPOINT job")
            error: BaseException | None = None
            try:
                result = fn(conn, *args)
            except BaseException as exc:  # the job's own error goes back to its caller
                result, error = None, exc
            try:
                if error is not None:
                    conn.execute("ROLLBACK TO job")
                conn.execute("RELEASE job")
            except sqlite3.Error as exc:
                # The transaction is gone: SQLite rolled it back by itself (disk
                # full, I/O error) or the job ended it. The jobs before this one
                # are lost with it; the ones after get a transaction of their own.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                log.error("transaction lost in a batch of %d: %s", len(batch), exc)
                for earlier, _result, _error in outcomes:
                    earlier.set_exception(exc)
                future.set_exception(error or exc)
                self._commit_batch(conn, batch[i + 1 :])
                return
            outcomes.append((future, result, error))
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            log.error("commit failed, batch of %d rolled back: %s", len(batch), exc)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for future, _result, _error in outcomes:
                future.set_exception(exc)
            return
        self.commits += 1
        for future, result, error in outcomes:
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
