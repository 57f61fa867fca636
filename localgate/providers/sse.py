"""Incremental Server-Sent Events splitter for upstream streams.

Network chunks rarely line up with SSE events: one chunk may carry several
events, one event may span several chunks. :class:`SSEDecoder` buffers bytes
and hands back complete event blocks; :func:`aiter_sse` does the same over an
async byte iterator.

Line endings are normalized to ``\\n`` (SSE allows ``\\r\\n``, ``\\r`` and
``\\n``, even mixed), so every raw block ends with ``b"\\n\\n"`` and can be
relayed as is. This is on the hot path: the common case (``\\n`` line ends,
one ``data:`` line per event) costs a few ``bytes.find`` calls per event and
no per-byte Python loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import NamedTuple


class SSEEvent(NamedTuple):
    raw: bytes  # the whole block, line ends normalized, ending with b"\n\n"
    data: bytes | None  # the data lines joined with b"\n"; None when there were none
    event: bytes | None = None  # the `event:` field, if any (Anthropic names its events)


def parse_block(block: bytes) -> SSEEvent:
    """Parse one normalized block (ending with b"\\n\\n") into its fields."""
    # Fast path: exactly one line, and it is `data: ...`.
    if block.startswith(b"data:") and block.find(b"\n") == len(block) - 2:
        data = block[5:-2]
        return SSEEvent(block, data[1:] if data.startswith(b" ") else data)
    data_lines: list[bytes] = []
    event: bytes | None = None
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue  # blank line or comment
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            data_lines.append(value)
        elif name == b"event":
            event = value
    return SSEEvent(block, b"\n".join(data_lines) if data_lines else None, event)


class SSEDecoder:
    """Feed bytes in, get complete events out; ``flush()`` at end of stream."""

    __slots__ = ("_parts", "_pending_cr", "_tail_nl")

    def __init__(self) -> None:
        # Bytes of an unfinished event, never containing b"\n\n". Kept as a
        # list so a large event arriving in many chunks is joined once.
        self._parts: list[bytes] = []
        self._tail_nl = False  # the pending bytes end with b"\n"
        self._pending_cr = False  # a chunk ended in b"\r": it may be half of b"\r\n"

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if b"\r" in chunk:
            if chunk.endswith(b"\r"):
                chunk = chunk[:-1]
                self._pending_cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if not chunk:
            return []
        parts = self._parts
        if parts:
            parts.append(chunk)
            if b"\n\n" not in chunk and not (self._tail_nl and chunk[0] == 10):
                self._tail_nl = chunk[-1] == 10
                return []
            data = b"".join(parts)
            parts.clear()
        else:
            data = chunk
        events: list[SSEEvent] = []
        start = 0
        end = data.find(b"\n\n")
        while end >= 0:
            block = data[start : end + 2]
            start = end + 2
            end = data.find(b"\n\n", start)
            if block[0] == 10:  # extra blank lines separate nothing: drop them
                block = block.lstrip(b"\n")
                if not block:
                    continue
            events.append(parse_block(block))
        if start < len(data):
            parts.append(data[start:] if start else data)
            self._tail_nl = data[-1] == 10
        return events

    def flush(self) -> list[SSEEvent]:
        """The last event when the stream ended without its blank line."""
        rest = b"".join(self._parts).strip(b"\n")
        self._parts.clear()
        self._pending_cr = self._tail_nl = False
        if not rest:
            return []
        return [parse_block(rest + b"\n\n")]


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Split an async byte iterator into SSE events."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.flush():
        yield event
