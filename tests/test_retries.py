"""One retry rule, end to end: the adapter classifies a failure, routing decides.

Two fake OpenAI upstreams stand behind a primary and a backup route. Every
failure another route may fix (408, 429, 5xx, a reset connection, a timeout,
a 200 that carries JSON instead of events) falls through to the backup while
nothing has reached the client; a failure the request itself caused (400)
does not, and nothing after the first byte is ever retried.
"""

from __future__ import annotations

from typing import Any

import gateway_fixtures as gf
import pytest
from upstream import FakeUpstream

from localgate.errors import UpstreamError
from localgate.providers.openai import is_retryable_status, status_error

pytestmark = pytest.mark.slow

up_a = FakeUpstream.fixture("up_a")
up_b = FakeUpstream.fixture("up_b")

P_A = gf.price(input="1", output="2")
P_B = gf.price(input="3", output="5")
MSG = [{"role": "user", "content": "Tell me a story"}]


@pytest.fixture
def gate(tmp_path, up_a, up_b):
    config = {
        "channels": [
            gf.channel("a", up_a.base_url, timeout=0.5),
            gf.channel("b", up_b.base_url),
        ],
        "models": [
            gf.model(
                "gw-fb",
                gf.route("a", "a-model", P_A, priority=1),
                gf.route("b", "b-model", P_B, priority=2),
            )
        ],
    }
    with gf.run_gateway(tmp_path, **config) as g:
        g.fund("credit", "10")
        yield g


def call(gate: gf.Gate, *, stream: bool) -> tuple[int, bytes, dict[str, str]]:
    body: dict[str, Any] = {"model": "gw-fb", "messages": MSG, "stream": stream}
    resp = gate.http(gate.key()).post("/v1/chat/completions", json=body)
    return resp.status_code, resp.content, dict(resp.headers)


FAULTS_BEFORE_THE_FIRST_BYTE = {
    "408": {"status": 408},
    "429": {"status": 429},
    "500": {"status": 500},
    "503": {"status": 503},
    "reset": {"reset": True},
    "timeout": {"latency": 2.0},
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("fault", FAULTS_BEFORE_THE_FIRST_BYTE)
def test_a_failure_another_route_can_fix_falls_through_to_the_backup(
    gate, up_a, up_b, fault, stream
):
    up_a.push(**FAULTS_BEFORE_THE_FIRST_BYTE[fault])
    status, _, headers = call(gate, stream=stream)
    assert status == 200
    assert len(up_b.requests) == 1
    receipt = gate.wait_receipt(headers["x-localgate-receipt"])
    assert receipt["status"] == "succeeded"
    assert receipt["channel"] == "b" and receipt["upstream_model"] == "b-model"
    assert [a["channel"] for a in receipt["attempts"]] == ["a", "b"]
    assert receipt["attempts"][0]["why_next"].endswith("trying next route")
    usage = receipt["usage"]
    charge, _ = gf.charge_of(P_B, prompt=usage["input"], completion=usage["output"])
    assert receipt["charge_micros"] == charge


def test_a_stream_answered_with_json_instead_of_events_falls_through(gate, up_a, up_b):
    # A relay that fails late answers 200 with a JSON error: nothing reached the client.
    up_a.push(headers={"content-type": "application/json"})
    status, body, headers = call(gate, stream=True)
    assert status == 200 and b"[DONE]" in body
    receipt = gate.wait_receipt(headers["x-localgate-receipt"])
    assert [a["channel"] for a in receipt["attempts"]] == ["a", "b"]
    assert receipt["attempts"][0]["status"] == 200
    assert receipt["channel"] == "b"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_a_request_the_upstream_refuses_is_not_retried(gate, up_a, up_b, stream):
    up_a.push(status=400)
    status, _, headers = call(gate, stream=stream)
    assert status == 400
    assert up_b.requests == []
    receipt = gate.receipt(headers["x-localgate-receipt"])
    assert receipt["status"] == "failed" and receipt["charge_micros"] == 0
    assert len(receipt["attempts"]) == 1


def test_nothing_is_retried_after_the_first_byte(gate, up_a, up_b):
    up_a.push(cut_after=2, chunk_delay=0.01)
    status, body, headers = call(gate, stream=True)
    assert status == 200 and b"stream_cut" in body
    assert up_b.requests == []
    receipt = gate.wait_receipt(headers["x-localgate-receipt"])
    assert receipt["status"] == "failed" and receipt["channel"] == "a"
    assert len(receipt["attempts"]) == 1


# -- the adapter's classification, which the rule above relies on ------------------


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        *[(status, True) for status in (408, 429, 500, 503, 529, 599)],
        *[(status, False) for status in (400, 401, 403, 404, 413, 422)],
    ],
)
def test_the_openai_adapter_classifies_statuses(status, retryable):
    assert is_retryable_status(status) is retryable
    error = status_error("a", status, b'{"error": {"message": "no"}}')
    assert isinstance(error, UpstreamError)
    assert (error.status, error.retryable) == (status, retryable)
