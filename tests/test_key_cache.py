"""The key cache on the /v1 path: a hit runs no SQL, and every key change counts
from the very next request — made here, by another Store on the same database
(as the CLI is), or by the CLI itself while the server runs.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time

import gateway_fixtures as gf
import pytest
from click.testing import CliRunner

from localgate.cli import main
from localgate.config import load_settings
from localgate.core.keys import check_usable
from localgate.errors import Forbidden, Unauthenticated
from localgate.services import keys as key_service
from localgate.services.keys import KeyService
from localgate.services.wallets import Wallets
from localgate.store import Store
from localgate.store import keys as key_store


class Clock:
    """A monotonic clock the test moves by hand, so no recheck happens unasked."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path):
    st = Store.open(tmp_path / "keys.db", wallets=load_settings().wallets)
    yield st
    st.close()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def service(store, clock):
    return KeyService(store, clock=clock)


@pytest.fixture
def other(store):
    """Another Store and KeyService on the same database file, as the CLI opens them."""
    st = Store.open(store.path, wallets=[])
    yield KeyService(st)
    st.close()


def statements_during(conn: sqlite3.Connection, fn) -> list[str]:
    seen: list[str] = []
    conn.set_trace_callback(seen.append)
    try:
        fn()
    finally:
        conn.set_trace_callback(None)
    return seen


def usable(service: KeyService, secret: str) -> None:
    """What the gateway does with a presented key: authenticate, then check it."""
    check_usable(service.authenticate(secret), time.time())


# -- hits --------------------------------------------------------------------------


def test_a_known_key_is_authenticated_without_any_sql(service, store):
    key = service.create_sync({"label": "tool"})
    service.authenticate(key["key"])  # first use: read from SQLite

    def many() -> None:
        for _ in range(50):
            assert service.authenticate(key["key"]).id == key["id"]

    assert statements_during(store.read(), many) == []


def test_other_writes_between_requests_cost_a_hit_no_query(service, store):
    key = service.create_sync({"label": "tool"})
    service.authenticate(key["key"])
    wallets = Wallets(store)

    def hits_between_ledger_writes() -> None:
        for _ in range(3):
            wallets.adjust_sync("credit", "1", "a request's charge, as far as keys care")
            service.authenticate(key["key"])

    seen = statements_during(store.read(), hits_between_ledger_writes)
    assert not any("api_keys" in sql or "keys_generation" in sql for sql in seen), seen


def test_a_cache_that_is_old_enough_looks_once_then_trusts_again(service, store, clock):
    key = service.create_sync({"label": "tool"})
    service.authenticate(key["key"])
    clock.now += key_service.RECHECK_SECONDS

    def twice() -> None:
        service.authenticate(key["key"])
        service.authenticate(key["key"])

    seen = statements_during(store.read(), twice)
    assert len(seen) == 1 and "keys_generation" in seen[0]


def test_an_unknown_key_is_refused_every_time(service):
    service.create_sync({"label": "tool"})
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="unknown"):
            service.authenticate("lg_" + "x" * 43)


# -- changes through this service ---------------------------------------------------


async def test_a_key_revoked_here_is_refused_on_the_next_request(service):
    key = await service.create({"label": "tool"})
    usable(service, key["key"])
    await service.set_state(key["id"], "revoke")
    with pytest.raises(Unauthenticated, match="revoked"):
        usable(service, key["key"])


async def test_a_key_paused_here_is_refused_on_the_next_request_and_works_once_resumed(service):
    key = await service.create({"label": "tool"})
    usable(service, key["key"])
    await service.set_state(key["id"], "pause")
    with pytest.raises(Forbidden, match="paused"):
        usable(service, key["key"])
    await service.set_state(key["id"], "resume")
    usable(service, key["key"])


async def test_a_key_rotated_here_refuses_the_old_secret_on_the_next_request(service):
    key = await service.create({"label": "tool"})
    usable(service, key["key"])
    fresh = await service.rotate(key["id"])
    with pytest.raises(Unauthenticated, match="unknown"):
        service.authenticate(key["key"])
    assert service.authenticate(fresh["key"]).id == key["id"]


async def test_the_kill_switch_here_refuses_every_key_on_the_next_request(service):
    keys = [await service.create({"label": f"tool {i}"}) for i in range(3)]
    for key in keys:
        usable(service, key["key"])
    assert await service.pause_all() == 3
    for key in keys:
        with pytest.raises(Forbidden):
            usable(service, key["key"])


async def test_a_key_edited_here_has_its_new_scope_on_the_next_request(service):
    key = await service.create({"label": "tool"})
    assert service.authenticate(key["key"]).models == ()
    await service.update(key["id"], {"label": "tool", "models": ["gpt-4o*"], "rpm": 5})
    policy = service.authenticate(key["key"])
    assert policy.models == ("gpt-4o*",) and policy.rpm == 5


async def test_a_revoke_whose_request_was_cancelled_mid_write_is_still_seen(
    service, store, monkeypatch
):
    key = await service.create({"label": "tool"})
    usable(service, key["key"])
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    update_key = key_store.update_key

    def slow_update(conn: sqlite3.Connection, policy) -> None:
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.2)  # the request goes away while the writer is here
        update_key(conn, policy)

    monkeypatch.setattr(key_store, "update_key", slow_update)
    task = asyncio.ensure_future(service.set_state(key["id"], "revoke"))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    usable(service, key["key"])  # requests go on while the revoke is being written
    store.write_sync(lambda conn: None)  # the writer is past the revoke's commit
    with pytest.raises(Unauthenticated, match="revoked"):
        usable(service, key["key"])


# -- changes by another process on the same data dir --------------------------------


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        (lambda svc, kid: svc.set_state_sync(kid, "revoke"), Unauthenticated),
        (lambda svc, kid: svc.set_state_sync(kid, "pause"), Forbidden),
        (lambda svc, kid: svc.rotate_sync(kid), Unauthenticated),
        (lambda svc, kid: svc.pause_all_sync(), Forbidden),
    ],
    ids=["revoke", "pause", "rotate", "pause-all"],
)
def test_a_change_by_another_store_is_refused_on_the_next_request(service, other, change, refusal):
    key = service.create_sync({"label": "tool"})
    usable(service, key["key"])
    change(other, key["id"])  # the clock stands still: the marker alone says so
    with pytest.raises(refusal):
        usable(service, key["key"])


def test_a_key_created_by_another_store_works_on_the_next_request(service, other):
    service.create_sync({"label": "first"})
    service.authenticate(service.create_sync({"label": "warm"})["key"])
    key = other.create_sync({"label": "made elsewhere"})
    assert service.authenticate(key["key"]).label == "made elsewhere"


def test_a_change_that_left_no_mark_is_seen_once_the_recheck_is_due(service, store, clock):
    key = service.create_sync({"label": "tool"})
    usable(service, key["key"])
    raw = sqlite3.connect(store.path, isolation_level=None)
    try:  # an edit by hand: no KeyService, so no marker
        raw.execute("UPDATE api_keys SET revoked = 1 WHERE id = ?", (key["id"],))
        raw.execute("UPDATE meta SET value = value + 1 WHERE name = 'keys_generation'")
    finally:
        raw.close()
    clock.now += key_service.RECHECK_SECONDS
    with pytest.raises(Unauthenticated, match="revoked"):
        usable(service, key["key"])


# -- the CLI while the server runs ----------------------------------------------------


@pytest.fixture
def gate(tmp_path):
    with gf.run_gateway(tmp_path, channels=[], models=[]) as g:
        yield g


def cli(gate, *args: str) -> str:
    result = CliRunner().invoke(
        main,
        [
            "--data-dir",
            str(gate.settings.data_dir),
            "--config",
            str(gate.settings.config_path),
            *args,
        ],
    )
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    ("args", "status", "code"),
    [
        (("keys", "revoke"), 401, "invalid_api_key"),
        (("keys", "pause"), 403, "key_paused"),
        (("keys", "pause-all"), 403, "key_paused"),
    ],
    ids=["revoke", "pause", "pause-all"],
)
def test_the_cli_refuses_a_key_of_the_running_server_from_its_next_request(
    gate, args, status, code
):
    key = gate.create_key("tool")
    client = gate.http(key["key"])
    assert client.get("/v1/models").status_code == 200
    cli(gate, *args, *([key["id"]] if args[1] != "pause-all" else []), "--json")
    resp = client.get("/v1/models")
    assert resp.status_code == status
    assert json.loads(resp.text)["error"]["code"] == code
