"""Chat-completion chunks -> the OpenAI Responses event stream, for translated routes.

:class:`ChatToResponsesEvents` is the streaming half of
:mod:`localgate.dialects.responses`: it keeps the state a stream needs (open
output items, sequence numbers) and writes whole SSE blocks in the order the
Responses API sends them. Pure, like its sibling.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from localgate.core.pricing import Usage
from localgate.dialects.responses import (
    INCOMPLETE_REASONS,
    call_item,
    chat_usage,
    item_id,
    message_item,
    reasoning_item,
    response_object,
)
from localgate.errors import LocalgateError, error_payload


def sse_event(type: str, data: dict[str, Any]) -> bytes:
    """One whole SSE block: ``event: <type>`` and the JSON data (with its type)."""
    payload = json.dumps({"type": type, **data}, separators=(",", ":"), ensure_ascii=False)
    return f"event: {type}\ndata: {payload}\n\n".encode()


def error_event(exc: LocalgateError, sequence_number: int) -> bytes:
    """The ``error`` event that ends a Responses stream with ``exc``.

    It carries the Responses fields (``code``, ``message``, ``param``) and the
    OpenAI ``error`` object too: with the latter the openai SDK raises
    ``APIError`` instead of handing the caller an event to inspect.
    """
    error = error_payload(exc, "openai")["error"]
    data = {"code": exc.code, "message": exc.message, "param": error.get("param"), "error": error}
    return sse_event("error", {**data, "sequence_number": sequence_number})


# -- streaming ---------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """One output item while its deltas arrive."""

    kind: str  # "message", "reasoning" or "function_call"
    index: int = -1  # output_index; -1: a call not announced yet (no name so far)
    item_id: str = ""
    parts: list[str] = field(default_factory=list)
    call_id: str = ""
    name: str = ""


class ChatToResponsesEvents:
    """Turns ``chat.completion.chunk`` s into the Responses event sequence.

    ``feed`` each chunk, then ``finish`` once; every call returns whole SSE
    blocks. Text, reasoning (as a ``reasoning`` item with ``reasoning_text``
    content) and tool calls each become an output item. Tool calls stay open
    until the end, since chat may interleave the deltas of several calls; a
    call is announced once its name arrives.
    """

    def __init__(self, request: dict[str, Any], response_id: str, created_at: int) -> None:
        self.request = request
        self.response_id = response_id
        self.created_at = created_at
        self._seq = 0
        self._started = False
        self._text: _Item | None = None  # the open message or reasoning item
        self._calls: dict[int, _Item] = {}
        self._done: dict[int, dict[str, Any]] = {}  # output_index -> finished item
        self._next_index = 0
        self._finish_reason: str | None = None
        self._chat_usage: Any = None
        self._model: str | None = None

    def _event(self, type: str, **data: Any) -> bytes:
        block = sse_event(type, {**data, "sequence_number": self._seq})
        self._seq += 1
        return block

    def _start(self, out: list[bytes]) -> None:
        if not self._started:
            self._started = True
            response = response_object(self.request, self.response_id, self.created_at)
            out.append(self._event("response.created", response=response))
            out.append(self._event("response.in_progress", response=response))

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out: list[bytes] = []
        self._start(out)
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        if chunk.get("usage"):
            self._chat_usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Responses has one answer; n > 1 is never asked for
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._text_delta("reasoning", reasoning, out)
            for key in ("content", "refusal"):  # a streamed refusal is shown as text
                if isinstance(delta.get(key), str) and delta[key]:
                    self._text_delta("message", delta[key], out)
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    self._call_delta(call, out)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        return out

    def _open(self, item: _Item) -> None:
        item.index = self._next_index
        self._next_index += 1
        prefix = {"message": "msg", "reasoning": "rs", "function_call": "fc"}[item.kind]
        item.item_id = item_id(prefix, self.response_id, item.index)

    def _text_delta(self, kind: str, text: str, out: list[bytes]) -> None:
        item = self._text
        if item is None or item.kind != kind:
            self._close_text(out)
            item = self._text = _Item(kind)
            self._open(item)
            ids = {"output_index": item.index, "item_id": item.item_id, "content_index": 0}
            if kind == "message":
                added = {**message_item(item.item_id, "", "in_progress"), "content": []}
                part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": []}
            else:
                added = {"id": item.item_id, "type": "reasoning", "summary": []}
                part = {"type": "reasoning_text", "text": ""}
            out.append(
                self._event("response.output_item.added", output_index=item.index, item=added)
            )
            out.append(self._event("response.content_part.added", **ids, part=part))
        item.parts.append(text)
        ids = {"output_index": item.index, "item_id": item.item_id, "content_index": 0}
        if kind == "message":
            out.append(self._event("response.output_text.delta", **ids, delta=text, logprobs=[]))
        else:
            out.append(self._event("response.reasoning_text.delta", **ids, delta=text))

    def _close_text(self, out: list[bytes]) -> None:
        item, self._text = self._text, None
        if item is None:
            return
        text = "".join(item.parts)
        ids = {"output_index": item.index, "item_id": item.item_id, "content_index": 0}
        if item.kind == "message":
            done = message_item(item.item_id, text)
            out.append(self._event("response.output_text.done", **ids, text=text, logprobs=[]))
        else:
            done = reasoning_item(item.item_id, text)
            out.append(self._event("response.reasoning_text.done", **ids, text=text))
        out.append(self._event("response.content_part.done", **ids, part=done["content"][0]))
        self._finish_item(item, done, out)

    def _finish_item(self, item: _Item, done: dict[str, Any], out: list[bytes]) -> None:
        self._done[item.index] = done
        out.append(self._event("response.output_item.done", output_index=item.index, item=done))

    def _call_delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        position = delta.get("index", 0)
        item = self._calls.get(position)
        if item is None:
            item = self._calls[position] = _Item("function_call")
            self._close_text(out)
        if isinstance(delta.get("id"), str) and not item.call_id:
            item.call_id = delta["id"]
        function = delta.get("function") or {}
        if isinstance(function.get("name"), str) and not item.name:
            item.name = function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            item.parts.append(arguments)
            if item.index >= 0:
                self._arguments_delta(item, arguments, out)
        if item.index < 0 and item.name:
            self._announce(item, out)

    def _announce(self, item: _Item, out: list[bytes]) -> None:
        self._open(item)
        if not item.call_id:
            item.call_id = item_id("call", self.response_id, item.index)
        added = {**call_item(item.item_id, item.call_id, item.name, ""), "status": "in_progress"}
        out.append(self._event("response.output_item.added", output_index=item.index, item=added))
        if item.parts:  # arguments that came before the name
            self._arguments_delta(item, "".join(item.parts), out)

    def _arguments_delta(self, item: _Item, text: str, out: list[bytes]) -> None:
        ids = {"output_index": item.index, "item_id": item.item_id}
        out.append(self._event("response.function_call_arguments.delta", **ids, delta=text))

    def error_event(self, exc: LocalgateError) -> bytes:
        """The block that ends this stream with ``exc`` (no finish follows)."""
        block = error_event(exc, self._seq)
        self._seq += 1
        return block

    def finish(self, usage: Usage | None) -> list[bytes]:
        """Close every open item; the last block is response.completed or .incomplete.

        ``usage`` is the stream's normalised usage; without it the usage of a
        chunk seen by ``feed`` is used, if any.
        """
        out: list[bytes] = []
        self._start(out)
        self._close_text(out)
        for item in sorted(self._calls.values(), key=lambda c: (c.index < 0, c.index)):
            if item.index < 0:
                self._announce(item, out)
            arguments = "".join(item.parts)
            ids = {"output_index": item.index, "item_id": item.item_id}
            out.append(
                self._event("response.function_call_arguments.done", **ids, arguments=arguments)
            )
            done = call_item(item.item_id, item.call_id, item.name, arguments)
            self._finish_item(item, done, out)
        self._calls.clear()
        reason = INCOMPLETE_REASONS.get(self._finish_reason or "")
        response = response_object(
            self.request,
            self.response_id,
            self.created_at,
            status="incomplete" if reason else "completed",
            output=[self._done[i] for i in sorted(self._done)],
            usage=usage if usage is not None else chat_usage(self._chat_usage),
            model=self._model,
            incomplete_reason=reason,
        )
        kind = "response.incomplete" if reason else "response.completed"
        out.append(self._event(kind, response=response))
        return out
