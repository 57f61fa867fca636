"""Keys: generation, hashing, scopes, budgets and their UTC windows, rate limits."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localgate.core.keys import (
    TOTAL_BUDGET_RETRY_AFTER,
    Budget,
    KeyPolicy,
    RateLimiter,
    Spend,
    budget_room,
    check_budget,
    check_usable,
    day_start,
    generate_key,
    hash_key,
    key_prefix,
    looks_like_key,
    model_allowed,
    month_start,
    next_day_start,
    next_month_start,
    parse_budgets,
    settlement_allowed,
)
from localgate.errors import Forbidden, MoneyError, RateLimited, Unauthenticated

USD = 1_000_000  # micros per unit


def ts(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


def policy(**kw: object) -> KeyPolicy:
    kw.setdefault("id", "key_1")
    kw.setdefault("label", "laptop")
    return KeyPolicy(**kw)  # type: ignore[arg-type]


# the key itself ------------------------------------------------------------


def test_generate_key_shape_and_hash():
    plaintext, key_hash = generate_key()
    assert plaintext.startswith("lg_") and len(plaintext) == 3 + 43
    assert looks_like_key(plaintext)
    assert key_hash == hashlib.sha256(plaintext.encode()).hexdigest() == hash_key(plaintext)
    assert len(key_hash) == 64


def test_generated_keys_are_unique():
    keys = {generate_key()[0] for _ in range(200)}
    assert len(keys) == 200


def test_hash_is_deterministic_and_distinct():
    assert hash_key("lg_a") == hash_key("lg_a") != hash_key("lg_b")


@pytest.mark.parametrize(
    "s",
    [
        "",
        "lg_",
        "sk-" + "a" * 43,
        "lg_" + "a" * 42,
        "lg_" + "a" * 44,
        "lg_" + "a" * 42 + "=",
        "LG_" + "a" * 43,
        " lg_" + "a" * 43,
    ],
)
def test_looks_like_key_rejects(s):
    assert not looks_like_key(s)


def test_key_prefix_shows_ends_only():
    plaintext = "lg_AbCd" + "x" * 35 + "wXyZ"
    assert key_prefix(plaintext) == "lg_AbCd…wXyZ"
    plaintext, _ = generate_key()
    shown = key_prefix(plaintext)
    assert shown.startswith(plaintext[:7]) and shown.endswith(plaintext[-4:])
    assert len(shown.replace("…", "")) == 11


def test_key_prefix_of_short_strings_reveals_nothing():
    assert key_prefix("lg_short") == "lg_…"
    assert key_prefix("") == "lg_…"


# scopes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "model", "allowed"),
    [
        ((), "anything-at-all", True),
        (("gpt-4o*",), "gpt-4o", True),
        (("gpt-4o*",), "gpt-4o-mini", True),
        (("gpt-4o*",), "gpt-4.1", False),
        (("gpt-4o*",), "GPT-4o", False),  # case-sensitive everywhere
        (("claude-*",), "claude-sonnet-4-5", True),
        (("claude-*",), "claude", False),
        (("gpt-4o*", "claude-*"), "claude-haiku-4-5", True),
        (("gpt-4o*", "claude-*"), "gemini-2.5-pro", False),
        (("gpt-4o-mini",), "gpt-4o-mini", True),
        (("gpt-4o-mini",), "gpt-4o-mini-2024", False),
        (("qwen/*",), "qwen/qwen3-coder", True),
        (("gemini-2.?-pro",), "gemini-2.5-pro", True),
    ],
)
def test_model_patterns(patterns, model, allowed):
    assert model_allowed(policy(models=patterns), model) is allowed


def test_models_list_is_frozen_to_tuple():
    p = policy(models=["gpt-*"])
    assert p.models == ("gpt-*",)
    hash(p)  # usable as a dict key / in sets


@pytest.mark.parametrize(
    ("key", "route", "allowed"),
    [
        ("any", "official", True),
        ("any", "routed", True),
        ("official", "official", True),
        ("official", "routed", False),
        ("routed", "routed", True),
        ("routed", "official", False),
    ],
)
def test_settlement_filter(key, route, allowed):
    assert settlement_allowed(policy(settlement=key), route) is allowed


def test_policy_validates():
    with pytest.raises(ValueError, match="settlement"):
        policy(settlement="cheap")
    with pytest.raises(ValueError, match="rpm"):
        policy(rpm=0)
    with pytest.raises(MoneyError):
        policy(budgets={"dollars": Budget(day=1)})


def test_policy_budgets_normalised_and_read_only():
    p = policy(budgets={"usd": Budget(day=5 * USD)})
    assert set(p.budgets) == {"USD"}
    with pytest.raises(TypeError):
        p.budgets["CNY"] = Budget()  # type: ignore[index]


# usable ----------------------------------------------------------------------

NOW = ts(2025, 3, 14, 12, 0)


def test_usable_key_passes():
    check_usable(policy(expires_at=NOW + 1), NOW)


def test_revoked_key_is_unauthenticated_and_says_so():
    with pytest.raises(Unauthenticated, match="revoked") as exc:
        check_usable(policy(revoked=True, paused=True, expires_at=NOW - 1), NOW)
    assert "keys create" in exc.value.message
    assert exc.value.code == "invalid_api_key"


def test_expired_key_is_unauthenticated_and_says_when():
    with pytest.raises(Unauthenticated, match="expired at 2025-03-14 12:00 UTC"):
        check_usable(policy(expires_at=NOW), NOW)  # expiry instant is already expired


def test_paused_key_is_forbidden():
    with pytest.raises(Forbidden) as exc:
        check_usable(policy(paused=True), NOW)
    assert exc.value.code == "key_paused"
    assert "localgate keys resume key_1" in exc.value.message


# budget windows --------------------------------------------------------------


def test_day_window_around_midnight():
    midnight = ts(2025, 3, 15)
    assert day_start(midnight - 0.001) == ts(2025, 3, 14)
    assert day_start(midnight) == midnight
    assert next_day_start(midnight - 0.001) == midnight
    assert next_day_start(midnight) == ts(2025, 3, 16)


@pytest.mark.parametrize(
    ("now", "start", "nxt"),
    [
        (ts(2025, 1, 31, 23, 59, 59), ts(2025, 1, 1), ts(2025, 2, 1)),
        (ts(2025, 2, 1), ts(2025, 2, 1), ts(2025, 3, 1)),
        (ts(2024, 2, 29, 12), ts(2024, 2, 1), ts(2024, 3, 1)),  # leap year
        (ts(2025, 12, 31, 23, 59, 59), ts(2025, 12, 1), ts(2026, 1, 1)),  # year end
        (ts(2026, 1, 1), ts(2026, 1, 1), ts(2026, 2, 1)),
    ],
)
def test_month_window_boundaries(now, start, nxt):
    assert month_start(now) == start
    assert next_month_start(now) == nxt


instants = st.floats(min_value=0, max_value=ts(2200, 1, 1), allow_nan=False)


@given(instants)
def test_day_window_contains_now(now):
    start = day_start(now)
    assert start <= now < next_day_start(now)
    assert next_day_start(now) - start == 86_400
    moment = datetime.fromtimestamp(start, tz=UTC)
    assert (moment.hour, moment.minute, moment.second) == (0, 0, 0)


@given(instants)
def test_month_window_contains_now(now):
    start, nxt = month_start(now), next_month_start(now)
    assert start <= day_start(now) <= now < nxt
    a, b = datetime.fromtimestamp(start, tz=UTC), datetime.fromtimestamp(nxt, tz=UTC)
    assert (a.day, a.hour, a.minute, a.second) == (1, 0, 0, 0)
    assert (b.day, b.hour) == (1, 0)
    assert (b.year * 12 + b.month) - (a.year * 12 + a.month) == 1
    assert month_start(nxt) == nxt
    assert month_start(nxt - 0.5) == start


# budgets ---------------------------------------------------------------------

BUDGETED = policy(
    budgets={"USD": Budget(day=5 * USD, month=50 * USD, total=200 * USD), "CNY": Budget()}
)


def test_budget_room_is_the_smallest_window():
    assert budget_room(BUDGETED, "USD", Spend()) == 5 * USD
    assert budget_room(BUDGETED, "USD", Spend(day=1 * USD, month=48 * USD)) == 2 * USD
    assert budget_room(BUDGETED, "usd", Spend(total=199 * USD)) == 1 * USD


def test_budget_room_never_negative():
    assert budget_room(BUDGETED, "USD", Spend(day=9 * USD)) == 0


def test_budget_room_unlimited():
    assert budget_room(BUDGETED, "EUR", Spend(day=10**12)) is None
    assert budget_room(BUDGETED, "CNY", Spend(day=10**12)) is None
    assert budget_room(policy(), "USD", Spend()) is None


@given(
    day=st.none() | st.integers(0, 10**9),
    month=st.none() | st.integers(0, 10**9),
    total=st.none() | st.integers(0, 10**9),
    spend=st.tuples(
        st.integers(0, 2 * 10**9), st.integers(0, 2 * 10**9), st.integers(0, 2 * 10**9)
    ),
)
def test_budget_room_properties(day, month, total, spend):
    p = policy(budgets={"USD": Budget(day=day, month=month, total=total)})
    s = Spend(*spend)
    room = budget_room(p, "USD", s)
    if day is None and month is None and total is None:
        assert room is None
        return
    assert room is not None and room >= 0
    for limit, spent in ((day, s.day), (month, s.month), (total, s.total)):
        if limit is not None:
            assert spent + room <= max(limit, spent)
    # check_budget refuses exactly when there is no room left
    try:
        check_budget(p, "USD", s, NOW)
        assert room > 0
    except RateLimited:
        assert room == 0


def test_check_budget_day_resets_at_utc_midnight():
    now = ts(2025, 3, 14, 23, 59, 30)
    with pytest.raises(RateLimited) as exc:
        check_budget(BUDGETED, "USD", Spend(day=5 * USD, month=5 * USD, total=5 * USD), now)
    err = exc.value
    assert err.code == "budget_exceeded"
    assert err.retry_after == 30
    assert "daily USD budget" in err.message and "2025-03-15 00:00 UTC" in err.message
    assert "$5.000000 of $5.000000" in err.message
    # one second after midnight the day window is fresh again (the caller sums
    # spend from day_start(now), which is now the new day)
    check_budget(BUDGETED, "USD", Spend(day=0, month=5 * USD, total=5 * USD), now + 31)


def test_check_budget_waits_for_the_latest_exhausted_window():
    now = ts(2025, 3, 31, 22)
    spend = Spend(day=5 * USD, month=50 * USD, total=60 * USD)
    with pytest.raises(RateLimited) as exc:
        check_budget(BUDGETED, "USD", spend, now)
    assert "monthly" in exc.value.message
    assert exc.value.retry_after == int(ts(2025, 4, 1) - now)
    # mid-month, a spent month is not fixed by the next midnight
    now = ts(2025, 3, 10, 22)
    with pytest.raises(RateLimited) as exc:
        check_budget(BUDGETED, "USD", spend, now)
    assert exc.value.retry_after == int(ts(2025, 4, 1) - now)


def test_check_budget_total_does_not_reset():
    with pytest.raises(RateLimited) as exc:
        check_budget(BUDGETED, "USD", Spend(day=0, month=0, total=200 * USD), NOW)
    assert exc.value.code == "budget_exceeded"
    assert exc.value.retry_after == TOTAL_BUDGET_RETRY_AFTER >= 3600
    assert "raise it" in exc.value.message and "total USD budget" in exc.value.message


def test_check_budget_needed_amount():
    spend = Spend(day=4 * USD)
    check_budget(BUDGETED, "USD", spend, NOW, needed=USD)
    with pytest.raises(RateLimited):
        check_budget(BUDGETED, "USD", spend, NOW, needed=USD + 1)


def test_check_budget_ignores_other_currencies():
    check_budget(BUDGETED, "CNY", Spend(day=10**12), NOW)
    check_budget(BUDGETED, "EUR", Spend(day=10**12), NOW)


def test_zero_budget_allows_nothing():
    p = policy(budgets={"USD": Budget(total=0)})
    assert budget_room(p, "USD", Spend()) == 0
    with pytest.raises(RateLimited):
        check_budget(p, "USD", Spend(), NOW)


# parsing -----------------------------------------------------------------------


def test_parse_budgets():
    parsed = parse_budgets(
        {
            "USD": {"day": "5", "month": "50.5", "total": None},
            "cny": {"day": 100, "month": "", "total": "0.000001"},
            "EUR": {},
            "GBP": None,
        }
    )
    assert parsed == {
        "USD": Budget(day=5 * USD, month=50_500_000, total=None),
        "CNY": Budget(day=100 * USD, month=None, total=1),
    }


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"USD": {"day": "abc"}}, "budgets.USD.day"),
        ({"USD": {"month": "-1"}}, "budgets.USD.month"),
        ({"USD": {"total": 1.5}}, "budgets.USD.total"),
        ({"USD": {"day": "0.0000001"}}, "budgets.USD.day"),
        ({"USD": {"day": True}}, "budgets.USD.day"),
        ({"USD": {"day": ["5"]}}, "budgets.USD.day"),
        ({"USD": {"week": "5"}}, "budgets.USD.week"),
        ({"USD": "5"}, "budgets.USD"),
        ({"dollars": {"day": "5"}}, "budgets.dollars"),
        ({"USD": {"day": "1"}, "usd": {"day": "2"}}, "budgets.usd"),
        (["USD"], "budgets"),
    ],
)
def test_parse_budgets_errors_name_the_field(data, field):
    with pytest.raises(MoneyError) as exc:
        parse_budgets(data)
    assert field in str(exc.value)


def test_parse_budgets_empty():
    assert parse_budgets({}) == {}
    assert parse_budgets(None) == {}


def test_budget_as_dict_gives_amounts_twice():
    assert Budget(day=5 * USD).as_dict() == {
        "day": "5.000000",
        "day_micros": 5_000_000,
        "month": None,
        "month_micros": None,
        "total": None,
        "total_micros": None,
    }


def test_budget_rejects_bad_values():
    with pytest.raises(MoneyError):
        Budget(day=-1)
    with pytest.raises(MoneyError):
        Budget(month=1.5)  # type: ignore[arg-type]


# rate limiter ------------------------------------------------------------------


def test_rate_limiter_allows_exactly_rpm_per_window():
    rl = RateLimiter()
    t0 = 1000.0
    assert [rl.check("k", 5, t0 + i) for i in range(5)] == [None] * 5
    wait = rl.check("k", 5, t0 + 10)
    assert wait == pytest.approx(50.0)  # the first hit (t0) leaves the window at t0 + 60
    assert rl.check("k", 5, t0 + 59.9) == pytest.approx(0.1)
    assert rl.check("k", 5, t0 + 60) is None  # t0 has left; one slot is free
    assert rl.check("k", 5, t0 + 60.5) == pytest.approx(0.5)  # next: t0+1 leaves at t0+61
    assert rl.check("k", 5, t0 + 61) is None


def test_rate_limiter_never_more_than_rpm_in_any_window():
    rl = RateLimiter()
    allowed: list[float] = []
    t = 0.0
    while t < 600:
        if rl.check("k", 10, t) is None:
            allowed.append(t)
        t += 0.7
    assert len(allowed) >= 10 * 9  # it does let the rate through
    for i, start in enumerate(allowed):
        in_window = [x for x in allowed[i:] if x < start + 60]
        assert len(in_window) <= 10


def test_rate_limiter_refusals_do_not_count():
    rl = RateLimiter()
    assert rl.check("k", 1, 0) is None
    for t in range(1, 60):
        assert rl.check("k", 1, t) == pytest.approx(60 - t)
    assert rl.check("k", 1, 60) is None


def test_rate_limiter_keys_are_independent_and_unlimited_is_untracked():
    rl = RateLimiter()
    assert rl.check("a", 1, 0) is None
    assert rl.check("a", 1, 0) is not None
    assert rl.check("b", 1, 0) is None
    for _ in range(1000):
        assert rl.check("c", None, 0) is None
    assert rl.tracked_keys() == 2


def test_rate_limiter_lowered_rpm_applies_at_once():
    rl = RateLimiter()
    for t in range(10):
        assert rl.check("k", 100, t) is None
    wait = rl.check("k", 3, 20)
    assert wait == pytest.approx(7 + 60 - 20)  # the 3rd newest hit (t=7) must leave


def test_rate_limiter_forgets_idle_keys():
    rl = RateLimiter()
    for i in range(1000):
        rl.check(f"key{i}", 5, float(i) / 100)  # all within the first 10 s
    assert rl.tracked_keys() == 1000
    rl.check("late", 5, 200.0)
    assert rl.tracked_keys() == 1
    rl.forget("late")
    assert rl.tracked_keys() == 0


def test_rate_limiter_clock_going_back_is_clamped():
    rl = RateLimiter()
    assert rl.check("k", 1, 1000) is None
    wait = rl.check("k", 1, 900)
    assert wait is not None and 0 < wait <= 60


def test_rate_limiter_rejects_bad_rpm():
    with pytest.raises(ValueError):
        RateLimiter().check("k", 0, 0)


def test_rate_limiter_is_thread_safe():
    rl = RateLimiter()
    results: list[float | None] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(100):
            r = rl.check("shared", 50, 5.0)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sum(r is None for r in results) == 50
    assert len(results) == 800


@given(rpm=st.integers(1, 20), gaps=st.lists(st.floats(0, 30), min_size=1, max_size=80))
def test_rate_limiter_wait_is_necessary_and_sufficient(rpm, gaps):
    rl = RateLimiter()
    t = 0.0
    for gap in gaps:
        t += gap
        wait = rl.check("k", rpm, t)
        if wait is not None:
            assert 0 < wait <= 60
            if wait > 1e-3:
                assert rl.check("k", rpm, t + wait - 1e-3) is not None  # not sooner
            t += wait + 1e-6
            assert rl.check("k", rpm, t) is None  # but then, yes
