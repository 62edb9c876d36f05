"""Several models behind one server, picked by name on every route: OpenAI's `model`, TGI's `x-model` header and
its per-model path (the text-generation client pointed at /models/NAME), conversations that keep their model and
move when a message names another; /v1/models with each model's state; load and unload; unknown names a 404
listing the known ones. The server here has a home of its own: the embedded model, a second name for the same
file (a model of its own to the pool: its own engine and KV) and a q8_0 copy made by `parley models quantize`."""

from __future__ import annotations

import json
import os
import tempfile

import httpx
import openai
import pytest
from srvutil import LiveServer, assert_error

import parley
from parley.engine.model_path import embedded_model_path
from parley.server import ServerSettings

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def served():
    home = tempfile.mkdtemp(prefix="parley-models-server-")
    lib = parley.api.models(home)
    lib.add(embedded_model_path(), name="second")
    q8 = lib.quantize("second", "q8_0", out="second-q8")
    assert q8.file_type == "Q8_0"
    p = parley.load(home=home, kv_size=1024, threads=1, deterministic=True)
    s = LiveServer(p, ServerSettings(max_tokens_cap=64))
    yield s
    s.stop()
    p.close(save=False)


@pytest.fixture()
def http(served):
    with httpx.Client(base_url=served.url, timeout=60) as c:
        yield c


def chat(http, model, content="Say hi.", **body):
    return http.post("/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}],
                                                   "max_tokens": 6, "temperature": 0, **body})


def test_v1_models_lists_every_model_with_its_state(http, served):
    data = http.get("/v1/models").json()["data"]
    by = {m["id"]: m for m in data}
    assert set(by) == {"smollm2-135m-instruct", "second", "second-q8"}
    assert by["smollm2-135m-instruct"]["parley"]["state"] == "loaded" and by["smollm2-135m-instruct"]["parley"]["default"]
    assert by["second-q8"]["parley"]["file_type"] == "Q8_0" and by["second-q8"]["context_length"] == 1024
    assert by["second"]["parley"]["device"].startswith("cpu")
    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused")
    assert {m.id for m in client.models.list().data} == set(by)
    assert_error(http.get("/v1/models/nope"), 404, "nope", "second", "smollm2-135m-instruct")


def test_openai_requests_pick_a_model_by_name(http):
    r = chat(http, "second-q8")
    assert r.status_code == 200 and r.json()["model"] == "second-q8"
    c = http.post("/v1/completions", json={"model": "second", "prompt": "Once upon a time", "max_tokens": 4,
                                            "temperature": 0})
    assert c.status_code == 200 and c.json()["model"] == "second"
    assert chat(http, None).json()["model"] == "smollm2-135m-instruct"          # none named: the default
    err = assert_error(chat(http, "gpt-4o"), 404, "gpt-4o", "second-q8")
    assert err["param"] == "model"
    states = {m["id"]: m["parley"]["state"] for m in http.get("/v1/models").json()["data"]}
    assert states["second"] == states["second-q8"] == "loaded"                     # loaded on demand


def test_tgi_picks_a_model_by_header_or_by_path(http, served):
    from text_generation import Client

    by_header = http.post("/generate", json={"inputs": "The sky is", "parameters": {"max_new_tokens": 3}},
                          headers={"x-model": "second"})
    assert by_header.status_code == 200, by_header.text
    per_model = Client(f"{served.url}/models/second")          # the client unchanged, pointed at one model
    assert per_model.generate("The sky is", max_new_tokens=3).generated_text == by_header.json()["generated_text"]
    assert http.get("/models/second-q8/info").json()["model_id"] == "second-q8"
    assert_error(http.post("/generate", json={"inputs": "x"}, headers={"x-model": "nope"}), 404, "nope")


def test_a_conversation_keeps_its_model_and_moves_when_a_message_names_another(http):
    conv = http.post("/v1/conversations", json={"model": "second", "temperature": 0, "max_tokens": 6}).json()
    assert conv["model"] == "second"
    r1 = http.post(f"/v1/conversations/{conv['id']}/messages", json={"content": "Name a colour."}).json()
    assert r1["model"] == "second" and "note" not in r1["parley"]
    r2 = http.post(f"/v1/conversations/{conv['id']}/messages", json={"content": "Another.", "model": "second-q8"})
    body = r2.json()
    assert r2.status_code == 200 and body["model"] == "second-q8"
    assert "read again for second-q8" in body["parley"]["note"]
    assert http.get(f"/v1/conversations/{conv['id']}").json()["model"] == "second-q8"
    r3 = http.post(f"/v1/conversations/{conv['id']}/messages", json={"content": "And one more."}).json()
    assert r3["model"] == "second-q8" and "note" not in r3["parley"]          # it stays where it moved
    assert_error(http.post("/v1/conversations", json={"model": "nope"}), 404, "nope")


def test_load_and_unload_over_http(http):
    assert http.post("/v1/models/second/load").json()["parley"]["state"] == "loaded"
    # a model generating is not unloaded (409); once its reply ends, it is
    with http.stream("POST", "/v1/chat/completions", json={
            "model": "second", "messages": [{"role": "user", "content": "Count to fifty."}], "max_tokens": 64,
            "temperature": 0, "ignore_eos": True, "stream": True}) as s:
        lines = s.iter_lines()
        next(line for line in lines if line.startswith("data: ") and '"content"' in line)
        err = assert_error(http.post("/v1/models/second/unload"), 409, "generating")
        assert err["code"] == "model_busy"
        for line in lines:
            if line == "data: [DONE]":
                break
    unloaded = http.post("/v1/models/second/unload")
    assert unloaded.status_code == 200 and unloaded.json()["parley"]["state"] == "unloaded"
    assert chat(http, "second").status_code == 200                                 # comes back on demand
    assert_error(http.post("/v1/models/nope/load"), 404, "nope")
    assert json.loads(http.get("/v1/models/second").text)["parley"]["state"] == "loaded"
    assert os.environ.get("PARLEY_HOME") != ""
