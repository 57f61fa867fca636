"""The Settings page and what it writes: channels.toml, the 0600 secrets.toml (never
shown back, never in config.toml), test connection, live provider rebuild; and the
secrets / channel overlay that config.py merges."""

from __future__ import annotations

import os
import stat

import httpx
import pytest
from click.testing import CliRunner
from ui_helpers import chat, make_settings, ui_client
from upstream import FakeUpstream

from localgate.cli import main as cli_main
from localgate.config import load_settings
from localgate.errors import ConfigError
from localgate.services.settings import test_connection as check_connection

KEY = "sk-upstream-very-secret-1234"
OPENAI_CONFIG = """
[[channels]]
id = "openai"
kind = "openai"
base_url = "{url}"
api_key_env = "MY_OPENAI_KEY"
"""


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


async def test_page_shows_channels_payments_hosted_and_data(tmp_path):
    async with ui_client(tmp_path) as ui:
        page = await ui.get("/settings")
        assert page.status_code == 200
        text = page.text
        assert 'data-channel="demo"' in text and "not needed" in text
        assert "<strong>sandbox</strong>" in text and "no real money moves" in text
        assert "not connected" in text  # hosted: offline
        assert "store_prompts" not in text  # no such setting
        assert str(ui.settings.data_dir) in text
        assert ui.settings.admin_token not in text


async def test_add_channel_writes_overlay_and_private_secret_never_shown(tmp_path):
    async with ui_client(tmp_path) as ui:
        config_before = (tmp_path / "config.toml").read_bytes()
        resp = await ui.post(
            "/settings/channels",
            {
                "id": "relay",
                "kind": "openai_compatible",
                "base_url": "https://relay.example/v1/",
                "settlement": "routed",
                "api_key": KEY,
            },
            follow_redirects=False,
        )
        assert resp.status_code == 303
        data = ui.settings.data_dir
        assert (tmp_path / "config.toml").read_bytes() == config_before  # never rewritten
        overlay = (data / "channels.toml").read_text()
        assert 'id = "relay"' in overlay and 'base_url = "https://relay.example/v1"' in overlay
        assert KEY not in overlay
        secrets = data / "secrets.toml"
        assert mode(secrets) == 0o600 and KEY in secrets.read_text()

        page = await ui.get("/settings")
        assert 'data-channel="relay"' in page.text and "from channels.toml" in page.text
        assert KEY not in page.text and KEY[-4:] not in page.text
        assert "ready" in page.text
        # Live: the running gateway has the provider; a restart sees the same.
        assert "relay" in ui.state.gateway.providers
        reloaded = load_settings(data_dir=data, config_path=tmp_path / "config.toml", env={})
        relay = next(c for c in reloaded.channels if c.id == "relay")
        assert relay.api_key == KEY and relay.key_source == "secrets.toml"
        assert relay.settlement == "routed" and relay.source == "channels.toml"
        assert KEY not in repr(relay)


async def test_add_channel_refuses_bad_input_without_echoing_the_key(tmp_path):
    async with ui_client(tmp_path) as ui:
        for form, message in [
            ({"id": "Bad Id", "kind": "openai", "base_url": "https://x/v1"}, "channel id"),
            ({"id": "x", "kind": "openai", "base_url": "ftp://x"}, "base_url"),
            ({"id": "demo", "kind": "openai", "base_url": "https://x/v1"}, "already exists"),
            ({"id": "x", "kind": "nope", "base_url": "https://x/v1"}, "kind"),
        ]:
            resp = await ui.post("/settings/channels", {**form, "api_key": KEY})
            assert resp.status_code == 400, form
            assert message in resp.text, (form, resp.text[:300])
            assert KEY not in resp.text
        assert not (ui.settings.data_dir / "channels.toml").exists()
        assert not (ui.settings.data_dir / "secrets.toml").exists()


async def test_setting_a_key_lights_up_the_catalog_routes_at_once(tmp_path):
    config = OPENAI_CONFIG.format(url="http://127.0.0.1:9/v1")
    async with ui_client(tmp_path, config) as ui:
        _, secret, _ = await ui.create_key()
        models = (
            await ui.client.get("/v1/models", headers={"authorization": f"Bearer {secret}"})
        ).json()
        assert "gpt-4o-mini" not in {m["id"] for m in models["data"]}
        page = await ui.get("/settings")
        assert "MY_OPENAI_KEY unset" in page.text

        resp = await ui.post(
            "/settings/channels/openai/key", {"api_key": KEY}, follow_redirects=False
        )
        assert resp.status_code == 303
        models = (
            await ui.client.get("/v1/models", headers={"authorization": f"Bearer {secret}"})
        ).json()
        assert "gpt-4o-mini" in {m["id"] for m in models["data"]}
        assert (tmp_path / "config.toml").read_text().count(KEY) == 0
        page = await ui.get("/settings?done=key_saved")
        assert "It will not be shown again" in page.text and KEY not in page.text

        await ui.post("/settings/channels/openai/clear-key")
        assert "openai" not in ui.state.gateway.providers
        assert KEY not in (ui.settings.data_dir / "secrets.toml").read_text()


async def test_environment_key_wins_over_the_saved_one(tmp_path):
    config = OPENAI_CONFIG.format(url="http://127.0.0.1:9/v1")
    async with ui_client(tmp_path, config, env={"MY_OPENAI_KEY": "sk-from-env"}) as ui:
        await ui.post("/settings/channels/openai/key", {"api_key": KEY})
        channel = next(c for c in ui.state.settings.channels if c.id == "openai")
        assert channel.api_key == "sk-from-env" and channel.key_source == "env MY_OPENAI_KEY"
        page = await ui.get("/settings")
        assert "env MY_OPENAI_KEY" in page.text and "sk-from-env" not in page.text


async def test_test_connection_reaches_the_upstream_with_the_key(tmp_path):
    with FakeUpstream() as upstream:
        config = OPENAI_CONFIG.format(url=upstream.base_url)
        async with ui_client(tmp_path, config, env={"MY_OPENAI_KEY": KEY}) as ui:
            page = await ui.post("/settings/channels/openai/test")
            assert 'id="test-result"' in page.text and "reachable" in page.text
            assert "models listed" in page.text
            assert upstream.last.path == "/v1/models"
            assert upstream.last.headers["authorization"] == f"Bearer {KEY}"
            assert KEY not in page.text


async def test_test_connection_explains_failures_and_masks_the_key(tmp_path):
    settings = make_settings(
        tmp_path, OPENAI_CONFIG.format(url="https://up.example/v1"), {"MY_OPENAI_KEY": KEY}
    )
    channel = next(c for c in settings.channels if c.id == "openai")

    def refuse(request: httpx.Request) -> httpx.Response:
        assert request.url == "https://up.example/v1/models"
        return httpx.Response(401, json={"error": {"message": f"Incorrect API key {KEY}"}})

    result = await check_connection(channel, transport=httpx.MockTransport(refuse))
    assert result["ok"] is False and result["status"] == 401
    assert "refused the key" in result["detail"] and KEY not in result["detail"]

    def missing(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404, text="not here")

    result = await check_connection(channel, transport=httpx.MockTransport(missing))
    assert "check the base URL" in result["detail"]

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    result = await check_connection(channel, transport=httpx.MockTransport(down))
    assert result["ok"] is False and "cannot reach https://up.example/v1/models" in result["detail"]
    demo = next(c for c in settings.channels if c.id == "demo")
    assert (await check_connection(demo))["ok"] is True


async def test_remove_a_channel_added_here_only(tmp_path):
    async with ui_client(tmp_path) as ui:
        await ui.post(
            "/settings/channels",
            {
                "id": "relay",
                "kind": "openai_compatible",
                "base_url": "https://r/v1",
                "api_key": KEY,
            },
        )
        resp = await ui.post("/settings/channels/demo/remove")
        assert resp.status_code == 400 and "built-in" in resp.text
        resp = await ui.post("/settings/channels/relay/remove", follow_redirects=False)
        assert resp.status_code == 303
        assert "relay" not in ui.state.gateway.providers
        assert "relay" not in (ui.settings.data_dir / "channels.toml").read_text()
        assert KEY not in (ui.settings.data_dir / "secrets.toml").read_text()
        # The gateway still answers with the demo channel.
        await ui.fund("routed", "1")
        _, secret, _ = await ui.create_key()
        assert (await ui.v1(secret, chat())).status_code == 200


# -- config.py: the secrets file and the channel overlay -----------------------------


def write_private(path, text):
    path.write_text(text)
    path.chmod(0o600)


def test_secrets_file_feeds_channel_keys_and_env_names(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_private(
        data / "secrets.toml",
        '[channels.openai]\napi_key = "sk-a"\n\n[env]\nSTRIPE_SECRET_KEY = "sk_test_x"\nRELAY_KEY = "r-1"\n',
    )
    (data / "channels.toml").write_text(
        '[[channels]]\nid = "relay"\nkind = "openai_compatible"\nbase_url = "https://r/v1"\napi_key_env = "RELAY_KEY"\n'
    )
    config = tmp_path / "config.toml"
    config.write_text('[[channels]]\nid = "openai"\nkind = "openai"\nbase_url = "https://o/v1"\n')
    s = load_settings(data_dir=data, config_path=config, env={})
    by_id = {c.id: c for c in s.channels}
    assert list(by_id) == ["openai", "relay", "demo"]
    assert by_id["openai"].api_key == "sk-a" and by_id["openai"].key_source == "secrets.toml"
    assert by_id["relay"].api_key == "r-1"
    assert by_id["relay"].key_source == "secrets.toml [env] RELAY_KEY"
    assert s.secret("STRIPE_SECRET_KEY") == "sk_test_x"
    s = load_settings(data_dir=data, config_path=config, env={"STRIPE_SECRET_KEY": "sk_env"})
    assert s.secret("STRIPE_SECRET_KEY") == "sk_env"  # the environment wins
    assert "sk_test_x" not in repr(s) and "sk-a" not in repr(s)


def test_secrets_file_readable_by_others_is_refused(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "secrets.toml").write_text('[channels.openai]\napi_key = "sk-a"\n')
    (data / "secrets.toml").chmod(0o644)
    with pytest.raises(ConfigError, match=r"mode is 0644; make it private: chmod 600"):
        load_settings(data_dir=data, env={})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[channels.openai]\nkey = "x"\n', "may hold only api_key"),
        ('[other]\nx = "y"\n', r"unknown table \[other\]"),
        ("[env]\nX = 1\n", "must map variable names to strings"),
    ],
)
def test_secrets_file_shape_errors_name_the_fix(tmp_path, text, message):
    data = tmp_path / "data"
    data.mkdir()
    write_private(data / "secrets.toml", text)
    with pytest.raises(ConfigError, match=message):
        load_settings(data_dir=data, env={})


def test_overlay_channel_may_not_shadow_a_config_channel(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "channels.toml").write_text(
        '[[channels]]\nid = "openai"\nkind = "openai"\nbase_url = "https://x/v1"\n'
    )
    config = tmp_path / "config.toml"
    config.write_text('[[channels]]\nid = "openai"\nkind = "openai"\nbase_url = "https://o/v1"\n')
    with pytest.raises(ConfigError, match=r"also defined in config\.toml"):
        load_settings(data_dir=data, config_path=config, env={})


def test_cli_channels_set_key_and_list(tmp_path):
    data = tmp_path / "data"
    config = tmp_path / "config.toml"
    config.write_text('[[channels]]\nid = "openai"\nkind = "openai"\nbase_url = "https://o/v1"\n')
    runner = CliRunner()
    args = ["--data-dir", str(data), "--config", str(config)]
    out = runner.invoke(
        cli_main, [*args, "channels", "set-key", "openai", "--stdin"], input=KEY + "\n"
    )
    assert out.exit_code == 0, out.output
    assert KEY not in out.output and mode(data / "secrets.toml") == 0o600
    out = runner.invoke(cli_main, [*args, "channels", "list"])
    assert out.exit_code == 0 and "secrets.toml" in out.output and KEY not in out.output
    out = runner.invoke(cli_main, [*args, "channels", "set-key", "nope", "--stdin"], input="x\n")
    assert out.exit_code == 2 and "no channel 'nope'" in out.output
