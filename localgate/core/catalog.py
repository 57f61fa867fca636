"""The model catalog: models, their routes and prices, and the merge of the
synced (or bundled) catalog with local ``[[models]]`` entries.

Pure data and validation: no I/O. The bundled snapshot is read by
``localgate.catalog_data``; the hosted catalog by the hosted client. Both, and
the local config, come through :func:`parse_catalog`, so every catalog error
names its source, model, route and field the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from localgate.core.pricing import Price
from localgate.errors import ConfigError, MoneyError

KINDS = ("chat", "embedding")
SETTLEMENTS = ("official", "routed")

# A local entry that names a model the catalog does not know, and gives no
# limits, gets these. Generous on purpose: the hold is capped by what the
# wallet affords anyway, and a too-small default would truncate answers.
DEFAULT_CONTEXT_LENGTH = 128_000
DEFAULT_MAX_OUTPUT_TOKENS = 16_384

# Metadata a local entry may leave out, inheriting it from the base model.
_INHERITABLE = (
    "name",
    "family",
    "kind",
    "context_length",
    "max_output_tokens",
    "modalities",
    "capabilities",
    "routes",
)


@dataclass(frozen=True, slots=True)
class Route:
    """One way to serve a model: a channel, the upstream model id, a price."""

    id: str
    model_id: str
    channel: str
    upstream_model: str
    settlement: str
    priority: int
    price: Price
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class Model:
    """A public model id clients send, with its limits and routes.

    ``defaulted`` names the fields a local entry left out; :func:`merge` fills
    them from the base model of the same id. It is empty for full entries.
    """

    id: str
    name: str
    family: str
    kind: str
    context_length: int
    max_output_tokens: int
    modalities: tuple[str, ...]
    capabilities: tuple[str, ...]
    routes: tuple[Route, ...]
    enabled: bool = True
    defaulted: frozenset[str] = field(default=frozenset(), compare=False, repr=False)


class Catalog:
    """A read-only set of models, looked up by id. Disabled models and routes
    are kept (old receipts point at them) but hidden unless asked for."""

    def __init__(self, models: Iterable[Model] = ()) -> None:
        self._models: dict[str, Model] = {}
        self._routes: dict[str, Route] = {}
        for model in models:
            if model.id in self._models:
                raise ConfigError(f"catalog: model {model.id!r} appears twice")
            self._models[model.id] = model
            for route in model.routes:
                other = self._routes.get(route.id)
                if other is not None:
                    raise ConfigError(
                        f"catalog: route id {route.id!r} is used by models "
                        f"{other.model_id!r} and {model.id!r}; route ids must be unique"
                    )
                self._routes[route.id] = route

    def __len__(self) -> int:
        return len(self._models)

    def get(self, model_id: str, *, include_disabled: bool = False) -> Model | None:
        model = self._models.get(model_id)
        if model is None or (not model.enabled and not include_disabled):
            return None
        return model

    def models(self, *, include_disabled: bool = False) -> list[Model]:
        """Models sorted by id; enabled ones only unless asked."""
        return sorted(
            (m for m in self._models.values() if include_disabled or m.enabled),
            key=lambda m: m.id,
        )

    def routes_for(self, model_id: str) -> list[Route]:
        """Enabled routes of an enabled model, in the order to try them."""
        model = self.get(model_id)
        if model is None:
            return []
        return sorted((r for r in model.routes if r.enabled), key=lambda r: (r.priority, r.id))

    def route(self, route_id: str) -> Route | None:
        """Any route by id, disabled ones included (receipts refer to them)."""
        return self._routes.get(route_id)


def merge(base: Catalog | Iterable[Model], overlay: Iterable[Model]) -> Catalog:
    """Local entries over the synced/bundled catalog.

    An overlay model replaces the base model of the same id wholesale (routes
    included: a local entry's routes are *the* routes). Fields the local entry
    left out (:attr:`Model.defaulted`) are taken from the base model if there is
    one; otherwise they keep the defaults :func:`parse_catalog` gave them.
    """
    base_models = base.models(include_disabled=True) if isinstance(base, Catalog) else list(base)
    merged = {m.id: m for m in base_models}
    for local in overlay:
        under = merged.get(local.id)
        if under is not None and local.defaulted:
            local = replace(local, **{name: getattr(under, name) for name in local.defaulted})
        if under is None and "routes" in local.defaulted and local.enabled:
            raise ConfigError(
                f"model {local.id!r}: no routes given and no catalog model of that id "
                "to inherit them from; add [[models.routes]] with channel and price"
            )
        merged[local.id] = replace(local, defaulted=frozenset())
    return Catalog(merged.values())


def price_fingerprint(route: Route) -> str:
    """A stable sha256 hex of what a price version pins down.

    Priority, id and enabled are left out: reordering routes is not a price
    change. Prices are compared normalized ("0.60" == "0.6").
    """
    payload = {
        "channel": route.channel,
        "upstream_model": route.upstream_model,
        "settlement": route.settlement,
        "price": route.price.as_dict(),
    }
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


def per_token_to_per_million(value: float | int | str) -> Decimal:
    """A per-token price (litellm float, OpenRouter string) as an exact Decimal
    per 1M tokens.

    Floats go through their shortest repr, never binary arithmetic: 1.5e-07 is
    the float nearest 0.00000015, and its repr says exactly that, so the
    result is exactly 0.15.
    """
    if isinstance(value, bool) or not isinstance(value, (float, int, str)):
        raise MoneyError(f"per-token price must be a number, got {value!r}")
    try:
        d = Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise MoneyError(f"per-token price is not a number: {value!r}") from exc
    if not d.is_finite() or d < 0:
        raise MoneyError(f"per-token price must be finite and non-negative: {value!r}")
    result = (d * 1_000_000).normalize()
    # normalize() writes whole tens as 1E+1; bring those back to an integer exponent.
    return result.quantize(Decimal(1)) if result == result.to_integral_value() else result


# --- parsing -----------------------------------------------------------------


def parse_catalog(
    data: Mapping[str, Any],
    *,
    source: str,
    local: bool = False,
    channel_settlement: Mapping[str, str] | None = None,
) -> tuple[Model, ...]:
    """Validate a catalog document ``{"models": [...]}`` into models.

    ``local=True`` is for config ``[[models]]`` entries: only ``id`` is required;
    missing metadata gets defaults and is marked for :func:`merge` to inherit,
    a route's ``id`` is derived, its ``settlement`` defaults to its channel's
    (``channel_settlement``), its ``upstream_model`` to the model id and its
    ``priority`` to its position. Errors are :class:`ConfigError` naming
    ``source``, the model, the route and the field.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: a catalog must be an object with a 'models' list")
    raw_models = data.get("models")
    if not isinstance(raw_models, list):
        raise ConfigError(f"{source}: 'models' must be a list of model objects")
    models: list[Model] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_models):
        model = _parse_model(raw, index, source, local, channel_settlement or {})
        if model.id in seen:
            raise ConfigError(f"{source}: model {model.id!r} is listed twice")
        seen.add(model.id)
        models.append(model)
    Catalog(models)  # cross-model checks: route ids unique
    return tuple(models)


class _Fields:
    """Typed getters over one raw object that raise errors naming ``where``."""

    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        self.raw = raw
        self.where = where

    def fail(self, name: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.where}: {name} {problem}")

    def has(self, name: str) -> bool:
        return self.raw.get(name) is not None

    def text(self, name: str, default: str | None = None) -> str:
        value = self.raw.get(name, default)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, f"must be a non-empty string, got {value!r}")
        return value.strip()

    def choice(self, name: str, options: Sequence[str], default: str | None = None) -> str:
        value = self.text(name, default)
        if value not in options:
            raise self.fail(name, f"must be one of {', '.join(options)}, got {value!r}")
        return value

    def integer(self, name: str, minimum: int, default: int | None = None) -> int:
        value = self.raw.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(name, f"must be an integer >= {minimum}, got {value!r}")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value = self.raw.get(name, default)
        if not isinstance(value, bool):
            raise self.fail(name, f"must be true or false, got {value!r}")
        return value

    def words(self, name: str, default: Sequence[str] = ()) -> tuple[str, ...]:
        value = self.raw.get(name, list(default))
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self.fail(name, f"must be a list of strings, got {value!r}")
        return tuple(value)


def _parse_model(
    raw: Any, index: int, source: str, local: bool, channel_settlement: Mapping[str, str]
) -> Model:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: models[{index}] must be an object, got {raw!r}")
    f = _Fields(raw, f"{source}: models[{index}]")
    model_id = f.text("id")
    if any(c.isspace() for c in model_id):
        raise f.fail("id", f"must not contain whitespace, got {model_id!r}")
    f.where = f"{source}: model {model_id!r}"

    defaulted = frozenset(n for n in _INHERITABLE if local and not f.has(n))
    # The hosted contract (v1) has no "kind": it defaults to chat there too.
    required = () if local else tuple(n for n in _INHERITABLE if n != "kind")
    for name in required:
        if not f.has(name):
            raise f.fail(name, "is required")

    kind = f.choice("kind", KINDS, "chat")
    default_output = DEFAULT_MAX_OUTPUT_TOKENS if kind == "chat" else 0
    max_output = f.integer("max_output_tokens", 0, default_output)
    if kind == "chat" and max_output < 1:
        raise f.fail("max_output_tokens", "must be at least 1 for a chat model")

    raw_routes = raw.get("routes", [])
    if not isinstance(raw_routes, list):
        raise f.fail("routes", "must be a list of route objects")
    routes = tuple(
        _parse_route(r, i, model_id, f.where, local, channel_settlement)
        for i, r in enumerate(raw_routes)
    )
    ids = [r.id for r in routes]
    duplicate = next((i for i in ids if ids.count(i) > 1), None)
    if duplicate is not None:
        raise f.fail("routes", f"has route id {duplicate!r} twice")

    return Model(
        id=model_id,
        name=f.text("name", model_id),
        family=f.text("family", routes[0].channel if routes else "custom"),
        kind=kind,
        context_length=f.integer("context_length", 1, DEFAULT_CONTEXT_LENGTH),
        max_output_tokens=max_output,
        modalities=f.words("modalities", ("text",)),
        capabilities=f.words("capabilities", ("stream",) if kind == "chat" else ()),
        routes=routes,
        enabled=f.flag("enabled", True),
        defaulted=defaulted,
    )


def _parse_route(
    raw: Any,
    index: int,
    model_id: str,
    model_where: str,
    local: bool,
    channel_settlement: Mapping[str, str],
) -> Route:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{model_where}: routes[{index}] must be an object, got {raw!r}")
    label = raw.get("id") if isinstance(raw.get("id"), str) else f"routes[{index}]"
    f = _Fields(raw, f"{model_where} route {label!r}")
    channel = f.text("channel")
    if local:
        if not f.has("settlement") and channel not in channel_settlement:
            raise f.fail(
                "settlement",
                f"is required: set it on the route or on channel {channel!r} (official or routed)",
            )
        settlement = f.choice("settlement", SETTLEMENTS, channel_settlement.get(channel))
        upstream = f.text("upstream_model", model_id)
        priority = f.integer("priority", 0, index + 1)
    else:
        settlement = f.choice("settlement", SETTLEMENTS)
        upstream = f.text("upstream_model")
        priority = f.integer("priority", 0)
    route_id = f.text("id", default_route_id(settlement, channel, model_id, upstream))

    raw_price = raw.get("price")
    if not isinstance(raw_price, Mapping):
        raise f.fail("price", "must be an object with currency, input and output")
    try:
        price = Price.from_mapping(dict(raw_price), what="price")
    except (ValueError, MoneyError) as exc:
        raise ConfigError(f"{f.where}: {exc}") from exc

    return Route(
        id=route_id,
        model_id=model_id,
        channel=channel,
        upstream_model=upstream,
        settlement=settlement,
        priority=priority,
        price=price,
        enabled=f.flag("enabled", True),
    )


def default_route_id(settlement: str, channel: str, model_id: str, upstream_model: str) -> str:
    """A readable, stable route id: ``official:openai:gpt-4o-mini``; the upstream
    model is appended only when it differs from the public id."""
    base = f"{settlement}:{channel}:{model_id}"
    return base if upstream_model == model_id else f"{base}:{upstream_model}"
