"""Exact money: integer micro-units, Decimal prices, one rounding per request.

Every amount localgate stores is an ``int`` of micro-units of its currency
(1 USD = 1_000_000 micros). Prices are ``Decimal`` per 1M tokens, so
``tokens * price`` is already a Decimal number of micro-units; it is rounded
once per request, half-up, by :func:`round_micros`.

Stripe speaks "minor units" (cents, or whole yen for zero-decimal currencies);
:func:`to_minor_units` and :func:`from_minor_units` convert exactly or refuse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from localgate.errors import MoneyError

MICROS_PER_UNIT = 1_000_000
MICRO_DIGITS = 6
_MICRO = Decimal(1).scaleb(-MICRO_DIGITS)
# The largest amount parse_amount accepts (one billion units): far above any
# wallet, far below SQLite's 64-bit integers, so sums of amounts cannot overflow.
MAX_AMOUNT_MICROS = 10**9 * MICROS_PER_UNIT


@dataclass(frozen=True)
class Currency:
    code: str
    symbol: str
    minor_digits: int  # digits after the point in Stripe's minor units


# Stripe's zero-decimal and three-decimal currencies are listed explicitly;
# every other ISO code falls back to two minor digits.
_ZERO_DECIMAL = "BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF UGX VND VUV XAF XOF XPF"
_THREE_DECIMAL = "BHD JOD KWD OMR TND"
_SYMBOLS = {"USD": "$", "CNY": "¥", "EUR": "€", "GBP": "£", "JPY": "¥", "HKD": "HK$"}


def currency(code: str) -> Currency:
    """The :class:`Currency` for an ISO 4217 code (case-insensitive)."""
    if not isinstance(code, str) or len(code) != 3 or not code.isalpha():
        raise MoneyError(f"not a currency code: {code!r} (expected three letters, e.g. USD)")
    code = code.upper()
    if code in _ZERO_DECIMAL.split():
        digits = 0
    elif code in _THREE_DECIMAL.split():
        digits = 3
    else:
        digits = 2
    return Currency(code, _SYMBOLS.get(code, code + " "), digits)


# What an amount or price may look like as text: ASCII digits with an optional
# sign, point and exponent ("20", "-0.25", "1e-6"). Nothing else: no "1_000", no
# fullwidth or Arabic-Indic digits (which Decimal and int accept), no spaces inside.
_DECIMAL_TEXT = re.compile(r"([+-]?)([0-9]*)(?:\.([0-9]*))?(?:[eE]([+-]?[0-9]+))?", re.ASCII)
# Longer text is refused before it is parsed at all, so no input makes the
# parse expensive; it is far more than any real amount or price needs.
MAX_TEXT = 40
MAX_INTEGER_DIGITS = 15  # digits before the point (of the value, not the text)
_ASCII_SPACE = " \t\r\n"


def _shown(value: object) -> str:
    """``value`` for an error message, cut short: an answer never echoes a huge input."""
    if isinstance(value, str) and len(value) > MAX_TEXT:
        return repr(value[:MAX_TEXT]) + "..."
    return repr(value)


def _parts(value: str | int | Decimal, what: str) -> tuple[int, int, int]:
    """``value`` as exact (sign, coefficient, exponent), checked on the text first.

    The value is ``(-1)**sign * coefficient * 10**exponent``; the exponent is
    bounded, so callers may compute with it.
    """
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        kind = "a float" if isinstance(value, float) else type(value).__name__
        raise MoneyError(f"{what} must be a decimal string, not {kind}: {_shown(value)}")
    if isinstance(value, int):
        if abs(value) >= 10**MAX_INTEGER_DIGITS:
            raise MoneyError(f"{what} is too large: {_shown(value)}")
        return int(value < 0), abs(value), 0
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise MoneyError(f"{what} must be a finite number: {_shown(value)}")
        sign, digits, exp = value.as_tuple()
        return _bounded(sign, int("".join(map(str, digits))), int(exp), value, what)
    text = value.strip(_ASCII_SPACE)
    match = _DECIMAL_TEXT.fullmatch(text) if len(text) <= MAX_TEXT else None
    if match is None or not (match[2] or match[3]):
        if len(text) > MAX_TEXT and text.isascii() and text.isdigit():
            raise MoneyError(f"{what} is too large: {_shown(value)}")
        raise MoneyError(
            f"{what} is not a decimal number: {_shown(value)} (ASCII digits with an optional "
            "sign and point, like 20 or -0.25)"
        )
    minus, whole, frac, power = match[1], match[2], match[3] or "", match[4] or "0"
    # At most MAX_TEXT digits each: these int() calls are cheap.
    return _bounded(
        int(minus == "-"), int(whole + frac or "0"), int(power) - len(frac), value, what
    )


def _bounded(
    sign: int, coefficient: int, exponent: int, value: object, what: str
) -> tuple[int, int, int]:
    if not coefficient:
        return sign, 0, 0  # zero, whatever its exponent ("0e999999999")
    if len(str(coefficient)) + exponent > MAX_INTEGER_DIGITS:
        raise MoneyError(f"{what} is too large: {_shown(value)}")
    # A smaller exponent than any text of MAX_TEXT can need is just zero, or a
    # fraction finer than anything money counts.
    if exponent < -4 * MAX_TEXT:
        raise MoneyError(f"{what} has far too many decimals: {_shown(value)}")
    return sign, coefficient, exponent


def to_decimal(value: str | int | Decimal, *, what: str = "amount") -> Decimal:
    """Parse a decimal string (or int/Decimal) strictly: ASCII text of at most
    MAX_TEXT characters, no floats, no NaN, no inf, at most 15 integer digits."""
    sign, coefficient, exponent = _parts(value, what)
    # The constructor is exact; arithmetic would round to the context's precision.
    return Decimal(f"{'-' if sign else ''}{coefficient}E{exponent}")


def parse_price(value: str | int | Decimal, *, what: str = "price") -> Decimal:
    """A price per 1M tokens (or per request): a non-negative finite Decimal.

    Unlike an amount it may have any number of decimals (within MAX_TEXT)."""
    d = to_decimal(value, what=what)
    if d < 0:
        raise MoneyError(f"{what} must not be negative: {_shown(value)}")
    return d


def parse_amount(value: str | int | Decimal, *, what: str = "amount") -> int:
    """An amount in currency units ("20", "0.000420") to exact micros.

    More than six decimals would need rounding, so it is refused rather than
    silently rounded. The text is checked before anything is computed from it
    (see ``_DECIMAL_TEXT``), and the arithmetic is on integers: Decimal would
    round to its context's 28 digits and could turn 7+ decimals into a micro.
    """
    sign, coefficient, exponent = _parts(value, what)
    shift = exponent + MICRO_DIGITS
    scale: int = 10 ** abs(shift)  # |shift| is bounded by _parts
    micros, rest = (coefficient * scale, 0) if shift >= 0 else divmod(coefficient, scale)
    if rest:
        raise MoneyError(f"{what} has more than {MICRO_DIGITS} decimals: {_shown(value)}")
    if micros > MAX_AMOUNT_MICROS:
        raise MoneyError(
            f"{what} is too large: {_shown(value)} (at most {MAX_AMOUNT_MICROS // MICROS_PER_UNIT})"
        )
    return -micros if sign else micros


def round_micros(exact: Decimal) -> int:
    """Round an exact Decimal number of micros once, half-up (away from zero at .5)."""
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def micros_to_decimal(micros: int) -> Decimal:
    return Decimal(micros).scaleb(-MICRO_DIGITS).quantize(_MICRO)


def decimal_str(micros: int) -> str:
    """Micros as a decimal string with six places: 420 -> "0.000420"."""
    return f"{micros_to_decimal(micros):f}"


def decimal_or_none(micros: int | None) -> str | None:
    """``decimal_str`` that passes ``None`` through (an amount not known yet)."""
    return None if micros is None else decimal_str(micros)


def format_money(micros: int, code: str) -> str:
    """Human form with the currency symbol: ``$1.234567``, ``-¥0.500000``."""
    cur = currency(code)
    sign = "-" if micros < 0 else ""
    return f"{sign}{cur.symbol}{decimal_str(abs(micros))}"


def to_minor_units(micros: int, code: str) -> int:
    """Micros to Stripe minor units; refuses amounts that are not whole minor units."""
    step: int = 10 ** (MICRO_DIGITS - currency(code).minor_digits)
    if micros % step:
        raise MoneyError(
            f"{decimal_str(micros)} {code.upper()} is not a whole number of "
            f"{code.upper()} minor units (at most {currency(code).minor_digits} decimals)"
        )
    return micros // step


def from_minor_units(minor: int, code: str) -> int:
    """Stripe minor units (e.g. cents) to micros."""
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise MoneyError(f"minor units must be an integer: {minor!r}")
    scale: int = 10 ** (MICRO_DIGITS - currency(code).minor_digits)
    return minor * scale
