"""Streamed Anthropic Messages <-> streamed OpenAI chat completions.

:class:`AnthropicToChatChunks` reads Anthropic's event sequence (an
``anthropic`` channel serving an OpenAI-dialect client) and gives OpenAI
``chat.completion.chunk`` dicts; :class:`ChatToAnthropicEvents` does the
reverse for Anthropic clients served by an OpenAI-chat upstream, producing
the exact event sequence the anthropic SDK and Claude Code expect. Both keep
the per-stream state the pure functions of :mod:`localgate.dialects.anthropic`
cannot.

Pure: no I/O, nothing but the standard library, ``Usage`` and our errors.
"""

from __future__ import annotations

import json
import time
from typing import Any

from localgate.core.pricing import Usage
from localgate.dialects.anthropic import (
    FINISH_REASONS,
    STOP_REASONS,
    anthropic_usage,
    message_id,
    usage_from_anthropic,
    usage_from_chat,
)
from localgate.errors import UpstreamError

USAGE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)


def sse_event(event: str, data: dict[str, Any]) -> bytes:
    """One whole named SSE block, as Anthropic sends them."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event}\ndata: {payload}\n\n".encode()


class AnthropicToChatChunks:
    """Anthropic stream events in, OpenAI chunk dicts out.

    ``usage`` follows the stream: message_start's numbers, then each
    message_delta's (cumulative, so the latest value of each field wins).
    ``stop_reason`` is Anthropic's, ``finish_reason`` its OpenAI name;
    ``done`` turns true at message_stop.
    """

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.stop_reason: str | None = None
        self.finish_reason: str | None = None
        self.done = False
        self._usage: dict[str, Any] = {}
        # id, object, created, model: the fields every chunk of this stream repeats.
        self.head: dict[str, Any] = {"object": "chat.completion.chunk"}
        self._tools: dict[int, int] = {}  # content block index -> tool call index

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {**self.head, "choices": [choice]}

    def _observe_usage(self, usage: object) -> None:
        if not isinstance(usage, dict):
            return
        self._usage.update({k: v for k, v in usage.items() if k in USAGE_FIELDS and v is not None})
        self.usage = usage_from_anthropic(self._usage)

    def feed(self, event: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        kind = data.get("type") or event
        if kind == "message_start":
            message = data.get("message") or {}
            self.head = {
                "id": message.get("id") or "chatcmpl-anthropic",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": message.get("model"),
            }
            self._observe_usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "message_delta":
            self._observe_usage(data.get("usage"))
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self.stop_reason = reason
                self.finish_reason = FINISH_REASONS.get(reason, "stop")
                return [self._chunk({}, self.finish_reason)]
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            error = data.get("error") or {}
            detail = error.get("message") if isinstance(error, dict) else None
            what = error.get("type") if isinstance(error, dict) else None
            raise UpstreamError(
                f"upstream sent an error event mid-stream: {what or 'error'}: {detail or data}",
                body=json.dumps(data),
            )
        return []  # ping, content_block_stop and event types added later

    def _block_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            position = len(self._tools)
            self._tools[data.get("index", position)] = position
            call = {
                "index": position,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if kind == "text" and block.get("text"):
            return [self._chunk({"content": block["text"]})]
        if kind == "thinking" and block.get("thinking"):
            return [self._chunk({"reasoning_content": block["thinking"]})]
        return []

    def _block_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [self._chunk({"reasoning_content": delta["thinking"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            position = self._tools.get(data.get("index", -1))
            if position is not None:
                fragment = {"index": position, "function": {"arguments": delta["partial_json"]}}
                return [self._chunk({"tool_calls": [fragment]})]
        return []  # signature_delta: nothing an OpenAI client can use


class ChatToAnthropicEvents:
    """OpenAI chunk dicts in, Anthropic SSE blocks out.

    Text and thinking stream as they come. The first tool call streams live
    too; a tool call whose fragments arrive while another block is open is
    gathered and sent whole at the end, since Anthropic blocks cannot
    interleave and an upstream may interleave call indexes. Text arriving after
    a tool call has begun is gathered the same way.
    """

    def __init__(self, model: str, input_tokens: int) -> None:
        self.model = model
        self.input_tokens = input_tokens
        self.finish_reason: str | None = None
        self._started = False
        self._finished = False
        self._index = -1  # the Anthropic content block index last opened
        self._open: str | None = None  # "text", "thinking", "tool", or None
        self._live_call: int | None = None  # the tool call streaming in the open block
        self._calls: dict[int, dict[str, Any]] = {}  # tool call index -> id, name, arguments
        self._late: list[tuple[str, str]] = []  # (kind, text) that came after a tool call
        self._calls_done = False  # the gathered tool calls went out: text may stream again
        self._chars = 0
        self._usage: Usage | None = None
        self._id = message_id(None)

    def _start(self, chunk_id: object = None) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        if chunk_id:
            self._id = message_id(chunk_id)
        usage = {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 0,
        }
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return [sse_event("message_start", {"type": "message_start", "message": message})]

    def _close(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        self._live_call = None
        data = {"type": "content_block_stop", "index": self._index}
        return [sse_event("content_block_stop", data)]

    def _open_block(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._close()
        self._index += 1
        self._open = kind
        data = {"type": "content_block_start", "index": self._index, "content_block": block}
        return [*out, sse_event("content_block_start", data)]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        data = {"type": "content_block_delta", "index": self._index, "delta": delta}
        return sse_event("content_block_delta", data)

    def _text(self, kind: str, text: str) -> list[bytes]:
        if self._calls and not self._calls_done:
            self._late.append((kind, text))
            return []
        out: list[bytes] = []
        if self._open != kind:
            empty = {"type": "text", "text": ""} if kind == "text" else None
            block = empty or {"type": "thinking", "thinking": "", "signature": ""}
            out = self._open_block(kind, block)
        field = "text" if kind == "text" else "thinking"
        return [*out, self._delta({"type": f"{field}_delta", field: text})]

    def _tool(self, fragment: dict[str, Any]) -> list[bytes]:
        position = fragment.get("index", 0)
        function = fragment.get("function") or {}
        call = self._calls.get(position)
        out: list[bytes] = []
        if call is None:
            call = {"id": fragment.get("id"), "name": function.get("name") or "", "arguments": ""}
            self._calls[position] = call
            if self._open != "tool":  # streams live; otherwise sent whole at the end
                block = {"type": "tool_use", "id": self._call_id(position), "name": call["name"]}
                out = self._open_block("tool", {**block, "input": {}})
                self._live_call = position
                call["sent"] = True
        else:
            call["id"] = call["id"] or fragment.get("id")
            call["name"] = call["name"] or function.get("name") or ""
        arguments = function.get("arguments") or ""
        self._chars += len(arguments)
        if self._live_call == position and arguments:
            out.append(self._delta({"type": "input_json_delta", "partial_json": arguments}))
        elif arguments:
            call["arguments"] += arguments
        return out

    def _call_id(self, position: int) -> str:
        call = self._calls[position]
        if not call["id"]:
            call["id"] = f"toolu_{self._id.removeprefix('msg_')}_{position}"
        return str(call["id"])

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        out = self._start(chunk.get("id"))
        if isinstance(chunk.get("usage"), dict):
            self._usage = usage_from_chat(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue  # Anthropic has one answer; a second choice has nowhere to go
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                self._chars += len(reasoning)
                out += self._text("thinking", reasoning)
            if isinstance(delta.get("content"), str) and delta["content"]:
                self._chars += len(delta["content"])
                out += self._text("text", delta["content"])
            for fragment in delta.get("tool_calls") or ():
                if isinstance(fragment, dict):
                    out += self._tool(fragment)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return out

    def _flush(self) -> list[bytes]:
        """Close the open block, then send what had to wait, each block whole."""
        out = self._close()
        for position, call in self._calls.items():
            if call.get("sent"):
                continue
            block = {"type": "tool_use", "id": self._call_id(position), "name": call["name"]}
            out += self._open_block("tool", {**block, "input": {}})
            if call["arguments"]:
                delta = {"type": "input_json_delta", "partial_json": call["arguments"]}
                out.append(self._delta(delta))
            out += self._close()
        late, self._late, self._calls_done = self._late, [], True
        for kind, text in late:
            out += self._text(kind, text)
        return out + self._close()

    def finish(self, usage: Usage | None) -> list[bytes]:
        """Close the message: message_delta (stop reason, usage) and message_stop.

        Without usage from the caller or the stream, output is estimated at
        four characters a token and input is the estimate given at start.
        """
        if self._finished:
            return []
        self._finished = True
        out = self._start() + self._flush()
        stop = STOP_REASONS.get(self.finish_reason or "", "end_turn")
        if stop == "end_turn" and self._calls:
            stop = "tool_use"
        usage = usage or self._usage
        if usage is None:
            output = -(-self._chars // 4)
            usage = Usage(input=self.input_tokens, output=output, source="estimated")
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
            "usage": anthropic_usage(usage),
        }
        out.append(sse_event("message_delta", delta))
        out.append(sse_event("message_stop", {"type": "message_stop"}))
        return out
