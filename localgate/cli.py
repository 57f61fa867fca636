"""The ``localgate`` command: parses, calls services, prints tables or --json."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from localgate import __version__
from localgate.config import LOOPBACK_HOSTS, Settings, load_settings
from localgate.errors import LocalgateError
from localgate.money import format_money

DATA_DIR_HELP = "Where the database, config.toml and admin-token live (default: LOCALGATE_DATA_DIR or the platform's user data dir)."
CONFIG_HELP = "A config.toml to use instead of <data dir>/config.toml."


class Context:
    def __init__(self, data_dir: str | None, config: str | None) -> None:
        self.data_dir = data_dir
        self.config = config

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(data_dir=self.data_dir, config_path=self.config, overrides=overrides)

    @contextlib.contextmanager
    def store(self) -> Iterator[Any]:
        from localgate.store import Store

        settings = self.settings()
        st = Store.open(settings.db_path, wallets=settings.wallets)
        try:
            yield st
        finally:
            st.close()


def fail(message: str, code: int = 2) -> None:
    click.echo(f"localgate: {message}", err=True)
    sys.exit(code)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


class Group(click.Group):
    """Turns LocalgateError (bad config, unknown wallet, ...) into one line, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LocalgateError as exc:
            fail(str(exc))


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="localgate")
@click.option("--data-dir", type=click.Path(file_okay=False), help=DATA_DIR_HELP)
@click.option("--config", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.pass_context
def main(ctx: click.Context, data_dir: str | None, config: str | None) -> None:
    """localgate: a local AI token gateway.

    Point your tools at http://127.0.0.1:4311/v1. Every request is routed to a
    model, charged to one wallet (Credit for official routes, Routed balance
    for routed channels) and written down as a receipt that matches the ledger.

    Start with `localgate serve`; it prints the base URL and a login link for
    the wallet UI.
    """
    ctx.obj = Context(data_dir, config)


# -- serve --------------------------------------------------------------------


@main.command()
@click.option("--host", help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 4311; 0 picks a free one).")
@click.option("--data-dir", "data_dir_opt", type=click.Path(file_okay=False), help=DATA_DIR_HELP)
@click.option("--config", "config_opt", type=click.Path(dir_okay=False), help=CONFIG_HELP)
@click.option("--no-browser", is_flag=True, help="Do not open the wallet UI in a browser.")
@click.option("--allow-remote", is_flag=True, help="Allow binding to a non-loopback address.")
@click.pass_obj
def serve(
    obj: Context,
    host: str | None,
    port: int | None,
    data_dir_opt: str | None,
    config_opt: str | None,
    no_browser: bool,
    allow_remote: bool,
) -> None:
    """Run the gateway and the wallet UI.

    With no config it serves the offline default: the built-in demo model,
    sandbox payments and the bundled catalog.
    """
    obj.data_dir = data_dir_opt or obj.data_dir
    obj.config = config_opt or obj.config
    settings = obj.settings(**{"server.host": host, "server.port": port})
    if settings.host not in LOOPBACK_HOSTS and not allow_remote:
        fail(
            f"refusing to bind {settings.host}: the gateway spends money for whoever can reach "
            "it. Pass --allow-remote if you really mean it."
        )
    from localgate.services.catalog import build_catalog

    build_catalog(settings)  # a bad [[models]] entry stops here, as one line
    with data_dir_lock(settings.data_dir):
        run_server(settings, open_browser=not no_browser)


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """One server per data dir: a second one would release the first one's holds."""
    path = data_dir / "serve.lock"
    fh = path.open("a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        pid = fh.read().strip() or "?"
        fail(
            f"another localgate (pid {pid}) is already serving {data_dir}; stop it or "
            "use another --data-dir"
        )
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    try:
        yield
    finally:
        fh.close()


def run_server(settings: Settings, *, open_browser: bool) -> None:
    import socket

    import uvicorn

    from localgate.web.app import create_app

    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        fail(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}; "
            "is another server using that port? Try --port"
        )
    port = sock.getsockname()[1]
    settings = dataclasses.replace(settings, values={**settings.values, "server.port": port})
    base = settings.base_url
    login = f"{base}/login?token={settings.admin_token}"
    click.echo(f"localgate {__version__} serving {settings.data_dir}")
    click.echo(f"  Base URL for tools:  {base}/v1")
    click.echo(f"  Wallet UI login:     {login}")
    click.echo(
        f"  Try: curl {base}/v1/models -H 'Authorization: Bearer <key from localgate keys create>'"
    )
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        with contextlib.suppress(Exception):
            webbrowser.open(login)
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        access_log=False,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http="httptools" if _has("httptools") else "h11",
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run(sockets=[sock])


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# -- wallets and the ledger ---------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def wallets(obj: Context, as_json: bool) -> None:
    """Show each wallet's balance, held and available money."""
    from localgate.services.wallets import Wallets

    with obj.store() as st:
        rows = Wallets(st).list()
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

    with ctx.obj.store() as st:
        service = Wallets(st)
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
    from localgate.services.wallets import Wallets

    with obj.store() as st:
        report = Wallets(st).verify()
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


@main.command()
@click.option("--key", help="Only this key id.")
@click.option("--model", help="Only this model.")
@click.option(
    "--status",
    type=click.Choice(
        ["succeeded", "failed", "client_canceled", "interrupted", "rejected", "pending"]
    ),
)
@click.option("--wallet", help="Only this wallet.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def receipts(
    obj: Context,
    key: str | None,
    model: str | None,
    status: str | None,
    wallet: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show the newest receipts: what each request cost, from which wallet."""
    from localgate.store import receipts as receipt_store

    with obj.store() as st:
        page = receipt_store.page(
            st.read(),
            {"key": key, "model": model, "status": status, "wallet": wallet},
            limit=max(1, limit),
        )
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
