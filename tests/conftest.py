"""Shared fixtures. Every test runs with a fresh tmp data dir and no network."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _tmp_home(tmp_path, monkeypatch):
    """Never touch the user's data dir or config; never read their env."""
    data_dir = tmp_path / "data"
    monkeypatch.setenv("LOCALGATE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in (
        "LOCALGATE_ADMIN_TOKEN",
        "LOCALGATE_CONFIG",
        "OPENAI_API_KEY",
        "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",
        "STRIPE_SECRET_KEY",
        "LOCALGATE_HOSTED_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    return data_dir
