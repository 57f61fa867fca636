"""Receipt exports: CSV and JSONL of the current filter, streamed, from the UI and
from ``localgate receipts export``."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from ui_helpers import chat, ui_client

from bench.ui_bench import seed
from localgate.cli import main as cli_main
from localgate.core.receipts import Receipt, new_receipt_id
from localgate.services import receipts as receipt_service
from localgate.services.exports import CSV_COLUMNS, export_chunks
from localgate.services.receipts import ReceiptFilter
from localgate.store import receipts as receipt_store
from localgate.store.db import open_db


async def _traffic(ui) -> list[str]:
    await ui.fund("credit", "5")
    await ui.fund("routed", "50")
    key = await ui.api("POST", "/api/keys", json={"label": "exporter", "project": "acct"})
    ids = []
    for ua, model in (("Cursor/1.7", "localgate-demo"), ("aider/0.86", "localgate-demo")) * 3:
        resp = await ui.client.post(
            "/v1/chat/completions",
            json=chat(model=model, content="export me"),
            headers={"authorization": f"Bearer {key['key']}", "user-agent": ua},
        )
        assert resp.status_code == 200
        ids.append(resp.headers["x-localgate-receipt"])
    return ids


async def test_csv_export_is_the_current_filter_with_every_field(tmp_path):
    async with ui_client(tmp_path) as ui:
        ids = await _traffic(ui)
        resp = await ui.get("/receipts/export.csv?client=Cursor")
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/csv")
        assert resp.headers["content-disposition"].startswith(
            'attachment; filename="localgate-receipts-'
        )
        assert "content-length" not in resp.headers  # streamed, not built whole
        rows = list(csv.DictReader(io.StringIO(resp.text)))
        assert tuple(rows[0].keys()) == CSV_COLUMNS
        cursor = [i for n, i in enumerate(ids) if n % 2 == 0]
        assert [r["id"] for r in rows] == cursor[::-1]  # newest first
        for row in rows:
            api = await ui.api("GET", f"/api/receipts/{row['id']}")
            assert row["client"] == "Cursor" and row["status"] == "succeeded"
            assert (
                row["charge"] == api["charge"] and int(row["charge_micros"]) == api["charge_micros"]
            )
            assert row["cost_exact"] == api["cost_exact"]
            assert int(row["usage_input"]) == api["usage"]["input"]
            assert int(row["usage_output"]) == api["usage"]["output"]
            assert row["price_version"] == api["price"]["version"]
            assert row["price_output"] == api["price"]["output"]
            assert int(row["ledger_entry_id"]) == api["ledger_entry_id"]
            assert int(row["balance_after_micros"]) == api["balance_after_micros"]
            assert row["key_label"] == "exporter" and row["key_project"] == "acct"
            assert json.loads(row["attempts"]) == api["attempts"]
        everything = list(csv.DictReader(io.StringIO((await ui.get("/receipts/export.csv")).text)))
        assert len(everything) == len(ids)


async def test_jsonl_export_lines_are_the_api_receipts(tmp_path):
    async with ui_client(tmp_path) as ui:
        ids = await _traffic(ui)
        resp = await ui.get("/receipts/export.jsonl?client=aider&status=succeeded")
        assert resp.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in resp.text.splitlines()]
        assert [r["id"] for r in lines] == [i for n, i in enumerate(ids) if n % 2][::-1]
        for line in lines:
            assert line == await ui.api("GET", f"/api/receipts/{line['id']}")
        empty = await ui.get("/receipts/export.jsonl?status=failed")
        assert empty.status_code == 200 and empty.text == ""
        header_only = await ui.get("/receipts/export.csv?status=failed")
        assert header_only.text == ",".join(CSV_COLUMNS) + "\r\n"
        bad = await ui.get("/receipts/export.csv?status=nope")
        assert bad.status_code == 400


def test_export_is_lazy_batch_by_batch(tmp_path):
    db = tmp_path / "x.db"
    seed(db, 95, days=2)
    conn = open_db(db)
    reads = 0

    def read():
        nonlocal reads
        reads += 1
        return conn

    chunks = export_chunks(read, ReceiptFilter(), "jsonl", batch=10)
    first, n = next(chunks)
    assert n == 10 and reads == 1 and first.count(b"\n") == 10  # one batch read, not all
    rest = list(chunks)
    assert sum(n for _, n in rest) == 85 and reads == 10
    csv_chunks = list(export_chunks(read, ReceiptFilter(status="succeeded"), "csv", batch=7))
    body = b"".join(c for c, _ in csv_chunks).decode()
    expected = conn.execute("SELECT count(*) FROM receipts WHERE status = 'succeeded'").fetchone()[
        0
    ]
    assert len(list(csv.DictReader(io.StringIO(body)))) == expected


@pytest.mark.slow
def test_export_memory_stays_flat_as_receipts_grow(tmp_path):
    """Peak memory while exporting does not grow with the number of receipts."""
    peaks = {}
    for n in (1_000, 8_000):
        db = tmp_path / f"{n}.db"
        seed(db, n, days=5)
        conn = open_db(db)
        tracemalloc.start()
        total = 0
        for data, count in export_chunks(lambda c=conn: c, ReceiptFilter(), "csv"):
            total += count
            del data
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        conn.close()
        assert total == n
    assert peaks[8_000] < peaks[1_000] * 1.5, peaks


def test_time_filters_are_exact_at_the_edges(tmp_path):
    db = tmp_path / "t.db"
    seed(db, 0)
    conn = open_db(db)
    stamps = {
        "before": "2026-11-01T23:59:59.999999Z",
        "start": "2026-11-02T00:00:00.000000Z",
        "end": "2026-11-02T23:59:59.999999Z",
        "after": "2026-11-03T00:00:00.000000Z",
    }
    ids = {}
    for name, stamp in stamps.items():
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC)
        rid = new_receipt_id(moment.timestamp())
        receipt_store.save(
            conn,
            Receipt(id=rid, request_id=name, created_at=stamp, endpoint="/v1/chat/completions"),
        )
        ids[rid] = name
    for flt, expected in (
        (ReceiptFilter(since="2026-11-02", until="2026-11-02"), ["end", "start"]),
        (ReceiptFilter(since="2026-11-02"), ["after", "end", "start"]),
        (ReceiptFilter(until="2026-11-01"), ["before"]),
        (ReceiptFilter(since="2026-11-02T12:00"), ["after", "end"]),
    ):
        page = receipt_service.page(conn, flt)
        assert [ids[r["id"]] for r in page.rows] == expected, flt
        lines = b"".join(c for c, _ in export_chunks(lambda: conn, flt, "jsonl")).splitlines()
        assert [json.loads(x)["request_id"] for x in lines] == expected, flt


def test_csv_cells_cannot_become_spreadsheet_formulas(tmp_path):
    db = tmp_path / "f.db"
    seed(db, 0)
    conn = open_db(db)
    receipt_store.save(
        conn,
        Receipt(
            id=new_receipt_id(),
            request_id="=1+1",
            created_at="2026-11-02T00:00:00Z",
            endpoint="/v1/chat/completions",
            user_agent='=HYPERLINK("http://evil.example","click")',
            error="@SUM(A1:A9)",
            key_label="-2+3",
        ),
    )
    body = b"".join(c for c, _ in export_chunks(lambda: conn, ReceiptFilter(), "csv")).decode()
    row = next(csv.DictReader(io.StringIO(body)))
    assert row["user_agent"] == '\'=HYPERLINK("http://evil.example","click")'
    assert row["error"] == "'@SUM(A1:A9)" and row["request_id"] == "'=1+1"
    assert row["key_label"] == "'-2+3"
    assert row["charge"] == "0.000000" and row["charge_micros"] == "0"  # numbers untouched
    # JSONL keeps the text exactly.
    line = json.loads(b"".join(c for c, _ in export_chunks(lambda: conn, ReceiptFilter(), "jsonl")))
    assert line["user_agent"].startswith("=HYPERLINK")


def test_cli_export_writes_the_file_with_a_progress_bar(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    seed(data / "localgate.db", 400, days=5)
    conn = open_db(data / "localgate.db")
    aider = conn.execute("SELECT count(*) FROM receipts WHERE client = 'aider'").fetchone()[0]
    conn.close()
    runner = CliRunner()
    out = tmp_path / "aider.csv"
    result = runner.invoke(
        cli_main,
        ["--data-dir", str(data), "receipts", "export", "--format", "csv", "--out", str(out),
         "--client", "aider"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"exporting {aider:,} receipts" in result.output
    assert f"wrote {aider:,} receipts to {out} (csv)" in result.output
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == aider and {r["client"] for r in rows} == {"aider"}
    assert not out.with_name("aider.csv.part").exists()
    # JSONL to stdout, with the time filter.
    result = runner.invoke(
        cli_main,
        ["--data-dir", str(data), "receipts", "export", "--format", "jsonl", "--out", "-",
         "--since", "2d", "--status", "failed"],
    )  # fmt: skip
    assert result.exit_code == 0
    lines = [json.loads(x) for x in result.stdout.splitlines() if x.startswith("{")]
    assert lines and all(x["status"] == "failed" for x in lines)
    # Mistakes are one line; the plain `receipts` command still lists.
    result = runner.invoke(
        cli_main,
        ["--data-dir", str(data), "receipts", "export", "--out", str(out), "--since", "soon"],
    )
    assert result.exit_code != 0 and "not a time" in result.output
    listing = runner.invoke(cli_main, ["--data-dir", str(data), "receipts", "--limit", "3"])
    assert listing.exit_code == 0 and listing.output.startswith("RECEIPT")
    assert len(listing.output.strip().splitlines()) == 4
