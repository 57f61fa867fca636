"""Exact money: integer micro-units, Decimal prices, one rounding per request.

Every amount localgate stores is an ``int`` of micro-units of its currency
(1 USD = 1_000_000 micros). Prices are ``Decimal`` per 1M tokens, so
``tokens * price`` is already a Decimal number of micro-units; it is rounded
once per request, half-up, by :func:`round_micros`.

Stripe speaks "minor units" (cents, or whole yen for zero-decimal currencies);
:func:`to_minor_units` and :func:`from_minor_units` convert exactly or refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

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


def to_decimal(value: str | int | Decimal, *, what: str = "amount") -> Decimal:
    """Parse a decimal string (or int/Decimal) strictly: no floats, no NaN, no inf."""
    if isinstance(value, bool | float):
        raise MoneyError(f"{what} must be a decimal string, not a float: {value!r}")
    try:
        d = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except (InvalidOperation, ValueError, TypeError) as exc:
        raise MoneyError(f"{what} is not a decimal number: {value!r}") from exc
    if not d.is_finite():
        raise MoneyError(f"{what} must be a finite number: {value!r}")
    return d


def parse_price(value: str | int | Decimal, *, what: str = "price") -> Decimal:
    """A price per 1M tokens (or per request): a non-negative finite Decimal."""
    d = to_decimal(value, what=what)
    if d < 0:
        raise MoneyError(f"{what} must not be negative: {value!r}")
    return d


def parse_amount(value: str | int | Decimal, *, what: str = "amount") -> int:
    """An amount in currency units ("20", "0.000420") to exact micros.

    More than six decimals would need rounding, so it is refused rather than
    silently rounded.
    """
    d = to_decimal(value, what=what)
    # Integer arithmetic on the digits: Decimal arithmetic would round to the
    # context's 28 digits and could turn 7+ decimals into a whole micro.
    sign, digits, exponent = d.as_tuple()
    coefficient = int("".join(map(str, digits)))
    shift = int(exponent) + MICRO_DIGITS
    rest = 0
    if coefficient and d.adjusted() + MICRO_DIGITS > 18:
        micros = MAX_AMOUNT_MICROS + 1  # huge: refused below without computing it
    elif shift >= 0:
        micros = coefficient * 10**shift
    elif -shift > len(digits):
        micros, rest = 0, coefficient
    else:
        micros, rest = divmod(coefficient, 10**-shift)
    if rest:
        raise MoneyError(f"{what} has more than {MICRO_DIGITS} decimals: {value!r}")
    if micros > MAX_AMOUNT_MICROS:
        raise MoneyError(
            f"{what} is too large: {value!r} (at most {MAX_AMOUNT_MICROS // MICROS_PER_UNIT})"
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
