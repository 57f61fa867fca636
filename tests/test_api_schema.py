"""The admin API's OpenAPI schema, and schemathesis run against every /api operation.

localgate serves the schema Litestar generates at ``GET /api/openapi.json``,
behind the admin guard. Its handlers read query parameters and JSON bodies by
hand, so the generated schema knows neither; :func:`with_request_shapes` adds
what each handler reads (and the ids that exist in this test's database) before
schemathesis generates requests from it, valid and invalid ones alike. The
requests go to an in-process localgate through the test's own client (the
Host must be a loopback name, which schemathesis' own ASGI client does not send).

After every request: no 5xx; a refused one (4xx) left every balance and the
ledger as they were; the server still answers ``GET /health``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

import gateway_fixtures as gf
import pytest
import schemathesis
from fuzz_strategies import encode, mutated
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from schemathesis.generation.modes import GenerationMode

PRICE = gf.price(input="1", output="4")
EXAMPLES_PER_MODE = 40  # per operation and mode (valid, invalid): about 800 requests
HOSTILE_EXAMPLES = 80  # per POST with a body, from tests/fuzz_strategies.py

STRING = {"type": "string"}
QUERY = {
    "/api/wallets/{wallet_id}/ledger": ("cursor", "limit", "kind"),
    "/api/receipts": (
        *("key", "project", "model", "route_type", "channel", "wallet", "status", "client"),
        *("since", "until", "limit", "before", "after"),
    ),
    "/api/topups": ("limit", "wallet"),
}
# Valid amounts look like money; invalid requests get every other value.
AMOUNT = {
    "anyOf": [
        {"type": "string", "pattern": "^-?[0-9]{1,3}(\\.[0-9]{1,6})?$"},
        {"type": "integer", "minimum": -1000, "maximum": 1000},
    ]
}


def body_schemas(wallets: list[str]) -> dict[tuple[str, str], dict[str, Any]]:
    """The JSON objects the POST handlers read (what ``json_object`` + ``field`` expect)."""
    wallet = {"enum": wallets}
    return {
        ("post", "/api/adjustments"): {
            "properties": {
                "wallet": wallet,
                "amount": AMOUNT,
                "reason": STRING,
                "idempotency_key": STRING,
            },
            "required": ["wallet", "amount", "reason"],
        },
        ("post", "/api/keys"): {
            "properties": {
                "label": STRING,
                "project": STRING,
                "models": {"type": "array", "items": STRING},
                "settlement": {"enum": ["official", "routed", "any"]},
                "rpm": {"type": "integer"},
                "budgets": {"type": "object"},
                "expires_at": {"anyOf": [STRING, {"type": "number"}]},
            },
            "required": ["label"],
        },
        ("post", "/api/topups"): {
            "properties": {"wallet": wallet, "amount": AMOUNT, "method": STRING},
            "required": ["wallet", "amount"],
        },
    }


def with_request_shapes(raw: dict[str, Any], known: dict[str, list[Any]]) -> dict[str, Any]:
    """The served schema, /api only, plus the query parameters and bodies the
    handlers read by hand. Ids (path parameters, wallets in bodies) are the ones
    that exist: valid requests use them, invalid ones anything else."""
    schema = copy.deepcopy(raw)
    schema["paths"] = {p: item for p, item in raw["paths"].items() if p.startswith("/api/")}
    bodies = body_schemas(known["wallet_id"])
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            params = operation.setdefault("parameters", [])
            for param in params:
                if param["in"] == "path" and known.get(param["name"]):
                    param["schema"] = {"enum": known[param["name"]]}
            if method == "get":
                params += [
                    {"name": name, "in": "query", "required": False, "schema": STRING}
                    for name in QUERY.get(path, ())
                ]
            if (method, path) in bodies:
                body = {"type": "object", **bodies[method, path]}
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                }
    return schema


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[gf.Gate]:
    channels = [gf.channel("up", "http://127.0.0.1:9/v1")]  # never called: /api only
    models = [gf.model("m-up", gf.route("up", "up-model", PRICE))]
    with gf.run_gateway(
        tmp_path_factory.mktemp("schema"), channels=channels, models=models, in_process=True
    ) as g:
        g.fund("credit", "10")
        yield g


@pytest.fixture(scope="module")
def known(gate: gf.Gate) -> dict[str, list[Any]]:
    """Ids that exist, for path parameters: wallets, a key, a top-up, ledger entries."""
    key = gate.create_key("schema")
    topup = gate.api("POST", "/api/topups", json={"wallet": "credit", "amount": "5"})
    return {
        "wallet_id": [w["id"] for w in gate.ok("GET", "/api/wallets")["wallets"]],
        "key_id": [key["id"]],
        "action": ["pause", "resume", "revoke", "rotate"],
        "topup_id": [topup.json()["id"]] if topup.status_code == 201 else [],
        "entry_id": [1],
    }


def served_schema(gate: gf.Gate) -> dict[str, Any]:
    resp = gate.api("GET", "/api/openapi.json")
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_the_api_schema_is_served_to_the_admin_only(gate: gf.Gate) -> None:
    stranger = gate.http().get("/api/openapi.json")
    assert stranger.status_code == 401
    schema = served_schema(gate)
    assert schema["openapi"].startswith("3.")
    api = {p for p in schema["paths"] if p.startswith("/api/")}
    assert {"/api/wallets", "/api/adjustments", "/api/keys", "/api/receipts"} <= api
    assert "/api/openapi.json" not in schema["paths"]


def test_the_request_shapes_make_every_post_with_a_body_carry_one(
    gate: gf.Gate, known: dict[str, list[Any]]
) -> None:
    schema = with_request_shapes(served_schema(gate), known)
    post = schema["paths"]["/api/adjustments"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "wallet",
        "amount",
        "reason",
    ]
    cursor = [p for p in schema["paths"]["/api/wallets/{wallet_id}/ledger"]["get"]["parameters"]]
    assert "cursor" in {p["name"] for p in cursor}
    assert all(p.startswith("/api/") for p in schema["paths"])


def books(gate: gf.Gate) -> tuple[dict[str, int], int]:
    wallets = gate.ok("GET", "/api/wallets")["wallets"]
    (last_entry,) = gate.store.read().execute("SELECT coalesce(max(id), 0) FROM entries").fetchone()
    return {w["id"]: w["balance_micros"] for w in wallets}, last_entry


def send(gate: gf.Gate, case: Any) -> Any:
    """A schemathesis case through the gate's admin client (Bearer admin token)."""
    kw = case.as_transport_kwargs(base_url=gate.base_url)
    if "json" in kw:
        content = json.dumps(kw["json"], allow_nan=True).encode()
    else:
        data = kw.get("data")
        content = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    headers = {
        k: v
        for k, v in kw["headers"].items()
        if k.lower() not in ("connection", "accept-encoding", "authorization")
    }
    return gate.api(
        kw["method"], kw["url"], params=kw.get("params"), headers=headers, content=content
    )


def check(gate: gf.Gate, request: Any) -> None:
    """``request`` (a schemathesis case, or (path, body bytes) for a POST) answers
    below 500, moves nothing when refused, and leaves the server healthy."""
    before = books(gate)
    if isinstance(request, tuple):
        path, content = request
        headers = {"content-type": "application/json"}
        resp = gate.api("POST", path, content=content, headers=headers)
    else:
        resp = send(gate, request)
    assert resp.status_code < 500, f"{resp.status_code}: {resp.text[:500]}"
    if resp.status_code >= 400:
        assert books(gate) == before, f"refused ({resp.status_code}) yet the ledger changed"
    assert gate.api("GET", "/health").status_code == 200


def run_examples(gate: gf.Gate, requests: st.SearchStrategy[Any], count: int) -> int:
    sent = 0

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(request=requests)
    def run(request: Any) -> None:
        nonlocal sent
        sent += 1
        # The schemathesis pytest plugin blanks hypothesis' own falsifying example.
        note(request.as_curl_command() if hasattr(request, "as_curl_command") else repr(request))
        check(gate, request)

    run()
    return sent


def can_be_invalid(operation: dict[str, Any]) -> bool:
    """Invalid requests need a constraint to break: a JSON body or a parameter that is
    not any string (a string path or query parameter takes every value there is)."""
    if "requestBody" in operation:
        return True
    schemas = [p["schema"] for p in operation.get("parameters", [])]
    return any("enum" in s or s.get("type", "string") != "string" for s in schemas)


Plan = Callable[[str, Any, dict[str, Any]], list[tuple[st.SearchStrategy[Any], int]]]


def fuzz_every_operation(gate: gf.Gate, shaped: dict[str, Any], plan: Plan) -> int:
    """Run the examples ``plan(path, operation, spec)`` asks for on every operation;
    fail at the end, naming every operation that failed."""
    schema = schemathesis.openapi.from_dict(shaped)
    failures: list[str] = []
    sent = 0
    for path, item in shaped["paths"].items():
        for method, spec in item.items():
            for requests, count in plan(path, schema[path][method.upper()], spec):
                try:
                    sent += run_examples(gate, requests, count)
                except AssertionError as exc:
                    notes = "\n".join(getattr(exc, "__notes__", []))
                    failures.append(f"{method.upper()} {path}: {exc}\n{notes}")
    assert not failures, "\n\n".join(failures)
    return sent


@pytest.mark.slow
def test_no_generated_request_to_any_api_operation_answers_5xx_or_moves_money_when_refused(
    gate: gf.Gate, known: dict[str, list[Any]]
) -> None:
    def plan(path: str, operation: Any, spec: dict[str, Any]) -> Any:
        modes = list(GenerationMode) if can_be_invalid(spec) else [GenerationMode.POSITIVE]
        return [(operation.as_strategy(generation_mode=m), EXAMPLES_PER_MODE) for m in modes]

    sent = fuzz_every_operation(gate, with_request_shapes(served_schema(gate), known), plan)
    assert sent >= 500
    assert gate.verify()["ok"]


@pytest.mark.slow
def test_hostile_json_bodies_to_api_posts_never_answer_5xx_or_move_money_when_refused(
    gate: gf.Gate, known: dict[str, list[Any]]
) -> None:
    """schemathesis' valid bodies, edited the way the /v1 fuzz edits its own: lone
    surrogates, huge numbers, deep nesting, wrong types, missing and unknown fields."""

    def plan(path: str, operation: Any, spec: dict[str, Any]) -> Any:
        if "requestBody" not in spec:
            return []
        assert "{" not in path  # the bodies go to the path as it is
        valid = operation.as_strategy().map(lambda case: case.body)
        return [(mutated(valid).map(lambda body: (path, encode(body))), HOSTILE_EXAMPLES)]

    sent = fuzz_every_operation(gate, with_request_shapes(served_schema(gate), known), plan)
    assert sent >= 3 * HOSTILE_EXAMPLES
    assert gate.verify()["ok"]
