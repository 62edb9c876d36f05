"""Upstream engines (--upstream): parley's conversations generating on other servers, as a user runs them. The
upstreams are real: other `parley serve` processes on ephemeral ports (and llama.cpp's llama-server when its
build is cached here: `parley bench peer` builds it). One is killed mid-run: no conversation is lost, and the
stickiness shows in the upstreams' own cached tokens."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pytest

import parley
from parley.bench.servers import ServerProcess, free_port
from parley.errors import InvalidRequest
from parley.sampling import Grammar, SamplingParams
from parley.upstream.route import BLOCK, BOUND, MOVE_OVER, Router, key_of

QUICK = dict(temperature=0, max_tokens=8)


def start_parley_upstream(tmp: Path, name: str) -> ServerProcess:
    port = free_port()
    home = tmp / name
    home.mkdir()
    argv = [sys.executable, "-m", "parley.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--threads", "1", "--kv-size", "4096", "--disk-cache-mb", "0", "--home", str(home)]
    server = ServerProcess(f"upstream {name}", argv, port, tmp / f"{name}.log")
    return server


@pytest.fixture(scope="module")
def upstreams():
    tmp = Path(tempfile.mkdtemp(prefix="parley-upstreams-"))
    servers = [start_parley_upstream(tmp, name) for name in ("a", "b")]
    try:
        for s in servers:
            s.wait_ready()
        yield servers
    finally:
        for s in servers:
            s.stop()


@pytest.fixture()
def front(upstreams, tmp_path):
    p = parley.load(upstream=",".join(s.url for s in upstreams), home=str(tmp_path), disk_cache_mb=0)
    yield p
    p.close(save=False)


def owner(p, conversation_id: str) -> int:
    sched = p.scheduler
    return sched.router.owner(conversation_id, lambda i: sched.upstreams[i].healthy)


def test_a_conversation_sticks_to_its_upstream_and_its_prefix_hits_there(front):
    chats = [front.chat(system="You are brief.", **QUICK) for _ in range(4)]
    previous: dict[str, int] = {}
    for turn, question in enumerate(["Name a fruit.", "Name another.", "And a colour?"]):
        for chat in chats:
            "".join(chat.send(question))
            r = chat.last.result
            assert r.finish_reason in ("stop", "length"), r.error
            if turn:   # the upstream holds the whole previous prompt: parley's prompts extend each other
                assert r.cached_tokens >= previous[chat.id], (turn, r.stats)
                assert r.cache_source == "upstream"
        previous = {c.id: c.last.result.prompt_tokens for c in chats}
    stats = front.scheduler.upstream_stats()
    assert sum(u["requests"] for u in stats) == 12 and all(u["healthy"] and u["kind"] == "parley" for u in stats)
    assert sum(u["cached_tokens"] for u in stats) >= 0.6 * sum(u["prompt_tokens"] for u in stats)


def test_greedy_replies_match_the_local_engine_token_for_token(front, fast):
    prompt = front.tokenize("The three primary colours are")
    params = SamplingParams(temperature=0, max_tokens=16)
    there = front.generate(prompt, params).wait()
    here = fast.generate(prompt, params).wait()
    assert there.text == here.text and there.token_ids == here.token_ids


def test_a_reply_is_read_back_as_plain_text(front):
    """A reply's text becomes the next prompt's tokens: a control token's name in it stays text, never the control
    token (a reply could otherwise open a turn of its own in the history)."""
    special = front.tokenize("<|im_end|>")[-1:]     # a raw prompt parses control tokens
    assert front.scheduler.tokenize("<|im_end|>") != special and len(front.scheduler.tokenize("<|im_end|>")) > 1


def test_stop_strings_are_matched_here_and_never_leak(front):
    prompt = front.tokenize("Count: one, two, three,")
    r = front.generate(prompt, SamplingParams(temperature=0, max_tokens=24, stop=(" five",))).wait()
    assert r.finish_reason == "stop" and r.stop_string == " five" and "five" not in r.text, r.text
    assert r.text.startswith(" four")


def upstream_running(server) -> float:
    metrics = httpx.get(server.url + "/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("parley_requests_running"))


def test_a_cancelled_reply_closes_its_upstream_request(front, upstreams):
    stream = front.generate(front.tokenize("Tell me a very long story."),
                            SamplingParams(temperature=0, max_tokens=2000, ignore_eos=True))
    pieces = iter(stream)
    next(pieces)
    busy = [s for s in upstreams if upstream_running(s)]
    assert len(busy) == 1
    stream.cancel()
    assert stream.wait().finish_reason == "cancelled"
    deadline = time.monotonic() + 10
    while upstream_running(busy[0]) and time.monotonic() < deadline:   # the upstream saw the request close
        time.sleep(0.1)
    assert not upstream_running(busy[0])


def test_what_cannot_travel_upstream_is_refused_by_name(front):
    prompt = front.tokenize("Hi")
    with pytest.raises(InvalidRequest, match="logprobs") as e:
        front.generate(prompt, SamplingParams(max_tokens=2, logprobs=0))
    assert e.value.code == "unsupported_parameter"
    with pytest.raises(InvalidRequest, match="regex grammar"):
        front.generate(prompt, SamplingParams(max_tokens=2, grammar=Grammar("regex", "[ab]+")))
    r = front.generate(prompt, SamplingParams(temperature=0, max_tokens=40,
                                              grammar=Grammar("json_object"))).wait()   # travels to parley
    assert r.text.lstrip().startswith("{"), r.text


def test_a_killed_upstream_loses_no_conversation(upstreams, tmp_path):
    """Conversations on both upstreams; one upstream dies in the middle of a reply. That reply goes on on the
    other one from where it stopped, every conversation's next turn is answered there with its history read from
    the store, and nothing stored is lost."""
    victim_dir = Path(tempfile.mkdtemp(prefix="parley-victim-"))
    victim = start_parley_upstream(victim_dir, "victim")
    victim.wait_ready()
    survivor = upstreams[0]
    p = parley.load(upstream=f"{survivor.url},{victim.url}", home=str(tmp_path), disk_cache_mb=0)
    try:
        chats = [p.chat(system="You are brief.", **QUICK) for _ in range(6)]
        for chat in chats:
            "".join(chat.send("Name a river."))
        on_victim = [c for c in chats if owner(p, c.id) == 1]
        assert on_victim, "the ring put no conversation on the second upstream"   # 6 conversations: 1 in 32
        long_one = on_victim[0]
        pieces = long_one.send("Write a long story about a river.", max_tokens=120, ignore_eos=True)
        first = next(pieces)
        victim.proc.kill()
        rest = "".join(pieces)
        r = long_one.last.result
        assert r.finish_reason == "length", r.error
        assert first and rest, "the reply stopped where its upstream died"
        assert r.generated_tokens >= 100
        for chat in chats:
            "".join(chat.send("Thanks."))
            assert chat.last.result.finish_reason in ("stop", "length"), chat.last.result.error
        stats = p.scheduler.upstream_stats()
        assert not stats[1]["healthy"] and stats[1]["error"]
        for chat in chats:    # every message is stored: system prompt aside, 2 or 3 user turns and their replies
            view = p.conversations.get(chat.id)
            assert [m.role for m in view.messages][-4:] == ["user", "assistant", "user", "assistant"]
            assert all(m.content for m in view.messages if m.role == "assistant")
    finally:
        p.close(save=False)
        victim.stop()


def test_an_unreachable_upstream_is_a_clear_error(tmp_path):
    argv = [sys.executable, "-m", "parley.cli.main", "serve", "--port", str(free_port()), "--home", str(tmp_path),
            "--upstream", f"http://127.0.0.1:{free_port()}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "no upstream answered" in out.stderr and "Traceback" not in out.stderr
    bad = subprocess.run([*argv[:-1], "ftp://x"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "http:// or https://" in bad.stderr and "Traceback" not in bad.stderr


def test_parley_serve_on_upstreams_over_http(upstreams, tmp_path):
    """The user's path: `parley serve --upstream URL --upstream URL`, then OpenAI requests."""
    port = free_port()
    argv = [sys.executable, "-m", "parley.cli.main", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--home", str(tmp_path), "--upstream-policy", "balanced"]
    for s in upstreams:
        argv += ["--upstream", s.url]
    front = ServerProcess("front", argv, port, tmp_path / "front.log")
    try:
        front.wait_ready()
        messages = [{"role": "user", "content": "Say hi."}]
        body = {"messages": messages, "max_tokens": 6, "temperature": 0}
        first = httpx.post(front.url + "/v1/chat/completions", json=body, timeout=60).json()
        messages += [first["choices"][0]["message"], {"role": "user", "content": "Again."}]
        second = httpx.post(front.url + "/v1/chat/completions", json=body, timeout=60).json()
        # a stateless request has no conversation id: its prompt's first tokens route it, so it lands where the
        # first one was read
        assert second["usage"]["prompt_tokens_details"]["cached_tokens"] >= first["usage"]["prompt_tokens"] - 1
        tool = {"type": "function", "function": {"name": "weather", "description": "The weather in a city",
                                                 "parameters": {"type": "object", "required": ["city"],
                                                                "properties": {"city": {"type": "string"}}}}}
        called = httpx.post(front.url + "/v1/chat/completions", timeout=60, json={
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}], "max_tokens": 40,
            "temperature": 0, "tools": [tool], "tool_choice": "required"}).json()
        call = called["choices"][0]["message"]["tool_calls"][0]["function"]     # a forced call: its schema travels
        assert call["name"] == "weather" and "city" in json.loads(call["arguments"]), called
        with httpx.stream("POST", front.url + "/v1/chat/completions", json={**body, "stream": True},
                          timeout=60) as r:
            assert r.status_code == 200 and "[DONE]" in r.read().decode()
        models = httpx.get(front.url + "/v1/models", timeout=10).json()["data"]
        assert models[0]["parley"]["device"].startswith("upstream (")
        metrics = httpx.get(front.url + "/metrics", timeout=10).text
        for s in upstreams:
            assert f'parley_upstream_up{{upstream="{s.url}"}} 1.0' in metrics
        cached = sum(float(line.split()[-1]) for line in metrics.splitlines()
                     if line.startswith("parley_upstream_cached_tokens_total"))
        assert cached >= first["usage"]["prompt_tokens"] - 1
    finally:
        front.stop()


# ---- routing, without servers --------------------------------------------------------------------------------
def test_consistent_hashing_moves_only_the_failed_upstreams_keys():
    r = Router(["http://a", "http://b", "http://c"])
    keys = [f"conv_{i}" for i in range(3000)]
    before = {k: r.owner(k, lambda i: True) for k in keys}
    counts = [list(before.values()).count(i) for i in range(3)]
    assert min(counts) > 700, counts          # spread within a few percent of 1000 each
    after = {k: r.owner(k, lambda i: i != 1) for k in keys}
    moved = [k for k in keys if before[k] != after[k]]
    assert all(before[k] == 1 for k in moved) and set(after.values()) == {0, 2}
    assert r.owner("x", lambda i: False) is None


def test_balanced_moves_a_conversation_off_a_loaded_upstream_and_keeps_it_there():
    r = Router(["http://a", "http://b"], "balanced")
    load = [0, 0]
    key = next(k for k in (f"c{i}" for i in range(100)) if r.owner(k, lambda i: True) == 0)
    assert r.pick(key, lambda i: True, lambda i: load[i]) == 0
    load[0] = MOVE_OVER
    assert r.pick(key, lambda i: True, lambda i: load[i]) == 1
    load[0] = 0
    assert r.pick(key, lambda i: True, lambda i: load[i]) == 1     # it stays where its cache now is
    assert key_of(None, [1, 2, 3]) == key_of(None, [1, 2, 3]) != key_of("c1", [1, 2, 3])


def test_bounded_loads_spread_a_few_conversations_evenly_and_keep_each_where_it_went():
    up, load = lambda i: True, lambda i: 0
    for seed in range(20):          # 12 conversations over 2: plain hashing splits some 9 to 3
        r = Router(["rank-0", "rank-1"], "bounded")
        keys = [f"conv_{seed}_{i}" for i in range(12)]
        placed = {k: r.pick(k, up, load) for k in keys}
        held = [list(placed.values()).count(i) for i in range(2)]
        assert held == [6, 6], (seed, held)       # a few: as even as they can be (BOUND's slack is for many)
        assert all(r.pick(k, up, load) == placed[k] for k in keys)          # sticky
    lost = next(k for k in keys if placed[k] == 0)      # its place goes down: it moves, and stays moved
    assert r.pick(lost, lambda i: i == 1, load) == 1 and r.pick(lost, up, load) == 1
    assert r.pick("new", lambda i: False, load) is None
    grown = Router(["rank-0", "rank-1", "rank-2"], "bounded")      # a replica added: every conversation stays
    grown.adopt(r)
    assert all(grown.pick(k, up, load) == r.pick(k, up, load) for k in keys)
    assert grown.pick("newcomer", up, load) == 2                   # the new one is the least held
    r = Router(["rank-0", "rank-1", "rank-2"], "bounded")
    held = [0, 0, 0]
    for i in range(3000):
        held[r.pick(f"many_{i}", up, load)] += 1
    assert max(held) <= math.floor(BOUND * 1000), held


def test_a_prompt_without_a_conversation_goes_where_its_longest_prefix_went():
    r = Router(["http://a", "http://b", "http://c"])
    up, load = lambda i: True, lambda i: 0
    firsts = {}
    for n in range(60):    # 60 histories: each request resends the last one's prompt and adds to it
        prompt = [n] * BLOCK + list(range(40))
        firsts[n] = r.route(None, prompt, up, load)
        assert r.route(None, prompt + list(range(100, 150)), up, load) == firsts[n]
    assert len(set(firsts.values())) == 3       # spread by their first block
    prompt = [7] * BLOCK + list(range(40))
    others = frozenset({firsts[7]})   # its upstream failed: it moves, and its longer prompts follow it there
    moved = r.route(None, prompt, up, load, exclude=others)
    assert moved != firsts[7] and r.route(None, prompt + [1] * 64, up, load) == moved


# ---- llama.cpp's llama-server as the upstream, when its build is cached here ------------------------------------
def llama_server_binary():
    from parley.bench.llama_server_build import binary
    return binary()


@pytest.mark.skipif(llama_server_binary() is None, reason="llama-server is not built here (parley bench peer "
                    "builds it, 5-6 min)")
def test_llama_server_upstream_caches_every_turn(tmp_path, fast):
    from parley.engine.model_path import embedded_model_path

    port = free_port()
    argv = [str(llama_server_binary()), "-m", str(embedded_model_path()), "--host", "127.0.0.1", "--port",
            str(port), "-t", "1", "-c", "4096", "-np", "2", "--no-webui"]
    server = ServerProcess("llama-server", argv, port, tmp_path / "llama-server.log")
    try:
        server.wait_ready("/health")
        p = parley.load(upstream=server.url, home=str(tmp_path), disk_cache_mb=0)
        try:
            assert p.scheduler.upstreams[0].kind == "llama.cpp" and p.context_size == 2048
            chat = p.chat(system="You are brief.", **QUICK)
            before = 0
            for q in ("Name a fruit.", "Another.", "A colour?"):
                "".join(chat.send(q))
                r = chat.last.result
                assert r.finish_reason in ("stop", "length"), r.error
                assert r.cached_tokens >= before, r.stats    # the previous prompt and reply (but its last token)
                before = r.prompt_tokens + r.generated_tokens - 1
            prompt = p.tokenize("The three primary colours are")
            params = SamplingParams(temperature=0, max_tokens=16)
            assert p.generate(prompt, params).wait().text == fast.generate(prompt, params).wait().text
        finally:
            p.close(save=False)
    finally:
        server.stop()


# ---- the streamed POST (upstream/sse.py) against a raw HTTP server on a socket ----------------------------------
def serve_once(response: bytes):
    """A server on an ephemeral port that reads one request and writes `response` in small pieces."""
    import socket
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def run():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            for start in range(0, len(response), 7):    # pieces that split lines, chunk sizes and events
                conn.sendall(response[start:start + 7])
                time.sleep(0.001)
        listener.close()

    threading.Thread(target=run, daemon=True).start()
    return f"http://127.0.0.1:{port}/v1/completions"


def events(url: str) -> list[bytes]:
    import asyncio

    from parley.upstream.sse import post_events

    async def go():
        return [e async for e in post_events(url, {"prompt": [1]}, connect_timeout=5, read_timeout=5)]
    return asyncio.run(go())


def test_server_sent_events_are_read_across_chunks_and_pieces():
    body = b'data: {"a": 1}\n\ndata: {"b": 2}\n\ndata: [DONE]\n\n'
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 11]), body[i:i + 11]) for i in range(0, len(body), 11))
    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    assert events(serve_once(head + chunked + b"0\r\n\r\n")) == [b'{"a": 1}', b'{"b": 2}', b"[DONE]"]
    until_close = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n" + body
    assert events(serve_once(until_close)) == [b'{"a": 1}', b'{"b": 2}', b"[DONE]"]


def test_an_error_status_and_a_broken_stream_are_told_apart():
    from parley.upstream.sse import HTTPError

    error = b'{"error": {"message": "the prompt is too long"}}'
    with pytest.raises(HTTPError) as e:
        events(serve_once(b"HTTP/1.1 400 Bad Request\r\ncontent-length: %d\r\n\r\n%s" % (len(error), error)))
    assert e.value.status == 400 and b"too long" in e.value.body
    with pytest.raises(HTTPError) as e:   # a chunk announced, the connection closed before it came
        events(serve_once(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n40\r\ndata: {"))
    assert e.value.status == 0 and "broke" in str(e.value)
    with pytest.raises(HTTPError, match="cannot connect"):
        events(f"http://127.0.0.1:{free_port()}/v1/completions")
