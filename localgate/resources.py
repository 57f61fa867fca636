"""Where localgate's shipped files are: templates, static files, bundled data.

Three layouts are supported, tried in this order:

1. a PyInstaller bundle: everything under ``sys._MEIPASS`` (``localgate/...``);
2. an installed wheel: ``templates/`` and ``static/`` inside the package;
3. a source checkout (editable install): ``templates/`` and ``static/`` at the
   repository root, beside the package.

Bundled data (catalog snapshot, tokenizer files) always lives in
``localgate/data/`` inside the package.
"""

from __future__ import annotations

import sys
from functools import cache
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _candidates(name: str) -> list[Path]:
    found = []
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        found.append(Path(bundle) / "localgate" / name)
    found.append(_PACKAGE_DIR / name)
    found.append(_PACKAGE_DIR.parent / name)
    return found


@cache
def resource_dir(name: str) -> Path:
    """The directory ``templates``, ``static`` or ``data``; raises if missing."""
    for path in _candidates(name):
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in _candidates(name))
    raise FileNotFoundError(f"localgate resource directory {name!r} not found (tried {tried})")


def templates_dir() -> Path:
    return resource_dir("templates")


def static_dir() -> Path:
    return resource_dir("static")


def data_path(filename: str) -> Path:
    """A bundled data file, e.g. ``data_path("catalog.json")``."""
    path = resource_dir("data") / filename
    if not path.is_file():
        raise FileNotFoundError(f"bundled data file {filename!r} not found in {path.parent}")
    return path
