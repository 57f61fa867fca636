"""Usage + price -> exact cost and the charge.

Usage is normalized the same way for every upstream:

- ``input``: all prompt tokens, cached and cache-written ones included;
- ``cached_input``: the part of ``input`` read from a prompt cache;
- ``cache_write``: the part of ``input`` written to a prompt cache;
- ``output``: all generated tokens, reasoning included;
- ``reasoning``: the part of ``output`` spent on reasoning (informational).

Prices are Decimals per 1M tokens, so ``tokens * price`` is a Decimal number of
micro-units. The exact sum is kept; the charge rounds it once, half-up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import MAX_PREC, ROUND_CEILING, Decimal, localcontext

from localgate.money import MICROS_PER_UNIT, parse_price, round_micros

USAGE_SOURCES = ("upstream", "estimated")
# The most output tokens a request may ask for (``max_tokens`` and its kin): far
# beyond any model's limit, small enough that a worst-case hold is ordinary money.
MAX_OUTPUT_TOKENS = 10_000_000


@dataclass(frozen=True, slots=True)
class Usage:
    input: int = 0
    cached_input: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    source: str = "upstream"

    def __post_init__(self) -> None:
        for name in ("input", "cached_input", "cache_write", "output", "reasoning"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"usage.{name} must be a non-negative integer, got {value!r}")
        if self.cached_input + self.cache_write > self.input:
            raise ValueError("usage: cached_input + cache_write exceed input")
        if self.reasoning > self.output:
            raise ValueError("usage: reasoning exceeds output")
        if self.source not in USAGE_SOURCES:
            raise ValueError(f"usage.source must be one of {USAGE_SOURCES}")

    @property
    def uncached_input(self) -> int:
        return self.input - self.cached_input - self.cache_write

    def as_dict(self) -> dict[str, int | str]:
        return {
            "input": self.input,
            "cached_input": self.cached_input,
            "cache_write": self.cache_write,
            "output": self.output,
            "reasoning": self.reasoning,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class Price:
    """Prices of one route in one currency; per 1M tokens, ``per_request`` in units.

    ``cached_input`` and ``cache_write`` of ``None`` mean "billed as input".
    """

    currency: str
    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    per_request: Decimal = Decimal(0)

    @classmethod
    def from_mapping(cls, data: dict[str, object], *, what: str = "price") -> Price:
        """Build from a mapping of decimal strings (config, catalog, hosted API)."""

        def opt(name: str) -> Decimal | None:
            value = data.get(name)
            if value is None or value == "":
                return None
            return parse_price(value, what=f"{what}.{name}")  # type: ignore[arg-type]

        currency = data.get("currency")
        if not isinstance(currency, str) or len(currency) != 3:
            raise ValueError(f"{what}.currency must be a three-letter code like USD")
        for required in ("input", "output"):
            if data.get(required) in (None, ""):
                raise ValueError(f"{what}.{required} is required (a decimal string per 1M tokens)")
        return cls(
            currency=currency.upper(),
            input=parse_price(data["input"], what=f"{what}.input"),  # type: ignore[arg-type]
            output=parse_price(data["output"], what=f"{what}.output"),  # type: ignore[arg-type]
            cached_input=opt("cached_input"),
            cache_write=opt("cache_write"),
            per_request=opt("per_request") or Decimal(0),
        )

    def as_dict(self) -> dict[str, str | None]:
        def s(d: Decimal | None) -> str | None:
            return None if d is None else f"{d.normalize():f}"

        return {
            "currency": self.currency,
            "input": s(self.input),
            "cached_input": s(self.cached_input),
            "cache_write": s(self.cache_write),
            "output": s(self.output),
            "per_request": s(self.per_request),
        }


def token_count(obj: object, key: str) -> int:
    """A token count read from an upstream's usage object: ``obj[key]`` as a
    non-negative int. Upstreams, routed pools especially, sometimes report odd
    numbers (negative, fractional, missing); they are clamped, not trusted, and
    never fail a request that succeeded."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    if isinstance(value, float) and not math.isfinite(value):
        return 0
    return max(int(value), 0)


def exact_cost(usage: Usage, price: Price) -> Decimal:
    """The exact cost in micro-units (a Decimal, not rounded)."""
    cached = price.input if price.cached_input is None else price.cached_input
    write = price.input if price.cache_write is None else price.cache_write
    return (
        usage.uncached_input * price.input
        + usage.cached_input * cached
        + usage.cache_write * write
        + usage.output * price.output
        + price.per_request * MICROS_PER_UNIT
    )


def charge_micros(usage: Usage, price: Price) -> int:
    """The charge: the exact cost rounded once, half-up, to a whole micro-unit."""
    return round_micros(exact_cost(usage, price))


def worst_case_micros(input_tokens: int, max_output: int, price: Price) -> int:
    """An upper bound of a request's charge: all input uncached at the highest
    input rate, ``max_output`` output tokens. Used as the hold amount."""
    rates = [price.input]
    if price.cache_write is not None:
        rates.append(price.cache_write)
    if price.cached_input is not None:
        rates.append(price.cached_input)
    # Exact whatever the sizes: the default context keeps 28 digits, and a
    # product past them would be rounded, or refused by round_micros.
    with localcontext() as ctx:
        ctx.prec = MAX_PREC
        exact = input_tokens * max(rates) + max_output * price.output
        exact += price.per_request * MICROS_PER_UNIT
        # Round up, never down: a hold must cover the charge.
        whole = int(exact.to_integral_value(rounding=ROUND_CEILING))
    return whole


def affordable_output(budget_micros: int, input_tokens: int, price: Price) -> int:
    """The most output tokens whose worst case fits ``budget_micros`` (>= 0)."""
    fixed = worst_case_micros(input_tokens, 0, price)
    room = budget_micros - fixed
    if room < 0:
        return 0
    if price.output == 0:
        return 2**31 - 1
    return int(Decimal(room) / price.output)
