"""The checks behind `localgate doctor`: is this installation able to serve and to pay?

Each check gives ``ok``, ``warn`` or ``fail`` and one line that says what was
found and, when something is wrong, what to do. A failure means the gateway
cannot work as configured (unreadable config, data dir not writable, database
damaged, ledger that does not verify, bundled files missing, payments
misconfigured); a warning means part of it is off (a channel without a key or
out of reach, an old catalog, holds waiting for recovery, a data dir others can
read). ``doctor`` exits 1
on any failure (``--strict``: on warnings too).

Doctor changes nothing but a probe file it removes at once (and, like every
command, creates the data dir and its admin token on first use): the database
is read, never migrated (``serve`` does that). Channels are
reached with a short timeout and no key is sent: reachable means an HTTP
answer of any status came back. An offline channel (the built-in demo) has
nothing to reach: the check runs it, which also proves the bundled tokenizer
works. Which channels are offline, and which payment providers exist and what
each needs, is asked of the provider and payment registries.
"""

from __future__ import annotations

import asyncio
import fcntl
import platform
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx

from localgate import __version__, resources

OK, WARN, FAIL = "ok", "warn", "fail"
CHANNEL_TIMEOUT = 3.0  # seconds, per channel; doctor must answer quickly offline
CATALOG_STALE_DAYS = 90
PROBE_FILE = ".doctor-probe"


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checks)

    def exit_code(self, *, strict: bool = False) -> int:
        bad = self.count(FAIL) + (self.count(WARN) if strict else 0)
        return 1 if bad else 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "version": __version__,
            "failures": self.count(FAIL),
            "warnings": self.count(WARN),
            "checks": [asdict(c) for c in self.checks],
        }


def run(
    data_dir: str | None = None,
    config: str | None = None,
    *,
    timeout: float = CHANNEL_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Report:
    """Run every check; ``transport`` replaces the network for channel checks (tests)."""
    from localgate.config import load_settings
    from localgate.errors import LocalgateError

    checks = [check_version()]
    try:
        settings = load_settings(data_dir=data_dir, config_path=config)
    except (LocalgateError, OSError) as exc:
        checks.append(Check("config", FAIL, str(exc)))
        return Report(tuple(checks))
    checks.append(check_config(settings))
    checks.append(check_data_dir(settings.data_dir))
    checks.append(check_permissions(settings.data_dir))
    checks.append(check_server(settings.data_dir))
    checks.extend(check_database(settings.db_path))
    checks.append(check_resources())
    checks.append(check_catalog(settings))
    checks.extend(asyncio.run(check_channels(settings, timeout=timeout, transport=transport)))
    checks.append(check_payments(settings))
    return Report(tuple(checks))


# -- the checks -----------------------------------------------------------------


def check_version() -> Check:
    how = "PyInstaller binary" if getattr(sys, "frozen", False) else "Python package"
    return Check(
        "version",
        OK,
        f"localgate {__version__} ({how}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()})",
    )


def check_config(settings: Any) -> Check:
    if settings.config_path is None:
        return Check("config", OK, "no config file: the offline default (demo, sandbox, bundled)")
    return Check("config", OK, f"{settings.config_path} is valid")


def check_data_dir(data_dir: Path) -> Check:
    probe = data_dir / PROBE_FILE
    try:
        probe.write_text("localgate doctor\n")
        probe.unlink()
    except OSError as exc:
        return Check(
            "data dir",
            FAIL,
            f"{data_dir} is not writable ({exc.strerror}); fix its permissions or use "
            "--data-dir / LOCALGATE_DATA_DIR",
        )
    return Check("data dir", OK, f"{data_dir} is writable")


def check_permissions(data_dir: Path) -> Check:
    """The data dir should be 0700 and every file in it 0600: it holds the ledger,
    the receipts and the admin token. Loose ones are a warning; serve tightens them."""
    from localgate.config_files import loose_permissions

    loose = loose_permissions(data_dir)
    if not loose:
        return Check("permissions", OK, f"{data_dir} and its files are private to their owner")
    listed = ", ".join(
        f"{'the data dir' if p == data_dir else p.name} {mode:04o}" for p, mode in loose[:6]
    )
    more = f" and {len(loose) - 6} more" if len(loose) > 6 else ""
    return Check(
        "permissions",
        WARN,
        f"other local users can read {listed}{more}; `localgate serve` tightens them at "
        f"start-up, or: chmod 700 {data_dir} && chmod 600 {data_dir}/*",
    )


def server_pid(data_dir: Path) -> str | None:
    """The pid of the `localgate serve` using this data dir (it holds serve.lock), or None."""
    path = data_dir / "serve.lock"
    if not path.exists():
        return None
    with path.open("r") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "?"
        fcntl.flock(fh, fcntl.LOCK_UN)
    return None


def check_server(data_dir: Path) -> Check:
    pid = server_pid(data_dir)
    if pid is None:
        return Check("server", OK, "not running on this data dir")
    return Check("server", OK, f"running on this data dir (pid {pid})")


def check_database(db_path: Path) -> list[Check]:
    if not db_path.exists():
        return [
            Check("database", OK, f"no database yet at {db_path}: `localgate serve` creates it")
        ]
    from localgate.store.db import open_db

    try:
        conn = open_db(db_path)
    except sqlite3.Error as exc:
        return [Check("database", FAIL, f"{db_path} cannot be opened: {exc}")]
    try:
        return [_integrity(conn, db_path), *_ledger(conn, db_path)]
    except sqlite3.Error as exc:
        return [Check("database", FAIL, f"{db_path}: {exc}; restore it from a backup")]
    finally:
        conn.close()


def _integrity(conn: sqlite3.Connection, db_path: Path) -> Check:
    import sqlite_utils

    from localgate.store.migrations import migrations

    problems = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
    if problems != ["ok"]:
        return Check(
            "database",
            FAIL,
            f"integrity check failed: {'; '.join(problems[:3])}; restore {db_path} from a backup",
        )
    db = sqlite_utils.Database(conn)
    applied = {m.name for m in migrations.applied(db)}
    pending = [m.name for m in migrations.pending(db)]
    known = {m.name for m in migrations.pending(sqlite_utils.Database(memory=True))}
    unknown = applied - known
    if unknown:
        return Check(
            "database",
            WARN,
            f"written by a newer localgate (migrations {', '.join(sorted(unknown))}); "
            "upgrade localgate",
        )
    if pending:
        return Check(
            "database",
            WARN,
            f"integrity ok; {len(pending)} migration(s) pending ({', '.join(pending)}): "
            "`localgate serve` applies them",
        )
    return Check("database", OK, f"integrity ok, schema current ({len(applied)} migrations)")


def _ledger(conn: sqlite3.Connection, db_path: Path) -> list[Check]:
    from localgate.store.verify import verify

    if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'entries'").fetchone():
        return [Check("ledger", WARN, "no ledger tables yet: `localgate serve` creates them")]
    report = verify(conn)
    if not report.ok:
        ledger = Check(
            "ledger",
            FAIL,
            f"verify failed after {report.entries} entries: {report.first_error}",
        )
    else:
        ledger = Check("ledger", OK, f"{report.entries} entries, hash chain and balances verified")
    held = conn.execute(
        "SELECT count(*), min(created_at) FROM holds WHERE status = 'open'"
    ).fetchone()
    if not held[0]:
        return [ledger, Check("holds", OK, "none open")]
    detail = f"{held[0]} open since {held[1][:19]}"
    if server_pid(db_path.parent) is not None:
        return [ledger, Check("holds", OK, f"{detail}: requests in flight")]
    return [
        ledger,
        Check("holds", WARN, f"{detail} with no server running: released at the next start"),
    ]


def check_resources() -> Check:
    """Templates, static files, the catalog and the tokenizers are where resources.py looks."""
    from localgate import tokens

    try:
        templates = resources.templates_dir()
        static = resources.static_dir()
        pages = len(list(templates.rglob("*.html")))
        assets = sum(1 for p in static.rglob("*") if p.is_file())
        count = tokens.count_tokens("localgate counts tokens offline.")
    except Exception as exc:  # any missing or broken bundled file
        return Check("resources", FAIL, f"a bundled file is missing or broken: {exc}")
    if not pages or not assets:
        return Check("resources", FAIL, f"no templates in {templates} or no files in {static}")
    return Check(
        "resources",
        OK,
        f"{pages} templates, {assets} static files, tokenizer ok ({count} tokens in a test line)",
    )


def check_catalog(settings: Any, *, today: date | None = None) -> Check:
    from localgate.catalog_data import bundled_catalog_version
    from localgate.errors import LocalgateError
    from localgate.services.catalog import build_catalog

    try:
        catalog = build_catalog(settings)
        version = bundled_catalog_version()
    except (LocalgateError, OSError) as exc:
        return Check("catalog", FAIL, str(exc))
    models = len(catalog.models())
    local = len(settings.models)
    stamp = version.removeprefix("bundled-")
    try:
        built = date.fromisoformat(stamp)
    except ValueError:
        return Check("catalog", OK, f"{version}, {models} models ({local} local)")
    age = ((today or datetime.now(UTC).date()) - built).days
    detail = f"{version}, {age} days old, {models} models ({local} from config.toml)"
    if age > CATALOG_STALE_DAYS:
        hint = (
            "sync from the hosted service"
            if settings.get("hosted.base_url")
            else "upgrade localgate or set [hosted] base_url to sync"
        )
        return Check("catalog", WARN, f"{detail}: prices may be out of date; {hint}")
    return Check("catalog", OK, detail)


async def check_channels(
    settings: Any,
    *,
    timeout: float = CHANNEL_TIMEOUT,
    transport: httpx.AsyncBaseTransport | None = None,
) -> list[Check]:
    async with httpx.AsyncClient(
        timeout=httpx.Timeout(timeout), transport=transport, trust_env=False
    ) as client:
        return list(await asyncio.gather(*(_check_channel(c, client) for c in settings.channels)))


async def _check_channel(channel: Any, client: httpx.AsyncClient) -> Check:
    from localgate.errors import LocalgateError
    from localgate.providers import ProviderRequest, make_provider

    name = f"channel {channel.id}"
    try:
        provider = make_provider(channel, client)
    except LocalgateError as exc:
        return Check(name, WARN, f"off: {exc}")
    if provider.offline:  # nothing to reach: run it instead
        request = ProviderRequest(
            "chat",
            {"model": "localgate-demo", "messages": [{"role": "user", "content": "doctor"}]},
        )
        try:
            reply = await provider.complete(request)
        except LocalgateError as exc:
            return Check(name, FAIL, f"the built-in {channel.kind} failed: {exc}")
        tokens = reply.usage.output if reply.usage else 0
        return Check(name, OK, f"built-in {channel.kind} answered offline ({tokens} output tokens)")
    return await _reach(name, channel, client)


async def _reach(name: str, channel: Any, client: httpx.AsyncClient) -> Check:
    url = f"{channel.base_url}/models"
    key = "key set" if channel.api_key else "no key"
    t0 = time.perf_counter()
    try:
        resp = await client.get(url, headers={"user-agent": f"localgate-doctor/{__version__}"})
    except httpx.TimeoutException:
        return Check(name, WARN, f"unreachable: {channel.base_url} did not answer in time")
    except httpx.HTTPError as exc:
        reason = type(exc).__name__
        return Check(name, WARN, f"unreachable: {channel.base_url} ({reason})")
    ms = round((time.perf_counter() - t0) * 1000)
    return Check(
        name,
        OK,
        f"reachable: {channel.base_url} answered HTTP {resp.status_code} in {ms} ms ({key})",
    )


def check_payments(settings: Any) -> Check:
    """The check the payment registry holds for the configured provider."""
    from localgate.errors import ConfigError
    from localgate.payments import payment_kind

    try:
        kind = payment_kind(settings.get("payments.provider"))
    except ConfigError as exc:
        return Check("payments", FAIL, str(exc))
    status, detail = kind.check(settings)
    return Check("payments", status, detail)


def format_report(report: Report) -> Sequence[str]:
    """The text form: one line per check, then a verdict."""
    width = max(len(c.name) for c in report.checks)
    lines = [f"  {c.status:<4}  {c.name:<{width}}  {c.detail}" for c in report.checks]
    fails, warns = report.count(FAIL), report.count(WARN)
    if fails:
        verdict = f"{fails} check(s) failed" + (f", {warns} warning(s)" if warns else "")
    elif warns:
        verdict = f"ready, with {warns} warning(s)"
    else:
        verdict = "all checks passed"
    return [*lines, f"localgate doctor: {verdict}"]
