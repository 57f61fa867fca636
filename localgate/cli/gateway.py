"""API keys, channels and receipts."""

from __future__ import annotations

import sys
from collections.abc import Sequence
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

# -- keys and receipts ----------------------------------------------------------


@main.group(cls=Group)
def keys() -> None:
    """Create and manage the API keys your tools use (lg_...)."""


@keys.command("create")
@click.option("--label", required=True, help="A name you will recognise, e.g. 'cursor laptop'.")
@click.option("--project", help="Project to attribute spend to.")
@click.option(
    "--model",
    "models",
    multiple=True,
    help="Allowed model or pattern (repeatable), e.g. 'gpt-4o*'. Default: all.",
)
@click.option(
    "--settlement",
    type=click.Choice(["official", "routed", "any"]),
    default="any",
    show_default=True,
    help="Which wallets the key may spend: official routes (Credit), routed channels, or both.",
)
@click.option(
    "--budget",
    "budgets",
    multiple=True,
    metavar="CUR:WINDOW=AMOUNT",
    help="Spend limit, e.g. USD:day=5 or CNY:month=100 (repeatable).",
)
@click.option("--rpm", type=int, help="Requests per minute.")
@click.option("--expires", help="Expiry time, ISO 8601 (e.g. 2026-12-31).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def keys_create(
    obj: Context,
    label: str,
    project: str | None,
    models: tuple[str, ...],
    settlement: str,
    budgets: tuple[str, ...],
    rpm: int | None,
    expires: str | None,
    as_json: bool,
) -> None:
    """Create a key. It is shown once: copy it now."""
    from localgate.services.keys import KeyService

    request: dict[str, Any] = {
        "label": label,
        "project": project,
        "models": list(models),
        "settlement": settlement,
        "rpm": rpm,
        "expires_at": expires,
        "budgets": _parse_budget_flags(budgets),
    }
    with obj.store() as st:
        key = KeyService(st).create_sync(request)
    if as_json:
        print_json(key)
        return
    click.echo(f"Created key {key['id']} ({key['label']}). This is the only time it is shown:\n")
    click.echo(f"  {key['key']}\n")
    click.echo(f"Use it with base URL {obj.settings().base_url}/v1")


def _parse_budget_flags(flags: Sequence[str]) -> dict[str, dict[str, str]]:
    budgets: dict[str, dict[str, str]] = {}
    for flag in flags:
        head, _, amount = flag.partition("=")
        cur, _, window = head.partition(":")
        if not amount or window not in ("day", "month", "total") or len(cur) != 3:
            raise click.BadParameter(
                f"{flag!r}: use CUR:WINDOW=AMOUNT, e.g. USD:day=5", param_hint="--budget"
            )
        budgets.setdefault(cur.upper(), {})[window] = amount
    return budgets


@keys.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def keys_list(obj: Context, as_json: bool) -> None:
    """List keys (never their secrets)."""
    from localgate.services.keys import KeyService

    with obj.store() as st:
        rows = KeyService(st).list()
    if as_json:
        print_json({"keys": rows})
        return
    print_table(
        ["KEY", "LABEL", "PREFIX", "STATUS", "SETTLEMENT", "MODELS", "LAST USED"],
        [
            [
                k["id"],
                k["label"],
                k["prefix"],
                k["status"],
                k["settlement"],
                ",".join(k["models"]) or "all",
                (k["last_used_at"] or "never")[:19],
            ]
            for k in rows
        ],
    )


def _key_action(action: str) -> Any:
    @click.argument("key_id")
    @click.option("--json", "as_json", is_flag=True, help="Print JSON.")
    @click.pass_obj
    def command(obj: Context, key_id: str, as_json: bool) -> None:
        from localgate.services.keys import KeyService

        with obj.store() as st:
            key = KeyService(st).set_state_sync(key_id, action)
        if as_json:
            print_json(key)
        else:
            click.echo(f"key {key['id']} ({key['label']}) is now {key['status']}")

    command.__doc__ = {
        "pause": "Pause a key: its requests are refused until resumed.",
        "resume": "Resume a paused key.",
        "revoke": "Revoke a key for good.",
    }[action]
    return keys.command(action)(command)


for _action in ("pause", "resume", "revoke"):
    _key_action(_action)


@keys.command("rotate")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def keys_rotate(obj: Context, key_id: str, as_json: bool) -> None:
    """Give a key a new secret: same id, limits, receipts and spend; the old secret
    stops working at once. The new one is shown once."""
    from localgate.services.keys import KeyService

    with obj.store() as st:
        key = KeyService(st).rotate_sync(key_id)
    if as_json:
        print_json(key)
        return
    click.echo(f"New secret for key {key['id']} ({key['label']}); the old one no longer works.")
    click.echo(f"This is the only time it is shown:\n\n  {key['key']}\n")


@keys.command("pause-all")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def keys_pause_all(obj: Context, as_json: bool) -> None:
    """The kill switch: pause every key at once (resume them one by one)."""
    from localgate.services.keys import KeyService

    with obj.store() as st:
        count = KeyService(st).pause_all_sync()
    if as_json:
        print_json({"paused": count})
    else:
        click.echo(f"paused {count} key(s); every request with them is refused until resumed")


@main.group(cls=Group)
def channels() -> None:
    """Upstream channels and their keys (keys are stored 0600 in <data dir>/secrets.toml)."""


@channels.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def channels_list(obj: Context, as_json: bool) -> None:
    """List channels, where they come from and whether their key is set (never the key)."""
    from localgate.providers import PROVIDERS

    rows = [
        {
            "id": c.id,
            "kind": c.kind,
            "base_url": c.base_url,
            "settlement": c.settlement,
            "source": c.source,
            "key": c.key_source or ("not needed" if PROVIDERS[c.kind].offline else "missing"),
        }
        for c in obj.settings().channels
    ]
    if as_json:
        print_json({"channels": rows})
        return
    print_table(
        ["CHANNEL", "KIND", "BASE URL", "PAYS", "FROM", "KEY"],
        [
            [r["id"], r["kind"], r["base_url"] or "-", r["settlement"], r["source"], r["key"]]
            for r in rows
        ],
    )


@channels.command("set-key")
@click.argument("channel_id")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the key from stdin.")
@click.pass_obj
def channels_set_key(obj: Context, channel_id: str, from_stdin: bool) -> None:
    """Save a channel's upstream key in secrets.toml (mode 0600)."""
    import asyncio

    from localgate.services.settings import SettingsService

    service = SettingsService(obj.settings())
    service.channel(channel_id)  # unknown channel: fail before asking for the key
    key = sys.stdin.readline() if from_stdin else click.prompt("Key", hide_input=True)
    channel = asyncio.run(service.set_key(channel_id, key))
    click.echo(
        f"saved the key of channel {channel.id} in {service.secrets_path} (0600); "
        f"in use: {channel.key_source}. A running server picks it up at its next start, "
        "or set it on the Settings page to apply it at once."
    )


RECEIPT_STATUSES = ["succeeded", "failed", "client_canceled", "interrupted", "rejected", "pending"]
# The filters `receipts` and `receipts export` share; their names and meaning are
# those of GET /api/receipts and the /receipts page (docs/receipts.md).
RECEIPT_FILTERS = (
    click.option(
        "--since", help="From this UTC day or time (2026-11-01, 2026-11-01T08:00) or 24h / 7d."
    ),
    click.option("--until", help="To this UTC day (inclusive) or time (exclusive)."),
    click.option("--key", help="Only this key id."),
    click.option("--project", help="Only keys of this project."),
    click.option("--model", help="Only this requested model."),
    click.option("--route-type", "route_type", type=click.Choice(["official", "routed"])),
    click.option("--channel", help="Only this channel."),
    click.option("--wallet", help="Only this wallet."),
    click.option("--status", type=click.Choice(RECEIPT_STATUSES)),
    click.option("--client", help="Only this tool, e.g. Cursor or 'Claude Code'."),
)


def receipt_filters(command: Any) -> Any:
    for option in reversed(RECEIPT_FILTERS):
        command = option(command)
    return command


@main.group(cls=Group, invoke_without_command=True)
@receipt_filters
@click.option(
    "--before",
    "--cursor",
    "before",
    metavar="RECEIPT",
    help="Only receipts older than this one: the `next` of the page before.",
)
@click.option("--limit", type=int, default=20, show_default=True, help="At most 500.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: {receipts, next}.")
@click.pass_context
def receipts(
    ctx: click.Context, before: str | None, limit: int, as_json: bool, **filters: str | None
) -> None:
    """Show the newest receipts: what each request cost, from which wallet.

    `localgate receipts export` writes every matching receipt to a file; filters
    given before `export` apply to it too.
    """
    if ctx.invoked_subcommand is not None:
        ctx.meta["receipt_filters"] = filters
        return
    from localgate.services import receipts as receipt_service

    query = receipt_service.ReceiptQuery.from_params({**filters, "before": before}, limit=limit)
    with ctx.obj.reader() as conn:
        page = receipt_service.api_page(conn, query)
    if as_json:
        print_json(page)
        return
    print_table(
        ["RECEIPT", "TIME", "STATUS", "MODEL", "ROUTE", "TOKENS IN/OUT", "CHARGE", "WALLET"],
        [
            [
                r["id"],
                r["created_at"][:19].replace("T", " "),
                r["status"],
                r["model"] or "-",
                f"{r['route_type'] or '-'}:{r['channel'] or '-'}",
                f"{r['usage']['input']}/{r['usage']['output']}",
                format_money(r["charge_micros"], r["currency"]) if r["currency"] else "-",
                r["wallet"] or "-",
            ]
            for r in page["receipts"]
        ],
    )


@receipts.command("export")
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, allow_dash=True),
    help="File to write; '-' for standard output.",
)
@receipt_filters
@click.pass_context
def receipts_export(ctx: click.Context, fmt: str, out: str, **filters: str | None) -> None:
    """Export every matching receipt, all fields, as CSV or JSON Lines (newest first).

    Streams in batches, so memory stays flat at any size; a file is written
    under a temporary name and renamed when complete. Columns: docs/receipts.md.
    """
    from localgate.services import exports
    from localgate.services import receipts as receipt_service

    given = {name: value for name, value in filters.items() if value is not None}
    flt = receipt_service.ReceiptFilter.from_params(
        {**ctx.meta.get("receipt_filters", {}), **given}
    )
    with ctx.obj.reader() as conn:
        total = receipt_service.count(conn, flt)
        with click.progressbar(
            length=total, label=f"exporting {total:,} receipts", file=sys.stderr
        ) as bar:
            written = exports.export_to(lambda: conn, flt, fmt, out, progress=bar.update)
    if out != "-":
        click.echo(f"wrote {written:,} receipts to {out} ({fmt})", err=True)
