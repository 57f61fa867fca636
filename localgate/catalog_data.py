"""The bundled catalog snapshot (``localgate/data/catalog.json``).

It is what localgate prices with before the first hosted sync, and offline.
Built by ``build/make_catalog.py``; read only here, lazily, once.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from localgate import resources
from localgate.core.catalog import Model, parse_catalog
from localgate.errors import ConfigError

CATALOG_FILE = "catalog.json"


@cache
def _document() -> dict[str, Any]:
    path = resources.data_path(CATALOG_FILE)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"bundled catalog {path} is unreadable: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"bundled catalog {path} is not a JSON object")
    return data


@cache
def load_bundled_catalog() -> tuple[Model, ...]:
    """The bundled models, validated (cached: the file never changes at run time)."""
    return parse_catalog(_document(), source=f"bundled {CATALOG_FILE}")


def bundled_catalog_version() -> str:
    """The snapshot's version string, e.g. ``bundled-2026-11-27``."""
    return str(_document().get("version", "bundled"))


def bundled_catalog_attribution() -> str:
    return str(_document().get("attribution", ""))
