"""The money pages: dashboard, wallet statements, receipts list and receipt page.

Real traffic goes through /v1 with the demo channel (so receipts, holds and
ledger entries are the gateway's own); bigger data sets come from the
benchmark's seeder, whose ledger is checked with ``ledger verify`` here.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from html import unescape

from ui_helpers import chat, ui_client

from bench.ui_bench import seed
from localgate.core import ledger as core_ledger
from localgate.core.pricing import Usage, charge_micros
from localgate.core.receipts import Receipt, new_receipt_id
from localgate.money import format_money
from localgate.services import receipts as receipt_service
from localgate.services import statements
from localgate.services.svg import spend_chart
from localgate.store import ledger as ledger_store
from localgate.store import receipts as receipt_store
from localgate.store.db import open_db
from localgate.store.verify import verify

CURSOR_UA = "Cursor/1.7.2"
CLAUDE_UA = "claude-cli/2.0.1 (external, cli)"


def text(html: str) -> str:
    """The visible text of a page, whitespace collapsed."""
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def entry_row(html: str, entry_id: int) -> str:
    """One ledger row with its detail (which holds a table of its own)."""
    rest = html.split(f'<tr id="entry-{entry_id}"', 1)[1]
    return (
        f'<tr id="entry-{entry_id}"'
        + re.split(r'<tr id="entry-|</tbody>\s*</table>\s*</div>', rest)[0]
    )


def receipt_ids(html: str) -> list[str]:
    return re.findall(r'<tr id="receipt-([^"]+)"', html)


async def traffic(ui) -> dict:
    """Fund both wallets, make two keys and three requests from two tools."""
    await ui.fund("credit", "5")
    await ui.fund("routed", "50")
    official = await ui.api(
        "POST",
        "/api/keys",
        json={"label": "cursor laptop", "project": "webapp", "settlement": "official"},
    )
    routed = await ui.api(
        "POST",
        "/api/keys",
        json={"label": "claude box", "project": "infra", "settlement": "routed"},
    )
    ids = []
    for key, ua in ((official, CURSOR_UA), (official, CURSOR_UA), (routed, CLAUDE_UA)):
        resp = await ui.client.post(
            "/v1/chat/completions",
            json=chat(content="count the receipts"),
            headers={"authorization": f"Bearer {key['key']}", "user-agent": ua},
        )
        assert resp.status_code == 200, resp.text
        ids.append(resp.headers["x-localgate-receipt"])
    return {"official": official, "routed": routed, "ids": ids}


# -- dashboard ---------------------------------------------------------------------


async def test_login_link_sets_a_strict_httponly_session_and_opens_the_dashboard(tmp_path):
    async with ui_client(tmp_path, login=False) as ui:
        resp = await ui.get(f"/login?token={ui.settings.admin_token}", follow_redirects=False)
        assert resp.status_code == 302 and resp.headers["location"] == "/"
        cookie = resp.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = await ui.get("/")
        assert page.status_code == 200
        assert "<h1>Dashboard</h1>" in page.text
        assert 'data-wallet="credit"' in page.text and 'data-wallet="routed"' in page.text


async def test_dashboard_answers_where_the_money_went(tmp_path):
    async with ui_client(tmp_path) as ui:
        t = await traffic(ui)
        receipts = [await ui.api("GET", f"/api/receipts/{rid}") for rid in t["ids"]]
        page = await ui.get("/")
        assert page.status_code == 200
        body = text(page.text)
        # Wallets: balance, held, available, readiness for the demo models.
        credit = await ui.wallet("credit")
        assert format_money(credit["balance_micros"], "USD") in body
        assert "Ready for 2 models on official routes" in body
        assert "Ready for 1 model on routed routes" in body
        # 30-day spend per wallet, as an SVG chart with today's total in its label.
        spent = {"credit": 0, "routed": 0}
        for r in receipts:
            spent[r["wallet"]] += r["charge_micros"]
        assert spent["credit"] > 0 and spent["routed"] > 0
        chart = re.search(r'<svg class="chart chart-official".*?</svg>', page.text, re.S).group(0)
        today = datetime.now(UTC).date().isoformat()
        assert f"{today}: {format_money(spent['credit'], 'USD')}" in unescape(chart)
        assert chart.count('class="bar"') == 30
        # Top models, keys and tools, each linking to the receipts behind them.
        assert "/receipts?model=localgate-demo&amp;since=30d" in page.text
        assert f"/receipts?key={t['official']['id']}&amp;since=30d" in page.text
        assert "cursor laptop" in body and "claude box" in body
        assert "/receipts?client=Cursor&amp;since=30d" in page.text
        assert "/receipts?client=Claude%20Code&amp;since=30d" in page.text
        # Recent receipts, newest first.
        assert receipt_ids(page.text)[:3] == list(reversed(t["ids"]))


async def test_low_balance_threshold_warns_on_the_dashboard(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("credit", "3")
        page = await ui.get("/")
        assert 'class="warn low-balance"' not in page.text
        resp = await ui.post("/wallets/credit/threshold", {"amount": "5"}, follow_redirects=False)
        assert resp.status_code == 303
        assert resp.headers["location"] == "/wallets/credit?notice=threshold-saved"
        conn = ui.state.store.read()
        assert statements.wallet_settings(conn, "credit")["low_balance_micros"] == 5_000_000
        page = await ui.get("/")
        warning = re.search(r'<p class="warn low-balance" role="alert">(.*?)</p>', page.text, re.S)
        assert warning and "$5.000000" in warning.group(1) and "$3.000000" in warning.group(1)
        wallet_page = await ui.get("/wallets/credit")
        assert 'value="5"' in wallet_page.text and 'class="warn low-balance"' in wallet_page.text
        # The other wallet has no threshold: no warning even though it is empty.
        assert page.text.count('class="warn low-balance"') == 1
        # Under the level no more: the warning goes away.
        await ui.post("/wallets/credit/threshold", {"amount": "2.5"})
        assert 'class="warn low-balance"' not in (await ui.get("/")).text
        # Blank turns it off; nonsense is explained, not stored.
        resp = await ui.post("/wallets/credit/threshold", {"amount": ""}, follow_redirects=False)
        assert resp.headers["location"].endswith("notice=threshold-off")
        assert statements.wallet_settings(conn, "credit")["low_balance_micros"] is None
        for bad in ("abc", "-1", "0.0000001"):
            resp = await ui.post(
                "/wallets/credit/threshold", {"amount": bad}, follow_redirects=True
            )
            assert resp.status_code == 200 and 'id="threshold-error"' in resp.text, bad
            assert statements.wallet_settings(conn, "credit")["low_balance_micros"] is None
        resp = await ui.post("/wallets/nope/threshold", {"amount": "1"}, follow_redirects=True)
        assert resp.status_code == 404


# -- wallet pages ---------------------------------------------------------------------


async def test_wallet_statement_shows_balance_after_each_entry_and_its_detail(tmp_path):
    async with ui_client(tmp_path) as ui:
        t = await traffic(ui)
        api = await ui.api("GET", "/api/wallets/credit/ledger")
        page = await ui.get("/wallets/credit")
        assert page.status_code == 200
        (chain,) = ui.state.store.read().execute("SELECT max(id) FROM entries").fetchone()
        rows = dict(re.findall(r'<tr id="entry-(\d+)" class="entry kind-(\w+)', page.text))
        assert [int(i) for i in rows] == [e["id"] for e in api["entries"]]
        for entry in api["entries"]:
            row = entry_row(page.text, entry["id"])
            assert format_money(entry["balance_after_micros"], "USD") in row
            for posting in entry["postings"]:
                assert f"<code>{posting['account']}</code>" in row
            assert f"entry {entry['id']} of {chain} (all wallets)" in text(row)  # chain position
            assert entry["hash"] in row and entry["prev_hash"] in row
        # A settle entry links to its receipt; the receipt links back to the entry.
        receipt = await ui.api("GET", f"/api/receipts/{t['ids'][0]}")
        settle = entry_row(page.text, receipt["ledger_entry_id"])
        assert f'href="/receipts/{receipt["id"]}"' in settle
        detail = await ui.get(f"/receipts/{receipt['id']}")
        link = f"/wallets/credit?at={receipt['ledger_entry_id']}#entry-{receipt['ledger_entry_id']}"
        assert link in detail.text


async def test_wallet_entry_links_a_topup_and_opens_where_it_is(tmp_path):
    async with ui_client(tmp_path) as ui:
        store = ui.state.store
        draft = core_ledger.topup_entry("credit", "USD", 7_000_000, "sandbox", topup_id="tu_demo1")
        entry = await store.write(ledger_store.post_entry, draft)
        for _ in range(60):  # push the top-up off the first page
            await ui.fund("credit", "0.01")
        first = await ui.get("/wallets/credit")
        assert f'id="entry-{entry.id}"' not in first.text
        assert 'rel="next"' in first.text
        page = await ui.get(f"/wallets/credit?at={entry.id}")
        row = entry_row(page.text, entry.id)
        assert row.startswith(f'<tr id="entry-{entry.id}" class="entry kind-topup focus">')
        assert 'href="/billing/topups/tu_demo1"' in row
        assert "<details open>" in row
        assert "+$7.000000" in text(row)


async def test_wallet_filters_and_keyset_pages(tmp_path):
    async with ui_client(tmp_path) as ui:
        await traffic(ui)
        conn = ui.state.store.read()
        all_ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM entries WHERE wallet_id = 'credit' ORDER BY id DESC"
            )
        ]
        settles = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM entries WHERE wallet_id = 'credit' AND kind = 'settle' ORDER BY id DESC"
            )
        ]
        page = await ui.get("/wallets/credit?kind=settle")
        assert [int(i) for i in re.findall(r'<tr id="entry-(\d+)"', page.text)] == settles
        moves = await ui.get("/wallets/credit?kind=moves")
        assert "kind-hold" not in moves.text and "kind-settle" in moves.text
        # Pages of two, walked with the keyset cursor, visit every entry once.
        seen, before = [], None
        while True:
            p = statements.statement(
                conn, "credit", statements.StatementFilter(), before=before, limit=2
            )
            seen += [e["id"] for e in p.entries]
            if p.older is None:
                break
            before = p.older
        assert seen == all_ids
        # ...and back up with ?after=.
        p = statements.statement(
            conn, "credit", statements.StatementFilter(), after=all_ids[-1], limit=2
        )
        assert [e["id"] for e in p.entries] == all_ids[-3:-1]
        # Date filters: today holds everything, yesterday nothing.
        today = datetime.now(UTC).date().isoformat()
        assert len(
            re.findall(r'<tr id="entry-', (await ui.get(f"/wallets/credit?since={today}")).text)
        ) == len(all_ids)
        assert "No entries match" in (await ui.get("/wallets/credit?until=2020-01-01")).text
        bad = await ui.get("/wallets/credit?kind=bogus")
        assert bad.status_code == 400 and "unknown entry kind" in bad.text
        assert (await ui.get("/wallets/credit?before=x")).status_code == 400
        assert (await ui.get("/wallets/nope")).status_code == 404


def test_first_entry_at_or_after_is_a_binary_search_over_time(tmp_path):
    db = tmp_path / "x.db"
    seed(db, 300, days=3)
    conn = open_db(db)
    times = [r[0] for r in conn.execute("SELECT created_at FROM entries ORDER BY id")]
    assert times == sorted(times)
    for probe in (times[0], times[17], times[150], times[-1], "2000-01-01", "2999-01-01"):
        expected = next((i + 1 for i, t in enumerate(times) if t >= probe), len(times) + 1)
        assert statements.first_entry_at_or_after(conn, probe) == expected


# -- receipts -------------------------------------------------------------------------


async def test_receipts_list_filters_each_dimension(tmp_path):
    async with ui_client(tmp_path) as ui:
        t = await traffic(ui)
        cursor_ids = t["ids"][:2][::-1]
        cases = {
            f"key={t['official']['id']}": cursor_ids,
            "project=infra": [t["ids"][2]],
            "model=localgate-demo": t["ids"][::-1],
            "route_type=routed": [t["ids"][2]],
            "channel=demo": t["ids"][::-1],
            "wallet=credit": cursor_ids,
            "status=succeeded": t["ids"][::-1],
            "status=failed": [],
            "client=Cursor": cursor_ids,
            "client=Claude+Code": [t["ids"][2]],
            "since=24h": t["ids"][::-1],
            "until=2020-01-01": [],
            "client=Cursor&route_type=official&since=1d": cursor_ids,
        }
        for query, expected in cases.items():
            page = await ui.get(f"/receipts?{query}")
            assert page.status_code == 200, query
            assert receipt_ids(page.text) == expected, query
        # The filter form offers what the receipts hold.
        page = await ui.get("/receipts")
        for option in ("Cursor", "Claude Code", "localgate-demo", "webapp", "infra", "demo"):
            assert f'<option value="{option}"' in page.text
        assert "cursor laptop (" in page.text  # keys by label
        # Chips remove one filter at a time; exports carry the filter.
        page = await ui.get("/receipts?client=Cursor&wallet=credit")
        assert 'href="/receipts?wallet=credit"' in page.text
        assert 'href="/receipts/export.csv?wallet=credit&amp;client=Cursor"' in page.text


async def test_receipts_list_explains_bad_filters_and_finds_by_id(tmp_path):
    async with ui_client(tmp_path) as ui:
        t = await traffic(ui)
        for query, message in (
            ("status=bogus", "unknown status"),
            ("route_type=both", "route_type must be official or routed"),
            ("since=yesterday", "not a time"),
            ("before=../../etc", "must be a receipt id"),
        ):
            page = await ui.get(f"/receipts?{query}")
            assert page.status_code == 400 and message in text(page.text), query
        rid = t["ids"][1]
        found = await ui.get(f"/receipts?q={rid}", follow_redirects=False)
        assert found.status_code == 303 and found.headers["location"] == f"/receipts/{rid}"
        request_id = (await ui.api("GET", f"/api/receipts/{rid}"))["request_id"]
        found = await ui.get(f"/receipts?q={request_id}", follow_redirects=False)
        assert found.headers["location"] == f"/receipts/{rid}"
        missing = await ui.get("/receipts?q=rc_nothing")
        assert "No receipt has the id or request id" in text(missing.text)


def _seeded(tmp_path, n=1500):
    db = tmp_path / "data" / "localgate.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    seed(db, n, days=20)
    return db


async def test_receipts_pages_walk_every_match_once_in_both_directions(tmp_path):
    _seeded(tmp_path)
    async with ui_client(tmp_path) as ui:
        conn = ui.state.store.read()
        for query, where, args in (
            ("", "", ()),
            ("client=aider", " WHERE client = ?", ("aider",)),
            (
                "model=gpt-4o&status=failed",
                " WHERE requested_model = ? AND status = ?",
                ("gpt-4o", "failed"),
            ),
        ):
            expected = [
                r[0] for r in conn.execute(f"SELECT id FROM receipts{where} ORDER BY id DESC", args)
            ]
            seen, url = [], f"/receipts?{query}"
            first = await ui.get(url)
            assert 'rel="prev"' not in first.text  # nothing is newer than the newest
            while url:
                page = await ui.get(url)
                if seen:
                    assert 'rel="prev"' in page.text
                seen += receipt_ids(page.text)
                older = re.search(r'<a href="([^"]+)" rel="next">', page.text)
                url = unescape(older.group(1)) if older else None
            assert seen == expected, query
            if len(expected) > 50:
                newer = await ui.get(f"/receipts?{query}&after={expected[-1]}".replace("?&", "?"))
                assert receipt_ids(newer.text) == expected[-51:-1]


def test_two_filters_scan_a_bounded_window_and_say_so(tmp_path):
    db = _seeded(tmp_path, 1200)
    conn = open_db(db)
    flt = receipt_service.ReceiptFilter(model="qwen-plus", route_type="official")  # never both
    page = receipt_service.page(conn, flt, window=5)
    assert page.rows == [] and page.searched == 5 and page.older is not None
    seen, before, rounds = [], None, 0
    flt = receipt_service.ReceiptFilter(client="aider", status="succeeded")
    expected = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM receipts WHERE client = 'aider' AND status = 'succeeded' ORDER BY id DESC"
        )
    ]
    while True:
        rounds += 1
        p = receipt_service.page(conn, flt, before=before, limit=7, window=40)
        seen += [r["id"] for r in p.rows]
        if p.older is None:
            break
        before = p.older
    assert seen == expected and rounds > len(expected) // 7


async def test_receipt_page_shows_every_field_of_the_receipt(tmp_path):
    async with ui_client(tmp_path) as ui:
        t = await traffic(ui)
        r = await ui.api("GET", f"/api/receipts/{t['ids'][0]}")
        page = await ui.get(f"/receipts/{r['id']}")
        assert page.status_code == 200
        body = text(page.text)
        shown = [
            r["id"], r["request_id"], r["created_at"], r["finished_at"], r["key"]["id"],
            r["key"]["label"], r["key"]["project"], r["client"], r["user_agent"], r["endpoint"],
            r["model"], r["catalog_model"], r["route_type"], r["channel"], r["upstream_model"],
            r["route_id"], r["price"]["version"], r["price"]["input"], r["price"]["output"],
            r["cost_exact"], r["charge"], r["currency"], r["charge_policy"], r["status"],
            f"{r['usage']['input']:,}", f"{r['usage']['output']:,}", r["usage"]["source"],
            format_money(r["balance_before_micros"], "USD"),
            format_money(r["balance_after_micros"], "USD"),
            format_money(r["hold_micros"], "USD"), f"entry {r['ledger_entry_id']}",
            f"{r['latency_ms']:,} ms", "Streamed no", "Fallback used no", "Retries 0",
            "HTTP status 200",
        ]  # fmt: skip
        for value in shown:
            assert str(value) in body, value
        # The attempts table, and the hold and settle entries of this receipt.
        attempt = r["attempts"][0]
        assert f"{attempt['latency_ms']} ms" in body and attempt["upstream_model"] in body
        kinds = re.findall(
            r'<td><a href="/wallets/credit\?at=\d+#entry-\d+">\d+</a></td><td>(\w+)</td>', page.text
        )
        assert kinds == ["hold", "settle"]
        # The counterfactual: the same usage at the routed route's price, in CNY.
        route = next(
            x
            for x in ui.state.gateway.catalog.routes_for("localgate-demo")
            if x.settlement == "routed"
        )
        u = r["usage"]
        usage = Usage(u["input"], u["cached_input"], u["cache_write"], u["output"], u["reasoning"])
        expected = format_money(charge_micros(usage, route.price), route.price.currency)
        other = re.search(r'<strong class="counterfactual">([^<]+)</strong>', page.text).group(1)
        assert unescape(other) == expected and expected.startswith("¥")
        missing = await ui.get("/receipts/rc_00000000000000000000")
        assert missing.status_code == 404 and "no receipt" in missing.text


async def test_receipt_page_shows_the_fallback_path_and_masks_secrets(tmp_path):
    async with ui_client(tmp_path) as ui:
        receipt = Receipt(
            id=new_receipt_id(),
            request_id="req_fallback",
            created_at="2026-11-20T10:00:00.000000Z",
            endpoint="/v1/chat/completions",
            status="failed",
            http_status=502,
            user_agent="aider/0.86 Bearer sk-proj-abcdefghijklmnopqrstuvwxyz123456",
            client="aider",
            requested_model="gpt-4o",
            catalog_model="gpt-4o",
            route_type="routed",
            channel="relay-b",
            attempts=[
                {
                    "channel": "relay-a",
                    "route_id": "routed:relay-a:gpt-4o",
                    "upstream_model": "openai/gpt-4o",
                    "settlement": "routed",
                    "status": 503,
                    "error": "relay-a: 503 overloaded",
                    "latency_ms": 120,
                    "why_next": "upstream 503: trying the next route",
                },
                {
                    "channel": "relay-b",
                    "route_id": "routed:relay-b:gpt-4o",
                    "upstream_model": "gpt-4o",
                    "settlement": "routed",
                    "status": 502,
                    "error": "bad key lg_AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg",
                    "latency_ms": 80,
                    "why_next": None,
                },
            ],
            error="upstream failed after 2 attempts",
            charge_policy="failed upstream: not charged",
        )
        await ui.state.store.write(receipt_store.save, receipt)
        page = await ui.get(f"/receipts/{receipt.id}")
        body = text(page.text)
        assert "relay-a 503 → relay-b 502" in body
        assert "upstream 503: trying the next route" in body
        assert "Fallback used yes" in body and "Retries 1" in body
        assert "abcdefghijklmnopqrstuvwxyz123456" not in page.text
        assert "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789abcdefg" not in page.text
        assert "Bearer …" in body and "lg_…" in body
        assert "failed upstream: not charged" in body


async def test_per_tool_attribution_is_shown_and_filterable(tmp_path):
    async with ui_client(tmp_path) as ui:
        t = await traffic(ui)
        claude = t["ids"][2]
        assert (await ui.api("GET", f"/api/receipts/{claude}"))["client"] == "Claude Code"
        page = await ui.get("/receipts?client=Claude+Code")
        assert receipt_ids(page.text) == [claude]
        row = re.search(rf'<tr id="receipt-{claude}".*?</tr>', page.text, re.S).group(0)
        assert "<td>Claude Code</td>" in row
        detail = text((await ui.get(f"/receipts/{claude}")).text)
        assert f"Tool Claude Code User-Agent {CLAUDE_UA}" in detail
        dashboard = await ui.get("/")
        tools = re.search(r'id="top-tool".*?</section>', dashboard.text, re.S).group(0)
        assert ">Cursor</a>" in tools and ">Claude Code</a>" in tools


# -- the rollup and the benchmark's data ---------------------------------------------


def _rollup_matches(conn) -> None:
    for dim, column in (("model", "requested_model"), ("key", "key_id"), ("client", "client")):
        direct = conn.execute(
            f"SELECT substr(created_at, 1, 10), coalesce(wallet_id, ''), coalesce({column}, ''), "
            "count(*), sum(status IN ('failed', 'rejected', 'interrupted')), sum(charge_micros) "
            "FROM receipts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
        rollup = conn.execute(
            "SELECT day, wallet_id, value, requests, errors, charge_micros FROM receipt_daily "
            "WHERE dim = ? AND requests != 0 ORDER BY 1, 2, 3",
            (dim,),
        ).fetchall()
        assert [tuple(r) for r in rollup] == [tuple(r) for r in direct], dim


async def test_the_daily_rollup_matches_the_receipts_through_every_write_path(tmp_path):
    async with ui_client(tmp_path) as ui:
        await traffic(ui)  # pending -> finished rewrites (INSERT OR REPLACE)
        store = ui.state.store
        pending = Receipt(
            id=new_receipt_id(), request_id="r", created_at="2026-11-01T00:00:00Z",
            endpoint="/v1/chat/completions", wallet_id="credit", requested_model="m", key_id="k",
        )  # fmt: skip
        await store.write(receipt_store.save, pending)
        await store.write(receipt_store.interrupt_pending, [], "2026-11-01T00:00:01Z")  # UPDATE
        conn = store.read()
        assert (
            conn.execute("SELECT status FROM receipts WHERE id = ?", (pending.id,)).fetchone()[0]
            == "interrupted"
        )
        _rollup_matches(conn)

        # sqlite-utils turns recursive_triggers on; REPLACE must not count twice then.
        def replace_with_recursive_triggers(c):
            c.execute("PRAGMA recursive_triggers = ON")
            try:
                pending.status, pending.charge_micros = "succeeded", 42
                receipt_store.save(c, pending)
            finally:
                c.execute("PRAGMA recursive_triggers = OFF")

        await store.write(replace_with_recursive_triggers)
        _rollup_matches(store.read())


def test_the_benchmark_seed_is_a_valid_ledger(tmp_path):
    db = tmp_path / "bench.db"
    info = seed(db, 600, days=10)
    conn = open_db(db)
    report = verify(conn)
    assert report.ok, report.first_error
    assert report.entries == info["entries"]
    _rollup_matches(conn)
    # Every settled receipt points at its settle entry, whose balance it reports.
    pairs = conn.execute(
        "SELECT r.balance_after_micros, e.balance_after_micros FROM receipts r "
        "JOIN entries e ON e.id = r.ledger_entry_id"
    ).fetchall()
    assert pairs and all(a == b for a, b in pairs)


def test_spend_chart_escapes_and_labels_every_day():
    days = [f"2026-11-{d:02d}" for d in range(1, 31)]
    values = [0] * 29 + [1_234_567]
    svg = spend_chart(days, values, "USD", label='Wallet <"evil">', css_class="chart-official")
    assert svg.startswith('<svg class="chart chart-official"')
    assert "<evil>" not in svg and "&lt;&quot;evil&quot;&gt;" in svg
    assert svg.count('class="bar"') == 30 and "2026-11-30: $1.234567" in svg
    assert json.dumps(svg)  # plain text, no objects
