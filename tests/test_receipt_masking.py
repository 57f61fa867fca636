"""Credentials that leak into an upstream error or a User-Agent never reach the
stored receipt, so /api, pages and exports cannot show them."""

from __future__ import annotations

from localgate.config import DEFAULT_WALLETS
from localgate.core.receipts import Receipt, new_receipt_id
from localgate.store import Store
from localgate.store import receipts as receipt_store

LEAKED = "sk-proj-AbCdEfGhIjKlMnOpQrStUv"


def test_stored_receipt_masks_credentials(tmp_path):
    store = Store.open(tmp_path / "db.sqlite", wallets=DEFAULT_WALLETS)
    try:
        receipt = Receipt(
            id=new_receipt_id(),
            request_id="r",
            created_at="2026-11-27T00:00:00.000000Z",
            endpoint="/v1/chat/completions",
            status="failed",
            error=f"upstream said: Incorrect API key provided: {LEAKED}",
            user_agent="curl/8 (Authorization: Bearer lg_abcdefghijklmnopqrstuvwxyz012345)",
            attempts=[{"channel": "openai", "error": f"401 {LEAKED}"}],
        )
        store.write_sync(receipt_store.save, receipt)
        view = receipt_store.get(store.read(), receipt.id)
    finally:
        store.close()
    text = repr(view)
    assert LEAKED not in text
    assert "lg_abcdefghijklmnop" not in text
    assert "sk-proj-…" in view["error"] and "Bearer …" in view["user_agent"]
    assert view["attempts"][0]["error"] == "401 sk-proj-…"
