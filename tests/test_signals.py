"""Stopping `localgate serve` with SIGTERM or SIGINT while requests are in flight.

The gateway runs as a real process — ``python -m localgate serve``, and also
the binary when ``LOCALGATE_BINARY`` names one (there the signal goes to the
onefile bootloader, which forwards it) — on a free port with a tmp data dir.
Whatever is in flight when the signal lands, the process must exit 0 within a
few seconds with every receipt finished, no hold left open and a ledger that
verifies.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.upstream import FakeUpstream

pytestmark = pytest.mark.slow

# The demo model streams its ~100-word answer one word per 200 ms: ~20 s.
SLOW_DEMO = """
[[channels]]
id = "demo"
kind = "demo"
options = { chunk_delay_ms = 200 }
"""
SLOW_UPSTREAM = """
[[channels]]
id = "slow"
kind = "openai_compatible"
base_url = "{base_url}"
settlement = "official"

[[models]]
id = "slow-model"
[[models.routes]]
channel = "slow"
upstream_model = "up-slow"
price = {{ currency = "USD", input = "1", output = "2" }}
"""
# Grace period (3 s) + settling + process exit, with room for a slow CI box.
EXIT_WITHIN = 12.0


def commands() -> list[object]:
    cmds: list[object] = [pytest.param([sys.executable, "-m", "localgate"], id="python")]
    binary = os.environ.get("LOCALGATE_BINARY")
    if binary:
        cmds.append(pytest.param([str(Path(binary).resolve())], id="binary"))
    return cmds


@pytest.fixture(params=commands())
def command(request) -> list[str]:
    return request.param


class Gateway:
    """One `localgate serve` process and the CLI pointed at the same data dir."""

    def __init__(self, command: list[str], data_dir: Path, config: str) -> None:
        self.command = command
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        (data_dir / "config.toml").write_text(config)
        self.env = {**os.environ, "LOCALGATE_DATA_DIR": str(data_dir)}
        self.proc: subprocess.Popen[str] | None = None
        self.base = ""

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [*self.command, *args], env=self.env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"
        return done.stdout

    def start(self) -> None:
        self.stderr = (self.data_dir / "serve.err").open("w")
        self.proc = subprocess.Popen(
            [*self.command, "serve", "--port", "0", "--no-browser"],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            start_new_session=True,  # its own process group, as in a terminal
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "Base URL for tools:" in line:
                self.base = line.split()[-1].removesuffix("/v1")
                break
        else:
            pytest.fail(f"serve exited early: {self.errors()}")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.base}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
        pytest.fail(f"serve never became healthy: {self.errors()}")

    def errors(self) -> str:
        return (self.data_dir / "serve.err").read_text()

    def stop_with(self, sigs: list[signal.Signals], *, group: bool = False) -> tuple[int, float]:
        assert self.proc is not None
        t0 = time.monotonic()
        for sig in sigs:
            if group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
            time.sleep(0.1)
        try:
            rc = self.proc.wait(timeout=EXIT_WITHIN + 20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self.stderr.close()
        return rc, time.monotonic() - t0

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "localgate.db")


def _funded_key(gw: Gateway) -> str:
    import json

    key = json.loads(gw.cli("keys", "create", "--label", "signals", "--json"))["key"]
    gw.cli("adjust", "--wallet", "routed", "--amount", "50", "--reason", "test")
    gw.cli("adjust", "--wallet", "credit", "--amount", "50", "--reason", "test")
    return key


def _start_request(gw: Gateway, key: str, body: dict, *, stream: bool) -> dict:
    """Run one request in a thread; returns a dict filled as it goes."""
    seen: dict = {"chunks": 0, "error": None, "started": threading.Event()}

    def run() -> None:
        try:
            with httpx.Client(timeout=60) as client:
                if stream:
                    with client.stream(
                        "POST",
                        f"{gw.base}/v1/chat/completions",
                        json={**body, "stream": True},
                        headers={"Authorization": f"Bearer {key}"},
                    ) as resp:
                        seen["receipt"] = resp.headers.get("x-localgate-receipt")
                        for _ in resp.iter_lines():
                            seen["chunks"] += 1
                            seen["started"].set()
                else:
                    seen["started"].set()
                    resp = client.post(
                        f"{gw.base}/v1/chat/completions",
                        json=body,
                        headers={"Authorization": f"Bearer {key}"},
                    )
                    seen["status"] = resp.status_code
        except httpx.HTTPError as exc:  # the server went away mid-response: expected
            seen["error"] = exc
        finally:
            seen["started"].set()

    seen["thread"] = threading.Thread(target=run, daemon=True)
    seen["thread"].start()
    assert seen["started"].wait(30)
    return seen


def _assert_settled(gw: Gateway) -> list[sqlite3.Row]:
    with gw.db() as conn:
        conn.row_factory = sqlite3.Row
        receipts = conn.execute("SELECT id, status, charge_policy FROM receipts").fetchall()
        open_holds = conn.execute("SELECT count(*) FROM holds WHERE status = 'open'").fetchone()
    assert receipts, "no receipt was written"
    assert [r["status"] for r in receipts if r["status"] == "pending"] == []
    assert open_holds[0] == 0
    verify = gw.cli("ledger", "verify")
    assert verify.startswith("ledger ok"), verify
    return receipts


CASES = {
    "SIGTERM": ([signal.SIGTERM], False),
    "SIGINT": ([signal.SIGINT], False),
    "SIGINT-terminal": ([signal.SIGINT], True),  # Ctrl+C: the whole process group
    "SIGTERM-then-SIGINT": ([signal.SIGTERM, signal.SIGINT], False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_stop_during_stream_settles_and_exits_0(command, case, tmp_path):
    gw = Gateway(command, tmp_path / "data", SLOW_DEMO)
    key = _funded_key(gw)
    gw.start()
    seen = _start_request(
        gw,
        key,
        {"model": "localgate-demo", "messages": [{"role": "user", "content": "hi"}]},
        stream=True,
    )
    while seen["chunks"] < 3 and seen["thread"].is_alive():
        time.sleep(0.05)
    assert seen["thread"].is_alive(), "the stream ended before the signal: not slow enough"

    sigs, group = CASES[case]
    rc, took = gw.stop_with(sigs, group=group)

    assert rc == 0, gw.errors()
    assert took < EXIT_WITHIN, f"took {took:.1f}s to stop"
    seen["thread"].join(10)
    assert not seen["thread"].is_alive()
    assert "Traceback" not in gw.errors(), gw.errors()
    receipts = _assert_settled(gw)
    (receipt,) = [r for r in receipts if r["id"] == seen["receipt"]]
    # Cut short by the stop: interrupted (not "the client canceled"), charged for
    # the words it delivered, never left pending.
    assert receipt["status"] == "interrupted"
    assert "shutdown" in receipt["charge_policy"] and "delivered" in receipt["charge_policy"]


def test_stop_during_slow_upstream_releases_the_hold(command, tmp_path):
    """A non-stream call still waiting on its upstream after the grace period is
    stopped: its hold is released and it is not charged."""
    with FakeUpstream(latency=60) as upstream:
        config = SLOW_UPSTREAM.format(base_url=upstream.base_url)
        gw = Gateway(command, tmp_path / "data", config)
        key = _funded_key(gw)
        gw.start()
        before = gw.cli("wallets", "--json")
        seen = _start_request(
            gw,
            key,
            {"model": "slow-model", "messages": [{"role": "user", "content": "hi"}]},
            stream=False,
        )
        assert upstream.wait_until(lambda: len(upstream.requests) == 1, timeout=10)

        rc, took = gw.stop_with([signal.SIGTERM])

    assert rc == 0, gw.errors()
    assert took < EXIT_WITHIN
    seen["thread"].join(10)
    (receipt,) = _assert_settled(gw)
    # Interrupted by the stop, never charged; the caller is told to come back.
    assert receipt["status"] == "interrupted"
    assert "not charged" in receipt["charge_policy"]
    assert seen.get("status") == 503, seen
    assert gw.cli("wallets", "--json") == before  # nothing charged, nothing held


@pytest.mark.parametrize("case", ["SIGTERM", "SIGINT-terminal"])
def test_a_request_that_ends_within_the_grace_period_finishes(command, case, tmp_path):
    """Ctrl+C reaches a onefile binary twice (terminal + bootloader); that is still
    one stop request, so the grace period holds and the request completes."""
    with FakeUpstream(latency=1.5) as upstream:
        gw = Gateway(command, tmp_path / "data", SLOW_UPSTREAM.format(base_url=upstream.base_url))
        key = _funded_key(gw)
        gw.start()
        seen = _start_request(
            gw,
            key,
            {"model": "slow-model", "messages": [{"role": "user", "content": "hi"}]},
            stream=False,
        )
        assert upstream.wait_until(lambda: len(upstream.requests) == 1, timeout=10)
        sigs, group = CASES[case]
        rc, _ = gw.stop_with(sigs, group=group)
    assert rc == 0, gw.errors()
    seen["thread"].join(10)
    assert seen.get("status") == 200, seen
    (receipt,) = _assert_settled(gw)
    assert receipt["status"] == "succeeded"


def test_idle_stop_is_quick(command, tmp_path):
    gw = Gateway(command, tmp_path / "data", "")
    gw.start()
    rc, took = gw.stop_with([signal.SIGTERM])
    assert rc == 0, gw.errors()
    assert took < 3.0
