"""The binary's three numbers: size, time from start to first /health, idle RSS.

    python bench/binary.py                      # dist/localgate, 5 starts
    python bench/binary.py --runs 9 --breakdown # also what weighs most in the bundle
    python bench/binary.py --compare "python -m localgate"

Targets (reported, never asserted): size <= 40 MB, first /health <= 1.5 s,
idle RSS <= 80 MB.

Start time is measured from spawning the process to the first 200 from
/health, polled every 5 ms, on a new data dir (first run: the database is
created and migrated) and again on that same data dir (a restart); the median
of ``--runs`` starts is shown. A onefile binary unpacks itself into a temp dir
on every start, so that is inside the figure.

Idle RSS is read from /proc once the server has been idle for a second: of the
Python process, and of the onefile bootloader that waits for it (the total is
what the machine pays). It is measured right after start and again after one
chat completion, which loads the tokenizer (tiktoken's ranks are loaded on
first use).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_BINARY = REPO / "dist" / "localgate"
TARGET_MB, TARGET_HEALTH_S, TARGET_RSS_MB = 40.0, 1.5, 80.0
IDLE_SETTLE_S = 1.0


@dataclass
class Start:
    health_s: float
    rss_child_mb: float
    rss_total_mb: float


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def request(port: int, method: str, path: str, body: object = None, token: str = "") -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        headers = {"content-type": "application/json"} if body is not None else {}
        if token:
            headers["authorization"] = f"Bearer {token}"
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise OSError(f"{method} {path}: HTTP {resp.status}")
        return data
    finally:
        conn.close()


class Server:
    def __init__(self, command: list[str], data_dir: Path) -> None:
        self.command = command
        self.data_dir = data_dir
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALGATE_")}
        self.env["HOME"] = str(data_dir.parent)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Spawn `serve` on a port picked up front; seconds to the first /health 200."""
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        port = ["--port", str(self.port)]
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [*self.command, "serve", "--no-browser", "--data-dir", str(self.data_dir), *port],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while True:
            try:
                request(self.port, "GET", "/health")
                return time.perf_counter() - t0
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"serve exited with {self.proc.returncode}") from None
                if time.perf_counter() - t0 > 60:
                    raise SystemExit("no /health within 60 s") from None
                time.sleep(0.005)

    def rss(self) -> tuple[float, float]:
        """(the Python process, everything) in MB; a onefile binary is two processes."""
        pids = [self.proc.pid, *children(self.proc.pid)]
        sizes = [rss_mb(pid) for pid in pids]
        python = sizes[-1]  # the bootloader's child, or the process itself
        return python, sum(sizes)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [*self.command, "--data-dir", str(self.data_dir), *args],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout


def one_start(command: list[str], data_dir: Path) -> Start:
    server = Server(command, data_dir)
    try:
        took = server.start()
        time.sleep(IDLE_SETTLE_S)
        child, total = server.rss()
    finally:
        server.stop()
    return Start(took, child, total)


def after_first_chat(command: list[str], data_dir: Path) -> tuple[float, float]:
    server = Server(command, data_dir)
    key = json.loads(server.cli("keys", "create", "--label", "bench", "--json"))["key"]
    server.cli("adjust", "--wallet", "routed", "--amount", "10", "--reason", "bench")
    ask = {"model": "localgate-demo", "messages": [{"role": "user", "content": "hello"}]}
    try:
        server.start()
        request(server.port, "POST", "/v1/chat/completions", ask, token=key)
        time.sleep(IDLE_SETTLE_S)
        return server.rss()
    finally:
        server.stop()


def measure(command: list[str], runs: int) -> dict[str, object]:
    fresh, again = [], []
    with tempfile.TemporaryDirectory(prefix="localgate-bench-") as tmp:
        for i in range(runs):
            data_dir = Path(tmp) / f"data{i}"
            fresh.append(one_start(command, data_dir))
            again.append(one_start(command, data_dir))
        chat_child, chat_total = after_first_chat(command, Path(tmp) / "chat")
    return {
        "health_first_run_s": statistics.median(s.health_s for s in fresh),
        "health_restart_s": statistics.median(s.health_s for s in again),
        "rss_child_mb": statistics.median(s.rss_child_mb for s in fresh),
        "rss_total_mb": statistics.median(s.rss_total_mb for s in fresh),
        "rss_after_chat_child_mb": chat_child,
        "rss_after_chat_total_mb": chat_total,
    }


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "MISSED"


def report(label: str, size: int | None, m: dict[str, object], runs: int) -> None:
    print(f"== {label}")
    if size is not None:
        mb = size / 1_000_000
        print(
            f"  binary size             {mb:6.1f} MB   target <= {TARGET_MB:.0f} MB   {verdict(mb, TARGET_MB)}"
        )
    h1, h2 = float(m["health_first_run_s"]), float(m["health_restart_s"])  # type: ignore[arg-type]
    print(
        f"  start -> first /health  {h1:6.2f} s    target <= {TARGET_HEALTH_S} s   "
        f"{verdict(h1, TARGET_HEALTH_S)}   (new data dir; restart: {h2:.2f} s; median of {runs})"
    )
    child, total = float(m["rss_child_mb"]), float(m["rss_total_mb"])  # type: ignore[arg-type]
    print(
        f"  idle RSS                {total:6.1f} MB   target <= {TARGET_RSS_MB:.0f} MB   "
        f"{verdict(total, TARGET_RSS_MB)}   (python {child:.1f} MB + bootloader {total - child:.1f} MB)"
    )
    chat = float(m["rss_after_chat_total_mb"])  # type: ignore[arg-type]
    print(f"  idle RSS after a chat   {chat:6.1f} MB   (the tokenizer is loaded on first use)")
    load = os.getloadavg()[0]
    print(f"  (load average {load:.1f} on {os.cpu_count()} cores: start times grow with it)")


def breakdown(binary: Path, top: int = 15) -> None:
    """What weighs most in the binary (compressed bytes), from PyInstaller's archive."""
    from PyInstaller.archive.readers import CArchiveReader

    archive = CArchiveReader(str(binary))
    sizes: collections.Counter[str] = collections.Counter()
    pyz_name = ""
    for name, (_offset, csize, _usize, _flag, kind) in archive.toc.items():
        if kind == "z":
            pyz_name = name
            continue
        sizes[name.split("/")[0]] += csize
    if pyz_name:
        pyz = archive.open_embedded_archive(pyz_name)
        for name, (_kind, _offset, length) in pyz.toc.items():
            sizes[f"{name.split('.')[0]} (py)"] += length
    total = binary.stat().st_size
    print(f"== what weighs most in {binary.name} ({total / 1e6:.1f} MB, compressed sizes)")
    for name, size in sizes.most_common(top):
        print(f"  {size / 1e6:6.2f} MB  {size / total:5.1%}  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("binary", nargs="?", default=str(DEFAULT_BINARY))
    parser.add_argument("--runs", type=int, default=5, help="starts to take the median of")
    parser.add_argument("--breakdown", action="store_true", help="show the bundle's contents")
    parser.add_argument("--compare", metavar="CMD", help='also measure e.g. "python -m localgate"')
    args = parser.parse_args()
    binary = Path(args.binary)
    if not binary.is_file():
        sys.exit(f"no binary at {binary}: build it with `python build/binary.py`")
    report(str(binary), binary.stat().st_size, measure([str(binary)], args.runs), args.runs)
    if args.compare:
        report(args.compare, None, measure(shlex.split(args.compare), args.runs), args.runs)
    if args.breakdown:
        breakdown(binary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
