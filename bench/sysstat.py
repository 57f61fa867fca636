"""What the machine and the gateway did during one cell: CPU per thread, commits, receipts.

Everything is read from outside the gateway process (``/proc`` and the
database files), so measuring costs the gateway nothing:

- CPU time per thread from ``/proc/<pid>/task/<tid>/schedstat`` (nanoseconds
  on a CPU, and nanoseconds spent runnable but waiting for one);
- whole-machine busy time from ``/proc/stat``;
- the number of SQLite commits from the WAL index (``<db>-shm``): its header
  holds a counter SQLite increments on every write transaction (``iChange``,
  a u32 at offset 8, native byte order). It survives checkpoints, and reading
  it takes no lock. It is an SQLite internal, so it is reported as
  "commits (WAL counter)" and left out if the file looks different;
- receipts and open holds with a read-only connection.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


@dataclass
class ThreadCPU:
    run_ns: int
    wait_ns: int


@dataclass
class Snapshot:
    at: float
    threads: dict[int, ThreadCPU] = field(default_factory=dict)  # gateway, by tid
    others: dict[str, float] = field(default_factory=dict)  # other pids: CPU seconds
    sys_busy: float = 0.0  # machine: busy seconds over all CPUs
    sys_total: float = 0.0


def _thread_cpu(pid: int, tid: int) -> ThreadCPU | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
            run, wait, _slices = fh.read().split()
        return ThreadCPU(int(run), int(wait))
    except (OSError, ValueError):
        pass
    try:  # no schedstat: utime + stime in clock ticks
        with open(f"/proc/{pid}/task/{tid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        ticks = int(fields[11]) + int(fields[12])
        return ThreadCPU(ticks * 1_000_000_000 // CLK_TCK, 0)
    except (OSError, ValueError, IndexError):
        return None


def process_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, ValueError, IndexError):
        return 0.0


def _machine() -> tuple[float, float]:
    with open("/proc/stat") as fh:
        parts = [int(x) for x in fh.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)  # idle + iowait
    total = sum(parts[:8])  # guest time is already counted in user
    return (total - idle) / CLK_TCK, total / CLK_TCK


def background_load(seconds: float = 1.0) -> float:
    """Busy share of all CPUs over ``seconds`` (before the benchmark starts anything)."""
    busy0, total0 = _machine()
    time.sleep(seconds)
    busy1, total1 = _machine()
    return (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0


def snapshot(gateway_pid: int, others: dict[str, int]) -> Snapshot:
    snap = Snapshot(time.perf_counter())
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{gateway_pid}/task")]
    except OSError:
        tids = []
    for tid in tids:
        cpu = _thread_cpu(gateway_pid, tid)
        if cpu is not None:
            snap.threads[tid] = cpu
    for name, pid in others.items():
        snap.others[name] = process_cpu_seconds(pid)
    snap.sys_busy, snap.sys_total = _machine()
    return snap


@dataclass
class CPUUse:
    wall: float
    threads: dict[int, float]  # tid -> CPU seconds in the window
    waits: dict[int, float]  # tid -> seconds runnable but waiting for a CPU
    others: dict[str, float]
    sys_busy: float  # busy CPU-seconds, all CPUs

    @property
    def gateway(self) -> float:
        return sum(self.threads.values())

    def util(self, seconds: float) -> float:
        """CPU seconds as a fraction of one core over the window."""
        return seconds / self.wall if self.wall > 0 else 0.0

    @property
    def machine_util(self) -> float:
        """Busy fraction of all the machine's CPUs."""
        return self.sys_busy / (self.wall * NCPU) if self.wall > 0 else 0.0


def diff(before: Snapshot, after: Snapshot) -> CPUUse:
    threads, waits = {}, {}
    for tid, end in after.threads.items():
        start = before.threads.get(tid, ThreadCPU(0, 0))
        threads[tid] = (end.run_ns - start.run_ns) / 1e9
        waits[tid] = (end.wait_ns - start.wait_ns) / 1e9
    others = {k: after.others.get(k, 0.0) - before.others.get(k, 0.0) for k in after.others}
    return CPUUse(
        wall=after.at - before.at,
        threads=threads,
        waits=waits,
        others=others,
        sys_busy=after.sys_busy - before.sys_busy,
    )


# -- the database -------------------------------------------------------------


def wal_commits(db_path: Path) -> int | None:
    """SQLite's write-transaction counter from the WAL index header, or None."""
    try:
        with open(str(db_path) + "-shm", "rb") as fh:
            head = fh.read(96)
    except OSError:
        return None
    if len(head) < 96:
        return None
    # Two copies of the 48-byte header; iVersion (3007000) first, iChange at +8.
    version, _unused, change = struct.unpack_from("=III", head, 0)
    if version != 3007000:
        return None
    return change


@dataclass
class DBState:
    receipts: int
    by_status: dict[str, int]
    open_holds: int
    commits: int | None


def db_state(db_path: Path) -> DBState:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT status, count(*) FROM receipts GROUP BY status").fetchall()
        holds = conn.execute("SELECT count(*) FROM holds WHERE status = 'open'").fetchone()[0]
    finally:
        conn.close()
    by_status = {status: n for status, n in rows}
    return DBState(sum(by_status.values()), by_status, holds, wal_commits(db_path))


def wait_settled(db_path: Path, timeout: float = 10.0, quiet: float = 0.5) -> DBState:
    """Wait until the gateway has finished what it was doing: no hold open, or
    (if some stay open: requests it never settled) nothing moving for ``quiet`` s."""
    deadline = time.monotonic() + timeout
    last = db_state(db_path)
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = db_state(db_path)
        if (
            now.open_holds == 0
            and now.receipts == last.receipts
            and now.by_status == last.by_status
        ):
            return now
        if now.receipts != last.receipts or now.by_status != last.by_status:
            still_since = time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            return now
        last = now
    return last


def fsync_probe(directory: Path, rounds: int = 200) -> float:
    """Seconds per 4 KiB append + fdatasync on ``directory``'s filesystem."""
    path = directory / ".fsync-probe"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * 4096
        started = time.perf_counter()
        for _ in range(rounds):
            os.write(fd, block)
            os.fdatasync(fd)
        return (time.perf_counter() - started) / rounds
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
