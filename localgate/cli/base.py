"""The command group and what every command shares: the data dir, printing, one-line errors."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import click

from localgate import __version__
from localgate.config import Settings, load_settings
from localgate.errors import LocalgateError

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

    @contextlib.contextmanager
    def reader(self) -> Iterator[Any]:
        """A read-only connection, for commands that only look: no writer thread,
        no migration, and nothing locked while a server runs on the same data dir."""
        from localgate.store import Store
        from localgate.store.db import open_db

        settings = self.settings()
        if not settings.db_path.exists():  # a new data dir: create it as `serve` would
            Store.open(settings.db_path, wallets=settings.wallets).close()
        conn = open_db(settings.db_path, readonly=True)
        try:
            yield conn
        finally:
            conn.close()


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

    Start with `localgate serve`; it prints the base URL (and, on the first run,
    the wallet UI's login link; `localgate login` prints it again).
    """
    ctx.obj = Context(data_dir, config)
