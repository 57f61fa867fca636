"""Ready-made setup for the tools people point at localgate: pure functions, text out.

Each tool gets one or more blocks (a settings screen, a config file, shell
lines, code) with the key, the base URL and a model the key may call filled
in. The Keys page shows them right after a key is created (with the real
key) and later with the key's prefix (``lg_AbCd…wXyZ``) as a placeholder,
because the secret is shown only once. docs/tools.md explains each tool.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

DEMO_MODEL = "localgate-demo"
# Preferred models for snippets, first match wins: cheap, capable, well known.
PREFERRED_CHAT = (
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "gpt-5-mini",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
)
PREFERRED_CLAUDE = ("claude-sonnet-4-5", "claude-sonnet-4", "claude-haiku-4-5", "claude-opus-4-1")
HELLO = "Hello from localgate"


def _q(text: str) -> str:
    """A double-quoted string literal, valid in Python, TOML and JSON alike."""
    return json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True)
class Block:
    label: str  # where it goes: "~/.codex/config.toml", "Shell", "Settings screen"
    language: str  # text | bash | yaml | toml | json | python
    text: str


@dataclass(frozen=True)
class ToolSetup:
    id: str
    name: str
    endpoint: str  # the localgate endpoint the tool talks to
    blocks: tuple[Block, ...]
    note: str = ""


def pick_model(models: Sequence[str]) -> str:
    """The model a snippet uses: a preferred one the key may call, else the first
    non-demo model, else the offline demo model."""
    for preferred in PREFERRED_CHAT:
        if preferred in models:
            return preferred
    real = [m for m in models if not m.startswith(DEMO_MODEL)]
    return real[0] if real else (models[0] if models else DEMO_MODEL)


def pick_claude_model(models: Sequence[str]) -> str | None:
    """A Claude model for the Anthropic-speaking tools, if the key may call one."""
    for preferred in PREFERRED_CLAUDE:
        if preferred in models:
            return preferred
    return next((m for m in models if m.startswith("claude-")), None)


def cursor(key: str, v1: str, model: str) -> ToolSetup:
    return ToolSetup(
        "cursor",
        "Cursor",
        "/v1/chat/completions",
        (
            Block(
                "Cursor Settings → Models → API Keys",
                "text",
                f"OpenAI API Key:            {key}\n"
                f"Override OpenAI Base URL:  {v1}   (switch it on)\n"
                f"Add custom model:          {model}",
            ),
        ),
        "Cursor makes these calls from its own servers, which cannot reach 127.0.0.1 on "
        "your machine: put localgate behind a tunnel you trust and add the tunnel's host "
        "name to server.allowed_hosts, or use a tool below that calls from your machine.",
    )


def continue_dev(key: str, v1: str, model: str) -> ToolSetup:
    return ToolSetup(
        "continue",
        "Continue",
        "/v1/chat/completions",
        (
            Block(
                "~/.continue/config.yaml",
                "yaml",
                "name: localgate\n"
                "version: 0.0.1\n"
                "schema: v1\n"
                "models:\n"
                f"  - name: {model} (localgate)\n"
                "    provider: openai\n"
                f"    model: {model}\n"
                f"    apiBase: {v1}\n"
                f"    apiKey: {key}\n"
                "    roles: [chat, edit, apply]",
            ),
        ),
    )


def cline(key: str, v1: str, model: str) -> ToolSetup:
    return ToolSetup(
        "cline",
        "Cline / Roo Code",
        "/v1/chat/completions",
        (
            Block(
                "Extension settings (gear icon) → API Provider",
                "text",
                "API Provider:  OpenAI Compatible\n"
                f"Base URL:      {v1}\n"
                f"API Key:       {key}\n"
                f"Model ID:      {model}",
            ),
        ),
        "The same fields work in Cline and in Roo Code.",
    )


def aider(key: str, v1: str, model: str) -> ToolSetup:
    return ToolSetup(
        "aider",
        "aider",
        "/v1/chat/completions",
        (
            Block(
                "Shell",
                "bash",
                f"export OPENAI_API_BASE={v1}\n"
                f"export OPENAI_API_KEY={key}\n"
                f"aider --model openai/{model}",
            ),
        ),
        "The openai/ prefix tells aider to use its OpenAI-compatible client. A warning "
        "about unknown model metadata is harmless (--no-show-model-warnings hides it).",
    )


def claude_code(key: str, base_url: str, model: str) -> ToolSetup:
    env = {"ANTHROPIC_BASE_URL": base_url, "ANTHROPIC_AUTH_TOKEN": key, "ANTHROPIC_MODEL": model}
    return ToolSetup(
        "claude-code",
        "Claude Code",
        "/v1/messages",
        (
            Block(
                "Shell",
                "bash",
                f"export ANTHROPIC_BASE_URL={base_url}\n"
                f"export ANTHROPIC_AUTH_TOKEN={key}\n"
                f"export ANTHROPIC_MODEL={model}\n"
                "unset ANTHROPIC_API_KEY   # it would take precedence\n"
                "claude",
            ),
            Block(
                "or ~/.claude/settings.json",
                "json",
                json.dumps({"env": env}, indent=2, ensure_ascii=False),
            ),
        ),
        "Claude Code speaks the Anthropic Messages API (/v1/messages). The base URL has "
        "no /v1: Claude Code adds it.",
    )


def codex(key: str, v1: str, model: str) -> ToolSetup:
    return ToolSetup(
        "codex",
        "Codex CLI",
        "/v1/responses",
        (
            Block(
                "~/.codex/config.toml",
                "toml",
                f"model = {_q(model)}\n"
                'model_provider = "localgate"\n'
                "\n"
                "[model_providers.localgate]\n"
                'name = "localgate"\n'
                f"base_url = {_q(v1)}\n"
                'env_key = "LOCALGATE_API_KEY"\n'
                'wire_api = "responses"',
            ),
            Block("Shell", "bash", f"export LOCALGATE_API_KEY={key}\ncodex"),
        ),
        "Current Codex CLI releases speak only the Responses API (/v1/responses).",
    )


def openai_sdk(key: str, v1: str, model: str) -> ToolSetup:
    return ToolSetup(
        "openai-sdk",
        "openai SDK",
        "/v1/chat/completions",
        (
            Block(
                "Python",
                "python",
                "from openai import OpenAI\n"
                "\n"
                f"client = OpenAI(base_url={_q(v1)}, api_key={_q(key)})\n"
                "raw = client.chat.completions.with_raw_response.create(\n"
                f"    model={_q(model)},\n"
                f'    messages=[{{"role": "user", "content": {_q(HELLO)}}}],\n'
                ")\n"
                "print(raw.parse().choices[0].message.content)\n"
                'print("receipt", raw.headers["x-localgate-receipt"], raw.headers["x-localgate-charge"])',
            ),
            Block(
                "or the environment (most OpenAI-based tools read it)",
                "bash",
                f"export OPENAI_BASE_URL={v1}\nexport OPENAI_API_KEY={key}",
            ),
        ),
    )


def anthropic_sdk(key: str, base_url: str, model: str) -> ToolSetup:
    return ToolSetup(
        "anthropic-sdk",
        "anthropic SDK",
        "/v1/messages",
        (
            Block(
                "Python",
                "python",
                "from anthropic import Anthropic\n"
                "\n"
                f"client = Anthropic(base_url={_q(base_url)}, api_key={_q(key)})\n"
                "message = client.messages.create(\n"
                f"    model={_q(model)},\n"
                "    max_tokens=256,\n"
                f'    messages=[{{"role": "user", "content": {_q(HELLO)}}}],\n'
                ")\n"
                "print(message.content[0].text)",
            ),
        ),
        "The base URL has no /v1: the SDK adds /v1/messages. It sends the key as "
        "x-api-key, which localgate accepts.",
    )


def curl(key: str, v1: str, model: str) -> ToolSetup:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": HELLO}]})
    return ToolSetup(
        "curl",
        "curl",
        "/v1/chat/completions",
        (
            Block(
                "Shell",
                "bash",
                f"curl -i {v1}/chat/completions \\\n"
                f'  -H "Authorization: Bearer {key}" \\\n'
                '  -H "Content-Type: application/json" \\\n'
                f"  -d '{body}'",
            ),
            Block(
                "The models this key may call",
                "bash",
                f'curl {v1}/models -H "Authorization: Bearer {key}"',
            ),
        ),
        "-i prints the x-localgate-receipt, -charge, -wallet and -balance headers.",
    )


def setups(key: str, base_url: str, models: Sequence[str]) -> list[ToolSetup]:
    """Every tool's setup for ``key`` against ``base_url`` (``http://127.0.0.1:4311``).

    ``models`` are the chat models the key may call; the snippets use one of them
    (Claude Code and the anthropic SDK a Claude model when there is one).
    """
    base_url = base_url.rstrip("/")
    v1 = base_url + "/v1"
    model = pick_model(models)
    claude = pick_claude_model(models) or model
    return [
        cursor(key, v1, model),
        continue_dev(key, v1, model),
        cline(key, v1, model),
        aider(key, v1, model),
        claude_code(key, base_url, claude),
        codex(key, v1, model),
        openai_sdk(key, v1, model),
        anthropic_sdk(key, base_url, claude),
        curl(key, v1, model),
    ]
