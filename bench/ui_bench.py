"""The wallet UI at a million receipts: generate them, then time the pages.

    python bench/ui_bench.py                      # 1,000,000 receipts in a temp dir
    python bench/ui_bench.py --receipts 200000 --keep /tmp/lg-bench

``seed()`` writes receipts *and* the ledger they imply (a hold and a settle or
release entry per request, with postings, holds rows, account balances and a
valid hash chain) with ``executemany`` in one transaction, so ``localgate
ledger verify`` passes on the result. Then the pages are rendered through the
ASGI app, in process, and the server time of each render is reported
(median and p95 of several runs; target < 100 ms). Last, every receipt is
exported as CSV and JSONL under ``tracemalloc`` to show that memory stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from localgate.config import DEFAULT_WALLETS
from localgate.core.ledger import GENESIS_HASH
from localgate.core.pricing import Price, Usage, charge_micros, exact_cost
from localgate.core.receipts import (
    POLICY_CANCELED,
    POLICY_CHARGED,
    POLICY_FAILED,
    POLICY_REJECTED,
    new_receipt_id,
)
from localgate.store import Store
from localgate.store.db import open_db

TARGET_MS = 100.0
FLUSH_EVERY = 50_000  # receipts built in memory before they are inserted
START_BALANCE = {"USD": 5_000_000 * 1_000_000, "CNY": 20_000_000 * 1_000_000}

# (model, route type, channel, upstream model, price): the mix a busy user has.
ROUTES = (
    ("gpt-4o-mini", "official", "openai", "gpt-4o-mini", ("USD", "0.15", "0.60", "0.075")),
    ("gpt-4o", "official", "openai", "gpt-4o", ("USD", "2.5", "10", "1.25")),
    ("gpt-4.1", "official", "openai", "gpt-4.1", ("USD", "2", "8", "0.5")),
    ("gpt-5-mini", "official", "openai", "gpt-5-mini", ("USD", "0.25", "2", "0.025")),
    ("claude-sonnet-4-5", "official", "anthropic", "claude-sonnet-4-5", ("USD", "3", "15", "0.3")),
    ("claude-haiku-4-5", "official", "anthropic", "claude-haiku-4-5", ("USD", "1", "5", "0.1")),
    ("gemini-2.5-flash", "official", "gemini", "gemini-2.5-flash", ("USD", "0.3", "2.5", None)),
    ("gpt-4o-mini", "routed", "relay-a", "openai/gpt-4o-mini", ("CNY", "0.8", "3.2", None)),
    ("gpt-4o", "routed", "relay-a", "openai/gpt-4o", ("CNY", "12", "48", None)),
    (
        "claude-sonnet-4-5",
        "routed",
        "relay-b",
        "anthropic/claude-sonnet-4.5",
        ("CNY", "15", "75", None),
    ),
    ("deepseek-chat", "routed", "relay-b", "deepseek-chat", ("CNY", "2", "8", "0.5")),
    ("qwen-plus", "routed", "relay-c", "qwen-plus", ("CNY", "0.8", "2", None)),
)
# (key label, project, the tool that mostly uses it)
KEYS = (
    ("cursor laptop", "webapp", "Cursor"),
    ("claude code", "webapp", "Claude Code"),
    ("codex", "cli-tools", "Codex CLI"),
    ("aider", "cli-tools", "aider"),
    ("continue", "docs", "Continue"),
    ("cline", "infra", "Cline"),
    ("roo", "infra", "Roo Code"),
    ("batch jobs", "data", "openai-python"),
    ("evals", "data", "openai-python"),
    ("anthropic sdk", "research", "anthropic-python"),
    ("scripts", None, "curl"),
    ("playground", None, "localgate playground"),
)
CLIENTS = tuple(sorted({c for _, _, c in KEYS} | {"other"}))
UA = {
    "Cursor": "Cursor/1.7",
    "Claude Code": "claude-cli/2.0.1 (external, cli)",
    "Codex CLI": "codex_cli_rs/0.40.0",
    "aider": "aider/0.86 openai/python 1.99",
    "Continue": "Continue/1.2",
    "Cline": "Cline/3.30",
    "Roo Code": "RooCode/3.28",
    "openai-python": "OpenAI/Python 1.99.0",
    "anthropic-python": "Anthropic/Python 0.68.0",
    "curl": "curl/8.5.0",
    "localgate playground": "localgate-playground/0.1",
    "other": "my-script/1.0",
}
STATUSES = (
    ("succeeded", 0.95, POLICY_CHARGED),
    ("failed", 0.03, POLICY_FAILED),
    ("rejected", 0.01, POLICY_REJECTED),
    ("client_canceled", 0.01, POLICY_CANCELED),
)
RECEIPT_COLUMNS = (
    "id", "request_id", "created_at", "finished_at", "status", "http_status", "key_id",
    "key_label", "key_project", "client", "user_agent", "endpoint", "stream",
    "requested_model", "catalog_model", "route_id", "route_type", "channel", "upstream_model",
    "attempts", "fallback_used", "retry_count", "usage_input", "usage_cached_input",
    "usage_cache_write", "usage_output", "usage_reasoning", "usage_source", "price_version_id",
    "price", "cost_exact", "charge_micros", "currency", "wallet_id", "balance_before_micros",
    "balance_after_micros", "hold_id", "hold_micros", "ledger_entry_id", "latency_ms", "ttft_ms",
    "error", "charge_policy",
)  # fmt: skip


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Chain:
    """Entries, postings and balances as the store would write them, in bulk."""

    def __init__(self) -> None:
        self.entries: list[tuple[Any, ...]] = []
        self.postings: list[tuple[Any, ...]] = []
        self.accounts: dict[tuple[str, str], int] = {}
        self.prev = GENESIS_HASH
        self.next_id = 1

    def post(
        self,
        created_at: str,
        kind: str,
        wallet: str,
        cur: str,
        postings: list[tuple[str, int]],
        memo: str,
        *,
        idem: str | None = None,
        hold_id: str | None = None,
        receipt_id: str | None = None,
    ) -> tuple[int, int]:
        """Post one entry; returns (entry id, wallet balance after)."""
        entry_id = self.next_id
        self.next_id += 1
        acc = self.accounts
        for account, amount in postings:
            acc[(account, cur)] = acc.get((account, cur), 0) + amount
        free = acc.get((f"wallet:{wallet}", cur), 0)
        held = acc.get((f"hold:{wallet}", cur), 0)
        balance = free + held
        # The canonical JSON of core.ledger.entry_hash, built directly for speed;
        # test_ui_pages checks that `ledger verify` accepts what this writes.
        body = [
            self.prev, entry_id, created_at, kind, wallet, cur, memo, idem, None, hold_id,
            receipt_id, None, balance, held, [[a, cur, m] for a, m in postings],
        ]  # fmt: skip
        digest = hashlib.sha256(
            json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        ).hexdigest()
        amount = sum(m for a, m in postings if a in (f"wallet:{wallet}", f"hold:{wallet}"))
        self.entries.append(
            (entry_id, created_at, kind, wallet, cur, amount, balance, held, memo, idem, None,
             hold_id, receipt_id, None, self.prev, digest)
        )  # fmt: skip
        self.postings.extend((entry_id, i, a, cur, m) for i, (a, m) in enumerate(postings))
        self.prev = digest
        return entry_id, balance


def seed(
    db_path: str | Path,
    receipts: int,
    *,
    days: int = 60,
    seed_value: int = 1,
    now: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Write ``receipts`` receipts over the last ``days`` days, with their ledger."""
    rng = random.Random(seed_value)
    Store.open(db_path, wallets=DEFAULT_WALLETS).close()  # migrate, create wallets
    conn = open_db(db_path)
    conn.execute("PRAGMA synchronous = OFF")
    wallet_of = {w.settlement: (w.id, w.currency) for w in DEFAULT_WALLETS}
    prices = {
        r[0:3]: Price.from_mapping(
            {"currency": r[4][0], "input": r[4][1], "output": r[4][2], "cached_input": r[4][3]}
        )
        for r in ROUTES
    }
    keys = []
    for i, (label, project, client) in enumerate(KEYS):
        kid = f"key_bench{i:04d}"
        keys.append((kid, label, project, client))
    now = time.time() if now is None else now
    start = now - days * 86400
    chain = _Chain()
    t0 = time.perf_counter()
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO api_keys (id, key_hash, prefix, label, project, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        [
            (k, hashlib.sha256(k.encode()).hexdigest(), "lg_bench…", label, project, _iso(start))
            for k, label, project, _ in keys
        ],
    )
    for settlement, (wid, cur) in wallet_of.items():
        chain.post(
            _iso(start - 3600), "topup", wid, cur,
            [("funding:sandbox", -START_BALANCE[cur]), (f"wallet:{wid}", START_BALANCE[cur])],
            f"bench top-up for {settlement} routes",
        )  # fmt: skip
    rows: list[tuple[Any, ...]] = []
    holds: list[tuple[Any, ...]] = []
    weights = [w for _, w, _ in STATUSES]
    step = days * 86400 / max(receipts, 1)
    for i in range(receipts):
        ts = start + i * step + rng.random() * step * 0.5
        rid = new_receipt_id(ts)
        created = _iso(ts)
        finished = _iso(ts + 0.4)
        kid, label, project, client = keys[min(int(rng.paretovariate(1.2)) - 1, len(keys) - 1)]
        if rng.random() < 0.1:
            client = rng.choice(CLIENTS)
        model, route_type, channel, upstream, _ = ROUTES[
            min(int(rng.expovariate(0.35)), len(ROUTES) - 1)
        ]
        price = prices[(model, route_type, channel)]
        wid, cur = wallet_of[route_type]
        status, _, policy = rng.choices(STATUSES, weights)[0]
        stream = rng.random() < 0.6
        n_in = rng.randint(50, 20000)
        cached = rng.randint(0, n_in // 2) if rng.random() < 0.3 else 0
        n_out = rng.randint(5, 2000)
        usage = Usage(input=n_in, cached_input=cached, output=n_out, reasoning=n_out // 4)
        hold_amount = max(1, charge_micros(Usage(input=n_in, output=4096), price))
        hold_id = f"hd_b{i:014x}"
        attempts = [
            {"channel": channel, "route_id": f"{route_type}:{channel}:{model}",
             "upstream_model": upstream, "settlement": route_type, "status": 200,
             "error": None, "latency_ms": 380, "why_next": None}
        ]  # fmt: skip
        charge, exact, error, http = 0, Decimal(0), None, 200
        entry_id = before = after = None
        hold_col: str | None = hold_id
        if status == "rejected":
            usage, hold_amount, hold_col, http = Usage(), 0, None, 402
            error = f"wallet '{wid}' has too little available for this request"
            attempts = []
        else:
            _, before = chain.post(
                created, "hold", wid, cur,
                [(f"wallet:{wid}", -hold_amount), (f"hold:{wid}", hold_amount)],
                "hold for a request in flight", idem=f"hold:{hold_id}", hold_id=hold_id,
                receipt_id=rid,
            )  # fmt: skip
            if status == "failed":
                usage, http = Usage(), 502
                error = f"upstream {channel} answered 502 Bad Gateway"
                attempts[0].update(status=502, error=error)
                entry_id, after = chain.post(
                    finished, "release", wid, cur,
                    [(f"hold:{wid}", -hold_amount), (f"wallet:{wid}", hold_amount)],
                    "failed upstream: not charged", idem=f"close:{hold_id}", hold_id=hold_id,
                    receipt_id=rid,
                )  # fmt: skip
            else:
                exact = exact_cost(usage, price)
                charge = min(charge_micros(usage, price), hold_amount)
                postings = [(f"hold:{wid}", -hold_amount)]
                if hold_amount != charge:
                    postings.append((f"wallet:{wid}", hold_amount - charge))
                postings.append((f"usage:{wid}", charge))
                entry_id, after = chain.post(
                    finished, "settle", wid, cur, postings, f"{model} via {channel}",
                    idem=f"close:{hold_id}", hold_id=hold_id, receipt_id=rid,
                )  # fmt: skip
            holds.append(
                (hold_id, wid, cur, hold_amount, "settled" if charge else "released", "bench",
                 rid, None if charge else "failed upstream: not charged", charge, created,
                 finished, entry_id - 1, entry_id, kid)
            )  # fmt: skip
        rows.append(
            (rid, f"req_{i:012x}", created, finished, status, http, kid, label, project,
             client, UA[client], "/v1/chat/completions", int(stream), model, model,
             f"{route_type}:{channel}:{model}", route_type, channel, upstream,
             json.dumps(attempts), 0, 0, usage.input, usage.cached_input, usage.cache_write,
             usage.output, usage.reasoning, None if status in ("failed", "rejected") else "upstream",
             "pv_" + hashlib.sha1(f"{route_type}{channel}{model}".encode()).hexdigest()[:20],
             json.dumps(price.as_dict()), f"{exact.scaleb(-6).normalize():f}", charge, cur,
             wid, before if before is not None else after, after, hold_col, hold_amount,
             entry_id, 400 + rng.randint(0, 3000), 150 + rng.randint(0, 800) if stream else None,
             error, policy)
        )  # fmt: skip
        if len(rows) == FLUSH_EVERY or i == receipts - 1:
            _flush(conn, rows, chain, holds)
            if progress is not None:
                progress(i + 1)
    _flush(conn, rows, chain, holds)  # the top-ups, when there are no receipts
    conn.executemany(
        "INSERT INTO accounts (id, currency, balance_micros) VALUES (?, ?, ?)",
        [(a, c, m) for (a, c), m in chain.accounts.items()],
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA optimize")
    conn.close()
    return {
        "receipts": receipts,
        "entries": chain.next_id - 1,
        "seconds": time.perf_counter() - t0,
        "keys": [k for k, *_ in keys],
    }


def _flush(
    conn: Any, rows: list[tuple[Any, ...]], chain: _Chain, holds: list[tuple[Any, ...]]
) -> None:
    """Insert what was built so far (still inside the one transaction); clear the buffers."""
    conn.executemany(
        f"INSERT INTO receipts ({', '.join(RECEIPT_COLUMNS)}) "
        f"VALUES ({', '.join('?' for _ in RECEIPT_COLUMNS)})",
        rows,
    )
    conn.executemany(
        "INSERT INTO entries (id, created_at, kind, wallet_id, currency, amount_micros, "
        "balance_after_micros, held_after_micros, memo, idempotency_key, reverses_id, hold_id, "
        "receipt_id, topup_id, prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        chain.entries,
    )
    conn.executemany(
        "INSERT INTO postings (entry_id, seq, account, currency, amount_micros) VALUES (?,?,?,?,?)",
        chain.postings,
    )
    conn.executemany(
        "INSERT INTO holds (id, wallet_id, currency, amount_micros, status, owner, receipt_id, "
        "reason, charge_micros, created_at, closed_at, open_entry_id, close_entry_id, key_id) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        holds,
    )
    for buffer in (rows, chain.entries, chain.postings, holds):
        buffer.clear()


# -- timing ---------------------------------------------------------------------


def _ms(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    p95 = samples[min(len(samples) - 1, round(0.95 * (len(samples) - 1)))]
    return statistics.median(samples) * 1000, p95 * 1000


async def time_pages(data_dir: Path, runs: int) -> list[tuple[str, float, float, int]]:
    """Render each page ``runs`` times through the ASGI app; (name, median, p95, bytes)."""
    from litestar.testing import AsyncTestClient

    from localgate.config import load_settings
    from localgate.web.app import create_app
    from localgate.web.security import SESSION_COOKIE, sign_session

    settings = load_settings(data_dir=data_dir, env={})
    app = create_app(settings)
    out = []
    async with AsyncTestClient(app, base_url="http://127.0.0.1:4311") as client:
        client.cookies.set(SESSION_COOKIE, sign_session(settings.admin_token))
        conn = open_db(settings.db_path, readonly=True)
        # A cursor 90% of the way down: the receipt and the ledger entry there.
        (deep_receipt,) = conn.execute(
            "SELECT id FROM receipts ORDER BY id LIMIT 1 OFFSET "
            "(SELECT count(*) / 10 FROM receipts)"
        ).fetchone()
        (deep_entry,) = conn.execute(
            "SELECT id FROM entries WHERE wallet_id = 'credit' ORDER BY id LIMIT 1 OFFSET "
            "(SELECT count(*) / 10 FROM entries WHERE wallet_id = 'credit')"
        ).fetchone()
        (key_id,) = conn.execute("SELECT id FROM api_keys ORDER BY id LIMIT 1 OFFSET 4").fetchone()
        (request_id,) = conn.execute(
            "SELECT request_id FROM receipts WHERE id = ?", (deep_receipt,)
        ).fetchone()
        conn.close()
        pages = [
            ("dashboard /", "/"),
            ("receipts, first page", "/receipts"),
            ("receipts, deep page (90% down)", f"/receipts?before={deep_receipt}"),
            ("receipts, filter client=aider", "/receipts?client=aider"),
            ("receipts, filter model+status=failed", "/receipts?model=gpt-4o&status=failed"),
            ("receipts, filter key+route_type", f"/receipts?key={key_id}&route_type=official"),
            ("receipts, filter channel, deep", f"/receipts?channel=relay-b&before={deep_receipt}"),
            ("receipts, last 7 days + wallet", "/receipts?since=7d&wallet=routed"),
            (
                "receipts, 3 filters, rare match",
                "/receipts?model=deepseek-chat&client=Cursor&status=rejected",
            ),
            ("receipts, 2 filters, no match", "/receipts?model=qwen-plus&route_type=official"),
            ("receipts, search by request id", f"/receipts?q={request_id}"),
            ("receipt page", f"/receipts/{deep_receipt}"),
            ("wallet ledger, first page", "/wallets/credit"),
            ("wallet ledger, deep page", f"/wallets/credit?before={deep_entry}"),
            ("wallet ledger, kind=topup", "/wallets/credit?kind=topup"),
        ]
        for name, path in pages:
            samples = []
            size = 0
            for _ in range(runs + 1):
                t0 = time.perf_counter()
                resp = await client.get(path, follow_redirects=False)
                elapsed = time.perf_counter() - t0
                if resp.status_code not in (200, 303):
                    raise SystemExit(f"{path}: HTTP {resp.status_code}: {resp.text[:300]}")
                size = len(resp.content)
                samples.append(elapsed)
            med, p95 = _ms(samples[1:])  # the first run warms caches
            out.append((name, med, p95, size))
    return out


def time_export(db_path: Path, fmt: str, *, traced: bool) -> dict[str, float]:
    """Export every receipt to a temp file; with ``traced``, under tracemalloc,
    noting the peak as the rows go by (tracemalloc makes it several times slower)."""
    from localgate.services.exports import export_chunks
    from localgate.services.receipts import ReceiptFilter
    from localgate.store import Store

    store = Store.open(db_path)
    checkpoints: dict[int, float] = {}
    rows = 0
    peak = 0
    try:
        if traced:
            tracemalloc.start()
        t0 = time.perf_counter()
        with tempfile.TemporaryFile("w+b") as fh:
            for chunk, count in export_chunks(store.read, ReceiptFilter(), fmt):
                fh.write(chunk)
                rows += count
                for mark in (10_000, 100_000, 1_000_000):
                    if traced and rows >= mark and mark not in checkpoints:
                        checkpoints[mark] = tracemalloc.get_traced_memory()[1] / 1e6
            size = fh.tell()
        elapsed = time.perf_counter() - t0
        if traced:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    finally:
        store.close()
    return {"rows": rows, "seconds": elapsed, "peak_mb": peak / 1e6, "bytes": size,
            **{f"peak_mb_at_{k}": v for k, v in checkpoints.items()}}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--receipts", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--runs", type=int, default=15, help="renders per page")
    parser.add_argument("--keep", type=Path, help="data dir to use and keep (reused if seeded)")
    parser.add_argument("--no-export", action="store_true", help="skip the export runs")
    args = parser.parse_args(argv)
    tmp = None
    if args.keep:
        data_dir = args.keep
        data_dir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="lg-ui-bench-")
        data_dir = Path(tmp.name)
    db_path = data_dir / "localgate.db"
    try:
        existing = 0
        if db_path.exists():
            conn = open_db(db_path, readonly=True)
            existing = conn.execute("SELECT count(*) FROM receipts").fetchone()[0]
            conn.close()
        if existing:
            print(f"reusing {db_path}: {existing:,} receipts")
        else:
            print(f"seeding {args.receipts:,} receipts over {args.days} days into {db_path} ...")
            info = seed(
                db_path,
                args.receipts,
                days=args.days,
                progress=lambda i: print(f"  {i:,}", end="\r", flush=True),
            )
            print(
                f"  {info['receipts']:,} receipts and {info['entries']:,} ledger entries "
                f"(with postings and holds) in one transaction: {info['seconds']:.0f} s"
            )
        results = asyncio.run(time_pages(data_dir, args.runs))
        print(f"\nserver time per render ({args.runs} runs, in-process ASGI), target < 100 ms")
        print(f"{'page':42} {'median':>9} {'p95':>9} {'bytes':>8}")
        worst = 0.0
        for name, med, p95, size in results:
            flag = "" if p95 < TARGET_MS else "  <-- over target"
            print(f"{name:42} {med:7.1f}ms {p95:7.1f}ms {size:8,}{flag}")
            worst = max(worst, p95)
        if not args.no_export:
            print("\nexport of every receipt, newest first, to a temp file:")
            for fmt in ("csv", "jsonl"):
                r = time_export(db_path, fmt, traced=False)
                print(
                    f"  {fmt:5} {r['rows']:,} rows, {r['bytes'] / 1e6:,.0f} MB in "
                    f"{r['seconds']:.1f} s ({r['rows'] / r['seconds']:,.0f} rows/s)"
                )
            r = time_export(db_path, "csv", traced=True)
            marks = ", ".join(
                f"{k.removeprefix('peak_mb_at_')} rows: {v:.1f} MB"
                for k, v in r.items()
                if k.startswith("peak_mb_at_")
            )
            print(
                f"  csv again under tracemalloc: peak traced memory {r['peak_mb']:.1f} MB "
                f"for {r['rows']:,} rows (peak after {marks})"
            )
        return 0 if worst < TARGET_MS else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
