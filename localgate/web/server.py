"""Running the app under uvicorn, and stopping it without losing track of money.

uvicorn's own shutdown is close to what the gateway needs, but not quite:

- after a graceful stop on SIGTERM or SIGINT it raises the signal again, so the
  process dies of it (status 143, or "Aborted!" and 1 through click); a stop
  that was asked for and went cleanly is a success here: exit status 0;
- when its grace period runs out it cancels the requests still running and at
  once shuts the app down (our lifespan closes the store) without waiting for
  them, so a stream settling its hold on cancellation could find the database
  writer already closed;
- a second Ctrl+C skips the app's shutdown altogether;
- a onefile binary runs as two processes: the bootloader forwards every signal
  to the Python child, and a Ctrl+C in a terminal reaches both, so the child
  sees the same SIGINT twice in a row.

:class:`GracefulServer` keeps uvicorn and changes only that: on the first
signal it stops accepting connections, gives requests in flight
:data:`SHUTDOWN_GRACE_SECONDS` to finish, cancels the rest (a stream relay
settles what it delivered), waits for them, and only then runs the app's
shutdown, which releases any hold still open (its receipt finishes as
``interrupted``) and closes the database. A second, distinct signal skips the
grace period but not the settling.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType

import uvicorn

from localgate.errors import SHUTDOWN_REASON

log = logging.getLogger("localgate.server")

# How long requests in flight may run on after a stop signal before they are
# cancelled. Short: a stream can run for minutes, and whoever stops the
# gateway (Ctrl+C, systemd, docker stop's 10 s) wants it gone promptly.
SHUTDOWN_GRACE_SECONDS = 3.0
# How long cancelled requests get to settle their holds before the app's
# shutdown runs anyway (it releases whatever is still held).
SETTLE_TIMEOUT_SECONDS = 5.0
# The same signal twice within this window is one event delivered twice (the
# terminal's Ctrl+C plus the onefile bootloader forwarding it).
DUPLICATE_SIGNAL_WINDOW = 0.5
HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _QuietCancellation(logging.Filter):
    """Drop uvicorn's "Exception in ASGI application" for requests we cancelled."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, asyncio.CancelledError)


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, *, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        super().__init__(config)
        self.grace = grace
        self.stop_signal: int | None = None  # the first stop signal received
        self.cancelled_requests = 0
        self._last_signal: tuple[int, float] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # Like uvicorn's, minus raising the signal again afterwards.
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        last = self._last_signal
        self._last_signal = (sig, now)
        if last is not None and last[0] == sig and now - last[1] < DUPLICATE_SIGNAL_WINDOW:
            return
        if self.should_exit:
            self.force_exit = True  # a second stop request: skip the grace period
        else:
            self.stop_signal = sig
            self.should_exit = True

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        # Idle keep-alive connections close now; busy ones after their response.
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.grace
        while self.server_state.tasks and not self.force_exit and loop.time() < deadline:
            await asyncio.sleep(0.05)
        tasks = list(self.server_state.tasks)
        if tasks:
            self.cancelled_requests = len(tasks)
            log.warning(
                "stopping %d request(s) still running; streams are charged for what they "
                "delivered, other holds are released",
                len(tasks),
            )
            for task in tasks:
                task.cancel(msg=SHUTDOWN_REASON)
            await asyncio.wait(tasks, timeout=SETTLE_TIMEOUT_SECONDS)
        # Only now may the app release what is still held and close the store.
        await self.lifespan.shutdown()


def serve(config: uvicorn.Config, sock: socket.socket) -> GracefulServer:
    """Serve on ``sock`` until a stop signal; returns the server, which tells the
    signal (``stop_signal``) and how many requests it cut short."""
    server = GracefulServer(config)
    logging.getLogger("uvicorn.error").addFilter(_QuietCancellation())
    server.run(sockets=[sock])
    return server
