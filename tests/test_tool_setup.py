"""The per-tool setup snippets: every tool, the key and base URL filled in, files that
parse, and the openai SDK and curl snippets working against a running localgate."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib

import anthropic
import openai
import pytest
import yaml
from ui_helpers import live_server

from localgate.services.tool_setup import pick_claude_model, pick_model, setups

KEY = "lg_" + "A" * 43
BASE = "http://127.0.0.1:4311"
MODELS = ["localgate-demo", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash"]
TOOLS = ["cursor", "continue", "cline", "aider", "claude-code", "codex", "openai-sdk",
         "anthropic-sdk", "curl"]  # fmt: skip


def by_id(key=KEY, models=MODELS):
    return {t.id: t for t in setups(key, BASE, models)}


def block(tool, label_part):
    return next(b for b in tool.blocks if label_part in b.label)


def test_every_tool_has_the_key_and_the_right_base_url():
    tools = by_id()
    assert list(tools) == TOOLS
    for tool in tools.values():
        text = "\n".join(b.text for b in tool.blocks)
        assert KEY in text, tool.id
        if tool.id in ("claude-code", "anthropic-sdk"):
            # Anthropic clients add /v1/messages themselves.
            assert BASE in text and f"{BASE}/v1" not in text, tool.id
        else:
            assert f"{BASE}/v1" in text, tool.id


def test_the_prefix_placeholder_goes_where_the_key_went():
    prefix = "lg_AbCd…wXyZ"
    for tool in setups(prefix, BASE, MODELS):
        assert prefix in "\n".join(b.text for b in tool.blocks)
        assert KEY not in "\n".join(b.text for b in tool.blocks)


def test_models_chosen_for_the_snippets():
    assert pick_model(MODELS) == "gpt-4o-mini"
    assert pick_model(["localgate-demo", "some-relay-model"]) == "some-relay-model"
    assert pick_model(["localgate-demo"]) == "localgate-demo"
    assert pick_model([]) == "localgate-demo"
    assert pick_claude_model(MODELS) == "claude-sonnet-4-5"
    assert pick_claude_model(["claude-3-5-haiku"]) == "claude-3-5-haiku"
    assert pick_claude_model(["gpt-4o-mini"]) is None
    tools = by_id(models=["localgate-demo"])  # no Claude model: Claude Code gets the default
    assert "ANTHROPIC_MODEL=localgate-demo" in tools["claude-code"].blocks[0].text
    assert "claude-sonnet-4-5" in by_id()["anthropic-sdk"].blocks[0].text


def test_config_files_parse_in_their_own_formats():
    tools = by_id()
    codex = tomllib.loads(block(tools["codex"], "config.toml").text)
    assert codex["model_provider"] == "localgate" and codex["model"] == "gpt-4o-mini"
    provider = codex["model_providers"]["localgate"]
    assert provider == {
        "name": "localgate",
        "base_url": f"{BASE}/v1",
        "env_key": "LOCALGATE_API_KEY",
        "wire_api": "responses",
    }
    assert f"export LOCALGATE_API_KEY={KEY}" in block(tools["codex"], "Shell").text

    cont = yaml.safe_load(block(tools["continue"], "config.yaml").text)
    model = cont["models"][0]
    assert cont["schema"] == "v1"
    assert model["provider"] == "openai" and model["apiBase"] == f"{BASE}/v1"
    assert model["apiKey"] == KEY and model["model"] == "gpt-4o-mini"

    claude = json.loads(block(tools["claude-code"], "settings.json").text)
    assert claude["env"] == {
        "ANTHROPIC_BASE_URL": BASE,
        "ANTHROPIC_AUTH_TOKEN": KEY,
        "ANTHROPIC_MODEL": "claude-sonnet-4-5",
    }
    for tool_id in ("openai-sdk", "anthropic-sdk"):
        compile(block(tools[tool_id], "Python").text, tool_id, "exec")


def test_shell_snippets_split_cleanly():
    tools = by_id()
    aider = block(tools["aider"], "Shell").text.splitlines()
    assert aider == [
        f"export OPENAI_API_BASE={BASE}/v1",
        f"export OPENAI_API_KEY={KEY}",
        "aider --model openai/gpt-4o-mini",
    ]
    argv = shlex.split(block(tools["curl"], "Shell").text.replace("\\\n", " "))
    body = json.loads(argv[argv.index("-d") + 1])
    assert body["model"] == "gpt-4o-mini" and body["messages"][0]["role"] == "user"
    assert f"Authorization: Bearer {KEY}" in argv


@pytest.mark.slow  # a real server, the snippets run in subprocesses
def test_openai_sdk_and_curl_snippets_work_against_localgate(tmp_path):
    with live_server(tmp_path) as live:
        live.fund("routed", "1")
        key = live.admin("POST", "/api/keys", json={"label": "snippets"})["key"]
        tools = {t.id: t for t in setups(key, live.base_url, ["localgate-demo"])}

        code = block(tools["openai-sdk"], "Python").text
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
        assert out.returncode == 0, out.stderr
        assert "demo model built into localgate" in out.stdout
        receipt_id = re.search(r"^receipt (rc_\w+) ", out.stdout, re.M).group(1)
        receipt = live.admin("GET", f"/api/receipts/{receipt_id}")
        assert receipt["status"] == "succeeded" and receipt["client"] == "openai-python"

        if shutil.which("curl"):
            argv = shlex.split(block(tools["curl"], "Shell").text.replace("\\\n", " "))
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
            assert out.returncode == 0, out.stderr
            assert "HTTP/1.1 200" in out.stdout and "x-localgate-receipt: rc_" in out.stdout
            listing = subprocess.run(
                shlex.split(block(tools["curl"], "models").text),
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert "localgate-demo" in listing.stdout


@pytest.mark.slow  # a real server, the snippets run in subprocesses
def test_claude_code_codex_and_anthropic_sdk_setups_work_as_written(tmp_path):
    """Each snippet as a tool would read it: Claude Code's settings.json env (base URL
    without /v1, the key as a bearer token, always streaming, ?beta=true), Codex
    CLI's model_providers entry (wire_api = "responses"), the anthropic SDK code."""
    with live_server(tmp_path) as live:
        live.fund("routed", "1")
        key = live.admin("POST", "/api/keys", json={"label": "snippets"})["key"]
        tools = {t.id: t for t in setups(key, live.base_url, ["localgate-demo"])}

        env = json.loads(block(tools["claude-code"], "settings.json").text)["env"]
        claude = anthropic.Anthropic(
            base_url=env["ANTHROPIC_BASE_URL"], auth_token=env["ANTHROPIC_AUTH_TOKEN"]
        )
        with claude.messages.stream(
            model=env["ANTHROPIC_MODEL"],
            max_tokens=64,
            messages=[{"role": "user", "content": "hello"}],
            extra_query={"beta": "true"},
        ) as stream:
            assert "".join(stream.text_stream)
            receipt_id = stream.response.headers["x-localgate-receipt"]
        receipt = live.admin("GET", f"/api/receipts/{receipt_id}")
        assert receipt["status"] == "succeeded" and receipt["dialect"] == "anthropic-messages"

        config = tomllib.loads(block(tools["codex"], "config.toml").text)
        provider = config["model_providers"][config["model_provider"]]
        assert provider["wire_api"] == "responses"
        codex = openai.OpenAI(base_url=provider["base_url"], api_key=key)
        events = list(codex.responses.create(model=config["model"], input="hi", stream=True))
        assert events[-1].type == "response.completed" and events[-1].response.output_text

        code = block(tools["anthropic-sdk"], "Python").text
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
        assert out.returncode == 0, out.stderr
        assert "demo model built into localgate" in out.stdout
