"""Hostile input on every /v1 endpoint, in every dialect, against a real localgate.

localgate runs in front of the fake upstream with one channel of each kind
(anthropic, openai, openai_compatible, gemini; the fake speaks each wire
format by path). Hypothesis sends mostly-valid bodies with hostile edits
(tests/fuzz_strategies.py) and, after every single input, checks what must
hold whatever the input was:

- the answer is not a 5xx;
- a refused request (4xx) wrote nothing: every wallet's balance and held
  amount and the number of ledger entries are as before;
- a request that reached routing (it has an ``x-localgate-receipt`` header)
  has a stored receipt that is no longer pending, and one that did not left
  no receipt behind; no hold is left open either way;
- the server still answers ``GET /health``.

Runs are deterministic (``derandomize``, no example database), so a failure
reproduces on every run. About 1,100 inputs in all.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gateway_fixtures as gf
import httpx
import pytest
from fuzz_strategies import (
    V1Request,
    chat_body,
    embeddings_body,
    messages_body,
    odd_requests,
    responses_body,
    v1_requests,
)
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from upstream import FakeUpstream

pytestmark = pytest.mark.slow

PRICE = gf.price(input="1", output="4")
KINDS = {"ant": "anthropic", "oai": "openai", "relay": "openai_compatible", "gem": "gemini"}
EMBEDDING_KINDS = ("oai", "relay")
CHAT_MODELS = (*(f"m-{cid}" for cid in KINDS), "e-relay", "no-such-model")
EMBEDDING_MODELS = (*(f"e-{cid}" for cid in EMBEDDING_KINDS), "m-relay", "no-such-model")

# Inputs per endpoint: about 1,100 in all, within two minutes on two cores.
ENDPOINTS: dict[str, tuple[st.SearchStrategy[V1Request], int]] = {
    "chat": (v1_requests("/v1/chat/completions", chat_body(CHAT_MODELS)), 250),
    "embeddings": (v1_requests("/v1/embeddings", embeddings_body(EMBEDDING_MODELS)), 160),
    "messages": (v1_requests("/v1/messages", messages_body(CHAT_MODELS)), 250),
    "count_tokens": (
        v1_requests("/v1/messages/count_tokens", messages_body(CHAT_MODELS, count_tokens=True)),
        80,
    ),
    "responses": (v1_requests("/v1/responses", responses_body(CHAT_MODELS)), 250),
    "models_and_unknown_paths": (odd_requests(), 80),
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Iterator[gf.Gate]:
    channels = [gf.channel(cid, upstream.base_url, kind=kind) for cid, kind in KINDS.items()]
    models = [gf.model(f"m-{cid}", gf.route(cid, f"{cid}-upstream", PRICE)) for cid in KINDS]
    models += [
        gf.model(f"e-{cid}", gf.route(cid, f"{cid}-embed", PRICE), kind="embedding")
        for cid in EMBEDDING_KINDS
    ]
    with gf.run_gateway(
        tmp_path_factory.mktemp("fuzz"), channels=channels, models=models, in_process=True
    ) as g:
        g.fund("credit", "100")
        yield g


@pytest.fixture(scope="module")
def key(gate: gf.Gate) -> str:
    return gate.key("fuzz")


@pytest.fixture(scope="module")
def caller(gate: gf.Gate) -> httpx.Client:
    return gate.http()


def credentials(auth: str, key: str) -> dict[str, str]:
    return {
        "key": {"authorization": f"Bearer {key}"},
        "x-api-key": {"x-api-key": key},
        "none": {},
        "bogus": {"authorization": "Bearer lg_not_a_key_of_this_gateway"},
    }[auth]


def books(gate: gf.Gate) -> dict[str, Any]:
    """What a refused request must not change: wallet balances and holds, the
    ledger; and the newest receipt (a request without a receipt header adds none)."""
    wallets = gate.ok("GET", "/api/wallets")["wallets"]
    newest = gate.ok("GET", "/api/receipts", params={"limit": "1"})["receipts"]
    (last_entry,) = gate.store.read().execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()
    return {
        "balances": {w["id"]: w["balance_micros"] for w in wallets},
        "held": {w["id"]: w["held_micros"] for w in wallets},
        "last_entry": last_entry,
        "newest_receipt": newest[0]["id"] if newest else None,
    }


def entries_since(gate: gf.Gate, last_entry: int) -> list[tuple[str, int, str | None]]:
    rows = gate.store.read().execute(
        "SELECT kind, amount_micros, receipt_id FROM entries WHERE id > ? ORDER BY id",
        (last_entry,),
    )
    return [tuple(row) for row in rows.fetchall()]


def check_refused(gate: gf.Gate, before: dict[str, Any], receipt: dict[str, Any] | None) -> None:
    """A 4xx moved no money. Refused before routing (no receipt, or a ``rejected``
    one): no ledger entry at all. Refused after its hold was placed (an upstream
    4xx, a body the route's translation refuses): only that hold and its release."""
    after = books(gate)
    assert after["balances"] == before["balances"], "refused, yet the balance changed"
    written = entries_since(gate, before["last_entry"])
    if receipt is None or receipt["status"] == "rejected":
        assert written == [], "a request refused before routing wrote to the ledger"
    else:
        allowed = {("hold", 0, receipt["id"]), ("release", 0, receipt["id"])}
        assert set(written) <= allowed and len(written) <= 2, written


def send_and_check(
    gate: gf.Gate, upstream: FakeUpstream, caller: httpx.Client, key: str, req: V1Request
) -> None:
    before = books(gate)
    fake_errors = len(upstream.errors)
    headers = {"content-type": "application/json", **credentials(req.auth, key)}
    resp = caller.request(req.method, req.path, content=req.body, headers=headers)
    # The fake upstream is a test double: a body it cannot parse makes it drop the
    # connection (recorded in upstream.errors), where a real one answers 400; a 502
    # for that is localgate reporting a broken upstream correctly. Any other 5xx fails.
    fake_broke = len(upstream.errors) > fake_errors
    if not (fake_broke and resp.status_code == 502):
        assert resp.status_code < 500, f"{resp.status_code}: {resp.text[:500]}"
    receipt_id = resp.headers.get("x-localgate-receipt")
    receipt = None
    if receipt_id is not None:
        receipt = gate.wait_receipt(receipt_id)
        assert receipt["status"] != "pending", receipt_id
    after = books(gate)
    assert after["newest_receipt"] == (receipt_id or before["newest_receipt"]), "receipt header"
    assert after["held"] == before["held"], "a hold was left open"
    if resp.status_code >= 400:
        check_refused(gate, before, receipt)
    assert gate.api("GET", "/health").status_code == 200


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
def test_hostile_requests_never_answer_5xx_nor_touch_the_books_when_refused(
    gate: gf.Gate, upstream: FakeUpstream, caller: httpx.Client, key: str, endpoint: str
) -> None:
    requests, count = ENDPOINTS[endpoint]
    sent: list[V1Request] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(req=requests)
    def run(req: V1Request) -> None:
        # Printed with the failing example; the schemathesis pytest plugin, when
        # loaded, blanks hypothesis' own "Falsifying example" arguments.
        note(repr(req))
        sent.append(req)
        send_and_check(gate, upstream, caller, key, req)

    run()
    assert len(sent) >= count
    assert gate.verify()["ok"]
