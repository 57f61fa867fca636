"""Relaying a stream: chunk by chunk as it arrives, then settle and say what it cost.

The relay holds back the upstream's ``[DONE]``, settles the hold (charge what
was used, release the rest), writes a final SSE comment carrying the receipt
id, charge, wallet and balance, and only then sends ``[DONE]``. A client that
goes away mid-stream cancels the relay: the upstream call is closed at once
and the tokens already delivered are charged (estimated). A stream the
upstream cuts is charged the same way and ends with an error event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from localgate import tokens
from localgate.core.pricing import Usage
from localgate.core.receipts import (
    POLICY_CANCELED,
    POLICY_CANCELED_UPSTREAM,
    POLICY_CHARGED,
    POLICY_CUT,
    POLICY_ESTIMATED,
    Receipt,
)
from localgate.errors import UpstreamError
from localgate.money import decimal_str
from localgate.providers.base import UpstreamStream

if TYPE_CHECKING:
    from localgate.services.proxy import Attempted, Gateway

DONE = b"data: [DONE]\n\n"
DRAIN_SECONDS = 0.5


def _amount(micros: int | None, currency: str | None) -> str:
    return f"{decimal_str(micros or 0)} {currency or ''}".strip()


def receipt_headers(receipt: Receipt, *, pending: bool = False) -> dict[str, str]:
    """The x-localgate-* headers: receipt id, charge, wallet, balance."""
    headers = {
        "x-localgate-receipt": receipt.id,
        "x-localgate-charge": "pending"
        if pending
        else _amount(receipt.charge_micros, receipt.currency),
    }
    if receipt.wallet_id:
        headers["x-localgate-wallet"] = receipt.wallet_id
    balance = receipt.balance_before_micros if pending else receipt.balance_after_micros
    if balance is not None:
        headers["x-localgate-balance"] = _amount(balance, receipt.currency)
    return headers


def receipt_comment(receipt: Receipt) -> bytes:
    h = receipt_headers(receipt)
    fields = " ".join(
        f"{k.removeprefix('x-localgate-')}={v.replace(' ', '_')}" for k, v in h.items()
    )
    return f": localgate {fields}\n\n".encode()


class StreamRelay:
    def __init__(self, gateway: Gateway, state: Attempted, upstream: UpstreamStream) -> None:
        self.gateway = gateway
        self.state = state
        self.upstream = upstream
        self._closing: asyncio.Future[None] | None = None

    @property
    def receipt(self) -> Receipt:
        return self.state.receipt

    async def pump(self, write: Callable[[bytes], Awaitable[None]]) -> None:
        """Send the stream through ``write``; cancel this coroutine to stop it."""
        st = self.state
        cut: UpstreamError | None = None
        try:
            async for event in self.upstream:
                if event.done:
                    await self._drain()
                    break
                if event.usage_only and not st.wants_usage:
                    continue
                if self.receipt.ttft_ms is None:
                    self.receipt.ttft_ms = round((time.perf_counter() - st.started) * 1000)
                await write(event.raw)
        except UpstreamError as exc:
            cut = exc
        except BaseException:
            # The client went away (or the server is stopping): stop the upstream
            # now and charge what was delivered, then let the cancellation go on.
            await self.close("client_canceled")
            raise
        await self.close("cut" if cut else "done", cut)
        if cut is not None:
            await write(_error_event(cut))
        await write(receipt_comment(self.receipt))
        if cut is None:
            await write(DONE)

    async def _drain(self) -> None:
        """Read the upstream body to its end after ``[DONE]`` (briefly), so its
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
        st = self.state
        estimated = Usage(
            input=st.input_tokens, output=tokens.count_tokens(up.output_text), source="estimated"
        )
        if outcome == "done":
            usage = up.usage or estimated
            await self.gateway._settle(
                st, usage, "succeeded", POLICY_CHARGED if up.usage else POLICY_ESTIMATED, 200
            )
        elif outcome == "cut":
            self.receipt.error = f"upstream stream cut: {cut}"
            await self.gateway._settle(st, up.usage or estimated, "failed", POLICY_CUT, 502)
        else:
            self.receipt.error = "the client disconnected before the stream finished"
            await self.gateway._settle(
                st,
                up.usage or estimated,
                "client_canceled",
                POLICY_CANCELED_UPSTREAM if up.usage else POLICY_CANCELED,
                499,
            )


def _error_event(exc: UpstreamError) -> bytes:
    body: dict[str, Any] = {
        "error": {
            "message": f"the upstream stream was cut: {exc}. Charged for the delivered tokens only.",
            "type": "upstream_error",
            "param": None,
            "code": "stream_cut",
        }
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"
