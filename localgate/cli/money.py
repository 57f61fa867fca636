"""Wallets, the ledger, adjustments and top-ups.

Commands that only look (``wallets``, ``ledger``, ``ledger verify``) read
through a read-only connection: no writer thread, no migration, nothing
locked while ``localgate serve`` runs on the same data dir.
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Any

import click

from localgate.cli.base import (
    Context,
    Group,
    main,
    print_json,
    print_table,
)
from localgate.money import format_money

# -- wallets and the ledger ---------------------------------------------------


class ReadOnlyStore:
    """What a reading service needs of a Store — ``read()`` — over the CLI's
    read-only connection. It has no writer: a write would fail loudly."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def read(self) -> sqlite3.Connection:
        return self.conn


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def wallets(obj: Context, as_json: bool) -> None:
    """Show each wallet's balance, held and available money."""
    from localgate.services.wallets import Wallets

    with obj.reader() as conn:
        rows = Wallets(ReadOnlyStore(conn)).list()  # type: ignore[arg-type]
    if as_json:
        print_json({"wallets": rows})
        return
    print_table(
        ["WALLET", "NAME", "PAYS FOR", "BALANCE", "HELD", "AVAILABLE"],
        [
            [
                w["id"],
                w["name"],
                f"{w['settlement']} routes",
                format_money(w["balance_micros"], w["currency"]),
                format_money(w["held_micros"], w["currency"]),
                format_money(w["available_micros"], w["currency"]),
            ]
            for w in rows
        ],
    )


@main.group(cls=Group, invoke_without_command=True)
@click.option("--wallet", help="Only this wallet (default: every wallet).")
@click.option("--limit", type=int, default=20, show_default=True, help="Entries per wallet.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def ledger(ctx: click.Context, wallet: str | None, limit: int, as_json: bool) -> None:
    """Show the newest ledger entries of each wallet, with the balance after each."""
    if ctx.invoked_subcommand is not None:
        return
    from localgate.services.wallets import Wallets

    with ctx.obj.reader() as conn:
        service = Wallets(ReadOnlyStore(conn))  # type: ignore[arg-type]
        ids = [wallet] if wallet else [w["id"] for w in service.list()]
        pages = [service.ledger(wid, limit=limit) for wid in ids]
    if as_json:
        print_json({"ledgers": pages})
        return
    for page in pages:
        click.echo(f"== {page['wallet']}")
        print_table(
            ["ENTRY", "TIME", "KIND", "AMOUNT", "BALANCE AFTER", "MEMO"],
            [
                [
                    e["id"],
                    e["created_at"][:19].replace("T", " "),
                    e["kind"],
                    format_money(e["amount_micros"], e["currency"]),
                    format_money(e["balance_after_micros"], e["currency"]),
                    e["memo"],
                ]
                for e in page["entries"]
            ],
        )


@ledger.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def ledger_verify(obj: Context, as_json: bool) -> None:
    """Recompute the hash chain and every balance; exit 1 at the first mismatch."""
    from localgate.store.verify import verify

    with obj.reader() as conn:
        report = verify(conn)
    if as_json:
        print_json(report.as_dict())
    elif report.ok:
        click.echo(f"ledger ok: {report.entries} entries, hash chain and balances verified")
    else:
        click.echo(f"ledger NOT ok after {report.entries} entries: {report.first_error}")
    if not report.ok:
        sys.exit(1)


@main.command()
@click.option("--wallet", required=True, help="Wallet id, e.g. credit or routed.")
@click.option("--amount", required=True, help="Amount in the wallet's currency, e.g. 5 or -0.25.")
@click.option("--reason", required=True, help="Why: shown in the ledger for ever.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def adjust(obj: Context, wallet: str, amount: str, reason: str, as_json: bool) -> None:
    """Post a manual adjustment entry (support cases, tests). Negative amounts debit."""
    from localgate.services.wallets import Wallets

    with obj.store() as st:
        entry = Wallets(st).adjust_sync(wallet, amount, reason)
    if as_json:
        print_json(entry)
    else:
        click.echo(
            f"entry {entry['id']}: {format_money(entry['amount_micros'], entry['currency'])} "
            f"on {wallet}, balance now {format_money(entry['balance_after_micros'], entry['currency'])}"
        )


# -- top-ups --------------------------------------------------------------------


@main.command()
@click.option("--wallet", required=True, help="Wallet to top up, e.g. credit or routed.")
@click.option("--amount", required=True, help="Amount in the wallet's currency, e.g. 20.")
@click.option(
    "--method",
    type=click.Choice(["card", "wechat_pay", "alipay"]),
    help="Payment method (default: the provider's first, usually card).",
)
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="Wait for the payment and show its final state.",
)
@click.option("--timeout", type=float, default=900.0, show_default=True, help="Seconds to wait.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def topup(
    obj: Context,
    wallet: str,
    amount: str,
    method: str | None,
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Top up a wallet: prints the checkout URL, waits, shows the final state.

    Exits 0 when the money arrived, 1 when no money moved (failed, canceled,
    expired), 3 when it is still pending at --timeout (it is credited later,
    whenever the payment completes).
    """
    import asyncio

    import httpx

    from localgate.services import topups as topup_service

    settings = obj.settings()

    async def run(st: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=20.0) as client:
            service = topup_service.build(settings, st, client)
            try:
                t = await service.create(wallet, amount, method)
                if not as_json:
                    click.echo(
                        f"Top-up {t['id']}: {t['amount_short']} to {t['wallet_name']} "
                        f"({t['settlement']}) via {t['provider']}"
                    )
                    click.echo(f"Pay here: {t['checkout_url']}")
                    if t["provider"] == "sandbox":
                        click.echo("  (the sandbox checkout opens while `localgate serve` runs)")
                    if wait:
                        click.echo(
                            "Waiting for the payment... (Ctrl-C stops waiting; the top-up "
                            "is credited whenever it completes)"
                        )
                    sys.stdout.flush()
                if wait:
                    t = await service.wait(t["id"], timeout=timeout)
                return t
            finally:
                await service.provider.aclose()

    with obj.store() as st:
        t = asyncio.run(run(st))
    if as_json:
        print_json(t)
    if not wait:
        return
    if not as_json:
        cur = t["currency"]
        if t["ledger_entry_id"] is not None:
            click.echo(
                f"{t['status']}: {t['amount_short']} arrived in {t['wallet_name']}. Balance "
                f"{format_money(t['balance_before_micros'], cur)} -> "
                f"{format_money(t['balance_after_micros'], cur)} (ledger entry "
                f"#{t['ledger_entry_id']}). Next: localgate keys create --label my-tool"
            )
        elif t["status"] in ("created", "pending"):
            click.echo(
                f"{t['status']}: waiting for {t['reason'] or 'the payment'}; "
                f"see {settings.base_url}/billing/topups/{t['id']}"
            )
        else:
            click.echo(f"{t['status']}: no money moved ({t['reason'] or 'no reason given'})")
    if t["ledger_entry_id"] is not None:
        return
    sys.exit(3 if t["status"] in ("created", "pending") else 1)
