"""Build localgate/data/catalog.json from litellm's model price map.

    python build/make_catalog.py /work/shared/data/model_prices_litellm_1.108.7.json

Takes a curated few dozen models (not litellm's thousands), converts per-token
float prices to exact per-1M-token decimal strings, adds the offline demo
models, validates the result with the same parser the gateway uses, and writes
it in the hosted catalog shape (docs: hosted-api.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run from a checkout without installing: the output is checked by the
# gateway's own parser and price conversion, not a copy of their rules.
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from localgate.core.catalog import parse_catalog, per_token_to_per_million  # noqa: E402

DEFAULT_OUT = REPO / "localgate" / "data" / "catalog.json"
LITELLM_VERSION = "1.108.7"
ATTRIBUTION = (
    f"Model prices and limits from the litellm {LITELLM_VERSION} model_prices map "
    "(model_prices_and_context_window.json, MIT licence, Copyright (c) BerriAI), "
    "converted to exact decimals per 1M tokens; the localgate-demo models are localgate's own."
)

# (litellm key, public id, display name). Every key must exist in the source:
# a rename upstream should fail the build, not silently drop a model.
# Not in litellm 1.108.7 under a bare key, so left out: claude-opus-4-1 and the
# Claude 3.5/3.7 models (only Bedrock/Databricks-prefixed entries remain).
# Models whose litellm mode is "responses" (gpt-5-pro, o1-pro, *-codex) are left
# out too: they cannot be called through /v1/chat/completions.
CURATED: tuple[tuple[str, str, str], ...] = (
    ("gpt-4o", "gpt-4o", "GPT-4o"),
    ("gpt-4o-mini", "gpt-4o-mini", "GPT-4o mini"),
    ("gpt-4.1", "gpt-4.1", "GPT-4.1"),
    ("gpt-4.1-mini", "gpt-4.1-mini", "GPT-4.1 mini"),
    ("gpt-4.1-nano", "gpt-4.1-nano", "GPT-4.1 nano"),
    ("o1", "o1", "OpenAI o1"),
    ("o3", "o3", "OpenAI o3"),
    ("o3-mini", "o3-mini", "OpenAI o3-mini"),
    ("o4-mini", "o4-mini", "OpenAI o4-mini"),
    ("gpt-5", "gpt-5", "GPT-5"),
    ("gpt-5-mini", "gpt-5-mini", "GPT-5 mini"),
    ("gpt-5-nano", "gpt-5-nano", "GPT-5 nano"),
    ("gpt-5.1", "gpt-5.1", "GPT-5.1"),
    ("gpt-5.2", "gpt-5.2", "GPT-5.2"),
    ("gpt-5.4", "gpt-5.4", "GPT-5.4"),
    ("gpt-5.4-mini", "gpt-5.4-mini", "GPT-5.4 mini"),
    ("gpt-5.4-nano", "gpt-5.4-nano", "GPT-5.4 nano"),
    ("gpt-5.5", "gpt-5.5", "GPT-5.5"),
    ("text-embedding-3-small", "text-embedding-3-small", "OpenAI text-embedding-3-small"),
    ("text-embedding-3-large", "text-embedding-3-large", "OpenAI text-embedding-3-large"),
    ("claude-haiku-4-5", "claude-haiku-4-5", "Claude Haiku 4.5"),
    ("claude-sonnet-4-5", "claude-sonnet-4-5", "Claude Sonnet 4.5"),
    ("claude-sonnet-4-6", "claude-sonnet-4-6", "Claude Sonnet 4.6"),
    ("claude-opus-4-5", "claude-opus-4-5", "Claude Opus 4.5"),
    ("claude-opus-4-6", "claude-opus-4-6", "Claude Opus 4.6"),
    ("claude-opus-4-7", "claude-opus-4-7", "Claude Opus 4.7"),
    ("claude-sonnet-5", "claude-sonnet-5", "Claude Sonnet 5"),
    ("claude-opus-5", "claude-opus-5", "Claude Opus 5"),
    ("gemini/gemini-2.5-pro", "gemini-2.5-pro", "Gemini 2.5 Pro"),
    ("gemini/gemini-2.5-flash", "gemini-2.5-flash", "Gemini 2.5 Flash"),
    ("gemini/gemini-2.5-flash-lite", "gemini-2.5-flash-lite", "Gemini 2.5 Flash-Lite"),
)

# litellm provider -> (our channel, model family). The channel is the maker.
PROVIDERS = {
    "openai": ("openai", "openai"),
    "anthropic": ("anthropic", "anthropic"),
    "gemini": ("gemini", "google"),
}
KIND_OF_MODE = {"chat": "chat", "embedding": "embedding"}
# Input modalities, in a fixed order, from litellm's supports_* flags.
MODALITY_FLAGS = (
    ("image", "supports_vision"),
    ("audio", "supports_audio_input"),
    ("video", "supports_video_input"),
)
CAPABILITY_FLAGS = (
    ("tools", "supports_function_calling"),
    ("reasoning", "supports_reasoning"),
    ("prompt_caching", "supports_prompt_caching"),
    ("structured_output", "supports_response_schema"),
)

DEMO_MODELS: list[dict[str, Any]] = [
    {
        "id": "localgate-demo",
        "name": "localgate demo (offline)",
        "family": "localgate",
        "kind": "chat",
        "context_length": 32768,
        "max_output_tokens": 4096,
        "modalities": ["text"],
        "capabilities": ["stream"],
        "routes": [
            {
                "id": "routed:demo:localgate-demo",
                "settlement": "routed",
                "channel": "demo",
                "upstream_model": "localgate-demo",
                "priority": 1,
                "price": {
                    "currency": "CNY",
                    "input": "1.00",
                    "cached_input": None,
                    "cache_write": None,
                    "output": "4.00",
                    "per_request": "0",
                },
            },
            {
                "id": "official:demo:localgate-demo",
                "settlement": "official",
                "channel": "demo",
                "upstream_model": "localgate-demo",
                "priority": 2,
                "price": {
                    "currency": "USD",
                    "input": "0.15",
                    "cached_input": None,
                    "cache_write": None,
                    "output": "0.60",
                    "per_request": "0",
                },
            },
        ],
    },
    {
        "id": "localgate-demo-embed",
        "name": "localgate demo embeddings (offline)",
        "family": "localgate",
        "kind": "embedding",
        "context_length": 8191,
        "max_output_tokens": 0,
        "modalities": ["text"],
        "capabilities": [],
        "routes": [
            {
                "id": "official:demo:localgate-demo-embed",
                "settlement": "official",
                "channel": "demo",
                "upstream_model": "localgate-demo-embed",
                "priority": 1,
                "price": {
                    "currency": "USD",
                    "input": "0.02",
                    "cached_input": None,
                    "cache_write": None,
                    "output": "0",
                    "per_request": "0",
                },
            }
        ],
    },
]


def _per_million(entry: dict[str, Any], key: str, *, where: str) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    try:
        return format(per_token_to_per_million(value), "f")
    except ValueError as exc:
        raise SystemExit(f"{where}: {key}: {exc}") from exc


def convert(key: str, public_id: str, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """One litellm entry -> one catalog model with its official route."""
    provider = entry.get("litellm_provider")
    if provider not in PROVIDERS:
        raise SystemExit(f"{key}: litellm_provider {provider!r} is not one of {list(PROVIDERS)}")
    kind = KIND_OF_MODE.get(entry.get("mode", ""))
    if kind is None:
        raise SystemExit(f"{key}: mode {entry.get('mode')!r} is neither chat nor embedding")
    channel, family = PROVIDERS[provider]
    upstream = key.split("/", 1)[1] if "/" in key else key
    context = entry.get("max_input_tokens") or entry.get("max_tokens")
    if not isinstance(context, int):
        raise SystemExit(f"{key}: no max_input_tokens")
    # Embedding models generate no tokens; litellm leaves their max_output empty.
    max_output = 0
    if kind == "chat":
        max_output = entry.get("max_output_tokens") or entry.get("max_tokens")
        if not isinstance(max_output, int):
            raise SystemExit(f"{key}: no max_output_tokens")
    modalities = ["text"] + [m for m, flag in MODALITY_FLAGS if entry.get(flag)]
    capabilities = (["stream"] if kind == "chat" else []) + [
        c for c, flag in CAPABILITY_FLAGS if entry.get(flag)
    ]
    price = {
        "currency": "USD",
        "input": _per_million(entry, "input_cost_per_token", where=key),
        "cached_input": _per_million(entry, "cache_read_input_token_cost", where=key),
        "cache_write": _per_million(entry, "cache_creation_input_token_cost", where=key),
        "output": _per_million(entry, "output_cost_per_token", where=key) or "0",
        "per_request": "0",
    }
    if price["input"] is None:
        raise SystemExit(f"{key}: no input_cost_per_token")
    return {
        "id": public_id,
        "name": name,
        "family": family,
        "kind": kind,
        "context_length": context,
        "max_output_tokens": max_output,
        "modalities": modalities,
        "capabilities": capabilities,
        "routes": [
            {
                "id": f"official:{channel}:{public_id}",
                "settlement": "official",
                "channel": channel,
                "upstream_model": upstream,
                "priority": 1,
                "price": price,
            }
        ],
    }


def build(source: dict[str, Any], version: str) -> dict[str, Any]:
    missing = [key for key, _, _ in CURATED if key not in source]
    if missing:
        raise SystemExit(f"not in the litellm map (renamed upstream?): {', '.join(missing)}")
    models = [convert(key, pid, name, source[key]) for key, pid, name in CURATED]
    return {"version": version, "attribution": ATTRIBUTION, "models": models + DEMO_MODELS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="litellm model_prices JSON file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--version", default=f"bundled-{date.today().isoformat()}")
    args = parser.parse_args(argv)

    source = json.loads(args.source.read_text(encoding="utf-8"))
    catalog = build(source, args.version)
    parse_catalog(catalog, source=str(args.out))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(catalog, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {len(catalog['models'])} models to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
