"""Requests written for llama-server: its own fields on /v1/chat/completions and /v1/completions are honoured
where parley does what they mean (n_predict, ignore_eos, repeat_last_n, samplers, t_max_predict_ms, seed -1),
accepted where they change nothing (cache_prompt: always on, said in the response; id_slot; n_keep), and
refused by name with the reason where parley cannot; a field of nobody's API is still a 400."""

from __future__ import annotations

import httpx
import pytest
from srvutil import assert_error, fresh_prefix, warm

from parley.errors import InvalidRequest
from parley.server.errors import NotSupported
from parley.server.llama_compat import sampler_changes

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
PROMPT = "Once upon a time, in a land far away, there lived"


def post(server, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=120)


def completion(server, **body) -> dict:
    r = post(server, COMPLETIONS, {"prompt": PROMPT, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def test_n_predict_is_max_tokens(server):
    assert completion(server, n_predict=5)["usage"]["completion_tokens"] == 5
    r = post(server, CHAT, {"messages": [{"role": "user", "content": "Count to fifty."}], "n_predict": 3,
                            "temperature": 0})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 3
    r = post(server, CHAT, {"messages": [{"role": "user", "content": "Say yes."}], "n_predict": -1,
                            "temperature": 0})  # as many as the server allows: here, until the end of the turn
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "stop", r.text
    assert_error(post(server, COMPLETIONS, {"prompt": PROMPT, "n_predict": 4, "max_tokens": 5}), 400,
                 "max_tokens and n_predict")
    err = assert_error(post(server, COMPLETIONS, {"prompt": PROMPT, "n_predict": 0}), 400, "n_predict")
    assert err["param"] == "n_predict"


def test_ignore_eos_runs_to_max_tokens(server, parley):
    prompt = parley.builder.build([{"role": "system", "content": fresh_prefix()},
                                   {"role": "user", "content": "Say yes."}]).text
    warm(server.url, prompt=prompt)
    short = completion(server, prompt=prompt, max_tokens=64)
    assert short["choices"][0]["finish_reason"] == "stop" and short["usage"]["completion_tokens"] < 64
    long = completion(server, prompt=prompt, max_tokens=64, ignore_eos=True)
    assert long["choices"][0]["finish_reason"] == "length" and long["usage"]["completion_tokens"] == 64


def test_samplers_switch_stages_off(server):
    prompt = f"{fresh_prefix()} {PROMPT}"
    warm(server.url, prompt=prompt)
    greedy = completion(server, prompt=prompt, max_tokens=12)["choices"][0]["text"]
    # top_k 1 keeps only the most likely token, whatever the temperature: greedy text
    for samplers in (["top_k", "temperature"], "kt", ["dry", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"]):
        r = completion(server, prompt=prompt, max_tokens=12, temperature=1.5, top_k=1, seed=7, samplers=samplers)
        assert r["choices"][0]["text"] == greedy, samplers
    # left out of the list, top_k is off: at temperature 1.5 some seed leaves the greedy path
    texts = {completion(server, prompt=prompt, max_tokens=12, temperature=1.5, top_k=1, seed=seed,
                        samplers=["temperature"])["choices"][0]["text"] for seed in (1, 2, 3)}
    assert texts != {greedy}


def test_sampler_lists():
    assert sampler_changes(["temperature"]) == {"top_k": 0, "top_p": 1.0, "min_p": 0.0}
    assert sampler_changes("kpmt") == {}
    assert sampler_changes(["top_k"]) == {"top_p": 1.0, "min_p": 0.0, "temperature": 1.0}
    with pytest.raises(NotSupported, match="order"):
        sampler_changes(["temperature", "top_k"])
    with pytest.raises(InvalidRequest, match="unknown sampler 'bogus'"):
        sampler_changes(["bogus"])
    with pytest.raises(InvalidRequest, match="letter 'z'"):
        sampler_changes("kz")


def test_t_max_predict_ms_ends_the_reply_as_length(server):
    body = {"prompt": "A list of twenty fruits, one per line:\n1. Apple\n2.", "max_tokens": 200, "temperature": 0}
    r = post(server, COMPLETIONS, {**body, "t_max_predict_ms": 1})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["choices"][0]["finish_reason"] == "length"
    assert "\n" in out["choices"][0]["text"] and out["usage"]["completion_tokens"] < 200
    full = post(server, COMPLETIONS, {**body, "max_tokens": 40, "t_max_predict_ms": 0}).json()
    assert full["usage"]["completion_tokens"] == 40  # 0: no limit


def test_repeat_last_n_reaches_the_sampler(server):
    prompt = f"{fresh_prefix()} Continue counting: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
    warm(server.url, prompt=prompt)
    off = completion(server, prompt=prompt, max_tokens=24, repeat_penalty=1.5, repeat_last_n=0)
    none = completion(server, prompt=prompt, max_tokens=24)
    on = completion(server, prompt=prompt, max_tokens=24, repeat_penalty=1.5, repeat_last_n=-1)
    assert off["choices"][0]["text"] == none["choices"][0]["text"]  # a penalty over no tokens is no penalty
    assert on["choices"][0]["text"] != none["choices"][0]["text"]
    assert_error(post(server, COMPLETIONS, {"prompt": PROMPT, "repeat_last_n": -2}), 400, "repeat_last_n")


def test_fields_that_change_nothing_are_accepted(server):
    r = completion(server, max_tokens=4, cache_prompt=False, id_slot=3, n_keep=-1, n_cache_reuse=256, seed=-1,
                   dry_base=1.75, dry_allowed_length=2, mirostat_tau=5.0, mirostat_eta=0.1, xtc_threshold=0.1,
                   n_probs=0, typical_p=1.0, min_keep=0, mirostat=0, dry_multiplier=0.0, return_tokens=False)
    assert "cache_prompt" in r["parley"]["note"] and "always reuses" in r["parley"]["note"]
    r = completion(server, max_tokens=4, cache_prompt=True)
    assert "note" not in r["parley"]
    r = post(server, CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "cache_prompt": True,
                            "id_slot": -1, "reasoning_format": "none", "chat_template_kwargs": {}})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("field, value, why", [
    ("post_sampling_probs", True, "raw distribution"), ("mirostat", 2, "Mirostat"), ("dry_multiplier", 0.8, "DRY"),
    ("xtc_probability", 0.5, "XTC"), ("typical_p", 0.5, "typical"), ("dynatemp_range", 0.5, "dynamic temperature"),
    ("n_cmpl", 2, "one completion"), ("lora", [{"id": 0, "scale": 1}], "LoRA"), ("min_keep", 5, "at least one"),
])
def test_what_parley_cannot_do_is_refused_by_name(server, field, value, why):
    for path, body in ((COMPLETIONS, {"prompt": PROMPT}), (CHAT, {"messages": [{"role": "user", "content": "hi"}]})):
        err = assert_error(post(server, path, {**body, "max_tokens": 2, field: value}), 400, field, why)
        assert err["param"] == field and err["code"] == "unsupported_parameter"


def test_fields_of_nobodys_api_are_still_refused(server):
    err = assert_error(post(server, COMPLETIONS, {"prompt": PROMPT, "n_predictt": 3}), 400, "unknown field 'n_predictt'")
    assert err["param"] == "n_predictt"
    assert_error(post(server, "/generate", {"inputs": PROMPT, "parameters": {"n_predict": 3}}), 400,
                 "parameters.n_predict")  # TGI's API is TGI's
