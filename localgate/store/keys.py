"""API keys in SQLite: policies, hashes, spend per budget window.

Key changes bump ``meta.keys_generation``, and once committed they grow the
change marker beside the database (``<db>-keys``), so every process's key
cache — the server's, while the CLI pauses a key — notices on its next request
with one ``stat`` rather than a query (see ``services.keys``).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from localgate.core.keys import Budget, KeyPolicy, Spend
from localgate.errors import NotFound
from localgate.store.db import utcnow


def policy_from_row(row: sqlite3.Row) -> KeyPolicy:
    budgets = {code: Budget(**b) for code, b in json.loads(row["budgets"]).items()}
    return KeyPolicy(
        id=row["id"],
        label=row["label"],
        project=row["project"],
        models=tuple(_readable(m) for m in json.loads(row["models"])),
        settlement=row["settlement"],
        budgets=budgets,
        rpm=row["rpm"],
        expires_at=row["expires_at"],
        paused=bool(row["paused"]),
        revoked=bool(row["revoked"]),
    )


def _readable(text: str) -> str:
    """A stored model pattern that can be shown: lone surrogates, which keys created
    before the API refused them may hold, become U+FFFD instead of failing every list."""
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def _budgets_json(policy: KeyPolicy) -> str:
    return json.dumps(
        {
            code: {"day": b.day, "month": b.month, "total": b.total}
            for code, b in policy.budgets.items()
        },
        sort_keys=True,
    )


def insert_key(conn: sqlite3.Connection, policy: KeyPolicy, key_hash: str, prefix: str) -> None:
    conn.execute(
        "INSERT INTO api_keys (id, key_hash, prefix, label, project, models, settlement, budgets, "
        "rpm, expires_at, paused, revoked, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            policy.id,
            key_hash,
            prefix,
            policy.label,
            policy.project,
            json.dumps(list(policy.models)),
            policy.settlement,
            _budgets_json(policy),
            policy.rpm,
            policy.expires_at,
            int(policy.paused),
            int(policy.revoked),
            utcnow(),
        ),
    )
    bump_generation(conn)


def update_key(conn: sqlite3.Connection, policy: KeyPolicy) -> None:
    """Store a changed policy (label, scope, budgets, flags) under its id."""
    cur = conn.execute(
        "UPDATE api_keys SET label = ?, project = ?, models = ?, settlement = ?, budgets = ?, "
        "rpm = ?, expires_at = ?, paused = ?, revoked = ?, "
        "revoked_at = CASE WHEN ? AND revoked_at IS NULL THEN ? ELSE revoked_at END WHERE id = ?",
        (
            policy.label,
            policy.project,
            json.dumps(list(policy.models)),
            policy.settlement,
            _budgets_json(policy),
            policy.rpm,
            policy.expires_at,
            int(policy.paused),
            int(policy.revoked),
            int(policy.revoked),
            utcnow(),
            policy.id,
        ),
    )
    if cur.rowcount == 0:
        raise NotFound(f"no API key {policy.id!r}", code="unknown_key")
    bump_generation(conn)


def pause_all(conn: sqlite3.Connection) -> int:
    """The kill switch: pause every live key at once."""
    cur = conn.execute("UPDATE api_keys SET paused = 1 WHERE paused = 0 AND revoked = 0")
    bump_generation(conn)
    return cur.rowcount


def bump_generation(conn: sqlite3.Connection) -> None:
    conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'keys_generation'")


def keys_generation(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE name = 'keys_generation'").fetchone()[0])


def change_marker(db_path: Path) -> str:
    """The file beside the database whose growth says "a key changed"."""
    return str(db_path.with_name(db_path.name + "-keys"))


def announce_change(marker: str) -> None:
    """Once a key change has committed: one byte more in the marker.

    Appending makes the size grow with every change, so a reader comparing
    ``change_mark`` values cannot miss one, however coarse the file system's
    clock (a byte per edit by a person stays small for ever).
    """
    with open(marker, "ab") as f:
        f.write(b"\n")


def change_mark(marker: str) -> tuple[int, int, int] | None:
    """What the marker looks like now; a different value means keys changed since."""
    try:
        st = os.stat(marker)
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def find_by_hash(conn: sqlite3.Connection, key_hash: str) -> KeyPolicy | None:
    row = conn.execute("SELECT * FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
    return None if row is None else policy_from_row(row)


def get_key_row(conn: sqlite3.Connection, key_id: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM api_keys WHERE id = ?", (key_id,)).fetchone()
    if row is None:
        raise NotFound(f"no API key {key_id!r}; see `localgate keys list`", code="unknown_key")
    return row


def list_key_rows(conn: sqlite3.Connection, *, include_revoked: bool = True) -> list[sqlite3.Row]:
    sql = "SELECT * FROM api_keys"
    if not include_revoked:
        sql += " WHERE revoked = 0"
    return conn.execute(sql + " ORDER BY created_at DESC, id").fetchall()


def periods(now: float) -> tuple[str, str, str]:
    """The spend rows a charge at ``now`` adds to: its UTC day, its UTC month, the total."""
    dt = datetime.fromtimestamp(now, tz=UTC)
    return f"day:{dt:%Y-%m-%d}", f"month:{dt:%Y-%m}", "total"


def spend_of(
    conn: sqlite3.Connection, key_id: str, currency: str, now: float, *, include_holds: bool = True
) -> Spend:
    """What the key has spent in ``currency`` per window; open holds count as spent."""
    day, month, total = periods(now)
    rows = dict(
        conn.execute(
            "SELECT period, micros FROM key_spend WHERE key_id = ? AND currency = ? "
            "AND period IN (?, ?, ?)",
            (key_id, currency, day, month, total),
        ).fetchall()
    )
    held = 0
    if include_holds:
        held = conn.execute(
            "SELECT COALESCE(SUM(amount_micros), 0) FROM holds WHERE key_id = ? AND currency = ? "
            "AND status = 'open'",
            (key_id, currency),
        ).fetchone()[0]
    return Spend(
        day=rows.get(day, 0) + held,
        month=rows.get(month, 0) + held,
        total=rows.get(total, 0) + held,
    )


def add_spend(
    conn: sqlite3.Connection, key_id: str, currency: str, micros: int, now: float
) -> None:
    if micros == 0:
        return
    conn.executemany(
        "INSERT INTO key_spend (key_id, currency, period, micros) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (key_id, currency, period) DO UPDATE SET micros = micros + excluded.micros",
        [(key_id, currency, period, micros) for period in periods(now)],
    )


def touch(conn: sqlite3.Connection, key_id: str) -> None:
    conn.execute("UPDATE api_keys SET last_used_at = ? WHERE id = ?", (utcnow(), key_id))


def key_view(row: sqlite3.Row, spend: dict[str, Any] | None = None) -> dict[str, Any]:
    """A key as the API and CLI show it: never the hash, never the secret."""
    policy = policy_from_row(row)
    out = policy.as_dict()
    out.update(
        {
            "prefix": row["prefix"],
            "created_at": row["created_at"],
            "last_used_at": row["last_used_at"],
            "revoked_at": row["revoked_at"],
            "status": "revoked" if policy.revoked else "paused" if policy.paused else "active",
        }
    )
    if spend is not None:
        out["spend"] = spend
    return out
