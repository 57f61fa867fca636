"""One receipt query everywhere: the same filters select the same receipts, in the
same order, through ``GET /api/receipts``, ``localgate receipts``, the /receipts
page, its exports and ``localgate receipts export``.

Each surface is walked page by page (pages of 7, so every walk crosses page
boundaries) and compared with a plain SQL reading of the same filter.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import time
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from ui_helpers import ui_client

from bench.ui_bench import seed
from localgate.cli import main as cli_main
from localgate.cli.gateway import RECEIPT_STATUSES
from localgate.core.receipts import STATUSES
from localgate.store.db import open_db

NOW = datetime(2026, 11, 5, 12, 0, tzinfo=UTC).timestamp()
PAGE = 7

# (query parameters, the SQL condition that selects the same receipts, its args)
CASES: list[tuple[dict[str, str], str, tuple[Any, ...]]] = [
    ({}, "1", ()),
    ({"client": "aider"}, "client = ?", ("aider",)),
    ({"model": "gpt-4o", "route_type": "routed"}, "requested_model = ? AND route_type = ?",
     ("gpt-4o", "routed")),
    ({"status": "failed"}, "status = ?", ("failed",)),
    ({"project": "webapp", "wallet": "credit"}, "key_project = ? AND wallet_id = ?",
     ("webapp", "credit")),
    # Whole UTC days: `until` includes its day.
    ({"since": "2026-11-02", "until": "2026-11-03"}, "created_at >= ? AND created_at < ?",
     ("2026-11-02T00:00:00.000000Z", "2026-11-04T00:00:00.000000Z")),
    # UTC times, with a column filter.
    ({"since": "2026-11-02T06:30", "until": "2026-11-04T18:00", "channel": "openai"},
     "created_at >= ? AND created_at < ? AND channel = ?",
     ("2026-11-02T06:30:00.000000Z", "2026-11-04T18:00:00.000000Z", "openai")),
]  # fmt: skip
CASE_IDS = ["everything", "tool", "model+route", "status", "project+wallet", "days", "times"]


@pytest.fixture
def history(tmp_path: Path) -> Path:
    """300 receipts over four days before NOW, in the data dir the app and CLI use."""
    data = tmp_path / "data"
    data.mkdir()
    seed(data / "localgate.db", 300, days=4, now=NOW)
    return data


def expected_ids(data: Path, where: str, args: tuple[Any, ...]) -> list[str]:
    conn = open_db(data / "localgate.db", readonly=True)
    try:
        sql = f"SELECT id FROM receipts WHERE {where} ORDER BY id DESC"
        return [r[0] for r in conn.execute(sql, args)]
    finally:
        conn.close()


def cli_options(params: dict[str, str]) -> list[str]:
    return [arg for name, value in params.items() for arg in (f"--{name.replace('_', '-')}", value)]


def run_cli(data: Path, *args: str) -> Any:
    return CliRunner().invoke(cli_main, ["--data-dir", str(data), *args])


async def api_walk(ui: Any, params: dict[str, str], cursor_name: str = "cursor") -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        query = {**params, "limit": str(PAGE), **({cursor_name: cursor} if cursor else {})}
        page = await ui.api("GET", "/api/receipts", params=query)
        assert len(page["receipts"]) <= PAGE
        seen += [r["id"] for r in page["receipts"]]
        cursor = page["next"]
        if cursor is None:
            return seen


def cli_walk(data: Path, params: dict[str, str], cursor_option: str = "--before") -> list[str]:
    seen: list[str] = []
    cursor = None
    while True:
        args = ["receipts", "--json", "--limit", str(PAGE), *cli_options(params)]
        result = run_cli(data, *args, *([cursor_option, cursor] if cursor else []))
        assert result.exit_code == 0, result.output
        page = json.loads(result.stdout)
        seen += [r["id"] for r in page["receipts"]]
        cursor = page["next"]
        if cursor is None:
            return seen


def listed(html: str) -> list[str]:
    return re.findall(r'<tr id="receipt-([^"]+)"', html)


async def page_walk(ui: Any, params: dict[str, str]) -> list[str]:
    """Follow the page's "Older" links; each keeps the filter and the page size."""
    seen: list[str] = []
    resp = await ui.get("/receipts", params={**params, "limit": str(PAGE)})
    while True:
        assert resp.status_code == 200, resp.url
        rows = listed(resp.text)
        assert len(rows) <= PAGE
        seen += rows
        older = re.search(r'<a href="([^"]+)" rel="next">', resp.text)
        if older is None:
            return seen
        resp = await ui.get(unescape(older.group(1)))


def jsonl_ids(text: str) -> list[str]:
    return [json.loads(line)["id"] for line in text.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(("params", "where", "args"), CASES, ids=CASE_IDS)
async def test_a_filter_selects_the_same_receipts_through_api_cli_page_and_exports(
    tmp_path, history, params, where, args
):
    expected = expected_ids(history, where, args)
    assert params == {} or 0 < len(expected) < 300, "the case should select some, not all"
    async with ui_client(tmp_path) as ui:
        assert await api_walk(ui, params) == expected
        assert await page_walk(ui, params) == expected
        resp = await ui.get("/receipts/export.jsonl", params=params)
        assert resp.status_code == 200 and jsonl_ids(resp.text) == expected
    assert cli_walk(history, params) == expected
    exported = run_cli(history, "receipts", "export", "--format", "jsonl", "--out", "-",
                       *cli_options(params))  # fmt: skip
    assert exported.exit_code == 0, exported.output
    assert jsonl_ids(exported.stdout) == expected


async def test_pages_of_seven_cross_their_boundaries_without_a_gap_or_a_repeat(tmp_path, history):
    params = {"since": "2026-11-02", "until": "2026-11-03"}
    expected = expected_ids(history, *CASES[5][1:])
    assert len(expected) > 3 * PAGE
    async with ui_client(tmp_path) as ui:
        first = await ui.api("GET", "/api/receipts", params={**params, "limit": str(PAGE)})
        assert [r["id"] for r in first["receipts"]] == expected[:PAGE]
        assert first["next"] == expected[PAGE - 1]
        second = await ui.api(
            "GET", "/api/receipts", params={**params, "limit": str(PAGE), "before": first["next"]}
        )
        assert [r["id"] for r in second["receipts"]] == expected[PAGE : 2 * PAGE]
        # The page's "Newer" link from the second page leads back to the first.
        html = await ui.get("/receipts", params={**params, "limit": "7", "before": first["next"]})
        assert listed(html.text) == expected[PAGE : 2 * PAGE]
        newer = re.search(r'<a href="([^"]+)" rel="prev">', html.text)
        back = await ui.get(unescape(newer.group(1)))
        assert listed(back.text) == expected[:PAGE]
    listing = run_cli(history, "receipts", "--json", "--limit", "7", "--since", "2026-11-02",
                      "--until", "2026-11-03", "--before", first["next"])  # fmt: skip
    assert [r["id"] for r in json.loads(listing.stdout)["receipts"]] == expected[PAGE : 2 * PAGE]


async def test_the_cursor_goes_by_before_or_cursor_on_the_api_the_page_and_the_cli(
    tmp_path, history
):
    params = {"client": "aider"}
    expected = expected_ids(history, "client = ?", ("aider",))
    async with ui_client(tmp_path) as ui:
        assert await api_walk(ui, params, cursor_name="before") == expected
        assert await api_walk(ui, params, cursor_name="cursor") == expected
        by_cursor = await ui.get("/receipts", params={**params, "cursor": expected[2]})
        assert listed(by_cursor.text) == expected[3:53]
        # Both given: `before`, the canonical name, wins.
        both = await ui.api(
            "GET",
            "/api/receipts",
            params={"before": expected[4], "cursor": expected[0], "client": "aider"},
        )
        assert both["receipts"][0]["id"] == expected[5]
    assert cli_walk(history, params, cursor_option="--cursor") == expected


async def test_api_list_entries_are_the_receipts_the_detail_endpoint_returns(tmp_path, history):
    async with ui_client(tmp_path) as ui:
        listed = await ui.api("GET", "/api/receipts", params={"status": "failed", "limit": "3"})
        assert len(listed["receipts"]) == 3
        for receipt in listed["receipts"]:
            assert receipt == await ui.api("GET", f"/api/receipts/{receipt['id']}")


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"since": "soon"}, "not a time"),
        ({"until": "2026-13-01"}, "not a time"),
        ({"status": "lost"}, "unknown status"),
        ({"route_type": "both"}, "route_type must be official or routed"),
    ],
)
async def test_a_bad_filter_is_refused_with_the_same_message_everywhere(
    tmp_path, history, params, message
):
    async with ui_client(tmp_path) as ui:
        api = await ui.client.get("/api/receipts", params=params, headers=ui.admin_headers)
        assert api.status_code == 400 and message in api.text
        page = await ui.get("/receipts", params=params)
        assert page.status_code == 400 and message in unescape(page.text)
        export = await ui.get("/receipts/export.csv", params=params)
        assert export.status_code == 400
    for command in (["receipts"], ["receipts", "export", "--out", "-"]):
        result = run_cli(history, *command, *cli_options(params))
        assert result.exit_code != 0, command
        if "status" not in params and "route_type" not in params:  # those two are click choices
            assert message in result.output, command


async def test_a_bad_cursor_or_limit_is_refused_by_name(tmp_path, history):
    async with ui_client(tmp_path) as ui:
        for params, name in (({"cursor": "../etc"}, "'cursor'"), ({"before": "x"}, "'before'")):
            resp = await ui.client.get("/api/receipts", params=params, headers=ui.admin_headers)
            assert resp.status_code == 400 and name in resp.text
            page = await ui.get("/receipts", params=params)
            assert page.status_code == 400 and name in unescape(page.text)
        page = await ui.get("/receipts", params={"limit": "many"})
        assert page.status_code == 400 and "'limit' must be a whole number" in unescape(page.text)
    result = run_cli(history, "receipts", "--cursor", "rc_nope")
    assert result.exit_code != 0 and "'before' must be a receipt id" in result.output


def test_filters_given_before_export_apply_to_the_export(history):
    expected = expected_ids(history, "client = ? AND status = ?", ("aider", "succeeded"))
    result = run_cli(history, "receipts", "--client", "aider", "export", "--format", "jsonl",
                     "--out", "-", "--status", "succeeded")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert jsonl_ids(result.stdout) == expected


def test_the_cli_offers_every_receipt_status():
    assert sorted(RECEIPT_STATUSES) == sorted(STATUSES)


def test_listing_and_exporting_receipts_need_no_write_lock(history):
    """The read-only CLI commands answer while a writer holds the database."""
    writer = sqlite3.connect(history / "localgate.db", isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        listing = run_cli(history, "receipts", "--json", "--limit", "3")
        exported = run_cli(history, "receipts", "export", "--format", "csv", "--out", "-")
        elapsed = time.monotonic() - started
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert listing.exit_code == 0, listing.output
    assert len(json.loads(listing.stdout)["receipts"]) == 3
    assert exported.exit_code == 0, exported.output
    assert len(list(csv.DictReader(io.StringIO(exported.stdout)))) == 300
    assert elapsed < 5  # nothing waited for the lock (the busy timeout is 10 s)
