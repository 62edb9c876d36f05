"""POST /v1/embeddings with the real `openai` client (float and base64) and raw HTTP for what it cannot send:
OpenAI's input shapes, the limits named in 400s, the model picked by name, the concurrency gate."""

from __future__ import annotations

import base64
import time

import httpx
import numpy as np
import openai
import pytest
from srvutil import assert_error

TEXTS = ["The cat sat on the mat.", "A feline rested on the rug.", "Stock markets fell sharply on Monday."]


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def vectors(response) -> np.ndarray:
    return np.array([d.embedding for d in sorted(response.data, key=lambda d: d.index)], dtype=np.float32)


def test_float_vectors_with_the_client(client, parley):
    r = client.embeddings.create(model="parley", input=TEXTS, encoding_format="float")
    v = vectors(r)
    assert v.shape == (3, 576) and [d.index for d in r.data] == [0, 1, 2]
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert r.model == parley.name and r.object == "list"
    assert r.usage.prompt_tokens == r.usage.total_tokens == parley.embed(TEXTS).prompt_tokens
    assert v[0] @ v[1] > v[0] @ v[2]        # the paraphrase is closer than the unrelated text
    assert np.array_equal(v, parley.embed(TEXTS).vectors)   # the same vectors as the facade's


def test_base64_decodes_to_the_floats(client, http):
    raw = http.post("/v1/embeddings", json={"input": TEXTS, "encoding_format": "base64"}).json()
    decoded = np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in raw["data"]])
    floats = vectors(client.embeddings.create(model="m", input=TEXTS, encoding_format="float"))
    assert np.array_equal(decoded, floats)
    # the client asks for base64 by default and decodes it itself
    assert np.array_equal(vectors(client.embeddings.create(model="m", input=TEXTS)), floats)


def test_openai_input_shapes(client, parley):
    one = vectors(client.embeddings.create(model="m", input=TEXTS[0]))
    ids = parley.engine.tokenize(TEXTS[0], add_bos=parley.engine.add_bos, special=False)
    assert np.array_equal(vectors(client.embeddings.create(model="m", input=ids)), one)
    both = vectors(client.embeddings.create(model="m", input=[ids, ids]))
    assert both.shape == (2, 576) and np.allclose(both[0], both[1], atol=1e-6)   # batch order: last bits


def test_dimensions_only_the_models_own(client, http):
    assert vectors(client.embeddings.create(model="m", input="x", dimensions=576)).shape == (1, 576)
    err = assert_error(http.post("/v1/embeddings", json={"input": "x", "dimensions": 64}), 400, "576")
    assert err["param"] == "dimensions"


@pytest.mark.parametrize("body, words", [
    ({"input": ""}, "empty string"),
    ({"input": []}, "input is empty"),
    ({"input": [[]]}, "empty list of token ids"),
    ({"input": ["a", ""]}, "input[1]"),
    ({"input": [1, 10 ** 9]}, "token ids must be integers"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "x", "truncate": True}, "truncate"),
])
def test_bad_input_is_a_400_naming_the_field(http, body, words):
    r = http.post("/v1/embeddings", json=body)
    assert_error(r, 400, words)


def test_a_text_over_the_context_is_a_400_naming_the_limit(http, parley):
    most = parley._loaded().embedder.max_tokens
    r = http.post("/v1/embeddings", json={"input": ["fine", "word " * (most + 5)]})
    err = assert_error(r, 400, f"at most {most} tokens", "input[1]")
    assert err["param"] == "input" and err["code"] == "context_length_exceeded"


def test_a_servers_prompt_cap_bounds_each_text(small_server):
    r = httpx.post(small_server.url + "/v1/embeddings", json={"input": "word " * 80}, timeout=60)
    assert_error(r, 400, "--max-prompt-tokens")
    assert httpx.post(small_server.url + "/v1/embeddings", json={"input": "short"}, timeout=60).status_code == 200


def test_any_model_name_means_the_one_model_served(http):
    # as on the other routes: OpenAI clients must send some `model`
    assert http.post("/v1/embeddings", json={"input": "x", "model": "whatever"}).status_code == 200


def test_the_concurrency_gate_applies(small_server):
    gate = small_server.state.gate
    gate.active = gate.limit          # every slot taken (as running generations would)
    try:
        r = httpx.post(small_server.url + "/v1/embeddings", json={"input": "x"}, timeout=60)
        assert_error(r, 429, "--max-concurrent")
    finally:
        gate.active = 0


def test_a_client_that_leaves_cancels_and_frees_its_slot(server, http):
    gate = server.state.gate
    big = ["word " * 1000 + str(i) for i in range(60)]     # minutes of decodes on a CPU
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/embeddings", json={"input": big}, timeout=httpx.Timeout(60, read=0.5))
    deadline = time.monotonic() + 60
    while gate.active and time.monotonic() < deadline:     # the request stops at its next decode
        time.sleep(0.05)
    assert gate.active == 0
    assert http.post("/v1/embeddings", json={"input": "still here"}).status_code == 200
