"""Money: exact parsing, one half-up rounding, formatting, Stripe minor units, pricing."""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from localgate.core.pricing import (
    Price,
    Usage,
    affordable_output,
    charge_micros,
    exact_cost,
    worst_case_micros,
)
from localgate.errors import MoneyError
from localgate.money import (
    MAX_AMOUNT_MICROS,
    currency,
    decimal_str,
    format_money,
    from_minor_units,
    parse_amount,
    parse_price,
    round_micros,
    to_minor_units,
)

# -- parse_amount ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("0", 0),
        ("20", 20_000_000),
        ("0.000420", 420),
        ("0.000001", 1),
        ("1.234567", 1_234_567),
        ("-0.25", -250_000),
        ("1.0000000", 1_000_000),  # trailing zeros are not extra precision
        (" 5 ", 5_000_000),
        ("1e-6", 1),
        ("2E+3", 2_000_000_000),
        (7, 7_000_000),
        (Decimal("0.1"), 100_000),
    ],
)
def test_parse_amount_is_exact(text, micros):
    assert parse_amount(text) == micros


@pytest.mark.parametrize(
    "bad",
    [
        "0.0000001",
        "1.0000001",
        "-0.0000005",
        "1e-7",
        "abc",
        "",
        "1,5",
        "0x10",
        "NaN",
        "nan",
        "sNaN",
        "inf",
        "-Infinity",
        0.1,
        1.0,
        float("nan"),
        float("inf"),
        True,
        None,
    ],
)
def test_parse_amount_refuses_inexact_and_non_numbers(bad):
    with pytest.raises(MoneyError):
        parse_amount(bad)


def test_parse_amount_error_names_what_and_value():
    with pytest.raises(MoneyError, match=r"budget has more than 6 decimals: '0\.0000001'"):
        parse_amount("0.0000001", what="budget")


def test_parse_amount_never_rounds_wide_numbers():
    # 29 significant digits: Decimal's default context would round this to a
    # whole number of micros and accept it.
    with pytest.raises(MoneyError):
        parse_amount("1000000000.00000000000000000005")
    with pytest.raises(MoneyError):
        parse_amount("1000000000000000000000.0000005")


def test_parse_amount_refuses_amounts_beyond_the_bound():
    # SQLite stores 64-bit integers; anything near that is not money a gateway holds.
    assert parse_amount(decimal_str(MAX_AMOUNT_MICROS)) == MAX_AMOUNT_MICROS
    assert parse_amount("-" + decimal_str(MAX_AMOUNT_MICROS)) == -MAX_AMOUNT_MICROS
    for bad in ("1e20", decimal_str(MAX_AMOUNT_MICROS + 1), "-1e30", "1e999999"):
        with pytest.raises(MoneyError, match="too large"):
            parse_amount(bad)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=-MAX_AMOUNT_MICROS, max_value=MAX_AMOUNT_MICROS))
def test_parse_amount_round_trips_decimal_str(micros):
    assert parse_amount(decimal_str(micros)) == micros


@settings(max_examples=200, deadline=None)
@given(
    st.decimals(
        allow_nan=False,
        allow_infinity=False,
        places=7,
        min_value=Decimal(-(10**9)),
        max_value=Decimal(10**9),
    )
)
def test_parse_amount_accepts_exactly_the_six_decimal_numbers(d):
    if d == d.quantize(Decimal("0.000001")):
        assert parse_amount(str(d)) == int(d * 10**6)
    else:
        with pytest.raises(MoneyError):
            parse_amount(str(d))


def test_parse_price_refuses_negative_and_floats():
    assert parse_price("0.15") == Decimal("0.15")
    assert parse_price("0") == 0
    for bad in ("-0.01", 0.15, "abc", "inf"):
        with pytest.raises(MoneyError):
            parse_price(bad)


# -- round_micros ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("exact", "micros"),
    [
        ("0", 0),
        ("0.4", 0),
        ("0.5", 1),
        ("0.6", 1),
        ("1.5", 2),
        ("2.5", 3),
        ("2.4999999999", 2),
        ("419.5", 420),
        ("1234.50000001", 1235),
        # Half-up in Decimal's sense: halves go away from zero.
        ("-0.4", 0),
        ("-0.5", -1),
        ("-1.5", -2),
        ("-2.5", -3),
        ("-2.6", -3),
    ],
)
def test_round_micros_half_up(exact, micros):
    assert round_micros(Decimal(exact)) == micros


@given(st.integers(min_value=-(10**12), max_value=10**12))
def test_round_micros_of_a_half_goes_away_from_zero(n):
    half = Decimal(n) + Decimal("0.5") if n >= 0 else Decimal(n) - Decimal("0.5")
    assert round_micros(half) == (n + 1 if n >= 0 else n - 1)


# -- formatting -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "code", "text"),
    [
        (1_234_567, "USD", "$1.234567"),
        (0, "USD", "$0.000000"),
        (420, "usd", "$0.000420"),
        (20_000_000, "CNY", "¥20.000000"),
        (-500_000, "CNY", "-¥0.500000"),
        (-1, "USD", "-$0.000001"),
        (1_000_000, "EUR", "€1.000000"),
        (2_500_000, "CHF", "CHF 2.500000"),
    ],
)
def test_format_money(micros, code, text):
    assert format_money(micros, code) == text


def test_decimal_str():
    assert decimal_str(420) == "0.000420"
    assert decimal_str(-1_500_000) == "-1.500000"
    assert decimal_str(0) == "0.000000"


@pytest.mark.parametrize("bad", ["US", "USDX", "U$D", "", 840])
def test_currency_refuses_non_codes(bad):
    with pytest.raises(MoneyError):
        currency(bad)


# -- Stripe minor units ---------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "code", "minor"),
    [
        (20_000_000, "USD", 2000),
        (10_000, "USD", 1),
        (-10_000, "USD", -1),
        (0, "USD", 0),
        (500_000_000, "JPY", 500),  # zero-decimal: minor unit is one yen
        (1_000_000, "jpy", 1),
        (1_234_000, "KWD", 1234),  # three-decimal
        (1_000, "KWD", 1),
        (20_000_000, "CNY", 2000),
    ],
)
def test_minor_units_round_trip(micros, code, minor):
    assert to_minor_units(micros, code) == minor
    assert from_minor_units(minor, code) == micros


@pytest.mark.parametrize(
    ("micros", "code"),
    [
        (1, "USD"),
        (5_000, "USD"),
        (-5_000, "USD"),
        (500_000, "JPY"),
        (1_500_000, "JPY"),
        (100, "KWD"),
        (1_000_000 + 1, "CNY"),
    ],
)
def test_to_minor_units_refuses_inexact(micros, code):
    with pytest.raises(MoneyError, match="minor units"):
        to_minor_units(micros, code)


@pytest.mark.parametrize("bad", [1.5, "100", True, None])
def test_from_minor_units_refuses_non_integers(bad):
    with pytest.raises(MoneyError):
        from_minor_units(bad, "USD")


@given(st.integers(min_value=-(10**12), max_value=10**12), st.sampled_from(["USD", "JPY", "KWD"]))
def test_minor_units_from_then_to_is_identity(minor, code):
    assert to_minor_units(from_minor_units(minor, code), code) == minor


# -- pricing --------------------------------------------------------------------

PRICE = Price(
    "USD",
    input=Decimal("3"),
    output=Decimal("15"),
    cached_input=Decimal("0.30"),
    cache_write=Decimal("3.75"),
    per_request=Decimal("0.001"),
)


def test_exact_cost_prices_each_token_class():
    usage = Usage(input=1000, cached_input=600, cache_write=100, output=50, reasoning=20)
    # 300 uncached * 3 + 600 * 0.30 + 100 * 3.75 + 50 * 15 + 0.001 USD per request
    assert exact_cost(usage, PRICE) == Decimal(900 + 180 + 375 + 750 + 1000)
    assert charge_micros(usage, PRICE) == 3205


def test_cached_and_cache_write_default_to_the_input_price():
    price = Price("USD", input=Decimal("0.15"), output=Decimal("0.60"))
    usage = Usage(input=100, cached_input=40, cache_write=10, output=7)
    assert exact_cost(usage, price) == Decimal("100") * Decimal("0.15") + 7 * Decimal("0.60")


def test_charge_rounds_once_half_up():
    price = Price("USD", input=Decimal("0.15"), output=Decimal("0.60"))
    # 3 * 0.15 + 1 * 0.60 = 1.05 micros -> 1; 0.15*10 = 1.5 -> 2 (half-up, not half-even)
    assert charge_micros(Usage(input=3, output=1), price) == 1
    assert charge_micros(Usage(input=10), price) == 2
    assert charge_micros(Usage(input=30), price) == 5  # 4.5 -> 5
    # Rounded once on the sum, not per token class: 0.5 + 0.5 = 1, not 1 + 1.
    half = Price("USD", input=Decimal("0.5"), output=Decimal("0.5"))
    assert charge_micros(Usage(input=1, output=1), half) == 1


def test_per_request_price_is_in_currency_units():
    price = Price("CNY", input=Decimal(0), output=Decimal(0), per_request=Decimal("0.02"))
    assert charge_micros(Usage(), price) == 20_000


def test_price_from_mapping():
    price = Price.from_mapping(
        {"currency": "usd", "input": "0.15", "cached_input": "0.075", "output": "0.60"}
    )
    assert price.currency == "USD"
    assert price.cached_input == Decimal("0.075")
    assert price.cache_write is None
    assert price.per_request == 0
    with pytest.raises(MoneyError, match=r"price\.input is not a decimal number: 'abc'"):
        Price.from_mapping({"currency": "USD", "input": "abc", "output": "1"})
    with pytest.raises(MoneyError, match="float"):
        Price.from_mapping({"currency": "USD", "input": 0.15, "output": "1"})
    with pytest.raises(ValueError, match="output is required"):
        Price.from_mapping({"currency": "USD", "input": "1"})


def test_usage_refuses_impossible_counts():
    with pytest.raises(ValueError):
        Usage(input=5, cached_input=4, cache_write=2)
    with pytest.raises(ValueError):
        Usage(output=1, reasoning=2)
    with pytest.raises(ValueError):
        Usage(input=-1)


# Realistic prices: up to 1,000 per 1M tokens with up to 9 decimals. (Prices with
# ~30 significant digits overflow Decimal's 28-digit context; see the report.)
prices = st.decimals(min_value=0, max_value=1000, places=9, allow_nan=False, allow_infinity=False)
optional_prices = st.none() | prices


@st.composite
def price_strategy(draw):
    return Price(
        "USD",
        input=draw(prices),
        output=draw(prices),
        cached_input=draw(optional_prices),
        cache_write=draw(optional_prices),
        per_request=draw(st.decimals(min_value=0, max_value=1, places=6)),
    )


@st.composite
def bound_and_usage(draw):
    input_tokens = draw(st.integers(0, 2_000_000))
    max_output = draw(st.integers(0, 200_000))
    inp = draw(st.integers(0, input_tokens))
    cached = draw(st.integers(0, inp))
    write = draw(st.integers(0, inp - cached))
    out = draw(st.integers(0, max_output))
    usage = Usage(
        input=inp,
        cached_input=cached,
        cache_write=write,
        output=out,
        reasoning=draw(st.integers(0, out)),
    )
    return input_tokens, max_output, usage


@settings(max_examples=300, deadline=None)
@given(price_strategy(), bound_and_usage())
def test_worst_case_covers_every_usage_within_the_bound(price, bound):
    input_tokens, max_output, usage = bound
    worst = worst_case_micros(input_tokens, max_output, price)
    assert worst >= charge_micros(usage, price)
    assert worst >= exact_cost(usage, price)


@settings(max_examples=300, deadline=None)
@given(price_strategy(), st.integers(0, 10**9), st.integers(0, 2_000_000))
def test_affordable_output_never_overspends(price, budget, input_tokens):
    n = affordable_output(budget, input_tokens, price)
    assert n >= 0
    if worst_case_micros(input_tokens, 0, price) > budget:
        assert n == 0
    else:
        assert worst_case_micros(input_tokens, n, price) <= budget
        if price.output > 0 and n < 2**31 - 1:
            # ...and close to the most that fits: the fixed part is rounded up on
            # its own, which can cost at most one micro-unit of output.
            slack = int((1 / price.output).to_integral_value(rounding=ROUND_CEILING))
            assert worst_case_micros(input_tokens, n + 1 + slack, price) > budget
