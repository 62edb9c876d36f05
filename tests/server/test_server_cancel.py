"""A client that leaves cancels its generation within a step (streaming or not, both APIs); many clients at
once all finish; the concurrency cap answers 429 with the limit's name and a Retry-After."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
from srvutil import LiveServer, assert_error, wait_idle

from parley.server import ServerSettings

# greedy counting goes on and on: these generations do not end by themselves before max_tokens
COUNT = "1, 2, 3, 4, 5, 6, 7, 8,"
LONG = {"messages": [{"role": "user", "content": f"Continue counting: {COUNT}"}], "max_tokens": 256,
        "temperature": 0, "stream": True}


class Finished:
    """Collects the scheduler's final records (the observer runs on the scheduler thread)."""

    def __init__(self, parley):
        self.parley = parley
        self.results = []
        self.cond = threading.Condition()

    def __call__(self, request, result):
        with self.cond:
            self.results.append((time.monotonic(), result))
            self.cond.notify_all()

    def wait(self, reason: str, timeout: float = 5.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for at, r in self.results:
                    if r.finish_reason == reason:
                        return at, r
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {reason} result within {timeout}s: {self.results}")
                self.cond.wait(left)


@pytest.fixture()
def finished(parley):
    wait_idle(parley)
    f = Finished(parley)
    parley.scheduler.observers.append(f)
    yield f
    parley.scheduler.observers.remove(f)


def read_events(lines, n: int) -> list[str]:
    """The next n SSE data payloads from `lines` (an iterator kept by the caller: dropping an httpx line
    iterator closes the connection, which is a disconnect)."""
    events = []
    for line in lines:
        if line.startswith("data: "):
            events.append(line[6:])
            if len(events) >= n:
                break
    return events


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", LONG),
    ("/v1/completions", {"prompt": COUNT, "max_tokens": 256, "temperature": 0, "stream": True}),
    ("/generate_stream", {"inputs": COUNT, "parameters": {"max_new_tokens": 256}}),
])
def test_stream_disconnect_cancels_within_a_step(server, parley, finished, path, body):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        with client.stream("POST", path, json=body) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            read_events(lines, 3)
            left = time.monotonic()
    at, result = finished.wait("cancelled")
    assert result.generated_tokens < 256
    assert at - left < 0.5, f"cancelled {at - left:.3f}s after the client left"
    s = wait_idle(parley, timeout=1.0)
    assert s.running == 0
    assert server.state.gate.active == 0


def test_non_streaming_disconnect_cancels(server, parley, finished):
    body = {"prompt": COUNT, "max_tokens": 256, "temperature": 0}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/v1/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
    left = time.monotonic()
    at, result = finished.wait("cancelled")
    assert result.generated_tokens < 256
    assert at - left < 0.5
    wait_idle(parley, timeout=1.0)
    assert server.state.gate.active == 0
    metrics = httpx.get(server.url + "/metrics").text
    assert 'parley_http_requests_total{method="POST",route="/v1/completions",status="499"}' in metrics


def test_conversation_stream_disconnect_keeps_the_partial_reply(server, parley, finished):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        conv = client.post("/v1/conversations", json={"system": "You are verbose."}).json()
        url = f"/v1/conversations/{conv['id']}/messages"
        with client.stream("POST", url, json={"content": "Describe the sea at length.", "stream": True,
                                              "max_tokens": 256}) as response:
            lines = response.iter_lines()
            read_events(lines, 4)
        finished.wait("cancelled")
        deadline = time.monotonic() + 2
        while (view := client.get(f"/v1/conversations/{conv['id']}").json())["generating"]:
            assert time.monotonic() < deadline, view
            time.sleep(0.02)
        assert [m["role"] for m in view["messages"]] == ["user", "assistant"]
        assert view["messages"][-1]["content"] and view["messages"][-1]["partial"]  # kept, marked cut short
        assert view["messages"][-1]["finish_reason"] == "cancelled"
        r = client.post(url, json={"content": "Shorter, please.", "max_tokens": 4})
        assert r.status_code == 200


def test_32_concurrent_streaming_clients_all_finish(server, parley):
    async def one(client: httpx.AsyncClient, i: int) -> tuple[str, str]:
        body = {"messages": [{"role": "user", "content": f"Count to {i}."}], "max_tokens": 8, "stream": True,
                "temperature": 0.5, "seed": i}
        text, finish, done = "", None, False
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200, await response.aread()
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    continue
                chunk = json.loads(line[6:])
                choice = chunk["choices"][0]
                text += choice["delta"].get("content") or ""
                finish = choice["finish_reason"] or finish
        assert done
        return text, finish

    async def main():
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
            return await asyncio.gather(*(one(client, i) for i in range(32)))

    started = time.monotonic()
    results = asyncio.run(main())
    assert len(results) == 32
    assert all(finish in ("stop", "length") for _, finish in results)
    assert time.monotonic() - started < 90
    wait_idle(parley)
    assert server.state.gate.active == 0


def test_max_concurrent_is_a_429_naming_the_limit(parley):
    s = LiveServer(parley, ServerSettings(max_concurrent=1, max_tokens_cap=256))
    try:
        with httpx.Client(base_url=s.url, timeout=30) as client:
            hold = {"prompt": COUNT, "max_tokens": 256, "temperature": 0, "stream": True}
            with client.stream("POST", "/v1/completions", json=hold) as response:
                lines = response.iter_lines()
                read_events(lines, 2)
                r = client.post("/v1/chat/completions", json={**LONG, "stream": False, "max_tokens": 2})
                err = assert_error(r, 429, "max_concurrent")
                assert err["type"] == "rate_limit_error"
                assert r.headers["retry-after"] == "1"
                r = client.post("/generate", json={"inputs": "x", "parameters": {"max_new_tokens": 2}})
                assert_error(r, 429, "max_concurrent")
                assert r.json()["error_type"] == "overloaded"
                assert r.headers["retry-after"] == "1"
            wait_idle(parley)
            r = client.post("/v1/chat/completions", json={**LONG, "stream": False, "max_tokens": 2})
            assert r.status_code == 200
    finally:
        s.stop()
