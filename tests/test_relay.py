"""The stream relay settles exactly once, whatever interrupts it."""

from __future__ import annotations

import asyncio
import time

import pytest

from localgate.core.receipts import Receipt
from localgate.providers.base import StreamEvent, UpstreamStream
from localgate.services.relay import StreamRelay

CHUNK = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'


class SlowCloseStream(UpstreamStream):
    """Two events, then an aclose() that takes a while (a slow connection close)."""

    def __init__(self) -> None:
        super().__init__()
        self.events = [StreamEvent(CHUNK), StreamEvent(b"data: [DONE]\n\n", done=True)]
        self.closed = 0

    async def __anext__(self) -> StreamEvent:
        if not self.events:
            raise StopAsyncIteration
        await asyncio.sleep(0)
        return self.events.pop(0)

    async def aclose(self) -> None:
        self.closed += 1
        await asyncio.sleep(0.2)


class StubGateway:
    """Stands in for the gateway's settle callback, slowly (a busy writer)."""

    def __init__(self) -> None:
        self.settled: list[str] = []

    async def settle(self, usage, status, policy, http_status) -> None:
        await asyncio.sleep(0.05)
        self.settled.append(status)


def make_relay(gateway: StubGateway, upstream: UpstreamStream) -> StreamRelay:
    receipt = Receipt(
        id="rc_test", request_id="r", created_at="now", endpoint="/v1/chat/completions"
    )
    return StreamRelay(
        upstream,
        receipt,
        gateway.settle,
        started=time.perf_counter(),
        input_tokens=3,
        wants_usage=False,
    )


async def test_cancel_while_closing_a_finished_stream_still_settles_once():
    gateway, upstream = StubGateway(), SlowCloseStream()
    relay = make_relay(gateway, upstream)
    sent: list[bytes] = []

    async def write(chunk: bytes) -> None:
        sent.append(chunk)

    task = asyncio.create_task(relay.pump(write))
    await asyncio.sleep(0.05)  # the stream has ended; close() is waiting on aclose()
    assert upstream.closed == 1
    task.cancel()  # the client leaves at that very moment
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.4)
    assert gateway.settled == ["succeeded"]
    assert upstream.closed == 1


async def test_cancel_mid_stream_settles_as_client_canceled():
    gateway, upstream = StubGateway(), SlowCloseStream()
    upstream.events.insert(1, StreamEvent(CHUNK))
    relay = make_relay(gateway, upstream)
    gate = asyncio.Event()

    async def write(chunk: bytes) -> None:
        await gate.wait()  # the client stops reading

    task = asyncio.create_task(relay.pump(write))
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.4)
    assert gateway.settled == ["client_canceled"]
