"""The real `openai` client against a live server: chat and completions, streaming and not, stop strings, seeds,
usage counts, the parley extension fields."""

from __future__ import annotations

import openai
import pytest
from srvutil import fresh_prefix, leaks, pick_stop, wait_idle, warm

from parley.text.template import validate_messages

QUESTION = [{"role": "user", "content": "Tell me a long story about a dragon and a knight."}]


def fresh_question(server) -> list[dict]:
    """QUESTION behind a system prompt no earlier request had, its KV computed once (see srvutil.fresh_prefix)."""
    messages = [{"role": "system", "content": f"{fresh_prefix()} You are a storyteller."}, *QUESTION]
    warm(server.url, messages=messages)
    return messages


@pytest.fixture(scope="module")
def client(server):
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60) as c:
        yield c


def chat(client, messages=QUESTION, **kw):
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    return client.chat.completions.create(model="any", messages=messages, **kw)


def stream_chat(client, messages=QUESTION, **kw):
    kw.setdefault("max_tokens", 16)
    kw.setdefault("temperature", 0)
    chunks = list(client.chat.completions.create(model="any", messages=messages, stream=True, **kw))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def test_models(client, parley):
    models = client.models.list()
    assert [m.id for m in models.data] == [parley.name]
    assert client.models.retrieve(parley.name).id == parley.name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-nonexistent")


def test_chat_non_streaming_usage(client, parley):
    r = chat(client, max_tokens=8)
    assert r.object == "chat.completion"
    assert r.model == parley.name
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason == "length"
    expected_prompt = len(parley.builder.build(validate_messages(QUESTION)).tokens)
    assert r.usage.prompt_tokens == expected_prompt
    assert r.usage.completion_tokens == 8
    assert r.usage.total_tokens == expected_prompt + 8
    assert r.usage.prompt_tokens_details.cached_tokens >= 0
    ext = r.model_extra["parley"]
    assert ext["dropped_messages"] == 0
    assert ext["cached_tokens"] == r.usage.prompt_tokens_details.cached_tokens


def test_repeated_prompt_is_cached(client):
    chat(client, max_tokens=4)
    r = chat(client, max_tokens=4)
    cached = r.usage.prompt_tokens_details.cached_tokens
    assert cached > 0
    assert cached >= r.usage.prompt_tokens - 1
    assert r.model_extra["parley"]["cache_source"] in ("live", "ram", "disk")


def test_streaming_equals_non_streaming(client, server):
    q = fresh_question(server)
    whole = chat(client, q, max_tokens=12)
    text, chunks = stream_chat(client, q, max_tokens=12)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].model_extra["parley"]["dropped_messages"] == 0


def test_stream_include_usage(client):
    text, chunks = stream_chat(client, max_tokens=6, stream_options={"include_usage": True})
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert usage.completion_tokens == 6
    assert usage.prompt_tokens > 0
    assert usage.prompt_tokens_details.cached_tokens >= 0
    assert all(c.usage is None for c in chunks[:-1])


def test_stop_string_never_leaks(client, server):
    q = fresh_question(server)
    full = chat(client, q, max_tokens=24).choices[0].message.content
    stop = pick_stop(full)
    expected = full[: full.index(stop)]
    r = chat(client, q, max_tokens=24, stop=[stop])
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert text == expected
    assert stop not in text
    assert r.model_extra["parley"]["stop_string"] == stop
    streamed, chunks = stream_chat(client, q, max_tokens=24, stop=stop)
    assert streamed == expected
    assert chunks[-1].choices[0].finish_reason == "stop"
    for c in chunks:
        if c.choices and c.choices[0].delta.content:
            assert stop not in c.choices[0].delta.content
    assert not leaks(text, stop) and not leaks(streamed, stop)


def test_seed_reproducible(client, server, parley):
    kw = {"temperature": 0.8, "max_tokens": 16, "messages": fresh_question(server)}
    ra, rb = chat(client, seed=1234, **kw), chat(client, seed=1234, **kw)
    a, b = ra.choices[0].message.content, rb.choices[0].message.content
    assert a == b, (ra.model_extra["parley"], rb.model_extra["parley"], parley.scheduler.stats())
    others = {chat(client, seed=s, **kw).choices[0].message.content for s in (1, 2, 3)}
    assert len(others | {a}) > 1
    sa, _ = stream_chat(client, seed=1234, **kw)
    assert sa == a


def test_sampling_fields_accepted(client):
    r = chat(client, max_tokens=4, temperature=0.5, top_p=0.9, presence_penalty=0.5, frequency_penalty=0.5,
             user="someone", n=1, extra_body={"top_k": 20, "min_p": 0.1, "repetition_penalty": 1.2})
    assert r.choices[0].message.content is not None
    r = chat(client, max_tokens=None, max_completion_tokens=3, messages=[{"role": "developer", "content": "Be brief."},
                                                        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}])
    assert r.usage.completion_tokens <= 3


def test_completions(client, server, parley):
    prompt = f"{fresh_prefix()} The three primary colours are"
    warm(server.url, prompt=prompt)
    r = client.completions.create(model="any", prompt=prompt, max_tokens=8, temperature=0)
    assert r.object == "text_completion"
    assert r.usage.prompt_tokens == len(parley.tokenize(prompt))
    assert r.usage.completion_tokens == 8
    text = r.choices[0].text
    chunks = list(client.completions.create(model="any", prompt=prompt, max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == text
    echoed = client.completions.create(model="any", prompt=prompt, max_tokens=8, temperature=0, echo=True)
    assert echoed.choices[0].text == prompt + text
    ids = parley.tokenize(prompt)
    by_ids = client.completions.create(model="any", prompt=ids, max_tokens=8, temperature=0)
    assert by_ids.choices[0].text == text


def test_not_supported_fields_are_refused(client):
    with pytest.raises(openai.BadRequestError, match="n must be 1 to 16"):
        chat(client, n=17)
    with pytest.raises(openai.BadRequestError, match="top_logprobs must be 0 to 20"):
        chat(client, logprobs=True, top_logprobs=21)
    with pytest.raises(openai.BadRequestError, match="response_format.type"):
        chat(client, response_format={"type": "yaml"})


def test_context_overflow_says_by_how_much(client, parley):
    long = "word " * (parley.context_size + 50)
    with pytest.raises(openai.BadRequestError) as e:
        chat(client, messages=[{"role": "user", "content": long}], max_tokens=2)
    err = e.value.body
    assert err["code"] == "context_length_exceeded"
    assert "tokens too many" in err["message"] and "truncate" in err["message"]


def test_truncate_drops_oldest_and_says_so(small_server, parley):
    """max_prompt_tokens=64 on small_server: a few turns overflow it."""
    client = openai.OpenAI(base_url=f"{small_server.url}/v1", api_key="unused", max_retries=0, timeout=60)
    turn = "tell me more about the city"
    history = [{"role": "system", "content": "You are terse."}]
    for _ in range(4):
        history += [{"role": "user", "content": turn}, {"role": "assistant", "content": turn}]
    history.append({"role": "user", "content": "And now?"})
    n = len(parley.builder.build(validate_messages(history)).tokens)
    assert n > 64
    with pytest.raises(openai.BadRequestError, match=f"the prompt is {n} tokens") as e:
        chat(client, messages=history, max_tokens=2)
    assert "max_prompt_tokens" in e.value.body["message"] and f"{n - 64} tokens too many" in e.value.body["message"]
    r = chat(client, messages=history, max_tokens=2, extra_body={"truncate": True})
    ext = r.model_extra["parley"]
    assert ext["dropped_messages"] > 0 and ext["dropped_messages"] % 2 == 0  # whole turns, from the oldest
    assert f"{ext['dropped_messages']} oldest messages were dropped" in ext["note"]
    assert r.usage.prompt_tokens <= 64
    kept = [history[0], *history[1 + ext["dropped_messages"]:]]
    assert r.usage.prompt_tokens == len(parley.builder.build(validate_messages(kept)).tokens)
    _, chunks = stream_chat(client, messages=history, max_tokens=2, extra_body={"truncate": True})
    assert chunks[-1].model_extra["parley"]["dropped_messages"] == ext["dropped_messages"]
    lone = [history[0], {"role": "user", "content": "word " * 100}]
    with pytest.raises(openai.BadRequestError, match="alone are"):
        chat(client, messages=lone, max_tokens=2, extra_body={"truncate": True})
    wait_idle(parley)


def test_n_choices_of_one_prompt_read_it_once(client, parley):
    """n choices: the prompt is read once and forked (one sequence's prefill, the others' KV shared), each
    choice sampled with its own seed; streamed, every chunk names its choice and each choice ends with its own
    finish_reason."""
    long_system = f"{fresh_prefix()} " + "You are a patient guide who answers with one word. " * 12
    messages = [{"role": "system", "content": long_system}, {"role": "user", "content": "Tell me a word."}]
    before = parley.scheduler.stats().totals.prefilled_tokens
    r = chat(client, n=3, max_tokens=6, temperature=0.9, seed=7, messages=messages)
    read = parley.scheduler.stats().totals.prefilled_tokens - before
    assert [c.index for c in r.choices] == [0, 1, 2] and all(c.message.content for c in r.choices)
    assert r.usage.prompt_tokens > 100 and read < 1.5 * r.usage.prompt_tokens, (read, r.usage.prompt_tokens)
    assert r.usage.completion_tokens <= 3 * 6
    text, chunks = stream_chat(client, n=2, max_tokens=5, temperature=0.9, seed=3)
    ended = {c.choices[0].index: c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason}
    assert set(ended) == {0, 1}
    seen = {c.choices[0].index for c in chunks if c.choices and c.choices[0].delta.content}
    assert seen <= {0, 1} and seen
