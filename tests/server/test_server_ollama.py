"""Ollama's API (server/ollama_api.py) with the real `ollama` client against a live server: chat and generate,
streamed and not; options onto sampling (greedy twice the same, num_predict bounding eval_count, stop strings
never in the output); a second turn read from the cache; list / show / ps / version; keep_alive loading and
unloading a model; pull from a fake hub and delete; bad input refused by name in Ollama's error shape. The
server has a home of its own: the embedded model and a second name for the same file (a model of its own to
the pool, so unloading it leaves the default one loaded)."""

from __future__ import annotations

import sys
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import ollama
import pytest
from srvutil import LiveServer, fresh_prefix, leaks, pick_stop

import parley
from parley.engine.model_path import embedded_model_path
from parley.server import ServerSettings

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "models"))
from hubserver import HubServer  # noqa: E402

pytestmark = pytest.mark.model
DEFAULT = "smollm2-135m-instruct"
CAP = 64
GREEDY = {"temperature": 0, "num_predict": 12}
TEXTS = ["The cat sat on the mat.", "A feline rested on the rug.", "Stock markets fell sharply on Monday."]
SMOL_REPO = "acme/Smol-GGUF"


@pytest.fixture(scope="module")
def served():
    home = tempfile.mkdtemp(prefix="parley-ollama-server-")
    parley.api.models(home).add(embedded_model_path(), name="second")
    p = parley.load(home=home, kv_size=2048, threads=1, deterministic=True)
    s = LiveServer(p, ServerSettings(max_tokens_cap=CAP))
    yield s
    s.stop()
    p.close(save=False)


@pytest.fixture(scope="module")
def client(served):
    return ollama.Client(host=served.url, timeout=60)


@pytest.fixture()
def http(served):
    with httpx.Client(base_url=served.url, timeout=60) as c:
        yield c


def ask(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def state_of(http, name: str) -> str:
    return http.get(f"/v1/models/{name}").json()["parley"]["state"]


def refused(call, status: int, *words: str) -> ollama.ResponseError:
    with pytest.raises(ollama.ResponseError) as info:
        call()
    e = info.value
    assert e.status_code == status, (e.status_code, e.error)
    for w in words:
        assert w in e.error, (w, e.error)
    return e


def ollama_error(r: httpx.Response, status: int, *words: str) -> dict:
    """Ollama's error shape: {"error": "message"}, parley's type, param and code beside it."""
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert isinstance(body["error"], str) and {"type", "param", "code"} <= set(body), body
    for w in words:
        assert w in body["error"], (w, body)
    return body


# ---- chat and generate -------------------------------------------------------------------------------------
def test_chat_streamed_and_not_say_the_same(client):
    messages = ask(f"{fresh_prefix()} Name three colours.")
    whole = client.chat(model=DEFAULT, messages=messages, options=GREEDY)
    assert whole.done and whole.done_reason in ("stop", "length") and whole.model == DEFAULT
    assert whole.message.role == "assistant" and whole.message.content
    assert 0 < whole.eval_count <= 12 and whole.prompt_eval_count > 0
    assert all(isinstance(getattr(whole, f), int) for f in ("total_duration", "load_duration",
                                                            "prompt_eval_duration", "eval_duration"))
    parts = list(client.chat(model=f"{DEFAULT}:latest", messages=messages, options=GREEDY, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].message.content == ""
    assert parts[0].model == f"{DEFAULT}:latest"                     # named as the client spelled it
    assert "".join(p.message.content for p in parts) == whole.message.content     # greedy: the same text
    assert parts[-1].eval_count == whole.eval_count and parts[-1].done_reason == whole.done_reason
    again = client.chat(model=DEFAULT, messages=messages, options=GREEDY)
    assert again.message.content == whole.message.content                       # temperature 0, twice


def test_generate_streamed_not_and_raw(client):
    prompt = f"{fresh_prefix()} The capital of France is"
    whole = client.generate(model=DEFAULT, prompt=prompt, options=GREEDY)
    assert whole.done and whole.response and whole.context and whole.eval_count <= 12
    parts = list(client.generate(model=DEFAULT, prompt=prompt, options=GREEDY, stream=True))
    assert "".join(p.response for p in parts) == whole.response and parts[-1].context == whole.context
    raw = client.generate(model=DEFAULT, prompt=prompt, raw=True, options={"temperature": 0, "num_predict": 4})
    assert raw.response and raw.context is None and raw.prompt_eval_count < whole.prompt_eval_count
    # the context sent back comes first in the next prompt, where the cache has it
    follow = client.generate(model=DEFAULT, prompt="And of Italy?", context=whole.context, options=GREEDY)
    assert follow.prompt_eval_count > len(whole.context) and follow.response


def test_num_predict_bounds_eval_count_and_stop_strings_never_show(client, http):
    messages = ask(f"{fresh_prefix()} Write a long story about a dragon.")
    short = client.chat(model=DEFAULT, messages=messages, options={"temperature": 0, "num_predict": 3})
    assert short.eval_count <= 3 and short.done_reason == "length"
    text = client.chat(model=DEFAULT, messages=messages, options={"temperature": 0, "num_predict": 40}).message.content
    stop = pick_stop(text)
    body = {"model": DEFAULT, "messages": messages, "options": {"temperature": 0, "num_predict": 40, "stop": [stop]}}
    stopped = http.post("/api/chat", json={**body, "stream": False}).json()
    assert stopped["message"]["content"] == text[: text.index(stop)] and stopped["done_reason"] == "stop"
    assert stopped["parley"]["stop_string"] == stop
    streamed = "".join(p.message.content for p in client.chat(stream=True, **body))
    assert streamed == stopped["message"]["content"] and not leaks(streamed, stop)


def test_a_second_turn_reads_only_its_new_tokens(http):
    history = ask(f"{fresh_prefix()} Tell me about the moon in one sentence.")
    body = {"model": DEFAULT, "options": {"temperature": 0, "num_predict": 16}, "stream": False}
    first = http.post("/api/chat", json={**body, "messages": history}).json()
    history += [first["message"], {"role": "user", "content": "And the sun?"}]
    second = http.post("/api/chat", json={**body, "messages": history}).json()
    ext = second["parley"]
    # prompt_eval_count is the whole prompt (Ollama's count); parley says how much of it the cache gave
    assert second["prompt_eval_count"] == ext["prompt_tokens"] > first["prompt_eval_count"]
    assert ext["cached_tokens"] >= first["prompt_eval_count"] and ext["cache_source"] != "none"
    assert ext["prefilled_tokens"] == second["prompt_eval_count"] - ext["cached_tokens"]
    assert ext["prefilled_tokens"] < second["prompt_eval_count"] // 2


WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_tools_and_their_results_in_the_history_read_only_new_tokens(client, http):
    city = fresh_prefix()
    history = [{"role": "user", "content": f"What is the weather in {city}?"},
               {"role": "assistant", "content": "",
                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": city}}}]},
               {"role": "tool", "content": "11 degrees and rain", "tool_name": "get_weather"}]
    options = {"temperature": 0, "num_predict": 8}

    def chat(messages, tools=WEATHER) -> dict:
        body = {"model": DEFAULT, "messages": messages, "options": options, "stream": False}
        return http.post("/api/chat", json={**body, **({"tools": tools} if tools else {})}).json()
    bare, first = chat(history[:1], tools=None), chat(history)
    assert first["done"] and first["prompt_eval_count"] > bare["prompt_eval_count"] + 30   # the offered tool
    reply = first["message"]
    assert reply["role"] == "assistant" and (reply["content"] or reply["tool_calls"])
    history += [{"role": "assistant", "content": reply["content"] or "It rains."},
                {"role": "user", "content": "And tomorrow?"}]
    again = chat(history)
    assert again["done"] and again["prompt_eval_count"] > first["prompt_eval_count"]
    # the tool round trip is a conversation: the next round reads only what it adds
    assert again["parley"]["cached_tokens"] >= first["prompt_eval_count"] - 1
    # and the ollama client's own typed messages and tools are taken as they are
    parts = list(client.chat(model=DEFAULT, messages=history, tools=WEATHER, options=options, stream=True))
    assert parts[-1].done and parts[-1].prompt_eval_count > 0


def test_a_client_that_leaves_cancels_its_reply(served):
    results, seen = [], threading.Event()

    def on_finish(request, result):
        results.append(result)
        seen.set()

    remove = served.parley.on_finish(on_finish)
    try:
        body = {"model": DEFAULT, "messages": ask(f"{fresh_prefix()} Count from 1 to 500."),
                "options": {"temperature": 0, "num_predict": CAP}}
        with httpx.stream("POST", served.url + "/api/chat", json=body, timeout=30) as r:
            assert r.headers["content-type"].startswith("application/x-ndjson")
            lines = r.iter_lines()
            next(lines), next(lines)
        assert seen.wait(10)
        assert results[-1].finish_reason == "cancelled" and results[-1].generated_tokens < CAP
    finally:
        remove()


# ---- embeddings (/api/embed, /api/embeddings): the facade's vectors, truncation only when asked -------------
def test_embed_gives_the_facades_vectors(client, served):
    r = client.embed(model=DEFAULT, input=TEXTS)
    v = np.array(r.embeddings, dtype=np.float32)
    facade = served.parley.embed(TEXTS)
    assert v.shape == (3, 576) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(v, facade.vectors)
    assert v[0] @ v[1] > v[0] @ v[2]           # the paraphrase is closer than the unrelated text
    assert r.model == DEFAULT and r.prompt_eval_count == facade.prompt_tokens
    assert r.total_duration >= r.load_duration >= 0
    one = client.embed(model=f"{DEFAULT}:latest", input=TEXTS[0])
    alone = np.array(one.embeddings, dtype=np.float32)
    assert one.model == f"{DEFAULT}:latest" and np.allclose(alone, v[:1], atol=1e-6)   # batch: last bits


def test_the_older_route_gives_one_vector(client, http):
    old = client.embeddings(model=DEFAULT, prompt=TEXTS[1])
    new = client.embed(model=DEFAULT, input=[TEXTS[1]])
    assert list(old.embedding) == list(new.embeddings[0])
    assert ollama_error(http.post("/api/embeddings", json={"model": DEFAULT, "input": "x"}), 400)["param"] == "input"


def test_a_long_text_is_cut_only_when_asked_and_then_reported(client, http, served):
    embedder = served.parley._loaded().embedder
    most = embedder.max_tokens
    long = " ".join(f"word{i}" for i in range(most))           # several tokens a word: well over the limit
    ids = served.parley.engine.tokenize(long, add_bos=served.parley.engine.add_bos, special=False)
    assert len(ids) > most
    e = refused(lambda: client.embed(model=DEFAULT, input=[TEXTS[0], long]), 400, "input[1]", str(most),
                '"truncate": true')
    assert "split the text" in e.error
    body = http.post("/api/embed", json={"model": DEFAULT, "input": [TEXTS[0], long], "truncate": True}).json()
    assert body["parley"]["truncated_tokens"] == [0, len(ids) - most]
    assert "input[1] lost its last" in body["parley"]["note"] and str(most) in body["parley"]["note"]
    assert body["prompt_eval_count"] == served.parley.embed(TEXTS[0]).prompt_tokens + most
    head = served.parley.embed([ids[:most]]).vectors[0]          # the text's first `most` tokens
    assert np.allclose(np.array(body["embeddings"][1], dtype=np.float32), head, atol=1e-5)
    old = http.post("/api/embeddings", json={"model": DEFAULT, "prompt": long})
    err = ollama_error(old, 400, "split the text")                             # no truncate on the old route
    assert err["param"] == "prompt" and err["code"] == "context_length_exceeded"


def test_dimensions_and_options_checked_by_name(client, http):
    assert len(client.embed(model=DEFAULT, input="x", dimensions=576).embeddings[0]) == 576
    refused(lambda: client.embed(model=DEFAULT, input="x", dimensions=64), 400, "576", "dimensions")
    ok = client.embed(model=DEFAULT, input="x", options={"num_thread": 1, "temperature": 0})
    assert len(ok.embeddings) == 1
    for extra, param in (({"options": {"num_ctx": 10**6}}, "options.num_ctx"),
                         ({"options": {"nmu_ctx": 1}}, "options.nmu_ctx"), ({"input": ["x", ""]}, "input"),
                         ({"input": 5}, "input")):
        r = http.post("/api/embed", json={"model": DEFAULT, "input": "x", **extra})
        assert ollama_error(r, 400)["param"] == param
    refused(lambda: client.embed(model="nosuch", input="x"), 404, "nosuch", DEFAULT)


def test_no_input_only_loads_and_keep_alive_0_unloads(client, http):
    loaded = client.embed(model="second", input=[])
    assert loaded.embeddings == [] and state_of(http, "second") == "loaded"
    assert client.embeddings(model="second", prompt="").embedding == []
    r = client.embed(model="second", input=TEXTS[:1], keep_alive=0)
    assert len(r.embeddings) == 1 and state_of(http, "second") == "unloaded"    # unloaded once it answered
    client.embed(model="second", input="")
    assert state_of(http, "second") == "loaded"
    gone = http.post("/api/embed", json={"model": "second", "keep_alive": 0}).json()
    assert gone["embeddings"] == [] and "unloaded" in gone["parley"]["note"]
    assert state_of(http, "second") == "unloaded" and state_of(http, DEFAULT) == "loaded"


# ---- models ------------------------------------------------------------------------------------------------
def test_list_show_ps_and_version(client, served):
    listed = {m.model: m for m in client.list().models}
    assert {f"{DEFAULT}:latest", "second:latest"} <= set(listed)
    m = listed[f"{DEFAULT}:latest"]
    assert m.details.family == "llama" and m.details.format == "gguf" and m.details.quantization_level == "Q4_1"
    assert m.details.parameter_size == "135M" and m.size == embedded_model_path().stat().st_size
    assert len(m.digest) == 64 and m.digest == listed["second:latest"].digest     # the same file, unchanged
    shown = client.show(DEFAULT)
    assert "im_start" in shown.template and shown.capabilities == ["completion"]
    assert shown.modelinfo["general.architecture"] == "llama" and shown.modelinfo["tokenizer.ggml.tokens"] == []
    assert "num_ctx" in shown.parameters and shown.modelfile.startswith("# Modelfile generated by parley")
    verbose = httpx.post(served.url + "/api/show", json={"model": DEFAULT, "verbose": True}, timeout=60).json()
    assert len(verbose["model_info"]["tokenizer.ggml.tokens"]) == 49152
    running = {m.model: m for m in client.ps().models}
    assert f"{DEFAULT}:latest" in running and running[f"{DEFAULT}:latest"].size_vram == 0
    assert running[f"{DEFAULT}:latest"].context_length == 2048
    assert client._request_raw("GET", "/api/version").json()["version"] == parley.__version__


def test_keep_alive_loads_keeps_and_unloads(client, http):
    loaded = client.chat(model="second", messages=[])                 # no messages: only load it
    assert loaded.done_reason == "load" and state_of(http, "second") == "loaded"
    reply = client.chat(model="second", messages=ask("Hi."), options=GREEDY, keep_alive=0)
    assert reply.message.content and state_of(http, "second") == "unloaded"       # unloaded once it answered
    assert "second:latest" not in {m.model for m in client.ps().models}
    parts = list(client.generate(model="second", prompt="Hi.", options=GREEDY, keep_alive=0, stream=True))
    assert parts[-1].done and state_of(http, "second") == "unloaded"
    client.generate(model="second", prompt="Hi.", options=GREEDY, keep_alive=-1)
    forever = {m.model: m for m in client.ps().models}["second:latest"].expires_at
    assert forever > datetime.now(UTC) + timedelta(days=365 * 100)
    client.generate(model="second", prompt="Hi.", options=GREEDY, keep_alive="5m")
    expires = {m.model: m for m in client.ps().models}["second:latest"].expires_at
    assert datetime.now(UTC) + timedelta(minutes=4) < expires <= datetime.now(UTC) + timedelta(minutes=5)
    assert client.generate(model="second", keep_alive=0).done_reason == "unload"      # what `ollama stop` sends
    assert state_of(http, "second") == "unloaded" and state_of(http, DEFAULT) == "loaded"
    assert client.generate(model="second", prompt="Hi.", options=GREEDY).response      # loads again on demand


def test_pull_from_a_hub_and_delete(client, http, monkeypatch):
    hub = HubServer()
    try:
        path = embedded_model_path()
        hub.hub.add(SMOL_REPO, {path.name: path})
        monkeypatch.setenv("HF_ENDPOINT", hub.hub.url)
        statuses = [p.status for p in client.pull(f"hf.co/{SMOL_REPO}:Q4_1", stream=True)]
        assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        assert any(s.startswith("pulling hf.co/") for s in statuses)
        name = "smollm2-135m-instruct.q4_1"                            # `parley models pull`'s name: the file's
        assert f"{name}:latest" in {m.model for m in client.list().models}
        # pulled again: parley registers a name once (Ollama would update it in place), and says which
        refused(lambda: client.pull(f"{SMOL_REPO}:Q4_1"), 400, name, "registered already")
        refused(lambda: client.pull(f"hf.co/{SMOL_REPO}:Q9_9"), 404, "Q9_9", path.name)
        refused(lambda: client.pull("llama3.2"), 400, "hf.co/OWNER/REPO:QUANT")
        assert client.delete(name).status == "success"
        assert f"{name}:latest" not in {m.model for m in client.list().models}
        refused(lambda: client.delete(name), 404, name)
        ollama_error(http.request("DELETE", "/api/delete", json={"model": DEFAULT}), 400, "embedded")
    finally:
        hub.close()


# ---- bad input ---------------------------------------------------------------------------------------------
def test_an_unknown_model_is_a_404_listing_the_known_ones(client, http):
    e = refused(lambda: client.chat(model="llama3.2", messages=ask("Hi.")), 404, "llama3.2", "second", DEFAULT)
    assert "not found" in str(e) or "unknown model" in e.error
    refused(lambda: client.show("nope"), 404, "nope")
    ollama_error(http.post("/api/generate", json={"model": "", "prompt": "x"}), 400, "model is required")


@pytest.mark.parametrize("body, status, words", [
    ({"options": {"temperature": "hot"}}, 400, ["options.temperature", "a number"]),
    ({"options": {"num_predict": 2.5}}, 400, ["options.num_predict", "an integer"]),
    ({"options": {"temprature": 0.5}}, 400, ["options.temprature"]),
    ({"options": {"num_ctx": 100000}}, 400, ["options.num_ctx", "100000", "2048"]),
    ({"options": {"num_predict": CAP + 1}}, 400, ["options.num_predict", str(CAP), "max-tokens-cap"]),
    ({"options": {"mirostat": 2}}, 400, ["options.mirostat"]),
    ({"options": {"top_p": 0}}, 400, ["options.top_p"]),
    ({"messages": [{"role": "user", "content": "Hi.", "images": ["iVBORw0KGgo="]}]}, 400, ["messages.0.images"]),
    ({"messages": [{"role": "user", "content": "Hi.", "tool_calls": [{"function": {"name": "f"}}]}]}, 400,
     ["messages.0.tool_calls", "assistant"]),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, 400, ["tools[0].function.name"]),
    ({"tools": [{"type": "function", "function": {"name": "f"}}], "format": "json"}, 400, ["format", "tools"]),
    ({"format": "yaml"}, 400, ["format", "json"]),
    ({"format": {"type": "object", "not": {}}}, 400, ["format", "'not'"]),
    ({"logprobs": True, "top_logprobs": 21}, 400, ["top_logprobs", "0 to 20"]),
    ({"think": True}, 400, ["think"]),
    ({"shift": True}, 400, ["shift"]),
    ({"keep_alive": "soon"}, 400, ["keep_alive", "5m"]),
    ({"messages": ask("word " * 3000)}, 400, ["tokens too many", "truncate"]),
])
def test_bad_chat_input_is_refused_by_name(http, body, status, words):
    ollama_error(http.post("/api/chat", json={"model": DEFAULT, "messages": ask("Hi."), **body}), status, *words)


@pytest.mark.parametrize("body, words", [
    ({"images": ["iVBORw0KGgo="]}, ["images"]),
    ({"template": "{{ .Prompt }}"}, ["template"]),
    ({"suffix": "end"}, ["suffix"]),
    ({"raw": True, "system": "Be brief."}, ["system", "raw"]),
    ({"context": [10**9]}, ["context"]),
])
def test_bad_generate_input_is_refused_by_name(http, body, words):
    ollama_error(http.post("/api/generate", json={"model": DEFAULT, "prompt": "Hi.", **body}), 400, *words)


def test_truncate_drops_the_oldest_messages_and_says_so(http):
    old = [{"role": "user", "content": "word " * 2500}, {"role": "assistant", "content": "Yes."}]
    body = {"model": DEFAULT, "messages": [*old, *ask("Hi.")], "options": GREEDY, "stream": False, "truncate": True}
    r = http.post("/api/chat", json=body).json()
    assert r["done"] and r["parley"]["dropped_messages"] > 0 and "dropped" in r["parley"]["note"]


def test_routes_ollama_has_and_parley_does_not_map(http):
    for path in ("/api/copy", "/api/create", "/api/push"):
        ollama_error(http.post(path, json={}), 400, path)
    ollama_error(http.get("/api/nope"), 404, "/api/nope")
    num_ctx = http.post("/api/chat", json={"model": DEFAULT, "messages": ask("Hi."), "stream": False,
                                           "options": {**GREEDY, "num_ctx": 512, "num_thread": 4}}).json()
    assert "num_ctx=512 changes nothing" in num_ctx["parley"]["note"]


def test_the_middlewares_cover_api_routes_in_ollama_shape(http, served):
    ollama_error(http.post("/api/chat", json={}, headers={"host": "evil.example"}), 421, "evil.example")
    big = {"model": DEFAULT, "prompt": "x" * (served.state.settings.max_body_bytes + 1)}
    ollama_error(http.post("/api/generate", json=big), 413)
    assert http.get("/api/tags").status_code == 200
    metrics = http.get("/metrics").text
    assert 'route="/api/chat",status="421"' in metrics and 'route="/api/tags",status="200"' in metrics
