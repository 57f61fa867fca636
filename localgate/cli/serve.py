"""`localgate serve`, `localgate login` and `localgate doctor`: running the gateway,
getting into its wallet UI, and checking it.

The login link carries the admin token, so it is printed only when it is new
(the first run of a data dir) or asked for (`localgate login`), and never when
standard output is a file, which is where logs go.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from localgate import __version__
from localgate.cli.base import (
    CONFIG_HELP,
    DATA_DIR_HELP,
    Context,
    fail,
    main,
    print_json,
)
from localgate.config import LOOPBACK_HOSTS, Settings

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
    from localgate.config_files import tighten_data_dir

    tightened = tighten_data_dir(settings.data_dir)
    if tightened:
        names = ", ".join(p.name for p in tightened)
        click.echo(f"localgate: made private (other users could read them): {names}", err=True)
    with data_dir_lock(settings.data_dir):
        run_server(settings, open_browser=not no_browser)


@main.command()
@click.option("--port", type=int, help="The port serve listens on, if not the configured one.")
@click.option("--open", "open_it", is_flag=True, help="Open the link in the browser.")
@click.pass_obj
def login(obj: Context, port: int | None, open_it: bool) -> None:
    """Print the wallet UI's login link (it carries the admin token: keep it to yourself)."""
    settings = obj.settings(**{"server.port": port})
    link = login_link(settings)
    click.echo(link)
    if open_it:
        _open_browser(link)


def login_link(settings: Settings) -> str:
    return f"{settings.base_url}/login?token={settings.admin_token}"


def stdout_is_private() -> bool:
    """Standard output goes to a terminal or a pipe, not to a file or a socket
    (a log file, journald): only then may a secret be printed on it."""
    try:
        mode = os.fstat(sys.stdout.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return False
    return sys.stdout.isatty() or stat.S_ISFIFO(mode)


def banner(settings: Settings, *, to_terminal: bool) -> list[str]:
    """What serve prints as it starts. The login link only on the first run of the
    data dir (the token was just made), and only where no log file can keep it."""
    base = settings.base_url
    first_run = "  (first run: data dir created)" if not settings.db_path.exists() else ""
    if settings.admin_token_created and to_terminal:
        login = f"  Wallet UI login:     {login_link(settings)}"
    else:
        login = "  Wallet UI login:     run 'localgate login' for the link"
    return [
        f"localgate {__version__} serving {settings.data_dir}{first_run}",
        f"  Base URL for tools:  {base}/v1",
        login,
        f"  Point a tool at it:  OPENAI_BASE_URL={base}/v1 OPENAI_API_KEY=<key from "
        "'localgate keys create --label my-tool'>",
    ]


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """One server per data dir: a second one would release the first one's holds."""
    path = data_dir / "serve.lock"
    fh = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
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
    for line in banner(settings, to_terminal=stdout_is_private()):
        click.echo(line)
    sys.stdout.flush()
    if open_browser:
        # The link (with the token) only when it is new; else the UI, whose session
        # cookie is likely still good, or which says how to log in.
        _open_browser(login_link(settings) if settings.admin_token_created else settings.base_url)
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
