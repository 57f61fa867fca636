"""The catalog: bundled snapshot, exact price conversion, validation, merge,
price fingerprints."""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from localgate import catalog_data, resources
from localgate.core.catalog import (
    DEFAULT_CONTEXT_LENGTH,
    DEFAULT_MAX_OUTPUT_TOKENS,
    Catalog,
    merge,
    parse_catalog,
    per_token_to_per_million,
    price_fingerprint,
)
from localgate.core.pricing import Price
from localgate.errors import ConfigError, MoneyError

REPO = Path(__file__).resolve().parent.parent
LITELLM = Path("/work/shared/data/model_prices_litellm_1.108.7.json")


def price(**kw):
    base = {"currency": "USD", "input": "1", "output": "2"}
    return {**base, **kw}


def route(**kw):
    base = {
        "id": "r1",
        "settlement": "official",
        "channel": "openai",
        "upstream_model": "m",
        "priority": 1,
        "price": price(),
    }
    return {**base, **kw}


def model(**kw):
    base = {
        "id": "m",
        "name": "M",
        "family": "openai",
        "kind": "chat",
        "context_length": 1000,
        "max_output_tokens": 100,
        "modalities": ["text"],
        "capabilities": ["stream"],
        "routes": [route()],
    }
    return {**base, **kw}


def doc(*models):
    return {"version": "t", "models": list(models)}


@pytest.fixture(scope="module")
def bundled() -> Catalog:
    return Catalog(catalog_data.load_bundled_catalog())


# --- the bundled snapshot ----------------------------------------------------


def test_bundled_catalog_loads_and_validates(bundled):
    assert 20 <= len(bundled) <= 60
    ids = {m.id for m in bundled.models()}
    for expected in (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "o3",
        "gpt-5",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "localgate-demo",
        "localgate-demo-embed",
    ):
        assert expected in ids
    assert not any("/" in i for i in ids), "public ids carry no provider prefix"
    for m in bundled.models():
        assert m.routes, m.id
        assert m.kind in ("chat", "embedding")
        for r in m.routes:
            if r.channel == "demo":
                continue
            assert (r.settlement, r.priority, r.price.currency) == ("official", 1, "USD")
            assert (
                r.channel
                == {"openai": "openai", "anthropic": "anthropic", "google": "gemini"}[m.family]
            )
            assert r.id == f"official:{r.channel}:{m.id}"
    assert catalog_data.bundled_catalog_version().startswith("bundled-")
    assert "litellm 1.108.7" in catalog_data.bundled_catalog_attribution()
    assert "BerriAI" in catalog_data.bundled_catalog_attribution()


@pytest.mark.parametrize(
    ("model_id", "expected"),
    [
        (
            "gpt-4o-mini",
            {"input": "0.15", "cached_input": "0.075", "cache_write": None, "output": "0.6"},
        ),
        ("gpt-4o", {"input": "2.5", "cached_input": "1.25", "output": "10"}),
        ("gpt-5-nano", {"input": "0.05", "cached_input": "0.005", "output": "0.4"}),
        (
            "claude-sonnet-4-5",
            {"input": "3", "cached_input": "0.3", "cache_write": "3.75", "output": "15"},
        ),
        ("gemini-2.5-flash", {"input": "0.3", "cached_input": "0.03", "output": "2.5"}),
        ("text-embedding-3-small", {"input": "0.02", "cached_input": None, "output": "0"}),
    ],
)
def test_known_bundled_prices_are_exact(bundled, model_id, expected):
    [r] = bundled.routes_for(model_id)
    got = r.price.as_dict()
    assert got["currency"] == "USD"
    assert {k: got[k] for k in expected} == expected


def test_bundled_kinds_and_limits(bundled):
    emb = bundled.get("text-embedding-3-large")
    assert (emb.kind, emb.max_output_tokens, emb.context_length) == ("embedding", 0, 8191)
    mini = bundled.get("gpt-4o-mini")
    assert (mini.kind, mini.context_length, mini.max_output_tokens) == ("chat", 128000, 16384)
    assert "image" in mini.modalities and "tools" in mini.capabilities
    gem = bundled.get("gemini-2.5-pro")
    assert gem.family == "google"
    assert gem.routes[0].upstream_model == "gemini-2.5-pro"


def test_demo_models(bundled):
    demo = bundled.get("localgate-demo")
    assert (demo.kind, demo.context_length, demo.max_output_tokens) == ("chat", 32768, 4096)
    routed, official = bundled.routes_for("localgate-demo")
    assert (routed.id, routed.settlement, routed.channel) == (
        "routed:demo:localgate-demo",
        "routed",
        "demo",
    )
    assert (routed.price.currency, routed.price.input, routed.price.output) == (
        "CNY",
        Decimal("1.00"),
        Decimal("4.00"),
    )
    assert (official.settlement, official.priority, official.price.currency) == (
        "official",
        2,
        "USD",
    )
    assert (official.price.input, official.price.output) == (Decimal("0.15"), Decimal("0.60"))
    [embed] = bundled.routes_for("localgate-demo-embed")
    assert bundled.get("localgate-demo-embed").kind == "embedding"
    assert (embed.channel, embed.price.input, embed.price.output) == (
        "demo",
        Decimal("0.02"),
        Decimal(0),
    )


def test_bundled_file_lives_in_package_data():
    assert resources.data_path("catalog.json").parent.name == "data"


@pytest.mark.skipif(not LITELLM.is_file(), reason="litellm source map not available")
def test_bundled_file_is_what_the_build_script_makes():
    spec = importlib.util.spec_from_file_location("make_catalog", REPO / "build/make_catalog.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = json.loads(resources.data_path("catalog.json").read_text(encoding="utf-8"))
    rebuilt = module.build(json.loads(LITELLM.read_text(encoding="utf-8")), shipped["version"])
    assert rebuilt == shipped, "catalog.json is stale: rerun build/make_catalog.py"


def test_core_catalog_imports_no_frameworks():
    code = (
        "import sys, localgate.core.catalog; "
        "print([m for m in ('litestar', 'httpx', 'stripe', 'sqlite3') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "[]"


# --- per-token float -> exact per-1M Decimal ---------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.5e-07, "0.15"),
        (2.5e-06, "2.5"),
        (1e-05, "10"),
        (7.5e-08, "0.075"),
        (5e-09, "0.005"),
        (1.5625e-05, "15.625"),
        (0.000168, "168"),
        (3e-05, "30"),
        (3.75e-06, "3.75"),
        (1.25e-07, "0.125"),
        (1.1e-06, "1.1"),
        (2.75e-07, "0.275"),
        (0.0, "0"),
        (0, "0"),
        ("0.00000015", "0.15"),
        ("0.000002", "2"),
    ],
)
def test_per_token_to_per_million_is_exact(value, expected):
    result = per_token_to_per_million(value)
    assert format(result, "f") == expected
    assert result == Decimal(expected)


def test_binary_float_arithmetic_would_not_be_exact():
    # Why the conversion goes through repr: the float's binary value is not 0.15e-6.
    assert Decimal(1.5e-07) * 1_000_000 != Decimal("0.15")  # noqa: RUF032 (the point)
    assert per_token_to_per_million(1.5e-07) == Decimal("0.15")


@given(st.integers(1, 10**15 - 1), st.integers(-14, -2))
def test_per_token_roundtrip_for_up_to_15_digits(mantissa, exponent):
    exact = Decimal(mantissa).scaleb(exponent)
    assert per_token_to_per_million(float(exact)) == exact * 1_000_000


@pytest.mark.parametrize("bad", [-1e-06, float("nan"), float("inf"), True, None, "abc", [1]])
def test_per_token_rejects_non_prices(bad):
    with pytest.raises(MoneyError):
        per_token_to_per_million(bad)


# --- validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("mutate", "needles"),
    [
        (lambda m: m.pop("name"), ["'m'", "name", "required"]),
        (lambda m: m.update(kind="audio"), ["'m'", "kind", "chat, embedding"]),
        (lambda m: m.update(context_length=0), ["'m'", "context_length"]),
        (lambda m: m.update(context_length="big"), ["'m'", "context_length"]),
        (lambda m: m.update(max_output_tokens=0), ["'m'", "max_output_tokens", "chat"]),
        (lambda m: m.update(modalities="text"), ["'m'", "modalities"]),
        (lambda m: m.update(enabled="yes"), ["'m'", "enabled"]),
        (lambda m: m.update(routes={}), ["'m'", "routes"]),
        (lambda m: m.update(id="has space"), ["id", "whitespace"]),
        (lambda m: m["routes"][0].update(settlement="free"), ["'m'", "'r1'", "settlement"]),
        (lambda m: m["routes"][0].pop("channel"), ["'m'", "'r1'", "channel"]),
        (lambda m: m["routes"][0].pop("upstream_model"), ["'r1'", "upstream_model"]),
        (lambda m: m["routes"][0].update(priority=-1), ["'r1'", "priority"]),
        (lambda m: m["routes"][0].update(priority=True), ["'r1'", "priority"]),
        (lambda m: m["routes"][0].pop("price"), ["'m'", "'r1'", "price"]),
        (lambda m: m["routes"][0]["price"].update(input=0.15), ["'r1'", "price.input", "float"]),
        (lambda m: m["routes"][0]["price"].update(output="-1"), ["'r1'", "price.output"]),
        (lambda m: m["routes"][0]["price"].pop("output"), ["'r1'", "price.output"]),
        (lambda m: m["routes"][0]["price"].update(currency="US"), ["'r1'", "price.currency"]),
        (lambda m: m["routes"][0]["price"].update(cached_input="x"), ["price.cached_input"]),
        (lambda m: m["routes"].append(route()), ["'m'", "'r1'", "twice"]),
    ],
)
def test_bad_catalogs_raise_config_error_naming_the_field(mutate, needles):
    data = model()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_catalog(doc(data), source="hosted catalog")
    message = str(info.value)
    assert message.startswith("hosted catalog")
    for needle in needles:
        assert needle in message


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ([], "object"),
        ({"models": {}}, "'models' must be a list"),
        ({"models": ["x"]}, "models[0]"),
        (doc(model(), model()), "listed twice"),
        (doc(model(), model(id="n")), "route id 'r1' is used by models 'm' and 'n'"),
    ],
)
def test_bad_documents(data, needle):
    with pytest.raises(ConfigError) as info:
        parse_catalog(data, source="x.json")
    assert needle in str(info.value)


HOSTED_EXAMPLE = """
{
  "version": "2026-11-27.3",
  "models": [
    {
      "id": "gpt-4o-mini",
      "name": "GPT-4o mini",
      "family": "openai",
      "context_length": 128000,
      "max_output_tokens": 16384,
      "modalities": ["text", "image"],
      "capabilities": ["tools", "stream"],
      "routes": [
        {
          "id": "r_official_openai_4o_mini",
          "settlement": "official",
          "channel": "hosted",
          "upstream_model": "gpt-4o-mini",
          "priority": 2,
          "price": {"currency": "USD", "input": "0.15", "cached_input": "0.075",
                    "cache_write": null, "output": "0.60", "per_request": "0"}
        },
        {
          "id": "r_routed_pool_a_4o_mini",
          "settlement": "routed",
          "channel": "hosted",
          "upstream_model": "pool-a/gpt-4o-mini",
          "priority": 1,
          "price": {"currency": "CNY", "input": "0.55", "cached_input": null,
                    "cache_write": null, "output": "2.20", "per_request": "0"}
        }
      ]
    }
  ]
}
"""


def test_hosted_contract_example_parses():
    """The example of hosted-api.md, verbatim: it has no "kind" (defaults to chat)."""
    catalog = Catalog(parse_catalog(json.loads(HOSTED_EXAMPLE), source="hosted catalog"))
    m = catalog.get("gpt-4o-mini")
    assert (m.kind, m.family, m.capabilities) == ("chat", "openai", ("tools", "stream"))
    routed, official = catalog.routes_for("gpt-4o-mini")
    assert (routed.id, routed.upstream_model, routed.price.currency) == (
        "r_routed_pool_a_4o_mini",
        "pool-a/gpt-4o-mini",
        "CNY",
    )
    assert official.price.as_dict() == {
        "currency": "USD",
        "input": "0.15",
        "cached_input": "0.075",
        "cache_write": None,
        "output": "0.6",
        "per_request": "0",
    }


def test_local_embedding_entry_defaults_to_no_output():
    [m] = parse_catalog(
        {"models": [{"id": "e", "kind": "embedding", "routes": []}]}, source="c", local=True
    )
    assert (m.kind, m.max_output_tokens, m.capabilities) == ("embedding", 0, ())


def test_valid_document_parses_to_models():
    [m] = parse_catalog(doc(model()), source="t")
    assert m.routes[0].model_id == "m"
    assert m.routes[0].price == Price("USD", Decimal(1), Decimal(2))
    assert m.defaulted == frozenset()
    assert m.modalities == ("text",)


# --- catalog lookups ---------------------------------------------------------


def test_routes_for_sorts_by_priority_then_id_and_hides_disabled():
    routes = [
        route(id="b", priority=2),
        route(id="a", priority=2),
        route(id="z", priority=1),
        route(id="off", priority=0, enabled=False),
    ]
    catalog = Catalog(parse_catalog(doc(model(routes=routes)), source="t"))
    assert [r.id for r in catalog.routes_for("m")] == ["z", "a", "b"]
    assert catalog.route("off").enabled is False
    assert catalog.routes_for("nope") == []


def test_disabled_models_are_hidden_unless_asked():
    catalog = Catalog(
        parse_catalog(
            doc(model(id="b", routes=[route(id="rb")]), model(id="a", enabled=False)), source="t"
        )
    )
    assert [m.id for m in catalog.models()] == ["b"]
    assert [m.id for m in catalog.models(include_disabled=True)] == ["a", "b"]
    assert catalog.get("a") is None
    assert catalog.get("a", include_disabled=True).id == "a"
    assert catalog.routes_for("a") == []
    assert catalog.route("r1").model_id == "a"


# --- local entries and merge -------------------------------------------------


def base_catalog():
    return Catalog(
        parse_catalog(
            doc(
                model(
                    id="gpt-4o-mini",
                    name="GPT-4o mini",
                    context_length=128000,
                    max_output_tokens=16384,
                    routes=[route(id="official:openai:gpt-4o-mini", upstream_model="gpt-4o-mini")],
                ),
                model(id="other", routes=[route(id="r-other")]),
            ),
            source="bundled",
        )
    )


def test_local_entry_with_only_routes_inherits_metadata():
    local = parse_catalog(
        {
            "models": [
                {
                    "id": "gpt-4o-mini",
                    "routes": [
                        {
                            "channel": "relay",
                            "upstream_model": "pool/gpt-4o-mini",
                            "price": {"currency": "CNY", "input": "0.5", "output": "2"},
                        },
                        {"channel": "openai", "price": price(input="0.15", output="0.60")},
                    ],
                }
            ]
        },
        source="config.toml",
        local=True,
        channel_settlement={"relay": "routed", "openai": "official"},
    )
    merged = merge(base_catalog(), local)
    m = merged.get("gpt-4o-mini")
    assert (m.name, m.context_length, m.max_output_tokens) == ("GPT-4o mini", 128000, 16384)
    assert m.defaulted == frozenset()
    first, second = merged.routes_for("gpt-4o-mini")
    assert (first.id, first.settlement, first.priority) == (
        "routed:relay:gpt-4o-mini:pool/gpt-4o-mini",
        "routed",
        1,
    )
    assert (second.id, second.upstream_model, second.priority) == (
        "official:openai:gpt-4o-mini",
        "gpt-4o-mini",
        2,
    )
    assert merged.get("other") is not None, "models not in the overlay stay"


def test_full_overlay_replaces_base_model_wholesale():
    local = parse_catalog(
        doc(model(id="gpt-4o-mini", name="Mine", context_length=5, routes=[route(id="mine")])),
        source="config.toml",
        local=True,
    )
    merged = merge(base_catalog(), local)
    m = merged.get("gpt-4o-mini")
    assert (m.name, m.context_length) == ("Mine", 5)
    assert [r.id for r in merged.routes_for("gpt-4o-mini")] == ["mine"]
    assert merged.route("official:openai:gpt-4o-mini") is None


def test_local_entry_without_base_gets_defaults():
    local = parse_catalog(
        {
            "models": [
                {
                    "id": "my-llama",
                    "routes": [
                        {
                            "channel": "ollama",
                            "settlement": "routed",
                            "price": {"currency": "CNY", "input": "0", "output": "0"},
                        }
                    ],
                }
            ]
        },
        source="config.toml",
        local=True,
    )
    m = merge(base_catalog(), local).get("my-llama")
    assert (m.name, m.family, m.kind) == ("my-llama", "ollama", "chat")
    assert (m.context_length, m.max_output_tokens) == (
        DEFAULT_CONTEXT_LENGTH,
        DEFAULT_MAX_OUTPUT_TOKENS,
    )
    assert m.routes[0].upstream_model == "my-llama"


def test_local_entry_without_routes_can_disable_or_rename_a_base_model():
    local = parse_catalog(
        {"models": [{"id": "other", "enabled": False}, {"id": "gpt-4o-mini", "name": "Cheap"}]},
        source="config.toml",
        local=True,
    )
    merged = merge(base_catalog(), local)
    assert merged.get("other") is None
    assert merged.get("other", include_disabled=True).routes[0].id == "r-other"
    assert merged.get("gpt-4o-mini").name == "Cheap"
    assert merged.routes_for("gpt-4o-mini")[0].id == "official:openai:gpt-4o-mini"


def test_local_entry_without_routes_or_base_is_an_error():
    local = parse_catalog({"models": [{"id": "ghost"}]}, source="config.toml", local=True)
    with pytest.raises(ConfigError, match=r"'ghost'.*no routes"):
        merge(base_catalog(), local)


def test_local_route_needs_a_settlement_from_route_or_channel():
    data = {"models": [{"id": "x", "routes": [{"channel": "relay", "price": price()}]}]}
    with pytest.raises(ConfigError, match=r"settlement is required.*'relay'"):
        parse_catalog(data, source="config.toml", local=True)


def test_strict_documents_require_metadata_that_local_ones_may_omit():
    with pytest.raises(ConfigError, match="name is required"):
        parse_catalog({"models": [{"id": "x", "routes": []}]}, source="hosted")


def test_merge_refuses_route_id_collisions():
    local = parse_catalog(
        doc(model(id="new", routes=[route(id="r-other")])), source="config.toml", local=True
    )
    with pytest.raises(ConfigError, match="'r-other'"):
        merge(base_catalog(), local)


# --- price fingerprints ------------------------------------------------------


def test_fingerprint_changes_iff_price_changes():
    [m] = parse_catalog(doc(model(routes=[route(price=price(output="0.60"))])), source="t")
    r = m.routes[0]
    fp = price_fingerprint(r)
    assert len(fp) == 64 and int(fp, 16) >= 0
    assert price_fingerprint(copy.deepcopy(r)) == fp

    same = [
        replace(r, priority=9),
        replace(r, id="other"),
        replace(r, enabled=False),
        replace(r, model_id="alias"),
        replace(r, price=replace(r.price, output=Decimal("0.6"))),  # same number
    ]
    for other in same:
        assert price_fingerprint(other) == fp, other

    changed = [
        replace(r, price=replace(r.price, input=Decimal("1.01"))),
        replace(r, price=replace(r.price, output=Decimal("0.61"))),
        replace(r, price=replace(r.price, cached_input=Decimal("0.5"))),
        replace(r, price=replace(r.price, cache_write=Decimal("1.25"))),
        replace(r, price=replace(r.price, per_request=Decimal("0.01"))),
        replace(r, price=replace(r.price, currency="CNY")),
        replace(r, channel="relay"),
        replace(r, upstream_model="m2"),
        replace(r, settlement="routed"),
    ]
    prints = {price_fingerprint(c) for c in changed}
    assert fp not in prints and len(prints) == len(changed)


def test_bundled_fingerprints_are_distinct_per_route(bundled):
    routes = [r for m in bundled.models() for r in m.routes]
    assert len({price_fingerprint(r) for r in routes}) == len(routes)
