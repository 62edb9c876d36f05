"""The real `text-generation` client (TGI's) against a live server: generate and stream, details, stop
sequences, seeds, and the same text as the OpenAI completions API for the same prompt and parameters."""

from __future__ import annotations

import httpx
import pytest
import text_generation
from srvutil import assert_error, fresh_prefix, leaks, pick_stop, warm
from text_generation.errors import ValidationError

PROMPT = "Once upon a time, in a land far away, there lived"


@pytest.fixture(scope="module")
def client(server):
    return text_generation.Client(server.url, timeout=60)


def test_generate_details(client, parley):
    r = client.generate(PROMPT, max_new_tokens=8)
    assert r.generated_text
    d = r.details
    assert d.finish_reason == "length"
    assert d.generated_tokens == 8
    assert len(d.tokens) == 8
    assert "".join(t.text for t in d.tokens) == r.generated_text
    assert d.seed is None  # greedy: no sampling seed, as in TGI


def test_stream_matches_generate(client, server):
    prompt = f"{fresh_prefix()} {PROMPT}"
    warm(server.url, prompt=prompt)
    whole = client.generate(prompt, max_new_tokens=10).generated_text
    events = list(client.generate_stream(prompt, max_new_tokens=10))
    assert "".join(e.token.text for e in events if not e.token.special) == whole
    assert events[-1].generated_text == whole
    assert events[-1].details.finish_reason == "length"
    assert events[-1].details.generated_tokens == 10
    assert all(e.generated_text is None for e in events[:-1])


def test_return_full_text(client):
    r = client.generate(PROMPT, max_new_tokens=4, return_full_text=True)
    assert r.generated_text.startswith(PROMPT)


def test_same_text_as_openai_completions(client, server):
    prompt = f"{fresh_prefix()} {PROMPT}"
    warm(server.url, prompt=prompt)
    tgi = client.generate(prompt, max_new_tokens=12, repetition_penalty=1.3).generated_text
    body = {"prompt": prompt, "max_tokens": 12, "temperature": 0, "repetition_penalty": 1.3}
    oai = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()
    assert oai["choices"][0]["text"] == tgi


def test_stop_sequence_never_leaks_in_either_api(client, server):
    prompt = f"{fresh_prefix()} {PROMPT}"
    warm(server.url, prompt=prompt)
    full = client.generate(prompt, max_new_tokens=24).generated_text
    stop = pick_stop(full)
    expected = full[: full.index(stop)]
    r = client.generate(prompt, max_new_tokens=24, stop_sequences=[stop])
    assert r.generated_text == expected
    assert r.details.finish_reason == "stop_sequence"
    events = list(client.generate_stream(prompt, max_new_tokens=24, stop_sequences=[stop]))
    streamed = "".join(e.token.text for e in events if not e.token.special)
    assert streamed == expected and events[-1].generated_text == expected
    assert events[-1].details.finish_reason == "stop_sequence"
    body = {"prompt": prompt, "max_tokens": 24, "temperature": 0, "repetition_penalty": 1.0, "stop": stop}
    oai = httpx.post(f"{server.url}/v1/completions", json=body, timeout=60).json()
    assert oai["choices"][0]["text"] == expected
    assert oai["choices"][0]["finish_reason"] == "stop"
    for text in (r.generated_text, streamed, oai["choices"][0]["text"]):
        assert not leaks(text, stop)


def test_eos_token(client, server, parley):
    prompt = parley.builder.build([{"role": "system", "content": fresh_prefix()},
                                   {"role": "user", "content": "Say yes."}]).text
    warm(server.url, prompt=prompt)
    r = client.generate(prompt, max_new_tokens=64)
    assert r.details.finish_reason == "eos_token"
    events = list(client.generate_stream(prompt, max_new_tokens=64))
    assert events[-1].token.special and events[-1].token.id == parley.engine.eos_id
    assert events[-1].details.finish_reason == "eos_token"
    assert events[-1].generated_text == r.generated_text


def test_seed_reproducible(client, server):
    prompt = f"{fresh_prefix()} {PROMPT}"
    warm(server.url, prompt=prompt)
    a = client.generate(prompt, max_new_tokens=12, do_sample=True, temperature=0.8, seed=42)
    b = client.generate(prompt, max_new_tokens=12, do_sample=True, temperature=0.8, seed=42)
    assert a.generated_text == b.generated_text
    assert a.details.seed == 42


def test_decoder_input_details_and_truncate(server, parley):
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 2, "details": True, "decoder_input_details": True,
                                             "truncate": 3}}
    r = httpx.post(f"{server.url}/generate", json=body, timeout=60).json()
    ids = parley.tokenize(PROMPT)[-3:]
    assert [t["id"] for t in r["details"]["prefill"]] == ids
    assert r["parley"]["truncated_tokens"] == len(parley.tokenize(PROMPT)) - 3


def test_compat_route_and_info(server, parley):
    r = httpx.post(f"{server.url}/", json={"inputs": PROMPT, "parameters": {"max_new_tokens": 2}}, timeout=60)
    assert isinstance(r.json(), list) and "generated_text" in r.json()[0]
    info = httpx.get(f"{server.url}/info").json()
    assert info["model_id"] == parley.name
    assert info["max_total_tokens"] == parley.context_size
    assert info["max_input_tokens"] == parley.context_size - 1
    assert httpx.get(f"{server.url}/health").status_code == 200


def test_errors_reach_the_client_as_tgi_errors(client, server):
    with pytest.raises(ValidationError, match="max_new_tokens"):
        client.generate(PROMPT, max_new_tokens=100_000)
    with pytest.raises(ValidationError, match="watermark"):
        client.generate(PROMPT, max_new_tokens=2, watermark=True)
    r = httpx.post(f"{server.url}/generate", json={"inputs": "", "parameters": {"max_new_tokens": 2}})
    err = assert_error(r, 400, "inputs")
    assert r.json()["error_type"] == "validation" and err["param"] == "inputs"


def test_root_is_the_chat_page_and_post_root_stays_tgi(server):
    import httpx

    r = httpx.get(server.url + "/")  # the URL `parley serve` prints: the web chat page (tests/web drive it)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "parley: smollm2-135m-instruct" in r.text   # its title: the model (the page is built by scripts)
    r = httpx.post(server.url + "/", json={"inputs": "Hello", "parameters": {"max_new_tokens": 2}}, timeout=60)
    assert r.status_code == 200 and "generated_text" in r.json()[0]
