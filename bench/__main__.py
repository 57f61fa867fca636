"""``python -m bench``: direct-to-upstream vs through-localgate, in one run.

Starts the fake OpenAI upstream (tests/upstream.py, its own process) and
localgate as a real server (its own process) with a routed channel pointing at
the fake and a priced model, creates a key, funds the routed wallet, then for
non-stream and stream (20 chunks) chat completions, and the Anthropic
``/v1/messages`` and OpenAI ``/v1/responses`` pass-through (non-stream, to an
``anthropic`` and an ``openai`` channel at the same fake), at each concurrency
measures with wrk
(bench/post.lua) the requests/s and latency percentiles, direct and through
the gateway, and for streams the time to first byte with a raw-socket client
(bench/ttfb.py) at concurrency 1 and 10. Every gateway request is held,
settled and receipted durably, as in production; afterwards the receipts are
counted against the requests the clients saw and ``localgate ledger verify``
must be clean.

Run it from the repository root::

    python -m bench                  # ~5 s per cell, about 3-4 minutes
    python -m bench --quick          # 1 s per cell: a smoke run
    python -m bench --profile        # also py-spy on the c=50 non-stream cell

Results go to stdout and to bench/out/ (results.json, table.txt and, with
--profile, profile.txt plus folded stacks for speedscope or flamegraph.pl).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import pyspy, sysstat, ttfb

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
LUA = BENCH / "post.lua"
UPSTREAM_SCRIPT = ROOT / "tests" / "upstream.py"

MODEL = "bench-model"
UPSTREAM_MODEL = "gpt-4o-mini"
WALLET = "routed"
FUNDS = "1000000"
MESSAGES = [
    {"role": "system", "content": "You are a concise assistant."},
    {"role": "user", "content": "Write one short sentence about load testing an HTTP proxy."},
]
TARGETS = {  # ARCHITECTURE / issue 3 "Must hold": Targets
    "added_p50_ms_c1": 1.0,
    "nonstream_rps_c50": 2000,
    "stream_rps_c50": 600,
    "pass_through_vs_chat": 0.10,  # /v1/messages and /v1/responses vs chat completions
}
TTFB_MAX_CONCURRENCY = 10  # above this the Python client is the bottleneck

UPSTREAM_KEY_ENV = "BENCH_UPSTREAM_KEY"  # the fake checks no key; the kinds need one set

CONFIG = """\
# Written by python -m bench: routed channels of three kinds at the fake upstream
# (it speaks each one's wire format), one priced model on each.
[[channels]]
id = "fake"
kind = "openai_compatible"
base_url = "http://127.0.0.1:{port}/v1"
settlement = "routed"
timeout = 30

[[channels]]
id = "fake-anthropic"
kind = "anthropic"
base_url = "http://127.0.0.1:{port}/v1"
api_key_env = "{key_env}"
settlement = "routed"
timeout = 30

[[channels]]
id = "fake-openai"
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
api_key_env = "{key_env}"
settlement = "routed"
timeout = 30

[[models]]
id = "{model}"
name = "Benchmark model"
context_length = 128000
max_output_tokens = 4096

[[models.routes]]
channel = "fake"
upstream_model = "{upstream_model}"
settlement = "routed"
price = {{ currency = "CNY", input = "1", output = "2" }}

[[models]]
id = "bench-claude"
max_output_tokens = 4096

[[models.routes]]
channel = "fake-anthropic"
upstream_model = "{upstream_model}"
settlement = "routed"
price = {{ currency = "CNY", input = "1", output = "2" }}

[[models]]
id = "bench-responses"
max_output_tokens = 4096

[[models.routes]]
channel = "fake-openai"
upstream_model = "{upstream_model}"
settlement = "routed"
price = {{ currency = "CNY", input = "1", output = "2" }}
"""


# -- bodies ----------------------------------------------------------------------


def client_body(stream: bool) -> str:
    """What an IDE tool sends the gateway: no max_tokens, so the hold is sized from the wallet."""
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES}
    if stream:
        body["stream"] = True
    return json.dumps(body)


def direct_body(stream: bool) -> str:
    """What the gateway sends upstream for the same call (usage requested on streams)."""
    body: dict[str, Any] = {"model": UPSTREAM_MODEL, "messages": MESSAGES, "max_tokens": 4096}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body)


def messages_body(model: str) -> str:
    """An Anthropic Messages request (max_tokens is required there), client or direct."""
    return json.dumps(
        {
            "model": model,
            "max_tokens": 4096,
            "system": MESSAGES[0]["content"],
            "messages": MESSAGES[1:],
        }
    )


def responses_body(model: str) -> str:
    """An OpenAI Responses request, client or direct."""
    return json.dumps(
        {
            "model": model,
            "instructions": MESSAGES[0]["content"],
            "input": MESSAGES[1:],
            "max_output_tokens": 4096,
        }
    )


@dataclass(frozen=True)
class Mode:
    """One kind of request the bench measures: where it goes, and its two bodies."""

    name: str
    path: str
    stream: bool
    client: str  # what a tool sends localgate
    direct: str  # what localgate sends the upstream for it

    @property
    def ttfb(self) -> bool:
        return self.stream


MODES = {
    m.name: m
    for m in (
        Mode("non-stream", "/v1/chat/completions", False, client_body(False), direct_body(False)),
        Mode("stream", "/v1/chat/completions", True, client_body(True), direct_body(True)),
        Mode("messages", "/v1/messages", False, messages_body("bench-claude"),
             messages_body(UPSTREAM_MODEL)),
        Mode("responses", "/v1/responses", False, responses_body("bench-responses"),
             responses_body(UPSTREAM_MODEL)),
    )
}  # fmt: skip


# -- processes -------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The caller's environment without LOCALGATE_* (a data dir or token must not leak in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LOCALGATE_")}


def wait_for_line(log: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float) -> str:
    regex = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        m = regex.search(text)
        if m:
            return m.group(1)
        if proc.poll() is not None:
            raise SystemExit(f"bench: {proc.args!r} exited ({proc.returncode}); log:\n{text}")
        time.sleep(0.05)
    raise SystemExit(f"bench: timed out waiting for {pattern!r} in {log}")


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    fh = log.open("wb")
    return subprocess.Popen(
        cmd,
        stdout=fh,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
        start_new_session=True,  # its own process group: stopped by pid, never by name
    )


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def localgate(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "localgate", "--data-dir", str(data)]
    cmd += ["--config", str(data / "config.toml"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=clean_env())


def wait_healthy(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{base}/health", timeout=2) as resp,
        ):
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise SystemExit(f"bench: {base}/health did not answer")


@dataclass
class Servers:
    data: Path
    upstream: subprocess.Popen[bytes]
    upstream_port: int
    gateway: subprocess.Popen[bytes]
    gateway_port: int
    key: str

    @property
    def db(self) -> Path:
        return self.data / "localgate.db"


@contextlib.contextmanager
def servers(data: Path, chunks: int) -> Iterator[Servers]:
    env = {**clean_env(), UPSTREAM_KEY_ENV: "sk-bench"}
    up = gw = None
    try:
        up = start(
            [sys.executable, str(UPSTREAM_SCRIPT), "--port", "0", "--chunks", str(chunks)],
            data / "upstream.log",
            env,
        )
        up_port = int(
            wait_for_line(data / "upstream.log", r"on http://127\.0\.0\.1:(\d+)/v1", up, 30)
        )
        (data / "config.toml").write_text(
            CONFIG.format(
                port=up_port, model=MODEL, upstream_model=UPSTREAM_MODEL, key_env=UPSTREAM_KEY_ENV
            )
        )
        gw = start(
            [
                sys.executable,
                "-m",
                "localgate",
                "--data-dir",
                str(data),
                "--config",
                str(data / "config.toml"),
                "serve",
                "--no-browser",
                "--port",
                "0",
            ],
            data / "gateway.log",
            env,
        )
        gw_port = int(wait_for_line(data / "gateway.log", r"http://[^\s/:]+:(\d+)/v1", gw, 60))
        wait_healthy(f"http://127.0.0.1:{gw_port}")
        made = localgate(data, "keys", "create", "--label", "bench", "--json")
        if made.returncode != 0:
            raise SystemExit(f"bench: keys create failed: {made.stderr}")
        key = json.loads(made.stdout)["key"]
        funded = localgate(
            data, "adjust", "--wallet", WALLET, "--amount", FUNDS, "--reason", "bench"
        )
        if funded.returncode != 0:
            raise SystemExit(f"bench: adjust failed: {funded.stderr}")
        yield Servers(data, up, up_port, gw, gw_port, key)
    finally:
        stop(gw)
        stop(up)


# -- load ------------------------------------------------------------------------


@dataclass
class WrkResult:
    requests: int
    rps: float
    p50: float  # ms
    p95: float
    p99: float
    errors: int
    client_cpu: float  # wrk's CPU seconds


def run_wrk(
    port: int,
    body: str,
    key: str | None,
    concurrency: int,
    seconds: int,
    path: str = "/v1/chat/completions",
) -> WrkResult:
    env = {**os.environ, "BENCH_BODY": body, "BENCH_KEY": key or ""}
    cmd = [
        "wrk",
        "-t1",  # one thread: leaves the other core to the system under test
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{port}{path}",
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=BENCH)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"bench: wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(
        data[k]
        for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
    )
    return WrkResult(
        requests=data["requests"],
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50=data["p50_us"] / 1000,
        p95=data["p95_us"] / 1000,
        p99=data["p99_us"] / 1000,
        errors=errors,
        client_cpu=(after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
    )


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class TTFB:
    requests: int
    errors: int
    rps: float
    p50: float  # ms, first body byte
    p95: float
    headers_p50: float
    total_p50: float


def run_ttfb(port: int, body: str, key: str | None, concurrency: int, seconds: float) -> TTFB:
    s = ttfb.run(
        "127.0.0.1",
        port,
        "/v1/chat/completions",
        body.encode(),
        key=key,
        concurrency=concurrency,
        duration=seconds,
    )
    ms = 1000
    return TTFB(
        requests=s.requests,
        errors=s.errors,
        rps=s.requests / s.elapsed if s.elapsed else 0.0,
        p50=pct(s.ttfb, 50) * ms,
        p95=pct(s.ttfb, 95) * ms,
        headers_p50=pct(s.headers, 50) * ms,
        total_p50=pct(s.total, 50) * ms,
    )


# -- one cell ----------------------------------------------------------------------


@dataclass
class GatewayUse:
    """What the gateway and the machine did while wrk drove the gateway."""

    wall: float
    main_cpu: float  # fraction of one core
    writer_cpu: float
    other_threads_cpu: float
    main_runqueue_wait: float  # fraction of the window runnable but not running
    machine: float  # busy fraction of all CPUs
    upstream_cpu: float
    wrk_cpu: float
    foreign_cpu: float  # other processes on the machine, fraction of one core
    cpu_ms_per_request: float  # whole gateway process
    main_ms_per_request: float
    writer_ms_per_request: float
    commits: int | None
    commits_per_s: float | None
    jobs_per_commit: float | None
    receipts: int
    receipt_statuses: dict[str, int]
    open_holds_after: int  # holds still open once the gateway went quiet


@dataclass
class Cell:
    mode: str
    concurrency: int
    direct: WrkResult
    gateway: WrkResult
    use: GatewayUse
    ttfb_direct: TTFB | None = None
    ttfb_gateway: TTFB | None = None
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, srv: Servers, seconds: int, ttfb_seconds: float) -> None:
        self.srv = srv
        self.seconds = seconds
        self.ttfb_seconds = ttfb_seconds
        self.client_requests = 0  # what the clients saw complete through the gateway
        self.client_in_flight_max = 0  # requests a client may have left in flight
        self.threads: dict[int, str] = {}

    def gateway_wrk(
        self, body: str, concurrency: int, seconds: int, path: str = "/v1/chat/completions"
    ) -> WrkResult:
        result = run_wrk(self.srv.gateway_port, body, self.srv.key, concurrency, seconds, path)
        self.client_requests += result.requests
        self.client_in_flight_max += concurrency  # wrk stops with requests in flight
        return result

    def gateway_ttfb(self, body: str, concurrency: int, seconds: float) -> TTFB:
        result = run_ttfb(self.srv.gateway_port, body, self.srv.key, concurrency, seconds)
        self.client_requests += result.requests + result.errors
        return result

    def warm_up(self, mode: Mode, seconds: int) -> None:
        run_wrk(self.srv.upstream_port, mode.direct, None, 10, seconds, mode.path)
        self.gateway_wrk(mode.client, 10, seconds, mode.path)
        sysstat.wait_settled(self.srv.db)
        if not self.threads:
            self.threads = pyspy.thread_names(self.srv.gateway.pid)

    def cell(self, mode: Mode, concurrency: int) -> Cell:
        direct = run_wrk(
            self.srv.upstream_port, mode.direct, None, concurrency, self.seconds, mode.path
        )
        db0 = sysstat.wait_settled(self.srv.db)
        others = {"upstream": self.srv.upstream.pid}
        before = sysstat.snapshot(self.srv.gateway.pid, others)
        gateway = self.gateway_wrk(mode.client, concurrency, self.seconds, mode.path)
        after = sysstat.snapshot(self.srv.gateway.pid, others)
        db1 = sysstat.wait_settled(self.srv.db)
        use = self.use(before, after, db0, db1, gateway)
        cell = Cell(mode.name, concurrency, direct, gateway, use)
        stuck = db1.open_holds - db0.open_holds
        if stuck > 0:
            cell.notes.append(
                f"{stuck} requests never settled: hold still open, receipt 'pending' "
                f"({cell.use.receipt_statuses}); wrk closes its connections at the end of a run"
            )
        if gateway.errors:
            cell.notes.append(f"gateway: {gateway.errors} errors (non-200, timeouts, resets)")
        if direct.errors:
            cell.notes.append(f"direct: {direct.errors} errors")
        if mode.ttfb and concurrency <= TTFB_MAX_CONCURRENCY:
            secs = self.ttfb_seconds
            cell.ttfb_direct = run_ttfb(
                self.srv.upstream_port, mode.direct, None, concurrency, secs
            )
            cell.ttfb_gateway = self.gateway_ttfb(mode.client, concurrency, secs)
            sysstat.wait_settled(self.srv.db)
        return cell

    def use(
        self,
        before: sysstat.Snapshot,
        after: sysstat.Snapshot,
        db0: sysstat.DBState,
        db1: sysstat.DBState,
        result: WrkResult,
    ) -> GatewayUse:
        cpu = sysstat.diff(before, after)
        pid = self.srv.gateway.pid
        writer_tids = [t for t, name in self.threads.items() if name == "localgate-writer"]
        if not writer_tids:  # no py-spy: the busiest thread after the main one
            rest = sorted((t for t in cpu.threads if t != pid), key=lambda t: -cpu.threads[t])
            writer_tids = rest[:1]
        main = cpu.threads.get(pid, 0.0)
        writer = sum(cpu.threads.get(t, 0.0) for t in writer_tids)
        other = cpu.gateway - main - writer
        n = max(result.requests, 1)
        commits = None
        if db0.commits is not None and db1.commits is not None:
            commits = (db1.commits - db0.commits) % 2**32
        receipts = db1.receipts - db0.receipts
        statuses = {
            k: db1.by_status.get(k, 0) - db0.by_status.get(k, 0)
            for k in db1.by_status
            if db1.by_status.get(k, 0) != db0.by_status.get(k, 0)
        }
        return GatewayUse(
            wall=cpu.wall,
            main_cpu=cpu.util(main),
            writer_cpu=cpu.util(writer),
            other_threads_cpu=max(0.0, cpu.util(other)),
            main_runqueue_wait=cpu.util(cpu.waits.get(pid, 0.0)),
            machine=cpu.machine_util,
            upstream_cpu=cpu.util(cpu.others.get("upstream", 0.0)),
            wrk_cpu=cpu.util(result.client_cpu),
            foreign_cpu=max(
                0.0,
                cpu.util(
                    cpu.sys_busy - cpu.gateway - cpu.others.get("upstream", 0.0) - result.client_cpu
                ),
            ),
            cpu_ms_per_request=1000 * cpu.gateway / n,
            main_ms_per_request=1000 * main / n,
            writer_ms_per_request=1000 * writer / n,
            commits=commits,
            commits_per_s=commits / cpu.wall if commits is not None and cpu.wall else None,
            jobs_per_commit=(2 * receipts / commits) if commits else None,
            receipts=receipts,
            receipt_statuses=statuses,
            open_holds_after=db1.open_holds,
        )


# -- reporting ---------------------------------------------------------------------


def f_ms(x: float | None) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:.2f}" if x < 100 else f"{x:.0f}"


def table(cells: list[Cell]) -> list[str]:
    head = [
        "mode",
        "c",
        "direct rps",
        "gw rps",
        "gw/direct",
        "p50 dir",
        "p50 gw",
        "+p50 ms",
        "p95 dir",
        "p95 gw",
        "p99 dir",
        "p99 gw",
        "TTFB50 dir",
        "TTFB50 gw",
        "+TTFB50",
        "TTFB95 dir",
        "TTFB95 gw",
    ]
    rows = []
    for c in cells:
        td, tg = c.ttfb_direct, c.ttfb_gateway
        rows.append(
            [
                c.mode,
                str(c.concurrency),
                f"{c.direct.rps:,.0f}",
                f"{c.gateway.rps:,.0f}",
                f"{100 * c.gateway.rps / c.direct.rps:.2f}%" if c.direct.rps else "-",
                f_ms(c.direct.p50),
                f_ms(c.gateway.p50),
                f_ms(c.gateway.p50 - c.direct.p50),
                f_ms(c.direct.p95),
                f_ms(c.gateway.p95),
                f_ms(c.direct.p99),
                f_ms(c.gateway.p99),
                f_ms(td.p50) if td else ("n/m" if c.mode == "stream" else ""),
                f_ms(tg.p50) if tg else ("n/m" if c.mode == "stream" else ""),
                f_ms(tg.p50 - td.p50) if td and tg else "",
                f_ms(td.p95) if td else "",
                f_ms(tg.p95) if tg else "",
            ]
        )
    return render(head, rows)


def render(head: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    fmt = [str.ljust if i < 2 else str.rjust for i in range(len(head))]
    out = ["  ".join(fmt[i](h, widths[i]) for i, h in enumerate(head))]
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        out.append("  ".join(fmt[i](v, widths[i]) for i, v in enumerate(r)))
    return out


def use_table(cells: list[Cell]) -> list[str]:
    head = [
        "mode",
        "c",
        "gw main",
        "gw writer",
        "gw other",
        "main runq",
        "machine",
        "upstream",
        "wrk",
        "others",
        "CPU ms/req",
        "main ms/req",
        "writer ms/req",
        "commits/s",
        "jobs/commit",
        "wrk reqs",
        "receipts",
    ]
    rows = []
    for c in cells:
        u = c.use
        rows.append(
            [
                c.mode,
                str(c.concurrency),
                f"{100 * u.main_cpu:.0f}%",
                f"{100 * u.writer_cpu:.0f}%",
                f"{100 * u.other_threads_cpu:.0f}%",
                f"{100 * u.main_runqueue_wait:.0f}%",
                f"{100 * u.machine:.0f}%",
                f"{100 * u.upstream_cpu:.0f}%",
                f"{100 * u.wrk_cpu:.0f}%",
                f"{100 * u.foreign_cpu:.0f}%",
                f"{u.cpu_ms_per_request:.2f}",
                f"{u.main_ms_per_request:.2f}",
                f"{u.writer_ms_per_request:.2f}",
                f"{u.commits_per_s:,.0f}" if u.commits_per_s is not None else "?",
                f"{u.jobs_per_commit:.1f}" if u.jobs_per_commit is not None else "?",
                str(c.gateway.requests),
                str(u.receipts),
            ]
        )
    return render(head, rows)


def bound(c: Cell, fsync_us: float) -> str:
    """One line: what limits this gateway cell, derived from the measurements."""
    u = c.use
    where = f"{c.mode} c={c.concurrency}: "
    gil = u.main_cpu + u.writer_cpu + u.other_threads_cpu
    ceiling = 1000 / u.main_ms_per_request if u.main_ms_per_request else float("inf")
    commit = (
        f"{u.commits_per_s:,.0f} commits/s, ~{u.jobs_per_commit:.1f} jobs each"
        if u.commits_per_s is not None and u.jobs_per_commit is not None
        else "commits unknown"
    )
    caveat = (
        f"; NB other processes used {100 * u.foreign_cpu:.0f}% of a core meanwhile"
        if u.foreign_cpu >= 0.2
        else ""
    )
    if u.main_cpu >= 0.85:
        return (
            where
            + f"CPU-bound in the event loop: main thread {100 * u.main_cpu:.0f}% of a core at "
            f"{u.main_ms_per_request:.2f} ms CPU/request -> ceiling ~{ceiling:,.0f} req/s; writer "
            f"thread {100 * u.writer_cpu:.0f}% more on the same GIL ({commit}){caveat}"
        )
    if gil >= 0.9:
        return (
            where + f"GIL-bound: the gateway's threads together use {100 * gil:.0f}% of one core "
            f"(main {100 * u.main_cpu:.0f}%, writer {100 * u.writer_cpu:.0f}%), "
            f"{u.cpu_ms_per_request:.2f} ms CPU/request -> ceiling ~{1000 / u.cpu_ms_per_request:,.0f} "
            f"req/s ({commit}){caveat}"
        )
    added = c.gateway.p50 - c.direct.p50
    cpu = u.cpu_ms_per_request
    wait = max(0.0, added - cpu)
    busy = ""
    if u.machine >= 0.9:
        busy = (
            f"machine saturated ({100 * u.machine:.0f}% of {sysstat.NCPU} CPUs: gateway "
            f"{100 * gil:.0f}%, upstream {100 * u.upstream_cpu:.0f}%, wrk {100 * u.wrk_cpu:.0f}%, "
            f"other processes {100 * u.foreign_cpu:.0f}% of a core; event loop runnable but "
            f"waiting for a CPU {100 * u.main_runqueue_wait:.0f}% of the time); "
        )
        caveat = ""
    return (
        where + busy + f"gateway not saturated itself ({100 * gil:.0f}% of a core): +{added:.2f} "
        f"ms p50 = ~{cpu:.2f} ms gateway CPU per request (main {u.main_ms_per_request:.2f}, writer "
        f"{u.writer_ms_per_request:.2f}) + ~{wait:.2f} ms waiting (2 durable commits per request, "
        f"fsync ~{fsync_us / 1000:.2f} ms each, thread hand-offs, CPU queueing; {commit}){caveat}"
    )


def targets(cells: list[Cell]) -> list[str]:
    def find(mode: str, c: int) -> Cell | None:
        return next((x for x in cells if x.mode == mode and x.concurrency == c), None)

    out = []
    ns1, st1 = find("non-stream", 1), find("stream", 1)
    ns50, st50 = find("non-stream", 50), find("stream", 50)
    limit = TARGETS["added_p50_ms_c1"]
    if ns1:
        added = ns1.gateway.p50 - ns1.direct.p50
        out.append(
            verdict(f"added p50, non-stream, c=1: {added:.2f} ms (<= {limit} ms)", added <= limit)
        )
    if st1 and st1.ttfb_direct and st1.ttfb_gateway:
        added = st1.ttfb_gateway.p50 - st1.ttfb_direct.p50
        out.append(
            verdict(f"added TTFB p50, stream, c=1: {added:.2f} ms (<= {limit} ms)", added <= limit)
        )
    if ns50:
        want = TARGETS["nonstream_rps_c50"]
        out.append(
            verdict(
                f"non-stream c=50: {ns50.gateway.rps:,.0f} req/s (>= {want:,})",
                ns50.gateway.rps >= want,
            )
        )
    if st50:
        want = TARGETS["stream_rps_c50"]
        out.append(
            verdict(
                f"stream c=50: {st50.gateway.rps:,.0f} req/s (>= {want:,})",
                st50.gateway.rps >= want,
            )
        )
    out += pass_through_targets(find)
    return out


def pass_through_targets(find: Any) -> list[str]:
    """/v1/messages and /v1/responses pass-through: within 10% of chat completions."""
    out = []
    slack = TARGETS["pass_through_vs_chat"]
    for name in ("messages", "responses"):
        for c in (1, 50):
            chat, other = find("non-stream", c), find(name, c)
            if not (chat and other):
                continue
            if c == 1:
                added = other.gateway.p50 - other.direct.p50
                base = chat.gateway.p50 - chat.direct.p50
                text = f"{name} added p50, c=1: {added:.2f} ms vs chat {base:.2f} ms"
                ok = added <= base * (1 + slack)
            else:
                ratio = other.gateway.rps / other.direct.rps if other.direct.rps else 0.0
                base_ratio = chat.gateway.rps / chat.direct.rps if chat.direct.rps else 0.0
                text = (
                    f"{name} c=50: {other.gateway.rps:,.0f} req/s, {100 * ratio:.1f}% of direct "
                    f"vs chat {100 * base_ratio:.1f}%"
                )
                ok = ratio >= base_ratio * (1 - slack)
            out.append(verdict(f"{text} (within {100 * slack:.0f}%)", ok))
    return out


def verdict(text: str, ok: bool) -> str:
    return f"  [{'met' if ok else 'MISSED'}] {text}"


# -- main ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=int, default=5, help="seconds per cell and side (default 5)")
    p.add_argument("--quick", action="store_true", help="1 s per cell, short warm-up: a smoke run")
    p.add_argument("--profile", action="store_true", help="py-spy the c=50 non-stream gateway cell")
    p.add_argument(
        "--profile-seconds", type=int, default=8, help="seconds per py-spy pass (default 8)"
    )
    p.add_argument(
        "--profile-cell",
        default="non-stream:50",
        metavar="MODE:C",
        help="the gateway cell --profile re-runs under py-spy (default non-stream:50)",
    )
    p.add_argument("--concurrency", default="1,10,50", help="comma-separated (default 1,10,50)")
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma-separated, of {', '.join(MODES)} (default all)",
    )
    p.add_argument("--chunks", type=int, default=20, help="content chunks per streamed answer")
    p.add_argument(
        "--data-parent",
        type=Path,
        default=None,
        help="where to make the gateway's temporary data dir (default: the system temp dir; "
        "e.g. /dev/shm to see what fsync costs)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECONDS",
        help="on a shared machine: before each cell wait up to this long for other processes "
        "to use less than 15%% of the CPUs (default 0: do not wait)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 1
        args.profile_seconds = min(args.profile_seconds, 3)
    args.duration = max(1, args.duration)
    args.levels = [int(x) for x in args.concurrency.split(",") if x.strip()]
    args.mode_list = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in args.mode_list:
        if m not in MODES:
            p.error(f"unknown mode {m!r}; use {', '.join(MODES)}")
    mode, _, conc = args.profile_cell.partition(":")
    if mode not in ("non-stream", "stream") or not conc.isdigit():
        p.error("--profile-cell: use MODE:C, e.g. non-stream:50 or stream:10")
    args.profile_stream, args.profile_c = mode == "stream", int(conc)
    return args


def wait_quiet(limit: float, threshold: float = 0.15) -> None:
    deadline = time.monotonic() + limit
    while True:
        load = sysstat.background_load(1.0)
        if load < threshold:
            return
        if time.monotonic() >= deadline:
            say(f"  (machine still {100 * load:.0f}% busy with other work; measuring anyway)")
            return


def say(line: str = "") -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (apt install wrk)")
    OUT.mkdir(parents=True, exist_ok=True)
    data = Path(tempfile.mkdtemp(prefix="lgbench-", dir=args.data_parent))
    fsync_s = sysstat.fsync_probe(data)
    idle_load = sysstat.background_load(1.0)
    say(
        f"localgate bench: {sysstat.NCPU} CPUs, {args.duration} s per cell, data dir {data} "
        f"(4 KiB write+fdatasync there: {fsync_s * 1e6:.0f} us)"
    )
    say(
        f"background load before starting: {100 * idle_load:.0f}% of all CPUs busy"
        + (" - other work on this machine will skew the numbers" if idle_load > 0.1 else "")
    )
    cells: list[Cell] = []
    report: dict[str, Any] = {
        "background_load": idle_load,
        "duration": args.duration,
        "cpus": sysstat.NCPU,
        "fsync_us": fsync_s * 1e6,
    }
    try:
        with servers(data, args.chunks) as srv:
            say(
                f"fake upstream :{srv.upstream_port} (pid {srv.upstream.pid}), "
                f"localgate :{srv.gateway_port} (pid {srv.gateway.pid}), key {srv.key[:7]}..., "
                f"wallet {WALLET} funded {FUNDS}"
            )
            bench = Bench(srv, args.duration, ttfb_seconds=float(args.duration))
            warm = 1 if args.quick else 2
            for name in args.mode_list:
                mode = MODES[name]
                bench.warm_up(mode, warm)
                for c in args.levels:
                    if args.wait_quiet:
                        wait_quiet(args.wait_quiet)
                    cell = bench.cell(mode, c)
                    cells.append(cell)
                    say(
                        f"  {name:10} c={c:<3} direct {cell.direct.rps:9,.0f} req/s p50 {cell.direct.p50:7.2f} ms"
                        f" | gateway {cell.gateway.rps:7,.0f} req/s p50 {cell.gateway.p50:7.2f} ms"
                        + (
                            f" | TTFB p50 {cell.ttfb_direct.p50:.2f} / {cell.ttfb_gateway.p50:.2f} ms"
                            if cell.ttfb_direct and cell.ttfb_gateway
                            else ""
                        )
                    )
            prof_lines: list[str] = []
            if args.profile:
                if args.wait_quiet:
                    wait_quiet(args.wait_quiet)
                prof_lines = run_profile(
                    bench, args.profile_seconds, args.profile_stream, args.profile_c
                )
            pid = srv.gateway.pid
        # The gateway has stopped (SIGINT: graceful); check the books.
        checks = integrity(srv, bench)
        verify = localgate(data, "ledger", "verify")
        verify_line = (verify.stdout.strip() or verify.stderr.strip()).splitlines()
        ledger_ok = verify.returncode == 0
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)

    lines = [""]
    lines.append(
        f"direct = wrk -> fake upstream; gw = wrk -> localgate -> fake upstream "
        f"(held, settled, receipted; SQLite synchronous=FULL). Latencies in ms; "
        f"{args.duration} s per cell; wrk -t1."
    )
    lines.append(
        f"TTFB = time to the first body byte (first SSE event), raw-socket asyncio client, measured "
        f"at c<= {TTFB_MAX_CONCURRENCY} only (n/m: not measured; above that the Python client "
        f"would be the bottleneck)."
    )
    lines.append("")
    lines += table(cells)
    lines += ["", "Where the gateway's time went during each gateway run (CPU as % of one core):"]
    lines += use_table(cells)
    lines += [
        "  gw main/writer/other: the gateway's event-loop thread, its SQLite writer thread, the "
        "rest (logging queue, ...);",
        "  main runq: time the event loop was runnable but had no CPU; machine: busy share of all "
        f"{sysstat.NCPU} CPUs; commits from SQLite's WAL counter; jobs = hold + settle per request.",
        "",
        "What bounds it:",
    ]
    lines += [f"  {bound(c, fsync_s * 1e6)}" for c in cells]
    lines += ["", "Targets (issue 3, 'Must hold'):"]
    lines += targets(cells)
    lines += ["", "Receipts and ledger:"]
    lines += [f"  {x}" for x in checks]
    lines.append(
        f"  ledger verify: {'clean' if ledger_ok else 'NOT CLEAN'}: {' '.join(verify_line)}"
    )
    for c in cells:
        for note in c.notes:
            lines.append(f"  note {c.mode} c={c.concurrency}: {note}")
    if prof_lines:
        lines += [
            "",
            f"Profile (py-spy, gateway pid {pid}, {args.profile_cell} gateway cell, re-run):",
        ]
        lines += prof_lines
    text = "\n".join(lines)
    say(text)
    (OUT / "table.txt").write_text(text + "\n")
    report["cells"] = [asdict(c) for c in cells]
    report["integrity"] = checks
    report["ledger_verify"] = {"ok": ledger_ok, "output": verify_line}
    (OUT / "results.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return 0 if ledger_ok and not any("MISMATCH" in x for x in checks) else 1


def integrity(srv: Servers, bench: Bench) -> list[str]:
    state = sysstat.db_state(srv.db)
    seen = bench.client_requests
    lo, hi = seen, seen + bench.client_in_flight_max
    ok = lo <= state.receipts <= hi
    statuses = ", ".join(f"{k} {v}" for k, v in sorted(state.by_status.items()))
    out = [
        f"receipts {state.receipts} for {seen} requests the clients saw complete "
        f"(wrk stops with up to c requests in flight: expected {lo}..{hi}) -> "
        + ("ok" if ok else "MISMATCH"),
        f"receipt statuses: {statuses}; open holds: {state.open_holds}"
        + (" -> ok" if state.open_holds == 0 else " -> MISMATCH"),
    ]
    never = state.by_status.get("interrupted", 0) + state.by_status.get("pending", 0)
    if never:
        out.append(
            f"{never} requests were never settled while the gateway ran (hold open, receipt "
            "pending; the graceful stop finished them as 'interrupted', uncharged) -> MISMATCH"
        )
    import sqlite3

    conn = sqlite3.connect(f"file:{srv.db}?mode=ro", uri=True)
    try:
        charged = conn.execute(
            "SELECT coalesce(sum(charge_micros), 0) FROM receipts WHERE wallet_id = ?", (WALLET,)
        ).fetchone()[0]
        bad = conn.execute(
            "SELECT count(*) FROM receipts WHERE status = 'succeeded' AND charge_micros <= 0"
        ).fetchone()[0]
    finally:
        conn.close()
    wallets = localgate(srv.data, "wallets", "--json")
    balance = next(
        w["balance_micros"] for w in json.loads(wallets.stdout)["wallets"] if w["id"] == WALLET
    )
    funded = int(FUNDS) * 1_000_000
    spent = funded - balance
    out.append(
        f"charges on receipts {charged} micro-CNY = funded - balance {spent}"
        + (" -> ok" if charged == spent else " -> MISMATCH")
        + (f"; {bad} succeeded receipts with no charge -> MISMATCH" if bad else "")
    )
    return out


def run_profile(bench: Bench, seconds: int, stream: bool, concurrency: int) -> list[str]:
    """Re-run one gateway cell under py-spy (GIL pass, then wall pass)."""
    import threading

    srv = bench.srv
    pid = srv.gateway.pid
    cpu_raw, wall_raw = OUT / "profile-gil.folded", OUT / "profile-wall.folded"
    result: dict[str, WrkResult] = {}
    load = threading.Thread(
        target=lambda: result.setdefault(
            "wrk", bench.gateway_wrk(client_body(stream), concurrency, 2 * seconds + 3)
        )
    )
    load.start()
    time.sleep(1)
    err = pyspy.record(pid, seconds, cpu_raw, gil=True)
    err2 = None if err else pyspy.record(pid, seconds, wall_raw, idle=True)
    load.join()
    sysstat.wait_settled(srv.db)
    lines = []
    if "wrk" in result:
        w = result["wrk"]
        lines.append(
            f"  load during profiling: {w.rps:,.0f} req/s, p50 {w.p50:.2f} ms "
            "(py-spy --nonblocking adds some overhead)"
        )
    if err or err2:
        lines.append(f"  {err or err2}")
        return lines
    cpu = pyspy.Folded.read(cpu_raw)
    wall = pyspy.Folded.read(wall_raw)
    body = pyspy.summarise_cpu(cpu, ROOT)
    writer_lines, _ = pyspy.summarise_writer_wall(wall, ROOT)
    main_wall = sum(n for (t, _), n in wall.stacks.items() if t == "MainThread")
    main_cpu = sum(n for (t, _), n in cpu.stacks.items() if t == "MainThread")
    text = [
        f"py-spy record --rate 250 --nonblocking: a --gil pass, then an --idle pass, {seconds} s each, gateway pid {pid}",
        f"main thread held the GIL in {main_cpu} samples of ~{main_wall} wall samples",
        "",
        *body,
        "",
        *writer_lines,
        "",
        f"folded stacks: {cpu_raw.name} (GIL holders), {wall_raw.name} (wall, with idle); open them in "
        "https://www.speedscope.app or flamegraph.pl",
    ]
    (OUT / "profile.txt").write_text("\n".join(text) + "\n")
    lines.append(f"  written: {OUT / 'profile.txt'}")
    lines.append("  top 15 functions by own time (share of GIL-holding samples, all threads):")
    for i, (fn, share) in enumerate(pyspy.top_own(cpu, 15), 1):
        lines.append(f"   {i:2d}. {share:5.1f}%  {fn}")
    lines += [f"  {x}" for x in writer_lines]
    return lines


if __name__ == "__main__":
    sys.exit(main())
