"""Relaying a stream: event by event as it arrives, then settle and say what it cost.

The relay holds back the upstream's last event (``[DONE]``, Anthropic's
``message_stop``, the Responses ``response.completed``), settles the hold
(charge what was used, release the rest) through the ``settle`` callback it
was given, writes a final SSE comment carrying the receipt id, charge, wallet
and balance, and only then sends that last event. A client that goes away
mid-stream cancels the relay: the upstream call is closed at once and the
tokens already delivered are charged (estimated). A stream the upstream cuts
is charged the same way and ends with an error event in the caller's dialect.

The relay knows nothing of the gateway: it reads the receipt (time to first
token, the closing comment) and calls ``settle``; the gateway decides the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from localgate import tokens
from localgate.core.pricing import Usage
from localgate.core.receipts import (
    POLICY_CANCELED,
    POLICY_CANCELED_UPSTREAM,
    POLICY_CHARGED,
    POLICY_CUT,
    POLICY_ESTIMATED,
    POLICY_SHUTDOWN_STREAM,
    Receipt,
)
from localgate.errors import UpstreamError, is_shutdown
from localgate.providers.base import StreamEvent, UpstreamStream

DRAIN_SECONDS = 0.5

# settle(usage, status, charge policy, http status): charge the receipt's hold.
Settle = Callable[[Usage, str, str, int], Awaitable[None]]


class StreamRelay:
    def __init__(
        self,
        upstream: UpstreamStream,
        receipt: Receipt,
        settle: Settle,
        *,
        first: StreamEvent | None = None,
        started: float,
        input_tokens: int,
        wants_usage: bool,
    ) -> None:
        self.upstream = upstream
        self.receipt = receipt
        self._settle = settle
        self._started = started
        self._input_tokens = input_tokens
        self._wants_usage = wants_usage
        self._first = first  # read already (the gateway waits for it before answering)
        self._closing: asyncio.Future[None] | None = None

    async def pump(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Send the stream through ``write``; cancel this coroutine to stop it."""
        cut: UpstreamError | None = None
        last: bytes | None = None
        try:
            async for event in self._events():
                if event.done:
                    last = event.raw
                    await self._drain()
                    break
                if event.usage_only and not self._wants_usage:
                    continue
                if self.receipt.ttft_ms is None:
                    self.receipt.ttft_ms = round((time.perf_counter() - self._started) * 1000)
                await write(event.raw)
        except UpstreamError as exc:
            cut = exc
        except BaseException as exc:
            # The client went away (or the server is stopping): stop the upstream
            # now and charge what was delivered, then let the cancellation go on.
            await self.close("interrupted" if is_shutdown(exc) else "client_canceled")
            raise
        await self.close("cut" if cut else "done", cut)
        if cut is not None:
            await write(self.upstream.error_event(_cut_error(cut)))
        await write(self.receipt.sse_comment())
        if last is not None:
            await write(last)

    async def _events(self) -> AsyncIterator[StreamEvent]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for event in self.upstream:
            yield event

    async def _drain(self) -> None:
        """Read the upstream body to its end after the last event (briefly), so its
        connection goes back to the pool instead of being closed: a new TCP (and
        TLS) handshake per streamed request is what this saves."""
        with contextlib.suppress(StopAsyncIteration, UpstreamError, TimeoutError):
            async with asyncio.timeout(DRAIN_SECONDS):
                while True:
                    await self.upstream.__anext__()

    async def close(self, outcome: str, cut: UpstreamError | None = None) -> None:
        """Close the upstream and settle, once. The work runs as its own task: a
        cancellation that arrives meanwhile (the client leaves just as the stream
        ends) stops the wait, never the settle."""
        if self._closing is None:
            self._closing = asyncio.ensure_future(self._close(outcome, cut))
        await asyncio.shield(self._closing)

    async def _close(self, outcome: str, cut: UpstreamError | None) -> None:
        up = self.upstream
        await up.aclose()
        reported = up.usage
        usage = reported or Usage(
            input=self._input_tokens,
            output=tokens.count_tokens(up.output_text),
            source="estimated",
        )
        if outcome == "done":
            policy = POLICY_CHARGED if reported else POLICY_ESTIMATED
            await self._settle(usage, "succeeded", policy, 200)
        elif outcome == "cut":
            self.receipt.error = f"upstream stream cut: {cut}"
            await self._settle(usage, "failed", POLICY_CUT, 502)
        elif outcome == "interrupted":
            self.receipt.error = "localgate stopped before the stream finished"
            await self._settle(usage, "interrupted", POLICY_SHUTDOWN_STREAM, 503)
        else:
            self.receipt.error = "the client disconnected before the stream finished"
            policy = POLICY_CANCELED_UPSTREAM if reported else POLICY_CANCELED
            await self._settle(usage, "client_canceled", policy, 499)


def _cut_error(exc: UpstreamError) -> UpstreamError:
    error = UpstreamError(
        f"the upstream stream was cut: {exc}. Charged for the delivered tokens only.",
        status=exc.status,
    )
    error.code = "stream_cut"
    return error
