"""py-spy against the running gateway, and a text summary of what it saw.

Two passes over the same load:

- **gil**: ``py-spy record --format raw --gil``: only the thread holding the
  GIL at each sample. The gateway is one process whose event loop and SQLite
  writer thread share the GIL, and under load it is GIL-bound, so this is the
  lens that matters: "own time" of a frame is its share of GIL-holding time,
  including C code it ran without releasing the GIL (the ``Runner.run`` frame
  owns uvloop's C work: sockets, callbacks, parsing; SQLite statements and
  fsync release the GIL, so they only show through the Python around them).
- **wall**: the same with ``--idle`` and without ``--gil``: every thread at
  every sample, so the writer thread's time splits into waiting for jobs,
  running them (including waiting for the GIL between statements) and
  committing (the fsync happens inside COMMIT).

py-spy reads the target's memory with ptrace: it needs root or
CAP_SYS_PTRACE (or ``kernel.yama.ptrace_scope = 0`` for a child of the same
user). Failures are reported, not raised.
"""

from __future__ import annotations

import collections
import linecache
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Leaf-frame file prefixes -> the area a reader cares about.
AREAS = (
    ("localgate/store/writer.py", "writer loop (BEGIN/SAVEPOINT/COMMIT incl. fsync)"),
    ("localgate/store/", "SQLite statements (localgate.store)"),
    ("localgate/services/charging.py", "charging (hold/settle logic)"),
    ("localgate/tokens.py", "token counting (tiktoken)"),
    ("tiktoken/", "token counting (tiktoken)"),
    ("localgate/providers/", "providers (upstream call, SSE parsing)"),
    ("localgate/services/", "gateway logic (proxy, relay)"),
    ("localgate/core/", "gateway logic (core: keys, routing, pricing)"),
    ("localgate/web/", "web layer (/v1 ASGI app, middleware)"),
    ("localgate/", "localgate (other)"),
    ("httpx/", "httpx client"),
    ("httpcore/", "httpcore (connection pool, HTTP/1.1)"),
    ("h11/", "h11 (HTTP/1.1 parsing for httpx)"),
    ("anyio/", "anyio (httpcore's socket layer)"),
    ("litestar/", "Litestar (routing, middleware)"),
    ("uvicorn/", "uvicorn (HTTP server)"),
    ("logging/", "logging"),
    ("json/", "json"),
    ("asyncio/runners.py", "event loop itself (uvloop C: I/O, callbacks)"),
    ("asyncio/", "asyncio (Python parts)"),
    ("concurrent/futures", "futures (writer hand-off)"),
    ("threading.py", "threading (locks, conditions)"),
    ("queue.py", "queue"),
    ("sqlite3/", "sqlite3 module"),
    ("decimal", "decimal"),
)


@dataclass
class Folded:
    """Folded stacks: (thread, frames root-first) -> samples."""

    stacks: collections.Counter[tuple[str, tuple[str, ...]]] = field(
        default_factory=collections.Counter
    )

    @classmethod
    def read(cls, path: Path) -> Folded:
        out = cls()
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            frames = stack.split(";")
            thread = frames[0] if frames[0].startswith("thread ") else "?"
            body = frames[1:] if frames[0].startswith("thread ") else frames
            out.stacks[(thread_name(thread), tuple(body))] += int(count)
        return out

    @property
    def total(self) -> int:
        return sum(self.stacks.values())

    def by_thread(self) -> collections.Counter[str]:
        out: collections.Counter[str] = collections.Counter()
        for (thread, _), n in self.stacks.items():
            out[thread] += n
        return out


def thread_name(label: str) -> str:
    # "thread (12345): MainThread" -> "MainThread"
    return label.split("): ", 1)[1] if "): " in label else label


def split_frame(frame: str) -> tuple[str, str, int | None]:
    m = FRAME.match(frame)
    if not m:
        return frame, "", None
    line = m.group("line")
    return m.group("func"), m.group("file"), int(line) if line else None


def function_of(frame: str) -> str:
    func, file, _ = split_frame(frame)
    return f"{func} ({file})" if file else func


def area_of(frame: str) -> str:
    _, file, _ = split_frame(frame)
    for prefix, name in AREAS:
        if file.startswith(prefix) or f"/{prefix}" in file:
            return name
    return "other: " + (file.split("/")[0] if file else frame)


def source_line(root: Path, frame: str) -> str:
    _, file, line = split_frame(frame)
    if not line:
        return ""
    for candidate in (root / file, Path(file)):
        if candidate.exists():
            return linecache.getline(str(candidate), line).strip()
    return ""


def record(
    pid: int, seconds: int, out: Path, *, idle: bool = False, gil: bool = False, rate: int = 250
) -> str | None:
    """Run py-spy record; returns an error message, or None on success."""
    exe = shutil.which("py-spy")
    if exe is None:
        return "py-spy is not installed (pip install py-spy)"
    cmd = [
        exe,
        "record",
        "--pid",
        str(pid),
        "--duration",
        str(seconds),
        "--rate",
        str(rate),
        "--format",
        "raw",
        "--threads",
        "--nonblocking",  # do not pause the gateway at every sample
        "-o",
        str(out),
    ]
    if idle:
        cmd.append("--idle")
    if gil:
        cmd.append("--gil")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    if proc.returncode != 0 or not out.exists():
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        hint = ""
        if any("ermission" in line or "ptrace" in line for line in msg):
            hint = (
                " (py-spy needs ptrace: run as root, or with CAP_SYS_PTRACE, or set "
                "kernel.yama.ptrace_scope=0; in Docker add --cap-add SYS_PTRACE)"
            )
        return f"py-spy failed: {' / '.join(msg[-3:])}{hint}"
    return None


def thread_names(pid: int) -> dict[int, str]:
    """OS thread id -> Python thread name, from one ``py-spy dump``."""
    import json

    exe = shutil.which("py-spy")
    if exe is None:
        return {}
    try:
        proc = subprocess.run(
            [exe, "dump", "--pid", str(pid), "--json"], capture_output=True, text=True, timeout=30
        )
        data = json.loads(proc.stdout)
    except (subprocess.SubprocessError, ValueError, OSError):
        return {}
    return {t["os_thread_id"]: t["thread_name"] for t in data if t.get("os_thread_id")}


def _pct(n: int, total: int) -> str:
    return f"{100 * n / total:5.1f}%" if total else "    -"


def summarise_cpu(folded: Folded, root: Path, top: int = 30) -> list[str]:
    total = folded.total
    lines = [
        f"samples: {total} (GIL-holding samples: 100% = all the time some thread held the GIL; "
        "true CPU per thread is in the bench's 'where the time went' table)"
    ]
    lines.append(
        "by thread: "
        + ", ".join(f"{t} {_pct(n, total)}" for t, n in folded.by_thread().most_common())
    )
    own: collections.Counter[str] = collections.Counter()
    own_line: collections.Counter[str] = collections.Counter()
    areas: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for (_thread, frames), n in folded.stacks.items():
        if not frames:
            continue
        leaf = frames[-1]
        own[function_of(leaf)] += n
        own_line[leaf] += n
        areas[area_of(leaf)] += n
        for fn in {function_of(f) for f in frames}:
            inclusive[fn] += n
    lines += ["", f"top {top} functions by own time:"]
    for i, (fn, n) in enumerate(own.most_common(top), 1):
        lines.append(f"{i:3d}. {_pct(n, total)}  {fn}")
    lines += ["", f"top {top} lines by own time (what the line runs is where the time went):"]
    for i, (frame, n) in enumerate(own_line.most_common(top), 1):
        src = source_line(root, frame)
        lines.append(
            f"{i:3d}. {_pct(n, total)}  {frame}" + (f"\n              {src}" if src else "")
        )
    for name in ("MainThread", "localgate-writer"):
        mine: collections.Counter[str] = collections.Counter()
        for (thread, frames), n in folded.stacks.items():
            if thread == name and frames:
                mine[function_of(frames[-1])] += n
        if not mine:
            continue
        share = sum(mine.values())
        lines += [
            "",
            f"{name}: top 15 functions by own time ({_pct(share, total)} of all samples):",
        ]
        for i, (fn, n) in enumerate(mine.most_common(15), 1):
            lines.append(f"{i:3d}. {_pct(n, total)}  {fn}")
    lines += ["", "own time by area (leaf frame's package):"]
    for name, n in areas.most_common():
        lines.append(f"     {_pct(n, total)}  {name}")
    lines += ["", f"top {top} functions by inclusive time:"]
    for i, (fn, n) in enumerate(inclusive.most_common(top), 1):
        lines.append(f"{i:3d}. {_pct(n, total)}  {fn}")
    return lines


def top_own(folded: Folded, n: int) -> list[tuple[str, float]]:
    total = folded.total or 1
    own: collections.Counter[str] = collections.Counter()
    for (_thread, frames), count in folded.stacks.items():
        if frames:
            own[function_of(frames[-1])] += count
    return [(fn, 100 * c / total) for fn, c in own.most_common(n)]


def summarise_writer_wall(folded: Folded, root: Path) -> tuple[list[str], dict[str, float]]:
    """Split the writer thread's wall time: waiting for jobs / running them / COMMIT."""
    kinds: collections.Counter[str] = collections.Counter()
    for (thread, frames), n in folded.stacks.items():
        if thread != "localgate-writer" or not frames:
            continue
        # The deepest writer.py frame says which step of the loop the thread is in.
        mine = [f for f in frames if "localgate/store/writer.py" in f]
        src = source_line(root, mine[-1]) if mine else ""
        if "_queue.get" in src:
            kinds["waiting for jobs"] += n
        elif '"COMMIT"' in src:
            kinds["COMMIT (WAL write + fsync)"] += n
        elif "BEGIN" in src:
            kinds["BEGIN IMMEDIATE"] += n
        elif "SAVEPOINT" in src or "RELEASE" in src:
            kinds["SAVEPOINT / RELEASE"] += n
        elif "set_result" in src or "set_exception" in src or "set_running" in src:
            kinds["handing results back (futures)"] += n
        elif "fn(conn" in src:
            kinds["running jobs (hold/settle/receipt SQL + Python)"] += n
        else:
            kinds["other: " + (src or (mine[-1] if mine else frames[-1]))[:60]] += n
    total = sum(kinds.values())
    lines = [f"writer thread wall time ({total} samples incl. idle):"]
    for name, n in kinds.most_common():
        lines.append(f"     {_pct(n, total)}  {name}")
    shares = {k: v / total for k, v in kinds.items()} if total else {}
    return lines, shares
