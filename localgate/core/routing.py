"""Which routes a request tries, in what order, and when to fall back.

A model resolves to its routes (catalog.py); :func:`candidate_routes` keeps the
ones the key's settlement allows, in priority order, with channels in
cool-down moved to the end. :func:`should_retry` decides whether a failed
attempt may fall through to the next route; :class:`ChannelHealth` remembers
how channels have been doing; :class:`Attempt` is one try, as the receipt
records it.

Pure: no I/O, no clock; time comes in as ``now`` (epoch seconds).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Protocol, TypeVar

from localgate.core.keys import Settlement
from localgate.core.pricing import Price
from localgate.errors import UpstreamError

FAILURE_THRESHOLD = 3  # consecutive failures that trip a channel into cool-down
COOLDOWN_S = 30.0  # first cool-down
MAX_COOLDOWN_S = 300.0  # repeated trips double the cool-down up to this
LATENCY_ALPHA = 0.3  # EWMA weight of the newest latency sample
RECENT_FAILURES = 20  # failure times kept per channel, for display
RECENT_WINDOW_S = 300.0  # "recent" in snapshots: the last five minutes


class RouteLike(Protocol):
    """What routing needs of a route (``catalog.Route`` satisfies it).

    Read-only properties, so frozen dataclasses match.
    """

    @property
    def id(self) -> str: ...
    @property
    def model_id(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def upstream_model(self) -> str: ...
    @property
    def settlement(self) -> str: ...
    @property
    def priority(self) -> int: ...
    @property
    def price(self) -> Price: ...
    @property
    def enabled(self) -> bool: ...


R = TypeVar("R", bound=RouteLike)


def candidate_routes(
    routes: Iterable[R],
    policy_settlement: Settlement,
    health: ChannelHealth | None,
    now: float,
) -> list[R]:
    """The routes to try, in order; empty if the key may use none of them.

    Disabled routes and routes on a settlement path the key does not allow are
    dropped (so a fallback crosses from routed to official only for an "any"
    key). The rest keep priority order, lower first; equal priorities keep the
    order given. Routes whose channel is in cool-down go to the end rather than
    being dropped: a channel that failed recently is still a better answer than
    an immediate 502, and a last-resort success is what ends its cool-down.
    """
    allowed = [
        r
        for r in routes
        if r.enabled and (policy_settlement == "any" or r.settlement == policy_settlement)
    ]
    allowed.sort(key=lambda r: r.priority)  # stable: ties keep the catalog order
    if health is None:
        return allowed
    healthy: list[R] = []
    cooling: list[R] = []
    for r in allowed:
        (cooling if health.in_cooldown(r.channel, now) else healthy).append(r)
    return healthy + cooling


def should_retry(error: UpstreamError, first_byte_sent: bool) -> bool:
    """May this failure fall through to the next route?

    Only before anything reached the client (after that the response is
    committed, and a second answer would be spliced onto the first), and only
    for failures another try can fix. Which failures those are is decided once,
    by the adapter that saw the failure (``UpstreamError.retryable``: connect
    errors, timeouts, 408, 429, 5xx, a 200 that carried an error); other 4xx
    mean the request itself is wrong and would fail everywhere.
    """
    return not first_byte_sent and error.retryable


def failure_reason(error: UpstreamError) -> str:
    """A short description of a failed attempt: ``upstream 503``, ``timeout``."""
    if error.status is not None:
        return f"upstream {error.status}"
    if error.timeout:
        return "upstream timeout"
    if error.retryable:
        return "connect error"
    return "upstream error"


def why_next(error: UpstreamError) -> str:
    """The receipt's reason for trying another route: ``upstream 503, trying next route``."""
    return f"{failure_reason(error)}, trying next route"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one route, as the receipt lists it."""

    channel: str
    route_id: str
    upstream_model: str
    settlement: str
    status: int | None = None  # upstream HTTP status; None if none was received
    error: str | None = None
    latency_ms: int = 0
    why_next: str | None = None  # set when another route was tried after this one

    def as_dict(self) -> dict[str, str | int | None]:
        return asdict(self)


# ---------------------------------------------------------------- channel health


@dataclass(frozen=True, slots=True)
class ChannelSnapshot:
    """One channel's health, for display (``/api/channels``, the settings page)."""

    channel: str
    consecutive_failures: int
    recent_failures: int  # within RECENT_WINDOW_S of ``now``, or all kept if no ``now``
    last_failure_at: float | None
    last_success_at: float | None
    latency_ms: float | None  # EWMA of successful attempts
    trips: int  # cool-downs since the last success
    cooldown_until: float | None
    in_cooldown: bool | None  # None when the snapshot was taken without ``now``

    def as_dict(self) -> dict[str, str | int | float | bool | None]:
        return asdict(self)


class _State:
    __slots__ = (
        "consecutive",
        "cooldown_until",
        "failures",
        "last_success",
        "latency_s",
        "trips",
    )

    def __init__(self) -> None:
        self.consecutive = 0
        self.trips = 0
        self.cooldown_until: float | None = None
        self.failures: deque[float] = deque(maxlen=RECENT_FAILURES)
        self.last_success: float | None = None
        self.latency_s: float | None = None


class ChannelHealth:
    """Recent failures and latency per channel, and a circuit breaker.

    ``threshold`` consecutive failures trip a channel into cool-down for
    ``cooldown_s``. When the cool-down is over the channel is tried again; if
    that first try fails too it trips at once, for twice as long (capped at
    ``max_cooldown_s``). Any success closes the breaker and resets the doubling.
    Failures while cooling down (last-resort tries) are counted but do not
    extend the cool-down.

    Record only failures that say something about the channel (the ones
    :func:`should_retry` accepts): a 400 caused by the client's request is not
    the channel's fault.
    """

    def __init__(
        self,
        *,
        threshold: int = FAILURE_THRESHOLD,
        cooldown_s: float = COOLDOWN_S,
        max_cooldown_s: float = MAX_COOLDOWN_S,
    ) -> None:
        if threshold < 1 or cooldown_s <= 0 or max_cooldown_s < cooldown_s:
            raise ValueError("need threshold >= 1 and 0 < cooldown_s <= max_cooldown_s")
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}

    def _state(self, channel: str) -> _State:
        state = self._states.get(channel)
        if state is None:
            state = self._states[channel] = _State()
        return state

    def record_success(self, channel: str, latency_s: float, now: float) -> None:
        with self._lock:
            state = self._state(channel)
            state.consecutive = 0
            state.trips = 0
            state.cooldown_until = None
            state.last_success = now
            if state.latency_s is None:
                state.latency_s = latency_s
            else:
                state.latency_s += LATENCY_ALPHA * (latency_s - state.latency_s)

    def record_failure(self, channel: str, now: float) -> None:
        with self._lock:
            state = self._state(channel)
            state.failures.append(now)
            state.consecutive += 1
            if state.cooldown_until is not None and now < state.cooldown_until:
                return  # already cooling down
            # Half-open: the first try after a cool-down failed, trip again now.
            probing = state.trips > 0
            if probing or state.consecutive >= self.threshold:
                period = min(self.max_cooldown_s, self.cooldown_s * 2**state.trips)
                state.trips += 1
                state.cooldown_until = now + period

    def in_cooldown(self, channel: str, now: float) -> bool:
        with self._lock:
            state = self._states.get(channel)
            return (
                state is not None
                and state.cooldown_until is not None
                and now < state.cooldown_until
            )

    def snapshot(self, now: float | None = None) -> dict[str, ChannelSnapshot]:
        """Every channel seen so far. Pass ``now`` to get ``in_cooldown`` and a
        windowed ``recent_failures``."""
        with self._lock:
            out: dict[str, ChannelSnapshot] = {}
            for channel, s in sorted(self._states.items()):
                if now is None:
                    recent = len(s.failures)
                    cooling: bool | None = None
                else:
                    recent = sum(1 for t in s.failures if t > now - RECENT_WINDOW_S)
                    cooling = s.cooldown_until is not None and now < s.cooldown_until
                out[channel] = ChannelSnapshot(
                    channel=channel,
                    consecutive_failures=s.consecutive,
                    recent_failures=recent,
                    last_failure_at=s.failures[-1] if s.failures else None,
                    last_success_at=s.last_success,
                    latency_ms=None if s.latency_s is None else s.latency_s * 1000,
                    trips=s.trips,
                    cooldown_until=s.cooldown_until,
                    in_cooldown=cooling,
                )
            return out
