"""Hostile input answers a clear 4xx, never a 500, and a refused request writes nothing.

Through the real app (the ``gate`` fixture of conftest.py) wherever an endpoint
is concerned: lone UTF-16 surrogates in JSON strings, amounts that are not
plain ASCII decimals or are thousands of digits long, integers beyond SQLite's
64-bit range in ids, cursors and page links, absurd output limits on ``/v1``,
and key expiries that are not a finite time. After each refusal the ledger
still verifies and no entry, key, top-up or receipt was added.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from decimal import Decimal
from typing import Any

import gateway_fixtures as gf
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from upstream import FakeUpstream

from localgate.core.pricing import Price, worst_case_micros
from localgate.errors import MoneyError
from localgate.money import parse_amount, parse_price
from localgate.store.db import open_db

upstream = FakeUpstream.fixture()

P_CHAT = gf.price(input="0.5", output="1.5")
MSG = [{"role": "user", "content": "hello"}]
CHAT = "/v1/chat/completions"
SQLITE_MAX = 2**63 - 1
SQLITE_MIN = -(2**63)
OUT_OF_RANGE = [str(SQLITE_MAX + 1), str(SQLITE_MIN - 1), "9" * 5000, "-5", "\u0661"]


@pytest.fixture
def gateway_config(upstream) -> gf.GatewaySetup:
    return gf.GatewaySetup(
        channels=[gf.channel("up1", upstream.base_url)],
        models=[gf.model("gw-chat", gf.route("up1", "up-chat", P_CHAT))],
        funds={"credit": "10"},
    )


def raw_post(gate: gf.Gate, path: str, text: str) -> httpx.Response:
    """POST a JSON body written by hand (so it can carry ``\\ud800`` escapes)."""
    return gate.api(
        "POST", path, content=text.encode(), headers={"content-type": "application/json"}
    )


def admin_error(resp: httpx.Response, status: int = 400) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] and body["error"]["message"]
    return body["error"]


def snapshot(gate: gf.Gate) -> dict[str, Any]:
    """What a refused request must leave as it was."""
    return {
        "entries": len(gate.entries("credit")),
        "keys": [k["id"] for k in gate.ok("GET", "/api/keys")["keys"]],
        "topups": len(gate.ok("GET", "/api/topups")["topups"]),
        "receipts": len(gate.receipts()),
    }


def assert_nothing_written(gate: gf.Gate, before: dict[str, Any]) -> None:
    assert snapshot(gate) == before
    assert gate.verify()["ok"] is True


def logged_in(gate: gf.Gate) -> httpx.Client:
    """A browser-like client holding the UI session."""
    client = gate.http()
    resp = client.get(f"/login?token={gate.settings.admin_token}", follow_redirects=False)
    assert resp.status_code in (302, 303), resp.text
    return client


# -- lone surrogates -------------------------------------------------------------------


def test_a_lone_surrogate_in_an_adjustment_reason_is_refused_naming_the_field(gate):
    before = snapshot(gate)
    body = '{"wallet": "credit", "amount": "1", "reason": "refund \\ud800 for you"}'
    error = admin_error(raw_post(gate, "/api/adjustments", body))
    assert "'reason'" in error["message"] and "surrogate" in error["message"]
    assert_nothing_written(gate, before)


@pytest.mark.parametrize(
    ("body", "name"),
    [
        ('{"label": "laptop \\udc00"}', "'label'"),
        ('{"label": "laptop", "project": "\\ud83d"}', "'project'"),
        ('{"label": "laptop", "models": ["gw-chat", "gpt-\\udfff"]}', "'models[1]'"),
        ('{"label": "laptop", "budgets": {"\\ud800SD": {"day": "1"}}}', "'budgets'"),
    ],
)
def test_a_lone_surrogate_in_a_key_request_is_refused_and_stores_no_key(gate, body, name):
    before = snapshot(gate)
    error = admin_error(raw_post(gate, "/api/keys", body))
    assert name in error["message"]
    assert_nothing_written(gate, before)


def test_after_a_refused_key_with_a_surrogate_model_the_key_list_and_page_still_answer(gate):
    admin_error(raw_post(gate, "/api/keys", '{"label": "x", "models": ["gpt-\\udfff"]}'))
    assert gate.api("GET", "/api/keys").status_code == 200
    page = logged_in(gate).get("/keys")
    assert page.status_code == 200, page.text


def test_a_key_stored_with_a_surrogate_model_before_the_fix_is_listed_not_a_500(gate):
    created = gate.create_key("old")
    conn = open_db(gate.settings.db_path)
    try:  # what the old code stored for models ["gpt-\udfff"]
        conn.execute(
            "UPDATE api_keys SET models = ? WHERE id = ?", ('["gpt-\\udfff"]', created["id"])
        )
        conn.commit()
    finally:
        conn.close()
    listed = {k["id"]: k for k in gate.ok("GET", "/api/keys")["keys"]}
    assert listed[created["id"]]["models"] == ["gpt-\ufffd"]
    assert logged_in(gate).get("/keys").status_code == 200


def test_a_surrogate_written_as_raw_utf8_bytes_is_refused_like_an_escaped_one(gate):
    # Python's JSON decoder lets ED A0 80 (a UTF-8-encoded surrogate) through.
    body = b'{"wallet": "credit", "amount": "1", "reason": "r\xed\xa0\x80"}'
    resp = gate.api("POST", "/api/adjustments", content=body)
    assert "'reason'" in admin_error(resp)["message"]


def test_a_paired_surrogate_escape_is_an_ordinary_character(gate):
    body = '{"wallet": "credit", "amount": "1", "reason": "thanks \\ud83d\\ude00"}'
    resp = raw_post(gate, "/api/adjustments", body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["memo"].endswith("\U0001f600")
    assert gate.verify()["ok"] is True


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, '{"model": "gw-\\ud800", "messages": [{"role": "user", "content": "hi"}]}'),
        (CHAT, '{"model": "gw-chat", "messages": [{"role": "user", "content": "\\udfff"}]}'),
        ("/v1/embeddings", '{"model": "gw-chat", "input": ["ok", "\\udc80"]}'),
    ],
)
def test_a_lone_surrogate_in_a_v1_body_is_an_openai_400_before_any_money(gate, path, body):
    key = gate.key()
    before = snapshot(gate)
    resp = gate.http(key).post(path, content=body.encode())
    assert resp.status_code == 400
    error = gf.openai_error(resp)
    assert "surrogate" in error["message"] and error["type"] == "invalid_request_error"
    assert error["param"]
    assert_nothing_written(gate, before)


def test_a_lone_surrogate_in_a_messages_body_is_an_anthropic_400(gate):
    key = gate.key()
    body = (
        '{"model": "gw-\\ud800", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}'
    )
    resp = gate.http(key).post("/v1/messages", content=body.encode())
    assert resp.status_code == 400
    data = resp.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    assert "'model'" in data["error"]["message"]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_that_are_not_json_are_refused(gate, constant):
    before = snapshot(gate)
    resp = raw_post(gate, "/api/keys", f'{{"label": "x", "expires_at": {constant}}}')
    assert constant in admin_error(resp)["message"]
    assert_nothing_written(gate, before)


# -- amounts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [
        "9" * 5000,
        "1" + "0" * 100_000,
        "0." + "0" * 5000 + "1",
        "1_000",
        "\uff11\uff10",  # fullwidth 10
        "\u0661\u0660",  # Arabic-Indic 10
        "\u06f1\u06f0",  # extended Arabic-Indic 10
        "1\u00a0000",
        "1e5000",
        "1000000000000000",  # 16 integer digits
    ],
)
def test_an_amount_that_is_not_a_short_ascii_decimal_is_refused_by_adjustments_and_topups(
    gate, amount
):
    before = snapshot(gate)
    for path in ("/api/adjustments", "/api/topups"):
        started = time.perf_counter()
        resp = gate.api("POST", path, json={"wallet": "credit", "amount": amount, "reason": "r"})
        assert time.perf_counter() - started < 2
        error = admin_error(resp)
        assert error["code"] == "invalid_amount"
        assert "amount" in error["message"]
        assert len(error["message"]) < 300  # the answer does not echo 100k characters
    assert_nothing_written(gate, before)


def test_a_5000_digit_threshold_on_the_wallet_page_is_refused_and_changes_nothing(gate):
    client = logged_in(gate)
    page = client.get("/wallets/credit")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text)[1]
    resp = client.post(
        "/wallets/credit/threshold",
        data={"csrf_token": csrf, "amount": "9" * 5000},
        headers={"origin": gate.base_url},
        follow_redirects=False,
    )
    assert resp.status_code == 303, resp.text
    location = resp.headers["location"]
    assert "threshold_error" in location and len(location) < 500
    assert "threshold-saved" not in location
    assert client.get(location).status_code == 200


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("10", 10_000_000),
        ("+1.5", 1_500_000),
        ("-0.000001", -1),
        (" 7 ", 7_000_000),
        ("999999999", 999_999_999_000_000),
    ],
)
def test_plain_ascii_amounts_are_still_accepted(text, micros):
    assert parse_amount(text) == micros


@pytest.mark.parametrize(
    "bad", ["1_000", "\uff11", "\u0661", "\u0967", "1.5\u200b", "", " ", "-", ".", "1..2", "--1"]
)
def test_parse_amount_refuses_non_ascii_digits_and_separators(bad):
    with pytest.raises(MoneyError):
        parse_amount(bad)


@pytest.mark.parametrize("bad", ["1_0", "\uff10.5", "\u0661", "9" * 5000, "1e99999999"])
def test_parse_price_refuses_what_parse_amount_refuses_but_keeps_fine_decimals(bad):
    assert parse_price("0.0000000001") == Decimal("0.0000000001")
    with pytest.raises(MoneyError):
        parse_price(bad)


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_amount_raises_only_money_errors_on_any_text(text):
    with contextlib.suppress(MoneyError):
        parse_amount(text)


@settings(max_examples=50, deadline=None)
@given(st.sampled_from("0123456789.-+e_ \uff11\u0661"), st.sampled_from("0123456789e"))
def test_parse_amount_of_a_100k_character_string_takes_under_a_millisecond(head, fill):
    text = head + fill * 100_000
    best = float("inf")
    for _ in range(3):  # the best of three: the machine is shared
        started = time.perf_counter()
        with contextlib.suppress(MoneyError):
            parse_amount(text)
        best = min(best, time.perf_counter() - started)
    assert best < 0.001


# -- integers beyond SQLite's range ---------------------------------------------------


@pytest.mark.parametrize("entry_id", [SQLITE_MAX + 1, 10**30, SQLITE_MIN - 1])
def test_a_ledger_entry_id_beyond_sqlite_is_not_found(gate, entry_id):
    error = admin_error(gate.api("GET", f"/api/ledger/entries/{entry_id}"), 404)
    assert error["code"] == "unknown_entry" or "entry" in error["message"]


@pytest.mark.parametrize("cursor", [str(SQLITE_MAX + 1), "9" * 40, str(SQLITE_MIN - 1), "9" * 5000])
def test_a_ledger_cursor_beyond_sqlite_is_400(gate, cursor):
    resp = gate.api("GET", "/api/wallets/credit/ledger", params={"cursor": cursor})
    assert "cursor" in admin_error(resp)["message"]


@pytest.mark.parametrize("limit", [str(SQLITE_MAX + 1), "9" * 5000, "\u0661\u0660"])
def test_a_limit_beyond_sqlite_or_in_other_digits_is_400(gate, limit):
    resp = gate.api("GET", "/api/wallets/credit/ledger", params={"limit": limit})
    assert "limit" in admin_error(resp)["message"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        *((name, value) for name in ("before", "after", "at") for value in OUT_OF_RANGE),
        ("at", str(SQLITE_MAX)),  # the page would start before at + 1, past SQLite
    ],
)
def test_a_wallet_page_link_beyond_sqlite_renders_the_page_with_a_400(gate, name, value):
    resp = logged_in(gate).get("/wallets/credit", params={name: value})
    assert resp.status_code == 400, resp.text
    assert "ledger entry number" in resp.text


def test_the_largest_sqlite_integer_is_a_valid_page_bound(gate):
    client = logged_in(gate)
    assert client.get("/wallets/credit", params={"before": str(SQLITE_MAX)}).status_code == 200
    assert client.get("/wallets/credit", params={"at": str(SQLITE_MAX - 1)}).status_code == 200


# -- output limits on /v1 ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", 10**30),
        ("max_completion_tokens", 10**30),
        ("max_tokens", 10_000_001),
    ],
)
def test_an_absurd_output_limit_is_a_400_naming_the_field(gate, field, value):
    key = gate.key()
    before = snapshot(gate)
    body = {"model": "gw-chat", "messages": MSG, field: value}
    resp = gate.http(key).post(CHAT, content=json.dumps(body).encode())
    assert resp.status_code == 400, resp.text
    error = gf.openai_error(resp)
    assert error["param"] == field and "10000000" in error["message"].replace(",", "")
    after = snapshot(gate)
    # The refusal may leave a receipt of a rejected request, but moves no money.
    assert after["entries"] == before["entries"] and after["keys"] == before["keys"]
    assert gate.verify()["ok"] is True
    assert all(r["status"] != "succeeded" for r in gate.receipts())


def test_an_absurd_messages_max_tokens_is_an_anthropic_400(gate):
    key = gate.key()
    body = {"model": "gw-chat", "max_tokens": 10**30, "messages": MSG}
    resp = gate.http(key).post("/v1/messages", content=json.dumps(body).encode())
    assert resp.status_code == 400, resp.text
    assert "max_tokens" in resp.json()["error"]["message"]


def test_the_largest_allowed_output_limit_is_refused_for_money_not_as_malformed(gate):
    key = gate.key()
    body = {"model": "gw-chat", "messages": MSG, "max_tokens": 10_000_000}
    resp = gate.http(key).post(CHAT, json=body)
    # 10M tokens at 1.5 per 1M cost 15 and the wallet holds 10: a 402, not a 400.
    assert resp.status_code == 402, resp.text


def test_worst_case_of_a_huge_output_is_exact_not_an_error():
    price = Price("USD", input=Decimal("0.5"), output=Decimal("1.5"))
    assert worst_case_micros(0, 10**30, price) == 15 * 10**29
    third = Price("USD", input=Decimal("0"), output=Decimal("0.3333333"))
    assert worst_case_micros(1, 10**40, third) == 3333333 * 10**33


# -- key expiry --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["-1e20", "-1e999", "1e999", "-99999999999999999999999999", "1e20", "253402300800", "-1"],
)
def test_an_expiry_that_is_not_a_sane_time_is_refused_and_stores_no_key(gate, text):
    before = snapshot(gate)
    resp = raw_post(gate, "/api/keys", f'{{"label": "x", "expires_at": {text}}}')
    assert "expires_at" in admin_error(resp)["message"]
    assert_nothing_written(gate, before)


@pytest.mark.parametrize("text", ['"not a time"', '"99999-01-01T00:00:00"', '"1500-01-01"', "true"])
def test_an_expiry_string_that_is_not_an_iso_time_in_range_is_refused(gate, text):
    resp = raw_post(gate, "/api/keys", f'{{"label": "x", "expires_at": {text}}}')
    assert "expires_at" in admin_error(resp)["message"]


def test_sane_expiries_are_stored_and_the_key_works(gate):
    future = time.time() + 3600
    for value in (future, int(future), "2099-01-01T00:00:00Z", "2099-01-01"):
        created = gate.create_key("x", expires_at=value)
        assert created["expires_at"] is not None
    key = gate.key("later", expires_at=future)
    resp = gate.http(key).post(CHAT, json={"model": "gw-chat", "messages": MSG, "max_tokens": 5})
    assert resp.status_code == 200, resp.text


def test_a_past_expiry_is_stored_and_the_key_is_refused_with_a_401_not_a_500(gate):
    key = gate.key("old", expires_at=946_684_800)  # 2000-01-01
    resp = gate.http(key).post(CHAT, json={"model": "gw-chat", "messages": MSG, "max_tokens": 5})
    assert 400 <= resp.status_code < 500, resp.text


@pytest.mark.parametrize("rpm", [10**30, 2**63, 1_000_001])
def test_a_rate_limit_past_any_real_one_is_refused_and_stores_no_key(gate, rpm):
    before = snapshot(gate)
    resp = gate.api("POST", "/api/keys", json={"label": "x", "rpm": rpm})
    assert "rpm" in admin_error(resp)["message"]
    assert_nothing_written(gate, before)
    assert gate.create_key("ok", rpm=1_000_000)["rpm"] == 1_000_000
