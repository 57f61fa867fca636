"""The provider and payment registries are the only lists of kinds: config, the
Settings page and doctor ask them. Settings changes reach the running gateway
through one ``reconfigure``, and a request already on its way keeps its provider."""

from __future__ import annotations

import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from ui_helpers import ui_client

from localgate import doctor, payments
from localgate.config import CHANNELS_FILE, ChannelSettings, load_settings, parse_channel
from localgate.config_files import SecretsFile
from localgate.errors import BadRequest, ConfigError, LocalgateError
from localgate.providers import PROVIDERS, ProviderRequest, UpstreamResponse
from localgate.providers.demo import DemoProvider
from localgate.providers.openai import OpenAICompatibleProvider
from localgate.services.catalog import CatalogView
from localgate.services.gateway_setup import assemble
from localgate.services.proxy import Caller
from localgate.services.settings import (
    SettingsService,
    apply_settings,
    configurable_kinds,
)
from localgate.services.settings import test_connection as check_connection
from localgate.services.wallets import Wallets
from localgate.store import Store


class RelayKind(OpenAICompatibleProvider):
    """A kind this build does not ship, registered by a test: nothing may need a list."""

    kind: ClassVar[str] = "relay_test"
    key_headers: ClassVar[dict[str, str]] = {"x-relay-key": "{key}"}


class HiddenRelayKind(OpenAICompatibleProvider):
    kind: ClassVar[str] = "hidden_relay_test"
    configurable: ClassVar[bool] = False


class GatedDemo(DemoProvider):
    """The demo model behind a gate: a request can be held in flight while the test
    reconfigures. Counts the requests each instance served."""

    kind: ClassVar[str] = "gated_test"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.served = 0
        self.entered = asyncio.Event()
        self.gate: asyncio.Event | None = None

    async def complete(self, req: ProviderRequest) -> UpstreamResponse:
        self.served += 1
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        return await super().complete(req)


@pytest.fixture
def extra_kinds(monkeypatch):
    for cls in (RelayKind, HiddenRelayKind, GatedDemo):
        monkeypatch.setitem(PROVIDERS, cls.kind, cls)


def entry(kind: str) -> dict[str, Any]:
    base = {"id": "c1", "kind": kind}
    return base if PROVIDERS[kind].offline else {**base, "base_url": "https://up.example/v1"}


def write_config(tmp_path, text: str):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


# -- channel kinds ---------------------------------------------------------------


@pytest.mark.usefixtures("extra_kinds")
@pytest.mark.parametrize("kind", [*PROVIDERS, "relay_test", "hidden_relay_test"])
def test_config_accepts_every_registered_kind(kind):
    channel = parse_channel(entry(kind), "config.toml", {}, SecretsFile(), "config.toml")
    assert channel.kind == kind


def test_an_offline_kind_needs_no_base_url_and_the_others_do():
    offline = [k for k, cls in PROVIDERS.items() if cls.offline]
    online = [k for k, cls in PROVIDERS.items() if not cls.offline]
    assert offline and online
    for kind in offline:
        parse_channel({"id": "c", "kind": kind}, "f", {}, SecretsFile(), "f")
    for kind in online:
        with pytest.raises(ConfigError, match="base_url: must be an http"):
            parse_channel({"id": "c", "kind": kind}, "f", {}, SecretsFile(), "f")


@pytest.mark.usefixtures("extra_kinds")
def test_an_unknown_kind_names_every_kind_the_registry_has(tmp_path):
    path = write_config(
        tmp_path, '[[channels]]\nid = "x"\nkind = "opnai"\nbase_url = "https://a.example"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_settings(data_dir=tmp_path / "d", config_path=path, env={})
    message = str(err.value)
    assert "channels[0] (x).kind: unknown channel kind 'opnai'" in message
    listed = message.split("use one of ", 1)[1].split(", ")
    assert listed == list(PROVIDERS)


@pytest.mark.usefixtures("extra_kinds")
def test_settings_offers_exactly_the_kinds_whose_class_says_so():
    expected = tuple(k for k, cls in PROVIDERS.items() if cls.configurable)
    assert configurable_kinds() == expected
    assert "relay_test" in expected and "hidden_relay_test" not in expected
    assert "demo" not in expected


@pytest.mark.usefixtures("extra_kinds")
async def test_settings_adds_a_registered_kind_and_refuses_one_not_offered(tmp_path):
    settings = load_settings(data_dir=tmp_path / "d", env={})
    svc = SettingsService(settings)
    form = {"id": "r1", "kind": "relay_test", "base_url": "https://r.example/v1"}
    added = await svc.add_channel(form)
    assert added.kind == "relay_test" and added.source == CHANNELS_FILE
    for kind in ("hidden_relay_test", "demo"):
        with pytest.raises(BadRequest, match="kind: use one of") as err:
            await svc.add_channel({**form, "id": "r2", "kind": kind})
        offered = str(err.value).split("use one of ", 1)[1].split(", ")
        assert "relay_test" in offered and kind not in offered


async def test_an_offline_channel_takes_no_key_and_needs_no_connection(tmp_path):
    settings = load_settings(data_dir=tmp_path / "d", env={})
    demo = next(c for c in settings.channels if c.id == "demo")
    assert PROVIDERS[demo.kind].offline
    with pytest.raises(BadRequest, match="takes no key"):
        await SettingsService(settings).set_key("demo", "sk-anything")
    assert (await check_connection(demo))["ok"] is True


@pytest.mark.usefixtures("extra_kinds")
async def test_the_connection_test_sends_the_key_in_the_headers_its_class_names():
    channel = parse_channel(entry("relay_test"), "f", {}, SecretsFile(), "f")
    channel = dataclasses.replace(channel, api_key="sk-relay")
    seen: dict[str, str] = {}

    def answer(request: httpx.Request) -> httpx.Response:
        seen.update(request.headers)
        return httpx.Response(200, json={"data": []})

    result = await check_connection(channel, transport=httpx.MockTransport(answer))
    assert result["ok"] is True
    assert seen["x-relay-key"] == "sk-relay" and "authorization" not in seen


# -- payment kinds -----------------------------------------------------------------


@pytest.mark.parametrize("name", list(payments.PROVIDERS))
def test_doctor_has_a_check_for_every_payment_kind(tmp_path, name):
    path = write_config(tmp_path, f'[payments]\nprovider = "{name}"\n')
    settings = load_settings(data_dir=tmp_path / "d", config_path=path, env={})
    check = doctor.check_payments(settings)
    assert check.name == "payments" and check.status in (doctor.OK, doctor.WARN, doctor.FAIL)
    assert check.detail.startswith(name) and "unknown" not in check.detail


def test_a_registered_payment_kind_is_accepted_and_checked(tmp_path, monkeypatch):
    def ready(settings: Any) -> payments.Readiness:
        return "warn", "ledger_test: only for this test"

    monkeypatch.setitem(
        payments.PROVIDERS,
        "ledger_test",
        payments.PaymentKind(payments.PROVIDERS["sandbox"].make, ready),
    )
    path = write_config(tmp_path, '[payments]\nprovider = "ledger_test"\n')
    settings = load_settings(data_dir=tmp_path / "d", config_path=path, env={})
    check = doctor.check_payments(settings)
    assert (check.status, check.detail) == (doctor.WARN, "ledger_test: only for this test")


def test_an_unknown_payment_provider_names_the_registered_ones(tmp_path):
    path = write_config(tmp_path, '[payments]\nprovider = "paypal"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(data_dir=tmp_path / "d", config_path=path, env={})
    message = str(err.value)
    assert "payments.provider: unknown provider 'paypal'" in message
    assert message.split("use one of ", 1)[1].split(", ") == list(payments.PROVIDERS)


# -- reconfigure ---------------------------------------------------------------------

GATED = '[[channels]]\nid = "demo"\nkind = "gated_test"\n'
CHAT = {"model": "localgate-demo", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gated(tmp_path, extra_kinds):
    """A gateway whose demo channel is a GatedDemo, a funded wallet and a key."""
    path = write_config(tmp_path, GATED)
    settings = load_settings(data_dir=tmp_path / "d", config_path=path, env={})
    store = Store.open(settings.db_path, wallets=settings.wallets)
    client = httpx.AsyncClient()
    try:
        gateway = assemble(settings, store, client).gateway
        for wallet in settings.wallets:
            await Wallets(store).adjust(wallet.id, "10", "test funding")
        key = await gateway.keys.create({"label": "t"})
        yield gateway, settings, client, Caller(key["key"])
    finally:
        await client.aclose()
        store.close()


async def test_a_request_in_flight_during_reconfigure_finishes_on_the_old_provider(gated):
    gateway, settings, client, caller = gated
    old = gateway.providers["demo"]
    old.gate = asyncio.Event()
    in_flight = asyncio.create_task(gateway.handle("chat", dict(CHAT), caller))
    await asyncio.wait_for(old.entered.wait(), 5)

    notes = await apply_settings(gateway, settings, client)
    new = gateway.providers["demo"]
    assert new is not old and notes["demo"] == "ready"

    old.gate.set()
    reply = await asyncio.wait_for(in_flight, 5)
    assert reply.status == 200
    assert (old.served, new.served) == (1, 0)

    reply = await gateway.handle("chat", dict(CHAT), caller)
    assert reply.status == 200
    assert (old.served, new.served) == (1, 1)


async def test_a_channel_removed_mid_request_serves_that_request_then_no_more(gated):
    gateway, settings, client, caller = gated
    old = gateway.providers["demo"]
    old.gate = asyncio.Event()
    in_flight = asyncio.create_task(gateway.handle("chat", dict(CHAT), caller))
    await asyncio.wait_for(old.entered.wait(), 5)

    without = dataclasses.replace(settings, channels=())
    await apply_settings(gateway, without, client)
    assert "demo" not in gateway.providers and gateway.settings is without

    old.gate.set()
    assert (await asyncio.wait_for(in_flight, 5)).status == 200
    with pytest.raises(LocalgateError, match="no configured channel serves model"):
        await gateway.handle("chat", dict(CHAT), caller)
    assert old.served == 1


async def test_the_gateway_view_changes_only_through_reconfigure(gated):
    gateway, settings, _, _ = gated
    before = gateway.serving
    with pytest.raises(AttributeError):
        gateway.providers = {}
    with pytest.raises(TypeError):
        gateway.providers["x"] = gateway.providers["demo"]
    gateway.reconfigure(settings, gateway.catalog, {}, gateway.price_versions)
    assert gateway.serving is not before and not gateway.providers
    assert before.providers["demo"]  # the old view is untouched


# -- the Settings page -----------------------------------------------------------------


async def settings_page(ui: Any) -> str:
    """Log in without the keys page; the Settings page carries the CSRF token too."""
    await ui.client.get(f"/login?token={ui.settings.admin_token}", follow_redirects=False)
    page = (await ui.get("/settings")).text
    ui.csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return page


@pytest.mark.usefixtures("extra_kinds")
async def test_the_page_offers_the_registered_kinds_and_names_the_payment_providers(tmp_path):
    async with ui_client(tmp_path, login=False) as ui:
        page = await settings_page(ui)
    select = re.search(r'<select id="ch-kind" name="kind">(.*?)</select>', page, re.S).group(1)
    assert re.findall(r"<option[^>]*>([^<]+)</option>", select) == list(configurable_kinds())
    for name in payments.PROVIDERS:
        assert f'<code>"{name}"</code>' in page


async def test_page_changes_reach_the_gateway_through_reconfigure(tmp_path, monkeypatch):
    calls: list[tuple[str, ...]] = []
    original = CatalogView.reconfigure

    def spy(self: Any, settings: Any, *args: Any) -> None:
        calls.append(tuple(c.id for c in settings.channels))
        original(self, settings, *args)

    monkeypatch.setattr(CatalogView, "reconfigure", spy)
    async with ui_client(tmp_path, login=False) as ui:
        await settings_page(ui)
        form = {"id": "relay", "kind": "openai_compatible", "base_url": "https://r.example/v1"}
        assert (await ui.post("/settings/channels", form)).status_code == 200
        assert calls == [("relay", "demo")]
        gateway = ui.state.gateway
        assert gateway.settings is ui.state.settings and "relay" in gateway.providers
        await ui.post("/settings/channels/relay/remove")
        assert calls[-1] == ("demo",) and "relay" not in gateway.providers
        assert ui.state.channel_notes == {"demo": "ready"}


def test_the_config_docs_name_every_registered_kind_and_payment_provider():
    docs = (Path(__file__).resolve().parent.parent / "docs" / "config.md").read_text()
    for name in [*PROVIDERS, *payments.PROVIDERS]:
        assert re.search(rf"\b{name}\b", docs), name


async def test_a_channel_that_config_models_route_to_is_not_removed(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / CHANNELS_FILE).write_text(
        '[[channels]]\nid = "relay"\nkind = "openai_compatible"\nbase_url = "https://r/v1"\n'
    )
    path = write_config(
        tmp_path,
        '[[models]]\nid = "m1"\n[[models.routes]]\nchannel = "relay"\nsettlement = "routed"\n'
        'price = { currency = "CNY", input = "1", output = "2" }\n',
    )
    svc = SettingsService(load_settings(data_dir=data, config_path=path, env={}))
    with pytest.raises(BadRequest, match=r"serves \[\[models\]\] m1 in config.toml"):
        await svc.remove_channel("relay")
    assert "relay" in (data / CHANNELS_FILE).read_text()
    assert any(c.id == "relay" for c in svc.settings.channels)


@pytest.mark.parametrize("kind", [k for k, cls in PROVIDERS.items() if not cls.offline])
async def test_the_connection_test_sends_the_key_as_the_provider_itself_does(kind):
    channel = ChannelSettings("c", kind, "https://up.example/v1", "sk-probe-1", "official")
    sent: list[dict[str, str]] = []

    def capture(request: httpx.Request) -> httpx.Response:
        sent.append({k: v for k, v in request.headers.items() if "sk-probe-1" in v})
        return httpx.Response(500, json={"error": {"message": "no"}})

    transport = httpx.MockTransport(capture)
    async with httpx.AsyncClient(transport=transport) as client:
        provider = PROVIDERS[kind](channel, client)
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        with pytest.raises(LocalgateError):
            await provider.complete(ProviderRequest("chat", body))
    await check_connection(channel, transport=transport)
    by_provider, by_test = sent
    assert by_provider and by_test == by_provider
