"""Routing: candidate order, settlement filter, retry policy, channel health."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localgate.core.pricing import Price
from localgate.core.routing import (
    Attempt,
    ChannelHealth,
    RouteLike,
    candidate_routes,
    should_retry,
    why_next,
)
from localgate.errors import UpstreamError

PRICE = Price(currency="USD", input=Decimal("0.15"), output=Decimal("0.60"))


@dataclass(frozen=True)
class FakeRoute:
    """Shaped like catalog.Route, which routing must not import."""

    id: str
    model_id: str
    channel: str
    upstream_model: str
    settlement: str
    priority: int
    price: Price
    enabled: bool = True


def route(
    rid: str, channel: str, settlement: str = "official", priority: int = 1, enabled: bool = True
) -> FakeRoute:
    return FakeRoute(
        rid, "gpt-4o-mini", channel, "gpt-4o-mini", settlement, priority, PRICE, enabled
    )


def ids(routes: list[FakeRoute]) -> list[str]:
    return [r.id for r in routes]


def test_fake_route_satisfies_the_protocol():
    r: RouteLike = route("r", "c")  # mypy checks this line
    assert r.price is PRICE


# candidates --------------------------------------------------------------------

ROUTES = [
    route("routed-b", "pool-b", "routed", 3),
    route("official", "openai", "official", 1),
    route("routed-a", "pool-a", "routed", 2),
    route("official-backup", "azure", "official", 5),
]


def test_candidates_in_priority_order():
    assert ids(candidate_routes(ROUTES, "any", None, 0)) == [
        "official",
        "routed-a",
        "routed-b",
        "official-backup",
    ]


@pytest.mark.parametrize(
    ("settlement", "expected"),
    [
        ("official", ["official", "official-backup"]),
        ("routed", ["routed-a", "routed-b"]),
        ("any", ["official", "routed-a", "routed-b", "official-backup"]),
    ],
)
def test_candidates_filtered_by_key_settlement(settlement, expected):
    assert ids(candidate_routes(ROUTES, settlement, ChannelHealth(), 0)) == expected


def test_no_candidates_when_nothing_matches():
    only_routed = [r for r in ROUTES if r.settlement == "routed"]
    assert candidate_routes(only_routed, "official", ChannelHealth(), 0) == []
    assert candidate_routes([], "any", None, 0) == []


def test_disabled_routes_are_not_candidates():
    routes = [route("a", "c1", enabled=False), route("b", "c2", priority=9)]
    assert ids(candidate_routes(routes, "any", None, 0)) == ["b"]


def test_equal_priorities_keep_given_order():
    routes = [route("x", "c1"), route("y", "c2"), route("z", "c3")]
    assert ids(candidate_routes(routes, "any", None, 0)) == ["x", "y", "z"]


def test_channels_in_cooldown_go_last_but_stay():
    health = ChannelHealth()
    for _ in range(3):
        health.record_failure("openai", 100.0)
        health.record_failure("pool-a", 100.0)
    order = ids(candidate_routes(ROUTES, "any", health, 110.0))
    # healthy first in priority order, then the cooling ones in priority order
    assert order == ["routed-b", "official-backup", "official", "routed-a"]
    # after the cool-down, priority order is back
    assert ids(candidate_routes(ROUTES, "any", health, 131.0)) == [
        "official",
        "routed-a",
        "routed-b",
        "official-backup",
    ]


def test_all_channels_cooling_still_gives_candidates():
    health = ChannelHealth(threshold=1)
    for r in ROUTES:
        health.record_failure(r.channel, 0.0)
    assert ids(candidate_routes(ROUTES, "official", health, 1.0)) == [
        "official",
        "official-backup",
    ]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["official", "routed"]),
            st.integers(0, 5),
            st.sampled_from(["c1", "c2", "c3"]),
            st.booleans(),
        ),
        max_size=12,
    ),
    st.sampled_from(["official", "routed", "any"]),
    st.sets(st.sampled_from(["c1", "c2", "c3"])),
)
def test_candidate_properties(specs, settlement, cooling):
    routes = [route(f"r{i}", ch, s, p, en) for i, (s, p, ch, en) in enumerate(specs)]
    health = ChannelHealth(threshold=1)
    for ch in cooling:
        health.record_failure(ch, 0.0)
    got = candidate_routes(routes, settlement, health, 1.0)
    expected_set = {r.id for r in routes if r.enabled and settlement in ("any", r.settlement)}
    assert {r.id for r in got} == expected_set and len(got) == len(expected_set)
    flags = [r.channel in cooling for r in got]
    assert flags == sorted(flags)  # every healthy route before every cooling one
    for group in (False, True):
        prios = [r.priority for r in got if (r.channel in cooling) is group]
        assert prios == sorted(prios)


# should_retry -------------------------------------------------------------------


def err(status: int | None = None, *, timeout: bool = False, retryable: bool = False):
    return UpstreamError("boom", status=status, timeout=timeout, retryable=retryable)


@pytest.mark.parametrize(
    "error",
    [err(None), err(408), err(429), err(503), err(400), err(200), err(None, timeout=True)],
)
@pytest.mark.parametrize("retryable", [False, True])
@pytest.mark.parametrize("first_byte_sent", [False, True])
def test_should_retry_follows_the_adapters_classification_before_the_first_byte_only(
    error, retryable, first_byte_sent
):
    # The adapter classified the failure; routing does not decide again from the status.
    error.retryable = retryable
    assert should_retry(error, first_byte_sent) is (retryable and not first_byte_sent)


def test_why_next_text():
    assert why_next(err(503)) == "upstream 503, trying next route"
    assert why_next(err(None, timeout=True)) == "upstream timeout, trying next route"
    assert why_next(err(None, retryable=True)) == "connect error, trying next route"


# health --------------------------------------------------------------------------


def test_cooldown_trips_after_three_consecutive_failures():
    h = ChannelHealth()
    h.record_failure("c", 10.0)
    h.record_failure("c", 11.0)
    assert not h.in_cooldown("c", 11.0)
    h.record_failure("c", 12.0)
    assert h.in_cooldown("c", 12.0)
    assert h.in_cooldown("c", 41.9)
    assert not h.in_cooldown("c", 42.0)  # 30 s after the trip
    assert not h.in_cooldown("other", 12.0)


def test_success_resets_consecutive_count():
    h = ChannelHealth()
    h.record_failure("c", 1.0)
    h.record_failure("c", 2.0)
    h.record_success("c", 0.1, 3.0)
    h.record_failure("c", 4.0)
    h.record_failure("c", 5.0)
    assert not h.in_cooldown("c", 5.0)


def test_repeated_trips_double_up_to_five_minutes():
    h = ChannelHealth()
    t = 0.0
    for _ in range(3):
        h.record_failure("c", t)
    periods = []
    for _ in range(8):
        until = h.snapshot(t)["c"].cooldown_until
        assert until is not None
        periods.append(until - t)
        t = until  # cool-down over: the probe fails, and trips at once
        assert not h.in_cooldown("c", t)
        h.record_failure("c", t)
        assert h.in_cooldown("c", t)
    assert periods == [30, 60, 120, 240, 300, 300, 300, 300]


def test_failures_during_cooldown_do_not_extend_it():
    h = ChannelHealth()
    for _ in range(3):
        h.record_failure("c", 0.0)
    h.record_failure("c", 20.0)  # a last-resort try that failed
    assert not h.in_cooldown("c", 30.0)


def test_success_recovers_and_resets_doubling():
    h = ChannelHealth()
    for _ in range(3):
        h.record_failure("c", 0.0)
    h.record_failure("c", 30.0)  # probe fails: 60 s
    assert h.in_cooldown("c", 89.0)
    h.record_success("c", 0.2, 50.0)  # a last-resort try worked: closed again
    assert not h.in_cooldown("c", 50.0)
    for _ in range(3):
        h.record_failure("c", 100.0)
    assert h.snapshot(100.0)["c"].cooldown_until == 130.0  # back to 30 s


def test_custom_thresholds():
    h = ChannelHealth(threshold=1, cooldown_s=5, max_cooldown_s=8)
    h.record_failure("c", 0.0)
    assert h.in_cooldown("c", 4.9) and not h.in_cooldown("c", 5.0)
    h.record_failure("c", 5.0)
    assert h.snapshot(5.0)["c"].cooldown_until == 13.0  # 10 capped at 8
    with pytest.raises(ValueError):
        ChannelHealth(threshold=0)


def test_latency_ewma_and_snapshot():
    h = ChannelHealth()
    h.record_success("c", 0.100, 1.0)
    assert h.snapshot()["c"].latency_ms == pytest.approx(100.0)
    h.record_success("c", 0.200, 2.0)
    assert h.snapshot()["c"].latency_ms == pytest.approx(130.0)  # 0.3 weight on the new
    h.record_failure("c", 3.0)
    h.record_failure("c", 400.0)
    snap = h.snapshot(400.0)["c"]
    assert snap.recent_failures == 1  # the one at t=3 is older than five minutes
    assert snap.consecutive_failures == 2
    assert snap.last_failure_at == 400.0 and snap.last_success_at == 2.0
    assert snap.in_cooldown is False
    assert h.snapshot()["c"].in_cooldown is None  # no now, no opinion
    assert h.snapshot()["c"].recent_failures == 2
    d = snap.as_dict()
    assert d["channel"] == "c" and d["latency_ms"] == pytest.approx(130.0)


def test_recent_failures_are_bounded():
    h = ChannelHealth(threshold=10**9)
    for i in range(1000):
        h.record_failure("c", float(i) / 1000)
    assert h.snapshot(1.0)["c"].recent_failures == 20


def test_health_is_thread_safe():
    h = ChannelHealth(threshold=400)
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(50):
            h.record_failure("c", 1.0)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    snap = h.snapshot(1.0)["c"]
    assert snap.consecutive_failures == 400
    assert snap.in_cooldown is True and snap.trips == 1


# attempts ------------------------------------------------------------------------


def test_attempt_as_dict():
    a = Attempt(
        channel="pool-a",
        route_id="routed-a",
        upstream_model="gpt-4o-mini",
        settlement="routed",
        status=503,
        error="Service Unavailable",
        latency_ms=42,
        why_next=why_next(err(503)),
    )
    assert a.as_dict() == {
        "channel": "pool-a",
        "route_id": "routed-a",
        "upstream_model": "gpt-4o-mini",
        "settlement": "routed",
        "status": 503,
        "error": "Service Unavailable",
        "latency_ms": 42,
        "why_next": "upstream 503, trying next route",
    }
    ok = Attempt("openai", "official", "gpt-4o-mini", "official", status=200, latency_ms=7)
    assert ok.as_dict()["why_next"] is None and ok.as_dict()["error"] is None
    with pytest.raises(AttributeError):
        ok.status = 500  # type: ignore[misc]
