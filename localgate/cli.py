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
    from localgate.services.gateway_setup import check_config

    check_config(settings)  # a bad [[models]] entry stops here, as one line
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
    import signal
    import socket

    import uvicorn

    from localgate.web.app import create_app
    from localgate.web.server import SHUTDOWN_GRACE_SECONDS
    from localgate.web.server import serve as serve_until_stopped

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
    first_run = "  (first run: data dir created)" if not settings.db_path.exists() else ""
    click.echo(f"localgate {__version__} serving {settings.data_dir}{first_run}")
    click.echo(f"  Base URL for tools:  {base}/v1")
    click.echo(f"  Wallet UI login:     {login}")
    click.echo(
        f"  Point a tool at it:  OPENAI_BASE_URL={base}/v1 OPENAI_API_KEY=<key from "
        "'localgate keys create --label my-tool'>"
    )
    sys.stdout.flush()
    if open_browser:
        _open_browser(login)
    config = uvicorn.Config(
        create_app(settings),
        log_level="warning",
        access_log=False,
        loop="uvloop" if _has("uvloop") else "asyncio",
        http="httptools" if _has("httptools") else "h11",
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE_SECONDS),
    )
    # SIGINT/SIGTERM: requests in flight finish or are settled, holds are
    # released, the store is closed, exit 0 (see localgate/web/server.py).
    server = serve_until_stopped(config, sock)  # a failed start exits 3 (uvicorn)
    how = f" on {signal.Signals(server.stop_signal).name}" if server.stop_signal else ""
    cut = f", {server.cancelled_requests} request(s) cut short and settled"
    click.echo(f"localgate stopped{how}{cut if server.cancelled_requests else ''}", err=True)


def _open_browser(url: str) -> None:
    import webbrowser

    if getattr(sys, "frozen", False):
        # A PyInstaller binary points LD_LIBRARY_PATH at its own libraries; the
        # browser it starts must get the user's original environment back.
        original = os.environ.pop("LD_LIBRARY_PATH_ORIG", None)
        os.environ.pop("LD_LIBRARY_PATH", None)
        if original is not None:
            os.environ["LD_LIBRARY_PATH"] = original
    with contextlib.suppress(Exception):
        webbrowser.open(url)


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
    rows = [
        {
            "id": c.id,
            "kind": c.kind,
            "base_url": c.base_url,
            "settlement": c.settlement,
            "source": c.source,
            "key": c.key_source or ("not needed" if c.kind == "demo" else "missing"),
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


@main.group(cls=Group, invoke_without_command=True)
@click.option("--key", help="Only this key id.")
@click.option("--model", help="Only this model.")
@click.option("--status", type=click.Choice(RECEIPT_STATUSES))
@click.option("--wallet", help="Only this wallet.")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def receipts(
    ctx: click.Context,
    key: str | None,
    model: str | None,
    status: str | None,
    wallet: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Show the newest receipts: what each request cost, from which wallet.

    `localgate receipts export` writes every matching receipt to a file.
    """
    if ctx.invoked_subcommand is not None:
        return
    from localgate.store import receipts as receipt_store

    with ctx.obj.store() as st:
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
@click.option(
    "--since", help="From this UTC day or time (2026-11-01, 2026-11-01T08:00) or 24h / 7d."
)
@click.option("--until", help="To this UTC day (inclusive) or time (exclusive).")
@click.option("--key", help="Only this key id.")
@click.option("--project", help="Only keys of this project.")
@click.option("--model", help="Only this requested model.")
@click.option("--route-type", "route_type", type=click.Choice(["official", "routed"]))
@click.option("--channel", help="Only this channel.")
@click.option("--wallet", help="Only this wallet.")
@click.option("--status", type=click.Choice(RECEIPT_STATUSES))
@click.option("--client", help="Only this tool, e.g. Cursor or 'Claude Code'.")
@click.pass_obj
def receipts_export(obj: Context, fmt: str, out: str, **filters: str | None) -> None:
    """Export every matching receipt, all fields, as CSV or JSON Lines (newest first).

    Streams in batches, so memory stays flat at any size; a file is written
    under a temporary name and renamed when complete. Columns: docs/receipts.md.
    """
    from localgate.services import exports
    from localgate.services import receipts as receipt_service

    flt = receipt_service.ReceiptFilter.from_params(filters)
    with obj.store() as st:
        total = receipt_service.count(st.read(), flt)
        with click.progressbar(
            length=total, label=f"exporting {total:,} receipts", file=sys.stderr
        ) as bar:
            written = exports.export_to(st.read, flt, fmt, out, progress=bar.update)
    if out != "-":
        click.echo(f"wrote {written:,} receipts to {out} ({fmt})", err=True)


# -- doctor -------------------------------------------------------------------


@main.command()
@click.option(
    "--timeout",
    type=float,
    default=3.0,
    show_default=True,
    help="Seconds to wait for each channel to answer.",
)
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too, not only on failures.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def doctor(obj: Context, timeout: float, strict: bool, as_json: bool) -> None:
    """Check this installation: config, data dir, database and ledger, bundled files,
    catalog age, channels (reachable?) and payments. Exits 1 if a check fails."""
    from localgate import doctor as checks

    report = checks.run(obj.data_dir, obj.config, timeout=timeout)
    if as_json:
        print_json(report.as_dict())
    else:
        for line in checks.format_report(report):
            click.echo(line)
    sys.exit(report.exit_code(strict=strict))


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
