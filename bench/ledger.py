"""Ledger throughput: holds placed and settled per second, with durable commits.

    python bench/ledger.py [--requests 4000] [--concurrency 1,8,64]

Each simulated request is what the gateway does to the ledger: one writer job
that places a hold, one that settles it (charge + release of the rest), with
SQLite in WAL mode and ``synchronous=FULL``, through the one writer thread
(group commit). Prints settles per second and commits per second per
concurrency level, and checks ``ledger verify`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from localgate.config import DEFAULT_WALLETS
from localgate.core import ledger as core
from localgate.store import Store
from localgate.store import ledger as ledger_store
from localgate.store.db import open_db
from localgate.store.verify import verify


async def run(store: Store, requests: int, concurrency: int) -> tuple[float, int]:
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            hold = await store.write(
                lambda c: ledger_store.place_hold(c, "routed", 2_000, owner=store.owner)
            )
            await store.write(ledger_store.settle_hold, hold, 1_234)

    commits = store.writer.commits
    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(requests)))
    return time.perf_counter() - start, store.writer.commits - commits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", default="1,8,64")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lgledger-") as tmp:
        store = Store.open(Path(tmp) / "localgate.db", wallets=DEFAULT_WALLETS)
        store.write_sync(
            ledger_store.post_entry, core.topup_entry("routed", "CNY", 10**15, "sandbox")
        )
        print(f"{'concurrency':>11}  {'settles/s':>10}  {'commits/s':>10}  {'jobs/commit':>11}")
        for level in (int(c) for c in args.concurrency.split(",")):
            seconds, commits = asyncio.run(run(store, args.requests, level))
            jobs = 2 * args.requests
            print(
                f"{level:>11}  {args.requests / seconds:>10,.0f}  {commits / seconds:>10,.0f}"
                f"  {jobs / max(commits, 1):>11.1f}"
            )
        store.close()
        conn = open_db(Path(tmp) / "localgate.db")
        print(f"ledger verify: {verify(conn).as_dict()}")
        conn.close()


if __name__ == "__main__":
    main()
