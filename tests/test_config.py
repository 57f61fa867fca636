"""Settings: precedence, the TOML shape, the admin token, errors that name file and key."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from localgate.config import DEFAULT_WALLETS, SETTINGS, load_settings
from localgate.errors import ConfigError
from localgate.providers import PROVIDERS

DOCS = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- defaults and precedence ----------------------------------------------------


def test_defaults_with_no_config_at_all(_tmp_home):
    s = load_settings()
    assert s.data_dir == _tmp_home
    assert s.config_path is None
    for setting in SETTINGS:
        assert s.get(setting.name) == setting.default
    assert s.host == "127.0.0.1" and s.port == 4311
    assert s.base_url == "http://127.0.0.1:4311"
    assert s.db_path == _tmp_home / "localgate.db"
    assert [c.id for c in s.channels] == ["demo"]
    assert s.wallets == DEFAULT_WALLETS
    assert [(w.id, w.settlement, w.currency) for w in s.wallets] == [
        ("credit", "official", "USD"),
        ("routed", "routed", "CNY"),
    ]


def test_precedence_defaults_file_env_flags(_tmp_home, monkeypatch):
    write(
        _tmp_home / "config.toml",
        """
[server]
port = 5000
host = "localhost"
[payments]
provider = "stripe"
[hosted]
base_url = "https://file.example"
""",
    )
    s = load_settings()
    assert s.config_path == _tmp_home / "config.toml"
    assert (s.port, s.host, s.get("payments.provider")) == (5000, "localhost", "stripe")
    assert s.get("server.max_body_bytes") == 20 * 1024 * 1024  # untouched default

    monkeypatch.setenv("LOCALGATE_SERVER_PORT", "6000")
    monkeypatch.setenv("LOCALGATE_HOSTED_BASE_URL", "https://env.example")
    monkeypatch.setenv("LOCALGATE_SERVER_ALLOWED_HOSTS", "a.test, b.test")
    s = load_settings()
    assert s.port == 6000
    assert s.host == "localhost"  # the file still wins over the default
    assert s.get("hosted.base_url") == "https://env.example"
    assert s.get("server.allowed_hosts") == ["a.test", "b.test"]

    s = load_settings(overrides={"server.port": 7000, "server.host": None})
    assert s.port == 7000
    assert s.host == "localhost"  # a flag not given (None) changes nothing


def test_explicit_env_mapping_and_config_env(tmp_path):
    cfg = write(tmp_path / "elsewhere.toml", "[server]\nport = 4400\n")
    s = load_settings(data_dir=tmp_path / "d", env={"LOCALGATE_CONFIG": str(cfg)})
    assert s.config_path == cfg and s.port == 4400
    # --config beats LOCALGATE_CONFIG
    other = write(tmp_path / "other.toml", "[server]\nport = 4500\n")
    s = load_settings(
        data_dir=tmp_path / "d", config_path=other, env={"LOCALGATE_CONFIG": str(cfg)}
    )
    assert s.port == 4500


def test_data_dir_flag_beats_env(tmp_path, _tmp_home):
    s = load_settings(data_dir=tmp_path / "flag")
    assert s.data_dir == tmp_path / "flag"
    assert (tmp_path / "flag" / "admin-token").exists()
    assert not _tmp_home.exists()


def test_env_values_are_type_checked(monkeypatch):
    monkeypatch.setenv("LOCALGATE_SERVER_PORT", "eighty")
    with pytest.raises(ConfigError, match="LOCALGATE_SERVER_PORT: expected a whole number"):
        load_settings()
    monkeypatch.setenv("LOCALGATE_SERVER_PORT", "80")
    monkeypatch.setenv("LOCALGATE_SERVER_MAX_BODY_BYTES", "big")
    with pytest.raises(ConfigError, match="LOCALGATE_SERVER_MAX_BODY_BYTES"):
        load_settings()


# -- the TOML shape ---------------------------------------------------------------


FULL = """
[server]
host = "127.0.0.1"
port = 4311

[[channels]]
id = "openai"
kind = "openai"
base_url = "https://api.openai.com/v1/"
api_key_env = "TEST_OPENAI_KEY"
settlement = "official"

[[channels]]
id = "pool"
kind = "openai_compatible"
base_url = "http://relay.example/v1"
settlement = "routed"
timeout = 30
headers = { "X-Org" = "me" }

[[models]]
id = "gpt-4o-mini"
[[models.routes]]
channel = "openai"
upstream_model = "gpt-4o-mini"
priority = 1
price = { currency = "USD", input = "0.15", cached_input = "0.075", output = "0.60" }

[[wallets]]
id = "team"
name = "Team"
settlement = "official"
currency = "eur"

[payments]
provider = "stripe"
[payments.stripe]
secret_key_env = "MY_STRIPE"
api_base = "http://127.0.0.1:12111"
methods = ["card"]

[hosted]
base_url = ""
token_env = "LOCALGATE_HOSTED_TOKEN"
"""


def test_full_config_parses(_tmp_home, monkeypatch):
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-secret-value")
    write(_tmp_home / "config.toml", FULL)
    s = load_settings()
    by_id = {c.id: c for c in s.channels}
    assert list(by_id) == ["openai", "pool", "demo"]  # demo stays available
    openai = by_id["openai"]
    assert (openai.kind, openai.base_url, openai.settlement) == (
        "openai",
        "https://api.openai.com/v1",
        "official",
    )
    assert openai.api_key == "sk-secret-value"
    assert "sk-secret-value" not in repr(openai)
    pool = by_id["pool"]
    assert (pool.kind, pool.settlement, pool.timeout, pool.api_key) == (
        "openai_compatible",
        "routed",
        30.0,
        None,
    )
    assert dict(pool.headers) == {"X-Org": "me"}
    assert s.models[0]["id"] == "gpt-4o-mini"
    assert s.models[0]["routes"][0]["price"]["input"] == "0.15"
    assert [(w.id, w.currency) for w in s.wallets] == [
        ("credit", "USD"),
        ("routed", "CNY"),
        ("team", "EUR"),
    ]
    assert s.get("payments.provider") == "stripe"
    assert s.get("payments.stripe.secret_key_env") == "MY_STRIPE"
    assert s.get("payments.stripe.methods") == ["card"]
    assert s.get("payments.stripe.webhook_secret_env") == "STRIPE_WEBHOOK_SECRET"


def test_a_wallet_entry_can_replace_a_default(_tmp_home):
    write(
        _tmp_home / "config.toml",
        '[[wallets]]\nid = "routed"\nsettlement = "routed"\ncurrency = "USD"\n',
    )
    s = load_settings()
    assert [(w.id, w.currency) for w in s.wallets] == [("credit", "USD"), ("routed", "USD")]


# -- the admin token ----------------------------------------------------------------


def test_admin_token_created_0600_and_stable(_tmp_home):
    s1 = load_settings()
    path = _tmp_home / "admin-token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(s1.admin_token) >= 32
    assert path.read_text().strip() == s1.admin_token
    s2 = load_settings()
    assert s2.admin_token == s1.admin_token
    assert s1.admin_token not in repr(s1)


def test_admin_token_env_overrides(_tmp_home, monkeypatch):
    load_settings()
    monkeypatch.setenv("LOCALGATE_ADMIN_TOKEN", "from-env")
    assert load_settings().admin_token == "from-env"


def test_admin_token_not_created_without_create(tmp_path):
    s = load_settings(data_dir=tmp_path / "ro", create=False)
    assert s.admin_token == ""
    assert not (tmp_path / "ro").exists()


# -- errors name the file, the key and the fix --------------------------------------


BAD_CONFIGS = [
    (
        '[[channels]]\nid = "x"\nkind = "opnai"\nbase_url = "https://a.example"\n',
        r"channels\[0\] \(x\)\.kind: unknown channel kind 'opnai'; use one of openai",
    ),
    (
        '[[models]]\nid = "m"\n[[models.routes]]\nchannel = "demo"\n'
        'price = { currency="USD", input="abc", output="1" }\n',
        r"models\[0\] \(m\)\.routes\[0\]\.price\.input is not a decimal number: 'abc'",
    ),
    (
        '[[models]]\nid = "m"\n[[models.routes]]\nchannel = "demo"\n'
        'price = { currency="USD", input=0.15, output="1" }\n',
        r"models\[0\] \(m\)\.routes\[0\]\.price\.input must be a decimal string, not a float",
    ),
    (
        '[[models]]\nid = "m"\n[[models.routes]]\nchannel = "nope"\n'
        'price = { currency="USD", input="1", output="1" }\n',
        r"models\[0\] \(m\)\.routes\[0\]\.channel: no channel 'nope'",
    ),
    ("[server]\nprot = 1\n", r"unknown key server\.prot"),
    ('[payments.stripe]\nsecret = "x"\n', r"unknown key payments\.stripe\.secret"),
    ("[sever]\nport = 1\n", r"unknown table \[sever\]"),
    ('[server]\nport = "80"\n', r"server\.port: expected int"),
    ("[server]\nport = true\n", r"server\.port: expected int"),
    ("[server]\nport = 70000\n", r"server\.port must be 0-65535"),
    ('[payments]\nprovider = "paypal"\n', r"payments\.provider: unknown provider 'paypal'"),
    (
        '[[channels]]\nid = "o"\nkind = "openai"\nbase_url = "ftp://x"\n',
        r"channels\[0\] \(o\)\.base_url",
    ),
    (
        '[[channels]]\nid = "o"\nkind = "openai"\nbase_url = "https://x"\napi_key = "sk"\n',
        r"channels\[0\] \(o\)\.api_key: keys do not belong in config\.toml",
    ),
    (
        '[[channels]]\nid = "o"\nkind = "demo"\n[[channels]]\nid = "o"\nkind = "demo"\n',
        r"channels\[1\] \(o\)\.id: duplicate channel id",
    ),
    (
        '[[wallets]]\nid = "w"\nsettlement = "official"\ncurrency = "DOLLARS"\n',
        r"wallets\[0\]\.currency",
    ),
    ("[server\nport = 1\n", r"not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_bad_config_names_file_and_key(tmp_path, text, message):
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=path)
    text = str(info.value)
    assert re.search(message, text), text
    assert text.startswith(f"{path}: ")
    assert text.count(str(path)) == 1  # named once, not twice
    assert "\n" not in text


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(config_path=tmp_path / "nope.toml")


def test_unreadable_config_directory(tmp_path):
    path = tmp_path / "adir"
    path.mkdir()
    with pytest.raises(ConfigError, match=f"{re.escape(str(path))}: is a directory"):
        load_settings(config_path=path)


def test_unreadable_config_not_utf8(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_settings(config_path=path)


def test_unreadable_config_permission(tmp_path):
    path = write(tmp_path / "secret.toml", "[server]\nport = 1\n")
    path.chmod(0)
    try:
        try:
            path.read_bytes()
        except PermissionError:
            pass
        else:
            pytest.skip("running as root: chmod 000 does not stop reads")
        with pytest.raises(ConfigError, match="permission denied"):
            load_settings(config_path=path)
    finally:
        path.chmod(0o600)


# -- every setting is documented ----------------------------------------------------


def test_every_setting_is_in_the_docs():
    text = DOCS.read_text(encoding="utf-8")
    missing = [s.name for s in SETTINGS if f"`{s.name}`" not in text]
    assert not missing, f"settings missing from docs/config.md: {missing}"
    missing_env = [s.env for s in SETTINGS if s.env not in text]
    assert not missing_env, f"env names missing from docs/config.md: {missing_env}"
    for word in (
        "[[channels]]",
        "[[models]]",
        "[[models.routes]]",
        "[[wallets]]",
        "[payments]",
        "[payments.stripe]",
        "[hosted]",
        "LOCALGATE_ADMIN_TOKEN",
        "LOCALGATE_DATA_DIR",
        "LOCALGATE_CONFIG",
        *PROVIDERS,
    ):
        assert word in text, word


def test_setting_env_names():
    assert {s.name: s.env for s in SETTINGS}["payments.stripe.api_base"] == (
        "LOCALGATE_PAYMENTS_STRIPE_API_BASE"
    )


def test_unknown_channel_field_names_the_field(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        '[[channels]]\nid = "openai"\nkind = "openai"\n'
        'base_url = "https://api.openai.com/v1"\napi_key_evn = "OPENAI_API_KEY"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(data_dir=tmp_path / "d", config_path=path, env={})
    assert "channels[0] (openai).api_key_evn: unknown field" in str(err.value)
