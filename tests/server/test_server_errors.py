"""Bad input: every case is a 4xx in the OpenAI error shape whose message names the field or the limit, and
the server keeps answering afterwards."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest
from srvutil import assert_error

OK = {"role": "user", "content": "Hi"}
CHAT = "/v1/chat/completions"


def post(server, path: str, body=None, *, raw: bytes | None = None, headers: dict | None = None) -> httpx.Response:
    h = {"content-type": "application/json", **(headers or {})}
    data = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(server.url + path, content=data, headers=h, timeout=60)


@pytest.fixture(autouse=True)
def still_up(server):
    yield
    assert httpx.get(server.url + "/health", timeout=10).status_code == 200


@pytest.mark.parametrize("raw, words", [
    (b'{"messages": [', ["not valid JSON"]),
    (b"", ["JSON"]),
    (b"\xff\xfe\x00", ["JSON"]),
    (b"[1, 2]", ["JSON object"]),
    (b"null", ["JSON object"]),
    (b'"text"', ["JSON object"]),
])
def test_malformed_json(server, raw, words):
    assert_error(post(server, CHAT, raw=raw), 400, *words)


def test_not_json_content_type(server):
    r = httpx.post(server.url + CHAT, content=b"hello", headers={"content-type": "text/plain"})
    assert_error(r, 400, "JSON")


@pytest.mark.parametrize("body, param, words", [
    ({"messages": "hi"}, "messages", ["messages", "a list"]),
    ({"messages": [OK], "max_tokens": "10"}, "max_tokens", ["max_tokens", "an integer", "'10'"]),
    ({"messages": [OK], "max_tokens": 1.5}, "max_tokens", ["max_tokens"]),
    ({"messages": [OK], "temperature": "hot"}, "temperature", ["temperature", "a number"]),
    ({"messages": [OK], "stream": "yes"}, "stream", ["stream", "a boolean"]),
    ({"messages": [OK], "stop": 5}, "stop", ["stop", "a string or a list"]),
    ({"messages": [{"role": "user", "content": 5}]}, "messages.0.content", ["messages.0.content"]),
    ({"messages": [{"role": "user"}]}, "messages.0.content", ["messages.0.content is required"]),
    ({"messages": [OK], "seed": True}, "seed", ["seed"]),
])
def test_wrong_types(server, body, param, words):
    err = assert_error(post(server, CHAT, body), 400, *words)
    assert err["param"] == param


def test_unknown_fields_are_named(server):
    err = assert_error(post(server, CHAT, {"messages": [OK], "temprature": 0.5}), 400, "unknown field 'temprature'")
    assert err["param"] == "temprature"
    assert_error(post(server, CHAT, {"messages": [{**OK, "colour": "red"}]}), 400, "messages.0.colour")
    assert_error(post(server, "/generate", {"inputs": "x", "parameters": {"max_tokens": 3}}), 400,
                 "parameters.max_tokens")


@pytest.mark.parametrize("value, words", [
    (-1, ["max_tokens", "-1"]),
    (0, ["max_tokens", "0"]),
    (10**9, ["max_tokens", "at most 256", "max_tokens_cap"]),
    (10**30, ["max_tokens"]),
])
def test_bad_max_tokens(server, value, words):
    err = assert_error(post(server, CHAT, {"messages": [OK], "max_tokens": value}), 400, *words)
    assert err["param"] == "max_tokens"


def test_bad_max_new_tokens_tgi(server):
    r = post(server, "/generate", {"inputs": "x", "parameters": {"max_new_tokens": -5}})
    err = assert_error(r, 400, "parameters.max_new_tokens")
    assert r.json()["error_type"] == "validation" and err["param"] == "parameters.max_new_tokens"


def test_empty_messages(server):
    assert_error(post(server, CHAT, {"messages": []}), 400, "messages", "at least one")
    assert_error(post(server, "/v1/completions", {"prompt": ""}), 400, "prompt", "empty")
    assert_error(post(server, "/v1/completions", {"prompt": []}), 400, "prompt")


@pytest.mark.parametrize("role", ["function", "bot", "", "USER", None, 1])
def test_invalid_roles(server, role):
    err = assert_error(post(server, CHAT, {"messages": [{"role": role, "content": "x"}]}), 400, "messages.0.role")
    assert err["param"] == "messages.0.role"


@pytest.mark.parametrize("out_of_range", [
    {"temperature": -0.1}, {"temperature": 100}, {"top_p": 0}, {"top_p": 1.5}, {"top_k": -1}, {"min_p": 2},
    {"presence_penalty": 3}, {"frequency_penalty": -3}, {"repetition_penalty": 0}, {"seed": -2},
    {"stop": [""]}, {"stop": ["x"] * 40}, {"stop": "y" * 1000},
])
def test_out_of_range_sampling(server, out_of_range):
    (name,) = out_of_range
    err = assert_error(post(server, CHAT, {"messages": [OK], **out_of_range}), 400, name)
    assert err["param"] == name


def test_unicode_edge_cases(server):
    # unpaired surrogates are not Unicode text: refused, naming the field
    raw = b'{"messages": [{"role": "user", "content": "a\\ud800b"}], "max_tokens": 2}'
    assert_error(post(server, CHAT, raw=raw), 400, "messages.0.content", "surrogate")
    raw = b'{"prompt": "\\udfff", "max_tokens": 2}'
    assert_error(post(server, "/v1/completions", raw=raw), 400, "prompt", "surrogate")
    raw = b'{"messages": [{"role": "user", "content": "hi"}], "stop": ["\\ud83d"], "max_tokens": 2}'
    assert_error(post(server, CHAT, raw=raw), 400, "stop")
    # valid but unusual text works: NUL, emoji with joiners, RTL, combining marks, BOM, special-token text
    for text in ["a\u0000b", "👩‍👩‍👧‍👦🏳️‍🌈", "مرحبا", "e\u0301\u0302", "\ufeffhi", "<|im_end|><|im_start|>system",
                 "\U0010ffff", "\u2028\u2029\r\n"]:
        r = post(server, CHAT, {"messages": [{"role": "user", "content": text}], "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200, (text, r.text)
        assert isinstance(r.json()["choices"][0]["message"]["content"], str)


def test_ten_megabyte_body(server):
    big = {"messages": [{"role": "user", "content": "x" * (10 << 20)}]}
    r = post(server, CHAT, big)
    err = assert_error(r, 413, "bytes", "max_body_bytes")
    assert err["code"] == "request_too_large"
    # the same without a Content-Length (chunked): refused while reading
    data = json.dumps(big).encode()

    def chunks():
        for i in range(0, len(data), 1 << 16):
            yield data[i:i + (1 << 16)]

    r = httpx.post(server.url + CHAT, content=chunks(), headers={"content-type": "application/json"}, timeout=60)
    assert_error(r, 413, "max_body_bytes")


def test_not_found_and_method_not_allowed(server):
    assert_error(httpx.get(server.url + "/v1/nothing"), 404, "/v1/nothing")
    assert_error(httpx.get(server.url + CHAT), 405, "GET", "POST")
    assert_error(httpx.delete(server.url + "/generate"), 405)
    assert_error(httpx.get(server.url + "/v1/conversations/conv_missing"), 404, "conv_missing")


def test_unsupported_options_are_refused_not_ignored(server):
    for extra, name in [({"n": 17}, "n"), ({"top_logprobs": 21}, "top_logprobs"), ({"logit_bias": {"1": 5}}, "logit_bias"),
                        ({"tools": [{"type": "function"}]}, "tools[0].function"), ({"response_format": {"type": "xml"}},
                                                                          "response_format.type"),
                        ({"stream_options": {"include_usage": True}}, "stream_options")]:
        err = assert_error(post(server, CHAT, {"messages": [OK], **extra}), 400, name)
        assert err["param"] == name
    for extra, name in [({"best_of": 3}, "best_of"), ({"suffix": "x"}, "suffix"), ({"prompt": ["a", "b"]}, "prompt"),
                        ({"logprobs": 21}, "logprobs")]:
        body = {"prompt": "x", "max_tokens": 2, **extra}
        assert_error(post(server, "/v1/completions", body), 400, name)
    for extra, name in [({"typical_p": 0.5}, "typical_p"), ({"best_of": 2}, "best_of"),
                        ({"grammar": {"type": "json", "value": [1]}}, "grammar"), ({"top_n_tokens": 21}, "top_n_tokens")]:
        assert_error(post(server, "/generate", {"inputs": "x", "parameters": extra}), 400, name)


def test_context_overflow_tgi_and_completions(server, parley):
    long = "word " * (parley.context_size + 10)
    r = post(server, "/v1/completions", {"prompt": long, "max_tokens": 2})
    err = assert_error(r, 400, "tokens too many", str(parley.context_size))
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt"
    r = post(server, "/generate", {"inputs": long, "parameters": {"max_new_tokens": 2}})
    err = assert_error(r, 400, "tokens too many")
    assert err["param"] == "inputs"
    assert_error(post(server, "/v1/completions", {"prompt": [parley.engine.n_vocab + 5]}), 400, "token ids")


def test_limits_are_named(small_server):
    r = post(small_server, CHAT, {"messages": [{"role": "user", "content": "x" * 5000}]})
    assert_error(r, 413, "4096", "max_body_bytes")
    r = post(small_server, CHAT, {"messages": [{"role": "user", "content": "word " * 100}], "max_tokens": 2})
    assert_error(r, 400, "max_prompt_tokens", "tokens too many")
    r = post(small_server, CHAT, {"messages": [OK], "max_tokens": 5})
    assert_error(r, 400, "at most 4", "max_tokens_cap")


@pytest.mark.parametrize("path", ["/health", "/v1/models", "/info", "/metrics", "/", "/v1/conversations",
                                  "/openapi.json"])
def test_head_answers_like_get_without_a_body(server, path):
    get, head = httpx.get(server.url + path), httpx.head(server.url + path)
    assert get.status_code == head.status_code == 200, (path, head.status_code, head.text)
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]


def test_head_elsewhere_is_still_refused(server):
    r = httpx.head(server.url + CHAT)
    assert r.status_code == 405 and r.content == b""  # HEAD answers carry no body, even an error's
    assert httpx.head(server.url + "/v1/nothing").status_code == 404


def test_long_ids_are_not_echoed_whole(server):
    long_id = "conv_" + "x" * 60_000
    for r in (httpx.get(server.url + f"/v1/conversations/{long_id}", timeout=30),
              httpx.post(server.url + f"/v1/conversations/{long_id}/messages", json={"content": "hi"}, timeout=30),
              httpx.get(server.url + f"/v1/models/{long_id}", timeout=30),
              post(server, CHAT, {"messages": [OK], "x" * 60_000: 1})):
        err = assert_error(r, (400, 404))
        assert len(err["message"]) < 400 and "..." in err["message"] and "60" in err["message"], err["message"][:500]
        assert err["param"] is None or len(err["param"]) < 200


def test_a_long_url_split_over_several_reads_is_still_read(server):
    """h11 refused a request line over 16 KiB that arrived in more than one read (a plain-text 400, depending on
    the load): parley reads a head of up to 256 KiB whole."""
    host, port = server.url.removeprefix("http://").split(":")
    head = (f"GET /v1/conversations/conv_{'x' * 60_000} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
            ).encode()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        for start in range(0, len(head), 8192):
            sock.sendall(head[start:start + 8192])
            time.sleep(0.01)
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    status, _, body = raw.partition(b"\r\n\r\n")
    assert status.split()[1] == b"404", raw[:300]
    assert "..." in json.loads(body)["error"]["message"]


# ---- nesting: refused from the body's bytes, before json.loads or pydantic recurse into it --------------------
DEEP = 50_000
JSON_ROUTES = [   # (method, path, a field of its body)
    ("POST", CHAT, "messages"), ("POST", "/v1/completions", "prompt"), ("POST", "/generate", "inputs"),
    ("POST", "/generate_stream", "inputs"), ("POST", "/", "inputs"), ("POST", "/v1/conversations", "system"),
    ("POST", "/v1/conversations/import", "messages"), ("PATCH", "/v1/conversations/conv_x", "metadata"),
    ("POST", "/v1/conversations/conv_x/messages", "content"), ("POST", "/v1/conversations/conv_x/edit", "content"),
    ("POST", "/v1/personas", "data"), ("POST", "/v1/documents", "path"),
    ("POST", "/v1/documents/doc_x/ask", "question"),
]


def nested(levels: int) -> dict | str:
    value = "leaf"
    for _ in range(levels):
        value = {"k": value}
    return value


@pytest.mark.parametrize("method, path, field", JSON_ROUTES)
@pytest.mark.parametrize("where", ["bare", "in_a_field"])
def test_deeply_nested_json_is_a_400_naming_the_limit(server, method, path, field, where):
    from parley.server.json_depth import MAX_JSON_DEPTH

    arrays = "[" * DEEP + "]" * DEEP
    raw, depth = (arrays, DEEP) if where == "bare" else (f'{{"{field}": {arrays}}}', DEEP + 1)
    r = httpx.request(method, server.url + path, content=raw.encode(), timeout=60,
                      headers={"content-type": "application/json"})
    err = assert_error(r, 400, f"nested {depth} levels deep", f"at most {MAX_JSON_DEPTH}")
    assert err["code"] == "json_too_deep" and err["param"] is None
    if path in ("/", "/generate", "/generate_stream"):
        assert r.json()["error_type"] == "validation"


@pytest.mark.parametrize("raw", [
    b"[" * DEEP,                                                        # never closed
    ('{"messages": [' + "[" * DEEP + "]" * DEEP + "]}").encode("utf-16"),   # UTF-16, which json.loads reads too
], ids=["unclosed", "utf-16"])
def test_deep_json_in_any_form_the_parser_takes_is_a_400(server, raw):
    assert_error(post(server, CHAT, raw=raw), 400, "levels deep")


def test_nesting_up_to_the_limit_is_served(server):
    from parley.server.json_depth import MAX_JSON_DEPTH

    # metadata (taken and ignored) one level inside the body: the whole body is exactly as deep as allowed
    body = {"messages": [OK], "max_tokens": 1, "temperature": 0, "metadata": nested(MAX_JSON_DEPTH - 1)}
    r = post(server, CHAT, body)
    assert r.status_code == 200, r.text
    body["metadata"] = nested(MAX_JSON_DEPTH)
    assert_error(post(server, CHAT, body), 400, f"nested {MAX_JSON_DEPTH + 1} levels deep")


def test_brackets_inside_strings_are_not_nesting(server):
    text = '\\"' + "[" * 5000 + "{" * 5000 + '\\'   # an escaped quote first, an escaped backslash last
    body = {"messages": [OK], "max_tokens": 1, "user": text, "metadata": {text: [text, {"]": "}"}]}}
    r = post(server, CHAT, body)
    assert r.status_code == 200, r.text
