"""Schema-driven fuzzing (schemathesis) over the server's own OpenAPI document: for every operation, requests
that follow the schema (positive) and requests that break it (negative). Whatever comes in: never a 5xx, every
4xx is the OpenAI error shape with a message (Ollama's on /api/*), every 200 stream ends properly. Runs against a live server with
max_tokens_cap=4 and max_prompt_tokens=256, so valid generation requests stay fast."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from srvutil import LiveServer

from parley.server import ServerSettings

OPERATIONS = [
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"), ("GET", "/v1/models"),
    ("GET", "/v1/models/{model_id}"), ("POST", "/v1/models/{name}/load"), ("POST", "/v1/models/{name}/unload"),
    ("GET", "/v1/conversations"), ("POST", "/v1/conversations"),
    ("GET", "/v1/conversations/{conversation_id}"), ("DELETE", "/v1/conversations/{conversation_id}"),
    ("POST", "/v1/conversations/{conversation_id}/messages"), ("POST", "/v1/conversations/{conversation_id}/retry"),
    ("PATCH", "/v1/conversations/{conversation_id}"), ("POST", "/v1/conversations/{conversation_id}/edit"),
    ("GET", "/v1/conversations/{conversation_id}/export"), ("POST", "/v1/conversations/{conversation_id}/fork"),
    ("POST", "/v1/conversations/import"),
    ("POST", "/v1/documents"), ("GET", "/v1/documents"), ("GET", "/v1/documents/{document_id}"),
    ("DELETE", "/v1/documents/{document_id}"), ("POST", "/v1/documents/{document_id}/ask"),
    ("GET", "/v1/personas"), ("POST", "/v1/personas"), ("GET", "/v1/personas/{name}"),
    ("DELETE", "/v1/personas/{name}"), ("GET", "/v1/personas/{name}/card"), ("GET", "/v1/skills"),
    ("GET", "/v1/skills/{name}"),
    ("POST", "/generate"), ("POST", "/generate_stream"), ("POST", "/"), ("GET", "/info"), ("GET", "/health"),
    ("POST", "/models/{name}"), ("POST", "/models/{name}/generate"), ("POST", "/models/{name}/generate_stream"),
    ("GET", "/models/{name}/info"),
    ("GET", "/metrics"),
    ("POST", "/api/chat"), ("POST", "/api/generate"), ("GET", "/api/tags"), ("GET", "/api/ps"),
    ("POST", "/api/show"), ("GET", "/api/version"), ("POST", "/api/pull"), ("DELETE", "/api/delete"),
    ("POST", "/api/copy"), ("POST", "/api/create"), ("POST", "/api/push"), ("POST", "/api/embed"),
    ("POST", "/api/embeddings"),
]  # GET / is the web chat page (parley.web): a mount, in no OpenAPI operation
EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_server(parley):
    # POST /api/pull asks a hub: an empty one of the tests' own (tests/models/hubserver.py), so a name that
    # parses answers 404, not the unreachable internet's 5xx
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
    from hubserver import HubServer

    hub = HubServer()
    s = LiveServer(parley, ServerSettings(max_tokens_cap=4, max_prompt_tokens=256))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_ENDPOINT", hub.hub.url)
        yield s
    s.stop()
    hub.close()


@pytest.fixture(scope="module")
def schema(fuzz_server):
    return schemathesis.openapi.from_url(fuzz_server.url + "/openapi.json")


def operation(schema, method: str, path: str):
    for result in schema.get_all_operations():
        op = result.ok()
        if op.method.upper() == method and op.path == path:
            return op
    raise AssertionError(f"{method} {path} is not in the OpenAPI document")


def test_every_operation_is_fuzzed(schema):
    found = {(r.ok().method.upper(), r.ok().path) for r in schema.get_all_operations()}
    assert found == set(OPERATIONS)


def check(case, response) -> None:
    where = f"{case.method} {case.formatted_path} body={case.body!r}"
    assert response.status_code < 500, f"{where} -> {response.status_code} {response.text[:500]}"
    if response.status_code >= 400:
        body = response.json()
        if case.path.startswith("/api/"):   # Ollama's shape: the message a string, parley's fields beside it
            assert isinstance(body, dict) and isinstance(body.get("error"), str), f"{where} -> {response.text[:300]}"
            err = {"message": body["error"], **body}
        else:
            assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"{where} -> {response.text[:300]}"
            err = body["error"]
        assert isinstance(err.get("message"), str) and err["message"], where
        assert {"type", "param", "code"} <= set(err), where
        return
    content_type = (response.headers.get("content-type") or [""])[0]
    if content_type.startswith("text/event-stream"):
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events, where
        if case.path.startswith("/v1/"):
            assert events[-1] == "[DONE]", f"{where}: the stream did not end with [DONE]"
            events = events[:-1]
        for e in events:
            assert "error" not in json.loads(e), f"{where}: {e}"
    if content_type.startswith("application/x-ndjson"):   # Ollama's streams: JSON lines, none an error
        lines = [json.loads(x) for x in response.text.splitlines() if x.strip()]
        assert lines and all("error" not in x for x in lines), f"{where}: {response.text[-300:]}"
        assert lines[-1].get("done") is True or lines[-1].get("status") == "success", f"{where}: {lines[-1]}"


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda m: m.value)
@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz(schema, fuzz_server, method, path, mode):
    op = operation(schema, method, path)
    real_id = "{conversation_id}" in path  # fuzz a real conversation, so that valid cases reach the model
    has_input = bool(op.body or op.query or op.headers or (op.path_parameters and not real_id))
    if mode is GenerationMode.NEGATIVE and not has_input:
        pytest.skip("nothing to break: the operation takes no other input")
    params = {}
    if real_id:
        created = httpx.post(fuzz_server.url + "/v1/conversations", json={"system": "Be brief."})
        params["path_parameters"] = {"conversation_id": created.json()["id"]}
        if path.endswith("/retry"):
            url = f"{fuzz_server.url}/v1/conversations/{created.json()['id']}/messages"
            httpx.post(url, json={"content": "Hello", "max_tokens": 2}, timeout=60).raise_for_status()
    strategy = op.as_strategy(generation_mode=mode, **params)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def fuzz(case):
        check(case, case.call(base_url=fuzz_server.url, timeout=60))

    try:
        fuzz()
    except Unsatisfiable:
        pytest.skip("schemathesis finds no way to break this operation's input (a free-form path string)")
    assert httpx.get(fuzz_server.url + "/health").status_code == 200
