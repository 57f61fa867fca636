"""The playground and the model marketplace: key and model pickers, route preview and
estimate, runs through the real /v1 path (whole and streamed) with their receipts."""

from __future__ import annotations

import re
from html import unescape

from ui_helpers import RECEIPT_RE, chat, ui_client

from localgate.services import playground as pg
from localgate.web.loopback import V1Call

DEMO = "localgate-demo"
OPENAI_CHANNEL = """
[[channels]]
id = "openai"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
"""


def run(**form: str) -> dict[str, str]:
    return {"key": "playground", "model": DEMO, "prompt": "hello there", "max_tokens": "64", **form}


async def test_page_offers_the_playground_key_and_the_models_it_may_call(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("routed", "1")
        page = await ui.get("/playground")
        assert page.status_code == 200
        assert '<option value="playground" selected>' in page.text
        assert f'<option value="{DEMO}" selected>' in page.text
        assert "localgate-demo-embed" not in page.text  # chat models only
        # Route preview: routed first (priority 1), then official, with wallets and prices.
        rows = re.findall(r'<span class="route-(\w+)">\1</span> via (\w+)', page.text)
        assert rows[:2] == [("routed", "demo"), ("official", "demo")]
        assert "1 / 4 CNY" in page.text and "0.15 / 0.6 USD" in page.text
        assert "wallet too low" in page.text  # credit is empty: the official route cannot pay


async def test_preview_estimate_matches_the_prices(tmp_path):
    async with ui_client(tmp_path) as ui:
        resp = await ui.get(
            "/playground/preview",
            params={
                "key": "playground",
                "model": DEMO,
                "prompt": "hello there",
                "max_tokens": "100",
            },
        )
        preview = resp.json()["preview"]
        body = pg.chat_body("hello there", DEMO, 100, stream=False)
        from localgate import tokens

        n = tokens.count_chat_input_tokens(body)
        assert preview["input_tokens"] == n
        routed = preview["routes"][0]
        assert routed["route_type"] == "routed" and routed["wallet"] == "routed"
        assert routed["input_cost_micros"] == n * 1  # 1 CNY per 1M tokens = 1 micro per token
        assert routed["max_cost_micros"] == n * 1 + 100 * 4
        assert routed["max_cost"] == f"¥0.{n + 400:06d}"
        assert routed["can_pay"] is False


async def test_run_without_js_renders_the_answer_and_its_receipt(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("routed", "1")
        resp = await ui.post("/playground", run())
        assert resp.status_code == 200
        receipt_id = RECEIPT_RE.search(resp.text).group(1)
        assert f'href="/receipts/{receipt_id}"' in resp.text
        assert "demo model built into localgate" in resp.text  # the answer is on the page
        receipt = await ui.api("GET", f"/api/receipts/{receipt_id}")
        assert receipt["status"] == "succeeded" and receipt["endpoint"] == "/v1/chat/completions"
        assert receipt["key"]["id"] == pg.PLAYGROUND_ID
        assert receipt["key"]["label"] == "playground"
        assert receipt["client"] == "localgate playground"
        assert receipt["usage"]["source"] == "upstream" and receipt["usage"]["output"] <= 64


async def test_a_playground_receipt_is_a_production_receipt(tmp_path):
    """Same fields, same kinds of values as a tool's request through /v1."""
    async with ui_client(tmp_path) as ui:
        await ui.fund("routed", "1")
        _, secret, _ = await ui.create_key()
        tool = await ui.v1(secret, chat(content="hello there", max_tokens=64))
        from_tool = await ui.api("GET", f"/api/receipts/{tool.headers['x-localgate-receipt']}")
        page = await ui.post("/playground", run())
        from_pg = await ui.api("GET", f"/api/receipts/{RECEIPT_RE.search(page.text).group(1)}")
        assert from_pg.keys() == from_tool.keys()
        for field in (
            "status",
            "endpoint",
            "route_type",
            "channel",
            "wallet",
            "currency",
            "upstream_model",
            "charge_policy",
            "stream",
        ):
            assert from_pg[field] == from_tool[field], field
        for field in (
            "ledger_entry_id",
            "balance_before_micros",
            "balance_after_micros",
            "latency_ms",
            "request_id",
        ):
            assert from_pg[field] is not None, field
        assert from_pg["price"] == from_tool["price"]
        assert from_pg["balance_after_micros"] == (
            from_pg["balance_before_micros"] - from_pg["charge_micros"]
        )


async def test_the_playground_key_is_made_once_and_rotated_after_a_restart(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("routed", "1")
        await ui.post("/playground", run())
        await ui.post("/playground", run())
        keys = (await ui.api("GET", "/api/keys"))["keys"]
        assert [k["id"] for k in keys] == [pg.PLAYGROUND_ID]
        prefix = keys[0]["prefix"]
        spent = ui.state.gateway.keys.spend_report(pg.PLAYGROUND_ID)

        ui.state.playground_key = None  # what a restart does: the secret is gone
        resp = await ui.post("/playground", run())
        assert RECEIPT_RE.search(resp.text)
        keys = (await ui.api("GET", "/api/keys"))["keys"]
        assert [k["id"] for k in keys] == [pg.PLAYGROUND_ID]
        assert keys[0]["prefix"] != prefix  # a new secret, same key
        assert ui.state.gateway.keys.spend_report(pg.PLAYGROUND_ID) != spent

        # Revoked by the user: the next run makes a new playground key.
        await ui.post(f"/keys/{pg.PLAYGROUND_ID}/revoke")
        await ui.post("/playground", run())
        ids = {k["id"] for k in (await ui.api("GET", "/api/keys"))["keys"]}
        assert ids == {pg.PLAYGROUND_ID, pg.PLAYGROUND_ID + "2"}


async def test_run_with_one_of_your_keys_needs_its_secret(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("routed", "1")
        key_id, secret, _ = await ui.create_key(label="mine")
        _, other, _ = await ui.create_key(label="theirs")
        page = await ui.get(f"/playground?key={key_id}")
        assert f'data-remember-key="{key_id}"' in page.text  # the secret field
        resp = await ui.post("/playground", run(key=key_id))
        assert resp.status_code == 400 and "type this key's secret" in unescape(resp.text)
        resp = await ui.post("/playground", run(key=key_id, secret=other))
        assert resp.status_code == 400 and "belongs to another key" in resp.text
        resp = await ui.post("/playground", run(key=key_id, secret=secret))
        receipt = await ui.api("GET", f"/api/receipts/{RECEIPT_RE.search(resp.text).group(1)}")
        assert receipt["key"]["id"] == key_id
        assert secret not in resp.text


async def test_a_key_limited_to_some_models_sees_only_those(tmp_path):
    async with ui_client(tmp_path) as ui:
        key_id, _, _ = await ui.create_key(models="gpt-4o*")
        page = await ui.get(f"/playground?key={key_id}")
        assert "may not call any chat model" in page.text
        assert 'id="send" disabled' in page.text


async def test_stream_relays_the_v1_stream_with_its_receipt(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.fund("routed", "1")
        resp = await ui.post("/playground/stream", run(), headers={"x-csrf-token": ui.csrf})
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        receipt_id = resp.headers["x-localgate-receipt"]
        body = resp.text
        assert body.count("data: {") > 3 and body.rstrip().endswith("data: [DONE]")
        assert f": localgate receipt={receipt_id} charge=" in body
        fragment = await ui.get(f"/playground/receipt/{receipt_id}")
        assert fragment.status_code == 200 and f'data-receipt="{receipt_id}"' in fragment.text
        receipt = await ui.api("GET", f"/api/receipts/{receipt_id}")
        assert receipt["status"] == "succeeded" and receipt["stream"] is True


async def test_stream_errors_are_json_the_script_can_show(tmp_path):
    async with ui_client(tmp_path) as ui:
        resp = await ui.post("/playground/stream", run(), headers={"x-csrf-token": ui.csrf})
        assert resp.status_code == 402  # wallets are empty
        error = resp.json()["error"]
        assert error["code"] == "insufficient_balance" and "Top up" in error["message"]
        assert resp.headers["x-localgate-receipt"]
        await ui.api("POST", "/api/keys/pause-all")
        resp = await ui.post("/playground/stream", run(), headers={"x-csrf-token": ui.csrf})
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "key_paused"
        no_csrf = await ui.client.post(
            "/playground/stream", data=run(), headers={"origin": "http://127.0.0.1:4311"}
        )
        assert no_csrf.status_code == 403


async def test_leaving_a_stream_early_settles_as_client_canceled(tmp_path):
    async with ui_client(
        tmp_path, '[[channels]]\nid = "demo"\nkind = "demo"\noptions = { chunk_delay_ms = 20 }\n'
    ) as ui:
        await ui.fund("routed", "1")
        _, secret, _ = await ui.create_key()
        body = pg.chat_body("tell me a long story", DEMO, 400, stream=True)
        async with V1Call(
            ui.app, "/v1/chat/completions", body, token=secret, host="127.0.0.1"
        ) as call:
            assert call.status == 200
            receipt_id = call.headers["x-localgate-receipt"]
            async for _ in call.chunks():
                break  # the browser went away after the first chunk
        receipt = await ui.api("GET", f"/api/receipts/{receipt_id}")
        assert receipt["status"] == "client_canceled"
        assert (await ui.wallet("routed"))["held_micros"] == 0


async def test_models_page_shows_routes_wallets_and_prices(tmp_path):
    async with ui_client(tmp_path, OPENAI_CHANNEL, env={}) as ui:
        page = await ui.get("/models")
        assert page.status_code == 200
        assert (
            f'data-model="{DEMO}"' in page.text and 'data-model="localgate-demo-embed"' in page.text
        )
        assert "1 CNY" in page.text and "4 CNY" in page.text and "0.15 USD" in page.text
        assert 'data-model="gpt-4o-mini"' not in page.text  # its channel has no key
        everything = await ui.get("/models?all=1")
        assert 'data-model="gpt-4o-mini"' in everything.text
        assert "(no key)" in everything.text


async def test_models_page_follows_a_keys_scope(tmp_path):
    async with ui_client(tmp_path) as ui:
        embed_only, _, _ = await ui.create_key(models="*embed*")
        routed_only, _, _ = await ui.create_key(settlement="routed")
        page = await ui.get(f"/models?key={embed_only}")
        assert 'data-model="localgate-demo-embed"' in page.text
        assert f'data-model="{DEMO}"' not in page.text
        page = await ui.get(f"/models?key={routed_only}")
        assert '<span class="route-routed">routed</span>' in page.text
        assert '<span class="route-official">official</span>' not in page.text.split("<table")[1]
        # The same list the key's own GET /v1/models gives.
        page = await ui.get("/models?q=embed")
        assert f'data-model="{DEMO}"' not in page.text
