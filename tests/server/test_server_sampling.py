"""One set of sampling defaults: the HTTP APIs start from the protocols' own (temperature 1, top_p 1, no top-k,
no min-p, no penalty), so a greedy request gives the same tokens on chat completions, completions (the same
prompt ids), conversations and TGI; `parley serve --temperature ...` changes the base of every route; the terminal
chat's preset lives in parley.sampling and is what Parley.chat() and `parley chat --help` use."""

from __future__ import annotations

import subprocess

import httpx
from srvutil import LiveServer, fresh_prefix, parley_command, warm

from parley.cli.main import build_parser
from parley.cli.serve import settings_from
from parley.sampling import CHAT_PRESET, NEUTRAL, SamplingParams, describe
from parley.server import ServerSettings
from parley.text.template import validate_messages

# a repetition penalty of 1.1 changes this reply's greedy tokens (test_the_old_openai_defaults_change_these_tokens)
ASK = "List the days of the week, twice."
N = 24
STAGES = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty")


def four_surfaces(url: str, parley, extra: dict | None = None, tgi_extra: dict | None = None) -> dict[str, str]:
    """The same greedy prompt through chat completions, completions (its token ids), a conversation and TGI."""
    extra = extra or {}
    system = f"{fresh_prefix()} You answer."
    messages = [{"role": "system", "content": system}, {"role": "user", "content": ASK}]
    built = parley.builder.build(validate_messages(messages))
    warm(url, messages=messages)
    out = {}
    with httpx.Client(base_url=url, timeout=120) as c:
        r = c.post("/v1/chat/completions", json={"messages": messages, "max_tokens": N, **extra}).json()
        out["chat"] = r["choices"][0]["message"]["content"]
        r = c.post("/v1/completions", json={"prompt": built.tokens, "max_tokens": N, **extra}).json()
        assert r["usage"]["prompt_tokens"] == len(built.tokens)
        out["completions"] = r["choices"][0]["text"]
        conv = c.post("/v1/conversations", json={"system": system, "max_tokens": N, **extra}).json()
        r = c.post(f"/v1/conversations/{conv['id']}/messages", json={"content": ASK}).json()
        assert r["usage"]["prompt_tokens"] == len(built.tokens)
        out["conversation"] = r["choices"][0]["message"]["content"]
        params = {"max_new_tokens": N, "decoder_input_details": True, "details": True, **(tgi_extra or {})}
        r = c.post("/generate", json={"inputs": built.text, "parameters": params}).json()
        assert [t["id"] for t in r["details"]["prefill"]] == built.tokens  # the very same prompt ids
        out["tgi"] = r["generated_text"]
    return out


def test_a_request_without_samplers_gets_the_protocol_defaults(server):
    conv = httpx.post(server.url + "/v1/conversations", json={}).json()
    d = conv["defaults"]
    assert {k: d[k] for k in STAGES} == {k: getattr(NEUTRAL, k) for k in STAGES}
    assert d["temperature"] == 1.0 and d["top_p"] == 1.0 and d["top_k"] == 0 and d["min_p"] == 0.0
    assert d["repeat_penalty"] == 1.0


def test_greedy_gives_the_same_tokens_on_every_surface(server, parley):
    texts = four_surfaces(server.url, parley, {"temperature": 0})
    assert len(set(texts.values())) == 1, texts
    assert texts["tgi"]


def test_server_wide_defaults_feed_every_route(parley):
    base = SamplingParams(temperature=0, top_k=5, repeat_penalty=1.3)
    s = LiveServer(parley, ServerSettings(sampling=base))
    try:
        d = httpx.post(s.url + "/v1/conversations", json={}).json()["defaults"]
        assert d["temperature"] == 0 and d["top_k"] == 5 and d["repeat_penalty"] == 1.3
        texts = four_surfaces(s.url, parley)  # no sampling fields at all: the server's greedy, penalized base
        assert len(set(texts.values())) == 1, texts
        description = httpx.get(s.url + "/openapi.json").json()["info"]["description"]
        assert "temperature 0, top_p 1, top_k 5, repeat_penalty 1.3" in description
    finally:
        s.stop()


def test_the_old_openai_defaults_change_these_tokens(server, parley):
    """Why the surfaces used to differ: the OpenAI routes' old defaults (repeat_penalty 1.1, top_k 40, min_p
    0.05) change this greedy reply, so the comparisons above can tell the two sets apart."""
    messages = [{"role": "system", "content": f"{fresh_prefix()} You answer."}, {"role": "user", "content": ASK}]
    tokens = parley.builder.build(validate_messages(messages)).tokens
    warm(server.url, messages=messages)

    def complete(**kw) -> str:
        body = {"prompt": tokens, "max_tokens": N, "temperature": 0, **kw}
        return httpx.post(server.url + "/v1/completions", json=body, timeout=120).json()["choices"][0]["text"]

    assert complete() != complete(repeat_penalty=1.1, top_k=40, min_p=0.05)


def test_serve_flags_set_the_base():
    args = build_parser().parse_args(["serve", "--temperature", "0.2", "--top-p", "0.9", "--top-k", "7",
                                      "--min-p", "0.1", "--repeat-penalty", "1.05"])
    got = settings_from(args).sampling
    assert (got.temperature, got.top_p, got.top_k, got.min_p, got.repeat_penalty) == (0.2, 0.9, 7, 0.1, 1.05)
    assert settings_from(build_parser().parse_args(["serve"])).sampling == NEUTRAL


def test_the_chat_preset_has_one_home(parley):
    params = parley.chat().params
    assert {k: getattr(params, k) for k in STAGES} == {k: getattr(CHAT_PRESET, k) for k in STAGES}
    assert (CHAT_PRESET.temperature, CHAT_PRESET.top_k, CHAT_PRESET.min_p, CHAT_PRESET.repeat_penalty) == \
        (0.7, 40, 0.05, 1.1)
    out = subprocess.run([*parley_command(), "chat", "--help"], capture_output=True, text=True, timeout=60)
    assert describe(CHAT_PRESET) in " ".join(out.stdout.split()), out.stdout
    args = build_parser().parse_args(["chat"])
    assert (args.temperature, args.top_k, args.min_p, args.repeat_penalty) == (0.7, 40, 0.05, 1.1)


def test_docs_name_the_defaults(server):
    doc = httpx.get(server.url + "/openapi.json").json()
    fields = doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert "Default 1" in fields["temperature"]["description"] and "--temperature" in fields["temperature"]["description"]
    assert "Default 0 = off" in fields["top_k"]["description"]
    assert "Default 1 = off" in fields["repetition_penalty"]["description"]
    assert "temperature 1, top_p 1" in doc["info"]["description"]
