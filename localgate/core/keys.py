"""Local API keys: generation and hashing, scopes, spend budgets, rate limits.

A key is a contract (PRODUCT.md promise 5): which models and settlement paths it
may use, how much it may spend per UTC day / UTC month / in total per currency,
and how many requests per minute it may make. This module decides; the store
keeps the policies and sums the spend, the services call these checks.

Pure: no I/O, no clock. Every time-dependent function takes ``now`` (epoch
seconds) so tests are deterministic.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Literal, get_args

from localgate.errors import Forbidden, MoneyError, RateLimited, Unauthenticated
from localgate.money import currency, decimal_str, format_money, parse_amount

KEY_PREFIX = "lg_"
_TOKEN_BYTES = 32  # 256 bits of randomness
_TOKEN_CHARS = 43  # len(secrets.token_urlsafe(32)): base64url without padding
_KEY_RE = re.compile(rf"^{KEY_PREFIX}[A-Za-z0-9_-]{{{_TOKEN_CHARS}}}$")
_SHOWN_CHARS = 4  # characters shown at each end of the secret part in key_prefix()

Settlement = Literal["official", "routed", "any"]
SETTLEMENTS: tuple[Settlement, ...] = get_args(Settlement)
WINDOWS = ("day", "month", "total")

SECONDS_PER_DAY = 86_400
RATE_WINDOW_S = 60.0
# A total budget never resets, so there is nothing to wait for. Retry-After still
# has to be a number: one day is long enough that no client retries in a loop,
# and short enough that a client which honours it literally is not stuck forever.
TOTAL_BUDGET_RETRY_AFTER = SECONDS_PER_DAY


# --------------------------------------------------------------------- the key


def generate_key() -> tuple[str, str]:
    """A new key: ``(plaintext, key_hash)``. Show the plaintext once, store the hash."""
    plaintext = KEY_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)
    return plaintext, hash_key(plaintext)


def hash_key(plaintext: str) -> str:
    """The stored form of a key: sha256, hex.

    A fast unsalted hash is the right tool here, unlike for passwords: keys are
    256-bit random strings, so there is no dictionary to try and brute force is
    out of reach whatever the hash costs. A slow KDF would only add latency to
    every request, and determinism lets us look keys up by hash.
    """
    return hashlib.sha256(plaintext.encode("utf-8")).hexdigest()


def looks_like_key(s: str) -> bool:
    """True for strings shaped like a localgate key (``lg_`` + 43 base64url chars)."""
    return isinstance(s, str) and _KEY_RE.fullmatch(s) is not None


def key_prefix(plaintext: str) -> str:
    """A display form like ``lg_AbCd…wXyZ``: recognisable, never usable.

    8 of the 43 secret characters are shown, leaving ~210 bits unknown.
    Strings too short to abbreviate safely show no secret characters at all.
    """
    secret = plaintext.removeprefix(KEY_PREFIX)
    if len(secret) < 4 * _SHOWN_CHARS:
        return KEY_PREFIX + "…"
    return f"{KEY_PREFIX}{secret[:_SHOWN_CHARS]}…{secret[-_SHOWN_CHARS:]}"


# -------------------------------------------------------------------- policies


@dataclass(frozen=True, slots=True)
class Budget:
    """Spend limits of one currency, in micro-units; ``None`` means no limit."""

    day: int | None = None
    month: int | None = None
    total: int | None = None

    def __post_init__(self) -> None:
        for name in WINDOWS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MoneyError(f"budget.{name} must be a non-negative integer of micros or None")

    def is_unlimited(self) -> bool:
        return self.day is None and self.month is None and self.total is None

    def as_dict(self) -> dict[str, str | int | None]:
        """Amounts twice, as the admin API shows them.

        ``{"day": "5.000000", "day_micros": 5000000, ...}``
        """
        out: dict[str, str | int | None] = {}
        for name in WINDOWS:
            value: int | None = getattr(self, name)
            out[name] = None if value is None else decimal_str(value)
            out[f"{name}_micros"] = value
        return out


@dataclass(frozen=True, slots=True)
class Spend:
    """What a key has spent in one currency: this UTC day, this UTC month, ever (micros).

    The caller sums it for the windows starting at :func:`day_start` and
    :func:`month_start`, holds in flight included.
    """

    day: int = 0
    month: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """Everything a key may do. The hash and creation time live in the store."""

    id: str
    label: str
    project: str | None = None
    models: tuple[str, ...] = ()  # fnmatch patterns ("gpt-4o*"); empty = every model
    settlement: Settlement = "any"
    # currency code -> Budget; read-only, so not part of the hash.
    budgets: Mapping[str, Budget] = field(default_factory=dict, hash=False)
    rpm: int | None = None
    expires_at: float | None = None
    paused: bool = False
    revoked: bool = False

    def __post_init__(self) -> None:
        if self.settlement not in SETTLEMENTS:
            raise ValueError(
                f"settlement must be one of {', '.join(SETTLEMENTS)}, not {self.settlement!r}"
            )
        if self.rpm is not None and (isinstance(self.rpm, bool) or self.rpm < 1):
            raise ValueError(f"rpm must be a positive integer or None, not {self.rpm!r}")
        # Freeze the containers too: a policy is shared between threads.
        object.__setattr__(self, "models", tuple(self.models))
        budgets = {currency(code).code: b for code, b in self.budgets.items()}
        object.__setattr__(self, "budgets", MappingProxyType(budgets))

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "label": self.label,
            "project": self.project,
            "models": list(self.models),
            "settlement": self.settlement,
            "budgets": {code: b.as_dict() for code, b in sorted(self.budgets.items())},
            "rpm": self.rpm,
            "expires_at": self.expires_at,
            "paused": self.paused,
            "revoked": self.revoked,
        }


def _name(policy: KeyPolicy) -> str:
    return f"API key {policy.label!r} ({policy.id})"


def check_usable(policy: KeyPolicy, now: float) -> None:
    """Raise unless the key may make requests at all right now.

    Revoked and expired keys are 401 (the credential is dead; the code stays
    OpenAI's ``invalid_api_key`` so SDKs react as they would upstream, and the
    message says which). A paused key is a live credential that is switched
    off, so it is 403 ``key_paused``.
    """
    if policy.revoked:
        raise Unauthenticated(
            f"{_name(policy)} was revoked. Create a new key with `localgate keys create` "
            "or on the Keys page, and update your tool's configuration."
        )
    if policy.expires_at is not None and now >= policy.expires_at:
        when = datetime.fromtimestamp(policy.expires_at, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
        raise Unauthenticated(
            f"{_name(policy)} expired at {when}. Create a new key with "
            "`localgate keys create` or on the Keys page."
        )
    if policy.paused:
        raise Forbidden(
            f"{_name(policy)} is paused. Resume it with `localgate keys resume {policy.id}` "
            "or on the Keys page.",
            code="key_paused",
        )


def model_allowed(policy: KeyPolicy, model_id: str) -> bool:
    """True if ``model_id`` matches one of the key's patterns (or it has none).

    Matching is case-sensitive on every platform (``fnmatchcase``): catalog ids
    are exact strings, and a scope must not widen on Windows.
    """
    if not policy.models:
        return True
    return any(fnmatch.fnmatchcase(model_id, pattern) for pattern in policy.models)


def settlement_allowed(policy: KeyPolicy, settlement: str) -> bool:
    """True if the key may use a route with this settlement path."""
    return policy.settlement == "any" or policy.settlement == settlement


# --------------------------------------------------------------------- budgets


def day_start(now: float) -> float:
    """Start of the UTC day containing ``now`` (POSIX days are exactly 86,400 s)."""
    return float(math.floor(now / SECONDS_PER_DAY) * SECONDS_PER_DAY)


def next_day_start(now: float) -> float:
    return day_start(now) + SECONDS_PER_DAY


def month_start(now: float) -> float:
    """Start of the UTC calendar month containing ``now``."""
    dt = datetime.fromtimestamp(day_start(now), tz=UTC)
    return dt.replace(day=1).timestamp()


def next_month_start(now: float) -> float:
    dt = datetime.fromtimestamp(month_start(now), tz=UTC)
    if dt.month == 12:
        return dt.replace(year=dt.year + 1, month=1).timestamp()
    return dt.replace(month=dt.month + 1).timestamp()


def _rooms(budget: Budget, spend: Spend) -> dict[str, int]:
    return {
        name: limit - getattr(spend, name)
        for name in WINDOWS
        if (limit := getattr(budget, name)) is not None
    }


def budget_room(policy: KeyPolicy, currency_code: str, spend: Spend) -> int | None:
    """How much more the key may spend in this currency now (micros), never negative.

    The smallest room across its windows; ``None`` when nothing limits it.
    """
    budget = policy.budgets.get(currency_code.upper())
    if budget is None:
        return None
    rooms = _rooms(budget, spend)
    if not rooms:
        return None
    return max(0, min(rooms.values()))


def check_budget(
    policy: KeyPolicy, currency_code: str, spend: Spend, now: float, *, needed: int = 1
) -> None:
    """Raise ``RateLimited(code="budget_exceeded")`` if fewer than ``needed`` micros are left.

    ``needed`` defaults to one micro-unit: "anything left at all". Services that
    know the cost of the smallest useful request (its input) can pass it.
    ``retry_after`` is the wait until every exhausted window has reset: if both
    the day and the month are spent, the next midnight does not help.
    """
    code = currency_code.upper()
    budget = policy.budgets.get(code)
    if budget is None:
        return
    short = [name for name, room in _rooms(budget, spend).items() if room < needed]
    if not short:
        return
    if "total" in short:
        limit = budget.total or 0
        raise RateLimited(
            f"{_name(policy)} has used its total {code} budget "
            f"({format_money(spend.total, code)} of {format_money(limit, code)}). "
            "A total budget does not reset: raise it on the Keys page or use another key.",
            retry_after=TOTAL_BUDGET_RETRY_AFTER,
            code="budget_exceeded",
        )
    resets = {"day": next_day_start(now), "month": next_month_start(now)}
    # On a tie (the last day of a month) name the month: it is the bigger news.
    window = max(short, key=lambda name: (resets[name], WINDOWS.index(name)))
    limit = getattr(budget, window) or 0
    spent = getattr(spend, window)
    reset_at = resets[window]
    when = datetime.fromtimestamp(reset_at, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    label = "daily" if window == "day" else "monthly"
    raise RateLimited(
        f"{_name(policy)} has used its {label} {code} budget "
        f"({format_money(spent, code)} of {format_money(limit, code)}); "
        f"it resets at {when}. Raise the budget on the Keys page to continue now.",
        retry_after=max(1, math.ceil(reset_at - now)),
        code="budget_exceeded",
    )


def parse_budgets(data: Mapping[str, object] | None) -> dict[str, Budget]:
    """Budgets from API/CLI input: ``{"USD": {"day": "5", "month": "50", "total": null}}``.

    Amounts are decimal strings in currency units (ints are accepted, floats are
    not: they are not exact). Missing, ``null`` and ``""`` mean no limit; a
    currency with no limit at all is dropped. Errors are ``MoneyError`` naming
    the field, e.g. ``budgets.USD.day``.
    """
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise MoneyError('budgets must be an object like {"USD": {"day": "5"}}')
    out: dict[str, Budget] = {}
    for raw_code, windows in data.items():
        where = f"budgets.{raw_code}"
        try:
            code = currency(str(raw_code)).code
        except MoneyError as exc:
            raise MoneyError(f"{where}: {exc}") from exc
        if code in out:
            raise MoneyError(f"{where}: currency {code} is given twice")
        if windows is None:
            continue
        if not isinstance(windows, Mapping):
            raise MoneyError(f'{where} must be an object like {{"day": "5", "month": "50"}}')
        unknown = sorted(set(map(str, windows)) - set(WINDOWS))
        if unknown:
            raise MoneyError(
                f"{where}.{unknown[0]}: unknown budget window (use day, month or total)"
            )
        amounts: dict[str, int | None] = {}
        for name in WINDOWS:
            value = windows.get(name)
            if value is None or (isinstance(value, str) and not value.strip()):
                amounts[name] = None
                continue
            if not isinstance(value, (str, int)):
                raise MoneyError(f'{where}.{name} must be a decimal string like "5.00"')
            micros = parse_amount(value, what=f"{where}.{name}")
            if micros < 0:
                raise MoneyError(f"{where}.{name} must not be negative: {value!r}")
            amounts[name] = micros
        budget = Budget(**amounts)
        if not budget.is_unlimited():
            out[code] = budget
    return out


# ------------------------------------------------------------------ rate limit


class RateLimiter:
    """Requests per minute per key: an exact sliding window, in memory.

    Each key keeps the times of its allowed requests in the last
    :data:`RATE_WINDOW_S` seconds, at most ``rpm`` of them, so "60 rpm" means no
    more than 60 requests in *any* 60-second span (GCRA / token buckets would
    allow a second burst right after the first). Each call is amortised O(1):
    every timestamp is appended and dropped once. Keys idle for a whole window
    are forgotten, so memory is bounded by the keys active in the last minute.
    Refused requests are not counted, so a client hammering a limit does not
    push its own reset further away.

    ``now`` may come from any clock that does not go backwards
    (``time.monotonic`` is ideal); it only has to be consistent across calls.
    """

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self._window = window_s
        self._lock = threading.Lock()
        # key id -> allowed request times, oldest first; least recently used key first
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()

    def check(self, key_id: str, rpm: int | None, now: float) -> float | None:
        """``None`` if the request may go ahead (and count it); else seconds to wait."""
        if rpm is None:
            return None
        if isinstance(rpm, bool) or rpm < 1:
            raise ValueError(f"rpm must be a positive integer or None, not {rpm!r}")
        horizon = now - self._window
        with self._lock:
            self._forget_idle(horizon)
            hits = self._hits.get(key_id)
            if hits is None:
                hits = self._hits[key_id] = deque()
            else:
                self._hits.move_to_end(key_id)
            while hits and hits[0] <= horizon:
                hits.popleft()
            # If the key's rpm was lowered, only its newest rpm hits matter.
            while len(hits) > rpm:
                hits.popleft()
            if len(hits) < rpm:
                hits.append(now)
                return None
            # Full: the oldest hit has to leave the window. Clamp so a clock
            # that stepped back cannot ask for more than one window.
            return min(self._window, max(0.0, hits[0] - horizon))

    def _forget_idle(self, horizon: float) -> None:
        # The LRU end holds the keys not seen for longest; once one of them still
        # has recent hits, every later key has too.
        while self._hits:
            key_id, hits = next(iter(self._hits.items()))
            if hits and hits[-1] > horizon:
                break
            del self._hits[key_id]

    def forget(self, key_id: str) -> None:
        """Drop a key's history (e.g. when it is revoked)."""
        with self._lock:
            self._hits.pop(key_id, None)

    def tracked_keys(self) -> int:
        """How many keys the limiter currently holds state for."""
        with self._lock:
            return len(self._hits)
