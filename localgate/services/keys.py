"""API key use cases: create (shown once), list, edit, pause/resume/revoke, rotate,
the kill switch (pause every key), authenticate.

Authentication is on every request's path, so policies are cached by key hash
and a hit runs no SQL. The cache holds for one ``meta.keys_generation``, which
every key change moves; it is checked again, with one query, when

- this service changed a key: its cache is dropped the moment the change
  commits, before the caller hears back;
- the change marker beside the database grew (``store.keys.change_mark``, a
  ``stat``): every KeyService appends to it after its changes commit, so a
  ``localgate keys revoke`` run while the server is up counts from the very
  next request;
- ``RECHECK_SECONDS`` have passed: a change that left no mark (an edit by hand
  in SQLite, a process killed between its commit and its mark) is seen then.

Misses — unknown keys, a key's first use since a change — read SQLite.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, TypeVar

from localgate.core import keys as core
from localgate.core.keys import KeyPolicy
from localgate.errors import BadRequest, Unauthenticated
from localgate.money import decimal_str
from localgate.store import Store
from localgate.store import keys as key_store

MAX_LABEL = 200
MAX_RPM = 1_000_000  # beyond any real limit; keeps the stored number an ordinary int
RECHECK_SECONDS = 1.0  # the longest a key change that left no mark goes unseen

T = TypeVar("T")
log = logging.getLogger(__name__)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def parse_key_request(data: dict[str, Any], key_id: str) -> KeyPolicy:
    """A KeyPolicy from API/CLI input; BadRequest names the field."""
    label = data.get("label")
    if not isinstance(label, str) or not label.strip() or len(label) > MAX_LABEL:
        raise BadRequest(f"'label' is required: a name of 1-{MAX_LABEL} characters", param="label")
    project = data.get("project")
    if project is not None and (not isinstance(project, str) or len(project) > MAX_LABEL):
        raise BadRequest("'project' must be a short string", param="project")
    models = data.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise BadRequest(
            "'models' must be a list of model ids or patterns like \"gpt-4o*\"", param="models"
        )
    for name, text in (("label", label), ("project", project)):
        _check_text(name, text)
    for i, model in enumerate(models):
        _check_text(f"models[{i}]", model)
    settlement = data.get("settlement") or "any"
    if settlement not in core.SETTLEMENTS:
        raise BadRequest("'settlement' must be official, routed or any", param="settlement")
    rpm = data.get("rpm")
    if rpm is not None and (
        isinstance(rpm, bool) or not isinstance(rpm, int) or not 1 <= rpm <= MAX_RPM
    ):
        raise BadRequest(
            f"'rpm' must be a whole number of requests per minute from 1 to {MAX_RPM}",
            param="rpm",
        )
    budgets_raw = data.get("budgets")
    if budgets_raw is not None and not isinstance(budgets_raw, dict):
        raise BadRequest(
            '\'budgets\' must be an object like {"USD": {"day": "5"}}', param="budgets"
        )
    try:
        budgets = core.parse_budgets(budgets_raw)
    except ValueError as exc:
        raise BadRequest(str(exc), param="budgets") from None
    return KeyPolicy(
        id=key_id,
        label=label.strip(),
        project=project or None,
        models=tuple(models),
        settlement=settlement,
        budgets=budgets,
        rpm=rpm,
        expires_at=_expiry(data.get("expires_at")),
    )


# Expiries a key may carry: 2000-01-01 .. the end of 9999 (UTC). A past one is
# stored as given; anything outside is a typo or an attack, not a time.
EARLIEST_EXPIRY = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
LATEST_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def _expiry(value: Any) -> float | None:
    """``expires_at`` as epoch seconds: finite seconds or an ISO 8601 time, in range."""
    if value is None or value == "":
        return None
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Compared before float(): an int past a float's range cannot be converted.
        if EARLIEST_EXPIRY <= value <= LATEST_EXPIRY:  # False for NaN and the infinities
            seconds = float(value)
    elif isinstance(value, str) and len(value) <= 64:
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
            stamp = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
        except (ValueError, OverflowError):
            pass
        else:
            if EARLIEST_EXPIRY <= stamp <= LATEST_EXPIRY:
                seconds = stamp
    if seconds is None:
        raise BadRequest(
            "'expires_at' must be an ISO 8601 time or epoch seconds between 2000-01-01 and "
            "9999-12-31 (UTC)",
            param="expires_at",
        )
    return seconds


def _check_text(name: str, value: str | None) -> None:
    """Refuse text that cannot be stored as UTF-8 (lone surrogates, e.g. from argv)."""
    if value is not None and not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            raise BadRequest(
                f"'{name}' contains a lone UTF-16 surrogate, which is not text", param=name
            ) from None


class KeyService:
    def __init__(self, store: Store, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self._clock = clock
        self._marker = key_store.change_marker(store.path)
        # authenticate runs on the event loop, the *_sync writers on CLI threads,
        # write callbacks on the writer thread: the cache changes under this lock.
        self._lock = threading.Lock()
        self._cache: dict[str, KeyPolicy] = {}
        self._generation = -1
        self._mark: tuple[int, int, int] | None = None
        self._trusted_until = -math.inf

    def authenticate(self, token: str | None) -> KeyPolicy:
        """The policy of a presented key, or Unauthenticated. Revocation, expiry and
        pause are checked by the caller (a known key's rejection gets a receipt)."""
        if not token:
            raise Unauthenticated(
                "missing API key: send 'Authorization: Bearer lg_...' (create one with "
                "`localgate keys create` or on the Keys page)"
            )
        digest = core.hash_key(token)
        with self._lock:
            self._revalidate()
            policy = self._cache.get(digest)
            if policy is None:
                policy = key_store.find_by_hash(self.store.read(), digest)
                if policy is None:
                    raise Unauthenticated("invalid API key: it is unknown to this localgate")
                self._cache[digest] = policy
        return policy

    def _revalidate(self) -> None:
        """Drop the cache if keys changed since it was filled; a query only when the
        marker moved, this service changed a key, or the cache is RECHECK_SECONDS old."""
        # The mark is taken before the query: a change landing in between moves
        # the marker past what is stored here, so the next call looks again.
        mark = key_store.change_mark(self._marker)
        now = self._clock()
        if mark == self._mark and now < self._trusted_until:
            return
        generation = key_store.keys_generation(self.store.read())
        if generation != self._generation:
            self._cache.clear()
            self._generation = generation
        self._mark = mark
        self._trusted_until = now + RECHECK_SECONDS

    def _changed(self) -> None:
        """A key change of this service has committed: forget, and tell other processes."""
        with self._lock:
            self._cache.clear()
            self._trusted_until = -math.inf
        try:
            key_store.announce_change(self._marker)
        except OSError as exc:
            log.warning(
                "could not mark a key change in %s (%s): other localgate processes see it "
                "within %g s",
                self._marker,
                exc,
                RECHECK_SECONDS,
            )

    def _after_write(self, future: Future[Any]) -> None:
        if not future.cancelled() and future.exception() is None:
            self._changed()

    async def _write(self, fn: Callable[..., T], *args: Any) -> T:
        # The callback runs on the writer thread right after the commit, before
        # this coroutine resumes, and also when the awaiting request is cancelled
        # after the job started: a committed change is never left unannounced.
        future = self.store.writer.submit(fn, *args)
        future.add_done_callback(self._after_write)
        return await asyncio.wrap_future(future)

    def _write_sync(self, fn: Callable[..., T], *args: Any) -> T:
        result = self.store.write_sync(fn, *args)
        self._changed()
        return result

    def _create(self, conn: Any, policy: KeyPolicy) -> dict[str, Any]:
        plaintext, digest = core.generate_key()
        key_store.insert_key(conn, policy, digest, core.key_prefix(plaintext))
        view = key_store.key_view(key_store.get_key_row(conn, policy.id))
        view["key"] = plaintext
        return view

    async def create(self, data: dict[str, Any], *, key_id: str | None = None) -> dict[str, Any]:
        policy = parse_key_request(data, key_id or new_key_id())
        return await self._write(self._create, policy)

    def create_sync(self, data: dict[str, Any]) -> dict[str, Any]:
        return self._write_sync(self._create, parse_key_request(data, new_key_id()))

    def list(self) -> list[dict[str, Any]]:
        conn = self.store.read()
        return [
            key_store.key_view(row, self._spend(conn, row["id"]))
            for row in key_store.list_key_rows(conn)
        ]

    def get(self, key_id: str) -> dict[str, Any]:
        conn = self.store.read()
        return key_store.key_view(key_store.get_key_row(conn, key_id), self._spend(conn, key_id))

    def _spend(self, conn: Any, key_id: str) -> dict[str, Any]:
        now = time.time()
        out = {}
        for (cur,) in conn.execute(
            "SELECT DISTINCT currency FROM key_spend WHERE key_id = ?", (key_id,)
        ).fetchall():
            spend = key_store.spend_of(conn, key_id, cur, now, include_holds=False)
            out[cur] = {w: decimal_str(getattr(spend, w)) for w in core.WINDOWS}
        return out

    @staticmethod
    def _set_state(conn: Any, key_id: str, action: str) -> dict[str, Any]:
        policy = key_store.policy_from_row(key_store.get_key_row(conn, key_id))
        from dataclasses import replace

        if action == "revoke":
            policy = replace(policy, revoked=True)
        elif policy.revoked:
            raise BadRequest(f"key {key_id} is revoked; a revoked key cannot be {action}d")
        else:
            policy = replace(policy, paused=(action == "pause"))
        key_store.update_key(conn, policy)
        return key_store.key_view(key_store.get_key_row(conn, key_id))

    async def set_state(self, key_id: str, action: str) -> dict[str, Any]:
        _check_action(action)
        return await self._write(self._set_state, key_id, action)

    def set_state_sync(self, key_id: str, action: str) -> dict[str, Any]:
        _check_action(action)
        return self._write_sync(self._set_state, key_id, action)

    # -- edit, rotate, kill switch ----------------------------------------------

    @staticmethod
    def _update(conn: Any, key_id: str, data: dict[str, Any]) -> dict[str, Any]:
        from dataclasses import replace

        old = key_store.policy_from_row(key_store.get_key_row(conn, key_id))
        if old.revoked:
            raise BadRequest(f"key {key_id} is revoked; a revoked key cannot be changed")
        new = parse_key_request(data, key_id)
        key_store.update_key(conn, replace(new, paused=old.paused, revoked=False))
        return key_store.key_view(key_store.get_key_row(conn, key_id))

    async def update(self, key_id: str, data: dict[str, Any]) -> dict[str, Any]:
        """Change a key's label, project, scope, budgets, rate limit or expiry.

        The whole policy is replaced (fields left out mean "none"); the secret,
        the pause state, the receipts and the spend stay.
        """
        return await self._write(self._update, key_id, data)

    @staticmethod
    def _rotate(conn: Any, key_id: str) -> dict[str, Any]:
        row = key_store.get_key_row(conn, key_id)
        if row["revoked"]:
            raise BadRequest(f"key {key_id} is revoked; create a new key instead of rotating it")
        plaintext, digest = core.generate_key()
        # Only the new hash is kept: the old secret stops working with this commit.
        conn.execute(
            "UPDATE api_keys SET key_hash = ?, prefix = ? WHERE id = ?",
            (digest, core.key_prefix(plaintext), key_id),
        )
        key_store.bump_generation(conn)
        view = key_store.key_view(key_store.get_key_row(conn, key_id))
        view["key"] = plaintext
        return view

    async def rotate(self, key_id: str) -> dict[str, Any]:
        """A new secret for the same key: same id, policy, receipts and spend.
        The answer carries the new secret (``key``), shown once."""
        return await self._write(self._rotate, key_id)

    def rotate_sync(self, key_id: str) -> dict[str, Any]:
        return self._write_sync(self._rotate, key_id)

    async def pause_all(self) -> int:
        """The kill switch: pause every live key at once; the number paused."""
        return await self._write(key_store.pause_all)

    def pause_all_sync(self) -> int:
        return self._write_sync(key_store.pause_all)

    def spend_report(self, key_id: str) -> list[dict[str, Any]]:
        """Per currency: spend this UTC day / month / in total, against the key's budgets.

        ``[{"currency": "USD", "windows": [{"window": "day", "spent_micros": 1200,
        "limit_micros": 5000000 | None, "percent": 0.02 | None}, ...]}, ...]``;
        open holds count, as they do when a budget is checked.
        """
        conn = self.store.read()
        policy = key_store.policy_from_row(key_store.get_key_row(conn, key_id))
        spent = {
            cur
            for (cur,) in conn.execute(
                "SELECT DISTINCT currency FROM key_spend WHERE key_id = ?", (key_id,)
            )
        }
        now = time.time()
        out = []
        for cur in sorted(spent | set(policy.budgets)):
            spend = key_store.spend_of(conn, key_id, cur, now)
            budget = policy.budgets.get(cur)
            windows = []
            for window in core.WINDOWS:
                used = getattr(spend, window)
                limit = getattr(budget, window) if budget else None
                percent = None if not limit else min(100.0, used * 100 / limit)
                if limit == 0:
                    percent = 100.0
                windows.append(
                    {
                        "window": window,
                        "spent_micros": used,
                        "limit_micros": limit,
                        "percent": percent,
                    }
                )
            out.append({"currency": cur, "windows": windows})
        return out


def _check_action(action: str) -> None:
    if action not in ("pause", "resume", "revoke"):
        raise BadRequest(f"unknown key action {action!r}: use pause, resume, revoke or rotate")
