"""Structured output and log-probabilities on every protocol, driven by the real clients: OpenAI's
chat.completions.parse with a pydantic model (and langchain's with_structured_output), llama-server's grammar /
json_schema / n_probs, the conversations API turn after turn, TGI's grammar / details / top_n_tokens / best_of
(huggingface_hub's InferenceClient), Ollama's format and logprobs (its client). Replies are checked against
their schemas with jsonschema; bad input is a 400 naming the field as the client spelled it."""

from __future__ import annotations

import json
import math

import httpx
import jsonschema
import ollama
import openai
import pytest
from huggingface_hub import InferenceClient
from pydantic import BaseModel, Field
from srvutil import assert_error

pytestmark = pytest.mark.model

ASK = [{"role": "user", "content": "Give the capital of France as JSON."}]
CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                         "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"]}


class City(BaseModel):
    city: str = Field(max_length=20)
    sunny: bool


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def schema_format(schema: dict = CITY) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}


def assert_json_object(choice: dict, text: str) -> None:
    """Any JSON object: a 135M model may fill max_tokens with keys, so only a complete one must parse."""
    assert text.startswith("{")
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(text), dict)


# ---- OpenAI ----------------------------------------------------------------------------------------------
def test_parse_gives_the_pydantic_model(client):
    r = client.chat.completions.parse(model="any", messages=ASK, response_format=City, max_tokens=60,
                                      temperature=0)
    choice = r.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.parsed, City)
    jsonschema.validate(json.loads(choice.message.content), CITY)


def test_json_object_and_schema_on_completions(server):
    r = post(server, "/v1/chat/completions", {"messages": ASK, "max_tokens": 60, "temperature": 0,
                                             "response_format": {"type": "json_object"}})
    assert r.status_code == 200, r.text
    assert_json_object(r.json()["choices"][0], r.json()["choices"][0]["message"]["content"])
    r = post(server, "/v1/completions", {"prompt": "The capital of France, as JSON:", "max_tokens": 60,
                                         "temperature": 0, "response_format": schema_format()})
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), CITY)


def test_chat_logprobs_match_the_text(client):
    r = client.chat.completions.create(model="any", messages=ASK, max_tokens=8, temperature=0, logprobs=True,
                                       top_logprobs=3)
    choice = r.choices[0]
    content = choice.logprobs.content
    assert "".join(t.token for t in content) == choice.message.content
    for t in content:
        assert t.logprob <= 0 and bytes(t.bytes).decode("utf-8", "replace") == t.token
        assert len(t.top_logprobs) == 3 and t.top_logprobs[0].logprob >= t.top_logprobs[-1].logprob
        assert t.top_logprobs[0].token == t.token        # greedy, no penalties: the most likely one
        assert math.isclose(t.top_logprobs[0].logprob, t.logprob, abs_tol=1e-5)


def test_streamed_chat_logprobs_ride_on_their_deltas(client):
    plain = client.chat.completions.create(model="any", messages=ASK, max_tokens=8, temperature=0, logprobs=True)
    chunks = list(client.chat.completions.create(model="any", messages=ASK, max_tokens=8, temperature=0,
                                                 logprobs=True, top_logprobs=2, stream=True))
    tokens = []
    for c in chunks:
        if c.choices and c.choices[0].delta.content:
            assert c.choices[0].logprobs is not None
            assert "".join(t.token for t in c.choices[0].logprobs.content) == c.choices[0].delta.content
            tokens += c.choices[0].logprobs.content
    assert [t.token for t in tokens] == [t.token for t in plain.choices[0].logprobs.content]
    assert all(len(t.top_logprobs) == 2 for t in tokens)
    assert plain.choices[0].logprobs.content[0].top_logprobs == []


def test_n_choices_each_have_their_logprobs(client):
    r = client.chat.completions.create(model="any", messages=ASK, max_tokens=6, temperature=0.9, seed=3, n=2,
                                       logprobs=True)
    for choice in r.choices:
        assert "".join(t.token for t in choice.logprobs.content) == choice.message.content


def test_legacy_completion_logprobs(client):
    prompt = "One, two, three,"
    r = client.completions.create(model="any", prompt=prompt, max_tokens=6, temperature=0, logprobs=3, echo=True)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == prompt + "".join(lp.tokens)
    assert lp.text_offset[0] == len(prompt) and lp.text_offset == sorted(lp.text_offset)
    assert all(len(top) == 3 and max(top.values()) >= v for top, v in zip(lp.top_logprobs, lp.token_logprobs, strict=True))
    streamed = list(client.completions.create(model="any", prompt=prompt, max_tokens=6, temperature=0, logprobs=3,
                                              stream=True))
    tokens = [t for c in streamed if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    offsets = [o for c in streamed if c.choices and c.choices[0].logprobs for o in c.choices[0].logprobs.text_offset]
    assert tokens == lp.tokens and [o + len(prompt) for o in offsets] == lp.text_offset


def test_llama_server_grammar_json_schema_and_n_probs(server):
    body = {"prompt": "Answer yes or no:", "max_tokens": 10, "temperature": 0, "grammar": 'root ::= "yes" | "no"'}
    r = post(server, "/v1/completions", body)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] in ("yes", "no") and r.json()["choices"][0]["finish_reason"] == "stop"
    r = post(server, "/v1/chat/completions", {"messages": ASK, "max_tokens": 60, "temperature": 0,
                                             "json_schema": CITY, "n_probs": 2})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    jsonschema.validate(json.loads(choice["message"]["content"]), CITY)
    assert all(len(t["top_logprobs"]) == 2 for t in choice["logprobs"]["content"])


@pytest.mark.parametrize("extra, param, words", [
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}},
     "response_format.json_schema.schema", ["JSON Schema", "an array"]),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
     "response_format.json_schema.schema", ["required"]),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {"type": "string"}}}}},
     "response_format.json_schema.schema", ["'not'", "not supported"]),
    ({"response_format": {"type": "xml"}}, "response_format.type", ["json_schema"]),
    ({"response_format": {"type": "json_object", "schema": {}}}, "response_format.schema", ["json_object"]),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", ["0 to 20"]),
    ({"top_logprobs": 2}, "top_logprobs", ["logprobs"]),
    ({"n_probs": 21}, "n_probs", ["0 to 20"]),
    ({"grammar": "root ::= nothing"}, "grammar", ["gbnf"]),
    ({"json_schema": CITY, "response_format": {"type": "json_object"}}, "json_schema", ["not both"]),
    ({"response_format": {"type": "json_object"}, "tools": [{"type": "function", "function": {"name": "f"}}]},
     "response_format", ["tools"]),
])
def test_bad_structured_requests_name_the_field(server, extra, param, words):
    r = post(server, "/v1/chat/completions", {"messages": ASK, "max_tokens": 4, **extra})
    err = assert_error(r, 400, *words)
    assert err["param"] == param


def test_completions_logprobs_over_20_is_refused(server):
    err = assert_error(post(server, "/v1/completions", {"prompt": "x", "max_tokens": 2, "logprobs": 21}), 400,
                       "0 to 20")
    assert err["param"] == "logprobs"


def test_langchain_with_structured_output(server):
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(base_url=f"{server.url}/v1", api_key="unused", model="any", temperature=0,
                                      max_tokens=60, max_retries=0)
    city = llm.with_structured_output(City, method="json_schema").invoke(ASK[0]["content"])
    assert isinstance(city, City)


# ---- conversations ---------------------------------------------------------------------------------------
def test_a_conversation_extracts_turn_after_turn_from_its_cache(server):
    conv = post(server, "/v1/conversations", {"system": "You extract facts as JSON.", "temperature": 0}).json()
    turn = {"response_format": schema_format(), "max_tokens": 60}
    first = post(server, f"/v1/conversations/{conv['id']}/messages", {"content": "Paris is sunny.", **turn})
    assert first.status_code == 200, first.text
    jsonschema.validate(json.loads(first.json()["choices"][0]["message"]["content"]), CITY)
    second = post(server, f"/v1/conversations/{conv['id']}/messages", {"content": "Oslo is rainy.", **turn})
    assert second.status_code == 200, second.text
    jsonschema.validate(json.loads(second.json()["choices"][0]["message"]["content"]), CITY)
    used = first.json()["usage"]
    # the whole first turn (its prompt and its reply) came from the cache
    assert second.json()["usage"]["prompt_tokens_details"]["cached_tokens"] >= used["prompt_tokens"] + \
        used["completion_tokens"] - 2
    retried = post(server, f"/v1/conversations/{conv['id']}/retry", {"response_format": {"type": "json_object"}})
    assert_json_object(retried.json()["choices"][0], retried.json()["choices"][0]["message"]["content"])
    bad = post(server, f"/v1/conversations/{conv['id']}/messages",
               {"content": "x", "response_format": schema_format({"type": "object", "not": {}})})
    assert assert_error(bad, 400, "not")["param"] == "response_format.json_schema.schema"


# ---- TGI -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tgi(server):
    return InferenceClient(base_url=server.url, timeout=60)


def test_tgi_grammar_details_and_top_tokens(tgi):
    out = tgi.text_generation("The capital of France, as JSON:", max_new_tokens=60, details=True, top_n_tokens=2,
                              grammar={"type": "json", "value": CITY})
    jsonschema.validate(json.loads(out.generated_text), CITY)
    tokens = out.details.tokens
    assert len(tokens) == out.details.generated_tokens
    assert all(t.logprob is not None and t.logprob <= 0 for t in tokens)
    assert len(out.details.top_tokens) == len(tokens) and all(len(top) == 2 for top in out.details.top_tokens)
    regex = tgi.text_generation("Year:", max_new_tokens=10, grammar={"type": "regex", "value": "[0-9]{4}"})
    assert len(regex) == 4 and regex.isdigit()


def test_tgi_streamed_tokens_carry_logprobs(tgi):
    events = list(tgi.text_generation("One, two,", max_new_tokens=5, stream=True, details=True, top_n_tokens=1))
    assert all(e.token.logprob is not None for e in events if not e.token.special)
    assert all(len(e.top_tokens) == 1 for e in events if not e.token.special)


def test_tgi_best_of_returns_the_most_likely(server, tgi):
    out = tgi.text_generation("Once upon a time", max_new_tokens=6, do_sample=True, best_of=3, seed=5,
                              details=True)
    others = out.details.best_of_sequences
    assert len(others) == 2
    best = sum(t.logprob for t in out.details.tokens)
    assert all(best >= sum(t.logprob for t in o.tokens) for o in others)
    r = post(server, "/generate_stream", {"inputs": "x", "parameters": {"best_of": 2, "do_sample": True}})
    assert assert_error(r, 400, "streaming")["param"] == "parameters.best_of"
    r = post(server, "/generate", {"inputs": "x", "parameters": {"best_of": 2}})
    assert assert_error(r, 400, "do_sample")["param"] == "parameters.best_of"


@pytest.mark.parametrize("grammar, param", [
    ({"type": "json", "value": [1]}, "parameters.grammar.value"),
    ({"type": "json", "value": {"type": "object", "uniqueItems": True, "not": {}}}, "parameters.grammar.value"),
    ({"type": "yaml", "value": "x"}, "parameters.grammar.type"),
])
def test_tgi_bad_grammar_names_the_field(server, grammar, param):
    r = post(server, "/generate", {"inputs": "x", "parameters": {"grammar": grammar}})
    assert assert_error(r, 400)["param"] == param


# ---- Ollama ----------------------------------------------------------------------------------------------
def test_ollama_format_schema_and_logprobs(server, parley):
    c = ollama.Client(host=server.url)
    r = c.chat(model=parley.name, messages=ASK, format=City.model_json_schema(),
               options={"temperature": 0, "num_predict": 60})
    City.model_validate_json(r.message.content)
    r = c.generate(model=parley.name, prompt="Say hi.", format="json", logprobs=True, top_logprobs=2,
                   options={"temperature": 0, "num_predict": 30})
    assert_json_object({"finish_reason": r.done_reason}, r.response)
    assert "".join(t.token for t in r.logprobs) == r.response
    assert all(len(t.top_logprobs) == 2 for t in r.logprobs)
    streamed = list(c.chat(model=parley.name, messages=ASK, stream=True, logprobs=True,
                           options={"temperature": 0, "num_predict": 6}))
    text = "".join(p.message.content for p in streamed)
    assert "".join(t.token for p in streamed for t in p.logprobs or []) == text


def test_the_text_generation_client_reads_grammar_and_best_of(server):
    text_generation = pytest.importorskip("text_generation")
    from text_generation.types import Grammar, GrammarType

    c = text_generation.Client(server.url, timeout=60)
    r = c.generate("The capital of France, as JSON:", max_new_tokens=60, top_n_tokens=1,
                   grammar=Grammar(type=GrammarType.Json, value=CITY))
    jsonschema.validate(json.loads(r.generated_text), CITY)
    assert all(t.logprob is not None for t in r.details.tokens) and len(r.details.top_tokens[0]) == 1
    r = c.generate("Once upon a time", max_new_tokens=5, do_sample=True, best_of=2)   # the client refuses a seed
    assert len(r.details.best_of_sequences) == 1
