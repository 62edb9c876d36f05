"""The API key: every route but /health answers 401 without it or with a wrong one (before the body is read),
and works with it, from both clients."""

from __future__ import annotations

import httpx
import openai
import pytest
import text_generation
from srvutil import API_KEY, CORS_ORIGIN, assert_error

from parley.errors import InvalidRequest
from parley.server import ServerSettings

ROUTES = [
    ("GET", "/v1/models", None),
    ("GET", "/v1/models/x", None),
    ("POST", "/v1/models/model_x/load", None),
    ("POST", "/v1/models/model_x/unload", None),
    ("POST", "/models/model_x", {"inputs": "hi"}),
    ("POST", "/models/model_x/generate", {"inputs": "hi"}),
    ("POST", "/models/model_x/generate_stream", {"inputs": "hi"}),
    ("GET", "/models/model_x/info", None),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}),
    ("POST", "/v1/completions", {"prompt": "hi", "max_tokens": 1}),
    ("POST", "/v1/embeddings", {"input": "hi"}),
    ("POST", "/generate", {"inputs": "hi", "parameters": {"max_new_tokens": 1}}),
    ("POST", "/generate_stream", {"inputs": "hi", "parameters": {"max_new_tokens": 1}}),
    ("POST", "/", {"inputs": "hi"}),
    ("GET", "/", None),
    ("GET", "/info", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/conversations", None),
    ("POST", "/v1/conversations", {}),
    ("GET", "/v1/conversations/conv_x", None),
    ("DELETE", "/v1/conversations/conv_x", None),
    ("POST", "/v1/conversations/conv_x/messages", {"content": "hi"}),
    ("POST", "/v1/conversations/conv_x/retry", {}),
    ("POST", "/v1/conversations/conv_x/edit", {"message_id": "m", "content": "hi"}),
    ("POST", "/v1/conversations/conv_x/fork", {"at": "m"}),
    ("GET", "/v1/conversations/conv_x/export", None),
    ("PATCH", "/v1/conversations/conv_x", {"title": "t"}),
    ("POST", "/v1/conversations/import", {}),
    ("POST", "/v1/documents", {"path": "x"}),
    ("GET", "/v1/documents", None),
    ("GET", "/v1/documents/doc_x", None),
    ("DELETE", "/v1/documents/doc_x", None),
    ("POST", "/v1/documents/doc_x/ask", {"question": "hi"}),
    ("GET", "/v1/personas", None),
    ("POST", "/v1/personas", {"name": "x"}),
    ("GET", "/v1/personas/persona_x", None),
    ("DELETE", "/v1/personas/persona_x", None),
    ("GET", "/v1/personas/persona_x/card", None),
    ("GET", "/v1/skills", None),
    ("GET", "/v1/skills/skill_x", None),
    ("POST", "/api/chat", {"model": "x", "messages": [{"role": "user", "content": "hi"}]}),
    ("POST", "/api/generate", {"model": "x", "prompt": "hi"}),
    ("POST", "/api/embed", {"model": "x", "input": "hi"}),
    ("POST", "/api/embeddings", {"model": "x", "prompt": "hi"}),
    ("GET", "/api/tags", None),
    ("GET", "/api/ps", None),
    ("POST", "/api/show", {"model": "x"}),
    ("GET", "/api/version", None),
    ("POST", "/api/pull", {"model": "acme/x:Q4_0"}),
    ("DELETE", "/api/delete", {"model": "x"}),
    ("POST", "/api/copy", {"source": "x", "destination": "y"}),
    ("POST", "/api/create", {"model": "x"}),
    ("POST", "/api/push", {"model": "x"}),
    ("GET", "/openapi.json", None),
    ("GET", "/docs", None),
    ("GET", "/no/such/route", None),
]


def test_every_route_in_the_app_is_listed(keyed_server):
    paths = keyed_server.app.state.parley_routes.paths   # included routers too (app.routes nests them)
    assert {"/v1/chat/completions", "/generate", "/v1/conversations/{conversation_id}/retry"} <= paths
    listed = {p for _, p, _ in ROUTES} | {"/health", "/docs/oauth2-redirect", "/docs/static", "/login", "/logout"}
    normalized = {p.replace("conv_x", "{conversation_id}").replace("doc_x", "{document_id}")
                  .replace("persona_x", "{name}").replace("skill_x", "{name}").replace("model_x", "{name}")
                  .replace("/v1/models/x", "/v1/models/{model_id:path}")
                  for p in listed}
    assert paths <= normalized, paths - normalized


@pytest.mark.parametrize("method, path, body", ROUTES)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-key", f"Basic {API_KEY}", "Bearer", f"Bearer {API_KEY}x"])
def test_missing_or_wrong_key_is_401(keyed_server, method, path, body, auth):
    headers = {"authorization": auth} if auth else {}
    r = httpx.request(method, keyed_server.url + path, json=body, headers=headers, timeout=30)
    err = assert_error(r, 401, "API key")
    assert err["type"] == "authentication_error"
    assert err["code"] == ("missing_api_key" if auth is None else "invalid_api_key")
    assert r.headers["www-authenticate"].startswith("Bearer")


def test_health_needs_no_key(keyed_server):
    assert httpx.get(keyed_server.url + "/health").status_code == 200


def test_right_key_works_with_both_clients(keyed_server):
    client = openai.OpenAI(base_url=f"{keyed_server.url}/v1", api_key=API_KEY, max_retries=0)
    r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.usage.completion_tokens <= 2
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{keyed_server.url}/v1", api_key="nope", max_retries=0).models.list()
    tgi = text_generation.Client(keyed_server.url, headers={"Authorization": f"Bearer {API_KEY}"})
    assert tgi.generate("Hello", max_new_tokens=2).details.generated_tokens <= 2
    r = httpx.get(keyed_server.url + "/metrics", headers={"authorization": f"bearer {API_KEY}"})
    assert r.status_code == 200


def test_big_unauthenticated_body_gets_401_not_a_reset(keyed_server):
    r = httpx.post(keyed_server.url + "/v1/chat/completions", content=b"x" * (8 << 20),
                   headers={"content-type": "application/json"}, timeout=60)
    assert_error(r, 401)


def test_cors_only_for_the_origins_allowed(keyed_server, server):
    url = keyed_server.url + "/v1/chat/completions"
    pre = {"access-control-request-method": "POST", "access-control-request-headers": "authorization,content-type"}
    r = httpx.options(url, headers={"origin": CORS_ORIGIN, **pre})  # a preflight carries no key
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == CORS_ORIGIN
    r = httpx.options(url, headers={"origin": "http://evil.example", **pre})
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = httpx.get(keyed_server.url + "/v1/models", headers={"origin": CORS_ORIGIN,
                                                             "authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == CORS_ORIGIN
    r = httpx.get(keyed_server.url + "/v1/models", headers={"origin": CORS_ORIGIN})
    assert r.status_code == 401  # CORS lets the page ask; the key still decides
    r = httpx.get(server.url + "/v1/models", headers={"origin": CORS_ORIGIN})  # no --cors-origin: no header
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


def test_cors_origin_must_be_an_origin():
    with pytest.raises(InvalidRequest, match="cors_origins"):
        ServerSettings(cors_origins=("localhost:5173/app",))


def test_the_login_cookie_opens_the_page_and_the_docs_not_the_api(keyed_server):
    url = keyed_server.url
    r = httpx.get(url + "/", headers={"accept": "text/html"})      # a browser opening the page: to the login page
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert httpx.get(url + "/login").status_code == 200
    r = httpx.post(url + "/login", data={"key": "wrong-key"})
    assert r.status_code == 401 and "not this server" in r.text and "set-cookie" not in r.headers
    r = httpx.post(url + "/login", data={"key": API_KEY})
    assert r.status_code == 303 and r.headers["location"] == "/"
    token = r.cookies["parley_key"]
    flags = r.headers["set-cookie"].lower()
    assert API_KEY not in token and "httponly" in flags and "samesite=strict" in flags
    for path in ("/", "/config", "/docs", "/openapi.json", "/docs/static/swagger-ui.css"):
        assert httpx.get(url + path, cookies={"parley_key": token}).status_code == 200, path
    for path in ("/v1/models", "/metrics", "/info", "/v1/conversations"):
        assert_error(httpx.get(url + path, cookies={"parley_key": token}), 401, "API key")
    assert httpx.get(url + "/config", cookies={"parley_key": token[:-1] + "0"}).status_code == 401
    r = httpx.get(url + "/logout", cookies={"parley_key": token})
    assert r.status_code == 303 and 'parley_key=""' in r.headers["set-cookie"]
