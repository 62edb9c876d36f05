"""Structured output and log-probabilities at the scheduler, on the real model: every reply under a grammar parses
and validates, what llguidance cannot enforce is refused by name, logprobs come from the logits the sampler used."""

from __future__ import annotations

import json
import math
import re

import jsonschema
import pytest

from parley.errors import InvalidRequest
from parley.sampling import Grammar, SamplingParams
from tests.conftest import chatml

SCHEMAS = {
    "flat": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
             "required": ["name", "age"]},
    "nested_enum": {"type": "object", "properties": {
        "person": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                                    "role": {"enum": ["admin", "user", "guest"]}},
                   "required": ["name", "role"]},
        "active": {"type": "boolean"}}, "required": ["person", "active"]},
    "bounded_array": {"type": "object", "properties": {
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "minItems": 2, "maxItems": 3}},
        "required": ["tags"]},
    "any_of": {"type": "object", "properties": {
        "value": {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 99}, {"type": "string", "maxLength": 8}]}},
        "required": ["value"]},
    "ref": {"type": "object", "$defs": {"point": {"type": "object", "properties": {
        "x": {"type": "integer"}, "y": {"type": "integer"}}, "required": ["x", "y"]}},
        "properties": {"start": {"$ref": "#/$defs/point"}, "end": {"$ref": "#/$defs/point"}},
        "required": ["start", "end"]},
    "number_bounds": {"type": "object", "properties": {"score": {"type": "number", "minimum": 0, "maximum": 1}},
                      "required": ["score"]},
}


def _run(p, text, params):
    return p.scheduler.generate(p.engine.tokenize(chatml(text)), params)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_reply_under_a_schema_parses_and_validates(fast, name):
    schema = SCHEMAS[name]
    for seed in (1, 2):   # sampled (the chat preset's settings), so the model wanders and the mask must hold it
        r = _run(fast, "Describe something as JSON.",
                 SamplingParams(temperature=0.7, top_p=0.95, top_k=40, min_p=0.05, seed=seed, max_tokens=120,
                                grammar=Grammar("json_schema", json.dumps(schema))))
        assert r.finish_reason == "stop", (name, r.text)
        jsonschema.validate(json.loads(r.text), schema)


def test_json_object_and_regex(fast):
    r = _run(fast, "Give me JSON.", SamplingParams(temperature=0, max_tokens=80,
                                                   grammar=Grammar("json_object")))
    assert r.finish_reason == "stop" and isinstance(json.loads(r.text), dict)
    r = _run(fast, "What is the date?", SamplingParams(temperature=0.8, seed=3, max_tokens=20,
                                                      grammar=Grammar("regex", r"\d{4}-\d{2}-\d{2}")))
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", r.text) and r.finish_reason == "stop"


def test_a_grammar_ignores_stop_strings_that_would_cut_it(fast):
    schema = {"type": "object", "properties": {"a": {"type": "string", "enum": ["x, y"]}}, "required": ["a"]}
    r = _run(fast, "JSON please.", SamplingParams(temperature=0, max_tokens=30, stop=(",",),
                                                   grammar=Grammar("json_schema", json.dumps(schema))))
    assert json.loads(r.text) == {"a": "x, y"}


@pytest.mark.parametrize("schema, named", [
    ({"type": "object", "not": {"required": ["a"]}}, "'not'"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "$ref"),
])
def test_what_cannot_be_enforced_is_refused_by_name(fast, schema, named):
    with pytest.raises(InvalidRequest) as e:
        fast.scheduler.submit(fast.engine.tokenize("x"), SamplingParams(
            grammar=Grammar("json_schema", json.dumps(schema))), lambda _: None)
    assert e.value.param == "grammar" and named in str(e.value)


@pytest.mark.parametrize("source, says", [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")])
def test_a_schema_that_is_not_json_schema_is_refused(fast, source, says):
    with pytest.raises(InvalidRequest) as e:
        fast.scheduler.submit(fast.engine.tokenize("x"), SamplingParams(grammar=Grammar("json_schema", source)),
                              lambda _: None)
    assert says in str(e.value) and e.value.param == "grammar"


def test_grammar_kinds_are_checked():
    with pytest.raises(InvalidRequest, match="grammar kind"):
        Grammar("yaml", "x")
    with pytest.raises(InvalidRequest, match="empty"):
        Grammar("regex", " ")


def test_a_constrained_request_beside_others_leaves_them_unchanged(det):
    eng, sched = det.engine, det.scheduler
    plain = SamplingParams(temperature=0, max_tokens=16)
    prompts = [eng.tokenize(chatml(f"Say a word about {w}.")) for w in ("rain", "snow")]
    alone = [sched.generate(p, plain).token_ids for p in prompts]
    grammar = SamplingParams(temperature=0, max_tokens=60, grammar=Grammar("json_schema", json.dumps(SCHEMAS["flat"])))
    streams = [sched.stream(prompts[0], plain), sched.stream(eng.tokenize(chatml("A person as JSON.")), grammar),
               sched.stream(prompts[1], plain)]
    a, constrained, b = (s.wait() for s in streams)
    assert [a.token_ids, b.token_ids] == alone
    jsonschema.validate(json.loads(constrained.text), SCHEMAS["flat"])


def test_logprobs_come_with_every_token_and_do_not_change_it(det):
    eng, sched = det.engine, det.scheduler
    prompt = eng.tokenize(chatml("Name three colours."))
    plain = sched.generate(prompt, SamplingParams(temperature=0, max_tokens=12))
    r = sched.generate(prompt, SamplingParams(temperature=0, max_tokens=12, logprobs=5))
    assert r.token_ids == plain.token_ids and len(r.logprobs) == len(r.token_ids)
    for tok, lp in zip(r.token_ids, r.logprobs, strict=True):
        assert lp.token == tok and lp.logprob <= 0
        assert len(lp.top) == 5 and lp.top[0][0] == tok      # greedy without penalties draws the most likely
        assert [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
        assert math.isclose(lp.top[0][1], lp.logprob, abs_tol=1e-5)
    assert sum(math.exp(v) for _, v in r.logprobs[0].top) <= 1 + 1e-5
    # streamed chunks carry one logprob per token id, in order
    chunks = list(sched.stream(prompt, SamplingParams(temperature=0, max_tokens=12, logprobs=0)))
    assert [lp.token for c in chunks for lp in c.logprobs] == [t for c in chunks for t in c.token_ids]
    assert all(not lp.top for c in chunks for lp in c.logprobs)


def test_logprobs_under_a_grammar_are_of_the_raw_distribution(fast):
    r = _run(fast, "A person as JSON.", SamplingParams(temperature=0, max_tokens=60, logprobs=2,
                                                      grammar=Grammar("json_schema", json.dumps(SCHEMAS["flat"]))))
    assert len(r.logprobs) == len(r.token_ids) and all(lp.logprob <= 0 for lp in r.logprobs)
    assert all(math.isfinite(lp.logprob) for lp in r.logprobs)     # read before the mask wrote -inf
