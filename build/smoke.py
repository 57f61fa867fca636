"""Smoke test of a built localgate binary, as a user would run it on a fresh machine.

    python build/smoke.py                        # dist/localgate
    python build/smoke.py path/to/localgate
    python build/smoke.py "python -m localgate"  # the same checks on a source install

It starts the gateway on a free port with a new temp data dir and no config,
then checks first run (data dir created, base URL, login link, the hint for
tools, the browser opened), /health, a key created with the binary's own CLI,
the routed wallet funded with `adjust`, a demo chat completion plain and
streamed, both receipts through /api/receipts, `ledger verify`, `doctor`, and
that SIGTERM exits 0. It then restarts on the same data dir with a slow demo
channel and stops it with SIGTERM in the middle of a stream (for the binary
the signal goes to the onefile bootloader, which forwards it): exit 0, the
receipt finished, no hold open, the ledger verifies.

Every bundled resource is exercised, so a missing one fails the run: a
template renders (/login/help, and the dashboard after the login link), a static
file is served, the migrations ran (the database has their records), the
catalog loads (/v1/models lists localgate-demo), a token estimate works (usage
on the reply; the demo counts with the bundled tokenizer).

Standard library only: it can check a binary on a machine without localgate's
dependencies. One line per step; the first failure stops it with exit 1.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = REPO / "dist" / "localgate"
DEMO_MODEL = "localgate-demo"
HEALTH_WITHIN = 30.0  # seconds; generous, the benchmark measures the real figure
EXIT_WITHIN = 12.0  # the server's grace period (3 s) + settling + exit
SLOW_DEMO = '[[channels]]\nid = "demo"\nkind = "demo"\noptions = { chunk_delay_ms = 200 }\n'
# Never inherit the caller's localgate settings or provider keys.
SCRUB_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "STRIPE_SECRET_KEY")


class SmokeError(Exception):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise SmokeError(message)


def step(message: str) -> None:
    print(f"  ok  {message}", flush=True)


class Gateway:
    """The command under test, one data dir, and at most one server running."""

    def __init__(self, command: list[str], home: Path) -> None:
        self.command = command
        self.home = home
        self.data_dir = home / "data"
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("LOCALGATE_") and k not in SCRUB_ENV
        }
        env["HOME"] = str(home)
        env["LOCALGATE_DATA_DIR"] = str(self.data_dir)
        # webbrowser runs $BROWSER with the URL: record it instead of opening one.
        opener = home / "browser.sh"
        opener.write_text(f'#!/bin/sh\necho "$1" > "{home / "browser-opened"}"\n')
        opener.chmod(0o755)
        env["BROWSER"] = f"{opener} %s"
        self.env = env
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self.port = 0
        self.token = ""

    # -- the CLI --------------------------------------------------------------

    def cli(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.command, *args], env=self.env, capture_output=True, text=True, timeout=120
        )
        if ok:
            check(
                done.returncode == 0,
                f"`{' '.join(args)}` exited {done.returncode}: {done.stdout}{done.stderr}",
            )
        return done

    def cli_json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    # -- the server -----------------------------------------------------------

    def start(self, *extra: str) -> float:
        """Start `serve`; returns seconds from start to the first successful /health."""
        self.stderr_path = self.home / f"serve-{time.monotonic_ns()}.err"
        self.stderr = self.stderr_path.open("w")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(
            [*self.command, "serve", "--port", "0", "--data-dir", str(self.data_dir), *extra],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        self.lines = []
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if "Point a tool at it:" in line:
                break
        text = "\n".join(self.lines)
        match = re.search(r"Base URL for tools:\s+http://127\.0\.0\.1:(\d+)/v1", text)
        check(match, f"serve did not print its base URL:\n{text}\n{self.errors()}")
        self.port = int(match.group(1))  # type: ignore[union-attr]
        while time.monotonic() - t0 < HEALTH_WITHIN:
            try:
                status, _, body = self.http("GET", "/health")
                if status == 200:
                    check(json.loads(body)["status"] == "ok", f"/health said {body!r}")
                    return time.monotonic() - t0
            except OSError:
                pass
            check(self.proc.poll() is None, f"serve exited early:\n{self.errors()}")
            time.sleep(0.02)
        raise SmokeError(f"no /health within {HEALTH_WITHIN}s:\n{self.errors()}")

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, float]:
        assert self.proc is not None and self.proc.stdout is not None
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=EXIT_WITHIN + 20)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.proc.stdout.close()
            self.stderr.close()
        return rc, time.monotonic() - t0

    def errors(self) -> str:
        if not self.stderr.closed:
            self.stderr.flush()
        return self.stderr_path.read_text()

    def http(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = json.dumps(body).encode() if body is not None else None
            hdrs = {"content-type": "application/json"} if data else {}
            conn.request(method, path, body=data, headers={**hdrs, **(headers or {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.data_dir / "localgate.db")


# -- the steps ---------------------------------------------------------------------


def first_run(gw: Gateway) -> float:
    check(not gw.data_dir.exists(), "the temp data dir should not exist yet")
    took = gw.start()  # no --no-browser: the browser must be asked to open
    check(gw.data_dir.is_dir(), "serve did not create its data dir")
    text = "\n".join(gw.lines)
    check("first run" in text, f"no first-run note:\n{text}")
    login = re.search(r"Wallet UI login:\s+(\S+/login\?token=\S+)", text)
    check(login, f"no login link:\n{text}")
    check(f"OPENAI_BASE_URL=http://127.0.0.1:{gw.port}/v1" in text, f"no tool hint:\n{text}")
    gw.token = (gw.data_dir / "admin-token").read_text().strip()
    check(gw.token and gw.token in login.group(1), "the login link does not carry the token")  # type: ignore[union-attr]
    opened = gw.home / "browser-opened"
    deadline = time.monotonic() + 10
    while not opened.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    check(opened.exists(), "the browser was not asked to open the login link")
    check(opened.read_text().strip() == login.group(1), "the browser got another URL")  # type: ignore[union-attr]
    step(
        f"first run: data dir created, URLs and hint printed, browser opened; /health in {took:.2f}s"
    )
    return took


def resources(gw: Gateway) -> None:
    status, headers, body = gw.http("GET", "/login/help")
    check(status == 200 and headers.get("content-type", "").startswith("text/html"), status)
    check(b"</html>" in body, "the login help template did not render a page")
    css = re.search(rb'href="(/static/[^"]+)"', body)
    check(css, "the page links no static file")
    status, _, asset = gw.http("GET", css.group(1).decode())  # type: ignore[union-attr]
    check(status == 200 and asset, f"static file {css.group(1)!r}: HTTP {status}")  # type: ignore[union-attr]
    status, headers, _ = gw.http("GET", f"/login?token={gw.token}")
    cookie = headers.get("set-cookie", "").split(";")[0]
    check(status in (302, 303) and cookie, f"login link: HTTP {status}")
    status, _, page = gw.http("GET", headers.get("location", "/"), headers={"cookie": cookie})
    check(status == 200 and b"</html>" in page, f"the page after login: HTTP {status}")
    step(
        f"templates render (/login/help, the dashboard after login), static file {css.group(1).decode()} served"
    )  # type: ignore[union-attr]
    with gw.db() as conn:
        applied = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations")]
    check(applied, "no migration was recorded")
    step(f"migrations ran: {', '.join(applied)}")


def key_and_funds(gw: Gateway) -> str:
    key = gw.cli_json("keys", "create", "--label", "smoke")
    check(str(key.get("key", "")).startswith("lg_"), f"keys create: {key}")
    entry = gw.cli_json("adjust", "--wallet", "routed", "--amount", "10", "--reason", "smoke")
    check(entry["amount_micros"] == 10_000_000, f"adjust: {entry}")
    step(f"key {key['id']} created and routed wallet funded with the binary's CLI")
    return str(key["key"])


def chats(gw: Gateway, key: str) -> list[str]:
    auth = {"authorization": f"Bearer {key}"}
    status, _, body = gw.http("GET", "/v1/models", headers=auth)
    ids = [m["id"] for m in json.loads(body)["data"]] if status == 200 else []
    check(DEMO_MODEL in ids, f"/v1/models: HTTP {status}, {ids}")
    step(f"catalog loads: /v1/models lists {len(ids)} models incl. {DEMO_MODEL}")
    ask = {"model": DEMO_MODEL, "messages": [{"role": "user", "content": "smoke test"}]}
    status, headers, body = gw.http("POST", "/v1/chat/completions", ask, auth)
    check(status == 200, f"chat: HTTP {status} {body[:300]!r}")
    reply = json.loads(body)
    usage = reply.get("usage") or {}
    check(usage.get("prompt_tokens", 0) > 0 and usage.get("completion_tokens", 0) > 0, usage)
    check(headers.get("x-localgate-wallet") == "routed", headers)
    plain = headers["x-localgate-receipt"]
    step(f"chat completion: {usage['completion_tokens']} tokens, {headers['x-localgate-charge']}")
    status, headers, body = gw.http("POST", "/v1/chat/completions", {**ask, "stream": True}, auth)
    text = body.decode()
    check(status == 200 and "data: [DONE]" in text, f"stream: HTTP {status} {text[-300:]!r}")
    check(": localgate receipt=" in text, "the stream has no receipt comment")
    streamed = headers["x-localgate-receipt"]
    step(f"streamed chat completion: {text.count('data: ')} events, receipt comment present")
    return [plain, streamed]


def receipts_and_ledger(gw: Gateway, receipt_ids: list[str]) -> None:
    admin = {"authorization": f"Bearer {gw.token}"}
    status, _, body = gw.http("GET", "/api/receipts", headers=admin)
    check(status == 200, f"/api/receipts: HTTP {status}")
    by_id = {r["id"]: r for r in json.loads(body)["receipts"]}
    for rid in receipt_ids:
        rec = by_id.get(rid)
        check(rec, f"receipt {rid} not listed")
        check(rec["status"] == "succeeded" and rec["wallet"] == "routed", rec)  # type: ignore[index]
        check(rec["charge_micros"] > 0 and rec["usage"]["output"] > 0, rec)  # type: ignore[index]
    step(f"receipts visible through /api/receipts: {', '.join(receipt_ids)}")
    verify = gw.cli_json("ledger", "verify")
    check(verify["ok"], f"ledger verify: {verify}")
    step(f"ledger verify clean ({verify['entries']} entries)")
    report = json.loads(gw.cli("doctor", "--json", ok=False).stdout)
    failed = [c for c in report["checks"] if c["status"] != "ok"]
    check(report["ok"] and not failed, f"doctor: {failed}")
    step(f"doctor passes ({len(report['checks'])} checks)")


def stop_clean(gw: Gateway) -> None:
    rc, took = gw.stop(signal.SIGTERM)
    check(rc == 0, f"SIGTERM: exit status {rc}\n{gw.errors()}")
    check("Traceback" not in gw.errors(), gw.errors())
    assert_settled(gw)
    step(f"SIGTERM: exit 0 in {took:.2f}s, no open hold, ledger verifies")


def stop_mid_stream(gw: Gateway, key: str) -> None:
    (gw.data_dir / "config.toml").write_text(SLOW_DEMO)
    gw.start("--no-browser")
    seen: dict[str, Any] = {"events": 0}
    ready = threading.Event()

    def stream() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", gw.port, timeout=60)
        body = {
            "model": DEMO_MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
        }
        try:
            conn.request(
                "POST",
                "/v1/chat/completions",
                json.dumps(body),
                {"authorization": f"Bearer {key}", "content-type": "application/json"},
            )
            resp = conn.getresponse()
            seen["receipt"] = resp.getheader("x-localgate-receipt")
            while resp.readline():
                seen["events"] += 1
                if seen["events"] >= 6:
                    ready.set()
        except (OSError, http.client.HTTPException):
            pass  # the server went away mid-stream: expected
        finally:
            ready.set()
            conn.close()

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    check(ready.wait(30) and thread.is_alive(), "the slow stream did not start")
    rc, took = gw.stop(signal.SIGTERM)
    check(rc == 0, f"SIGTERM mid-stream: exit status {rc}\n{gw.errors()}")
    check(took < EXIT_WITHIN, f"SIGTERM mid-stream took {took:.1f}s")
    thread.join(10)
    with gw.db() as conn:
        row = conn.execute(
            "SELECT status, charge_policy FROM receipts WHERE id = ?", (seen.get("receipt"),)
        ).fetchone()
    check(row and row[0] != "pending", f"the cut stream's receipt is {row}")
    assert_settled(gw)
    step(f"SIGTERM mid-stream: exit 0 in {took:.2f}s, receipt {row[0]} ({row[1]})")


def assert_settled(gw: Gateway) -> None:
    with gw.db() as conn:
        holds = conn.execute("SELECT count(*) FROM holds WHERE status = 'open'").fetchone()[0]
        pending = conn.execute("SELECT count(*) FROM receipts WHERE status = 'pending'").fetchone()
    check(holds == 0 and pending[0] == 0, f"{holds} open holds, {pending[0]} pending receipts")
    verify = gw.cli_json("ledger", "verify")
    check(verify["ok"], f"ledger verify after stop: {verify}")


def main(argv: list[str]) -> int:
    target = argv[1] if len(argv) > 1 else str(DEFAULT_BINARY)
    command = [target] if Path(target).exists() else shlex.split(target)
    print(f"smoke test of {' '.join(command)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="localgate-smoke-") as tmp:
        gw = Gateway(command, Path(tmp))
        try:
            version = gw.cli("--version").stdout.strip()
            check(re.match(r"localgate, version \d", version), f"--version said {version!r}")
            step(version)
            first_run(gw)
            resources(gw)
            key = key_and_funds(gw)
            receipt_ids = chats(gw, key)
            receipts_and_ledger(gw, receipt_ids)
            stop_clean(gw)
            stop_mid_stream(gw, key)
        except SmokeError as exc:
            print(f"FAIL {exc}", flush=True)
            if gw.proc is not None and gw.proc.poll() is None:
                gw.proc.kill()
                gw.proc.wait()
            return 1
    print("smoke test passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
