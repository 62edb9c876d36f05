"""One request must not freeze the server: a body of 60,000 tiny messages is refused before it is validated or
rendered (max_messages), and a heavy request that is allowed (thousands of messages to truncate) builds its
prompt off the event loop, so /health keeps answering while it does."""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from srvutil import LiveServer, assert_error

from parley.server import ServerSettings

CHAT = "/v1/chat/completions"


def test_sixty_thousand_messages_are_refused_by_name(server):
    body = {"messages": [{"role": "user", "content": "x"}] * 60_000, "max_tokens": 1}
    data = json.dumps(body).encode()
    assert len(data) < server.state.settings.max_body_bytes  # under the body limit: the count is what refuses it
    r = httpx.post(server.url + CHAT, content=data, headers={"content-type": "application/json"}, timeout=60)
    err = assert_error(r, 400, "60000 messages", "max_messages", "--max-messages")
    assert err["param"] == "messages" and err["code"] == "too_many_messages"


@pytest.fixture(scope="module")
def short_prompts(parley):
    """Prompts of at most 256 tokens: the heavy request's cost is building and cutting it, not reading it."""
    s = LiveServer(parley, ServerSettings(max_prompt_tokens=256, max_tokens_cap=4))
    yield s
    s.stop()


def test_a_heavy_prompt_does_not_stall_health(short_prompts):
    """4,000 messages with truncate: the prompt is built and cut in a worker thread; /health answers meanwhile."""
    server = short_prompts
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} " * 20} for i in range(3999)]
    body = {"messages": turns, "max_tokens": 1, "temperature": 0, "truncate": True}
    done = threading.Event()
    outcome: dict = {}

    def heavy() -> None:
        outcome["start"] = time.monotonic()
        try:
            outcome["response"] = httpx.post(server.url + CHAT, json=body, timeout=300)
        except BaseException as e:
            outcome["error"] = e
        finally:
            outcome["end"] = time.monotonic()
            done.set()

    answered: list[float] = []
    thread = threading.Thread(target=heavy, daemon=True)
    thread.start()
    with httpx.Client(base_url=server.url, timeout=60) as client:
        while not done.is_set():
            assert client.get("/health").status_code == 200
            answered.append(time.monotonic())
            time.sleep(0.02)
    thread.join(10)
    assert "error" not in outcome, outcome.get("error")
    r = outcome["response"]
    assert r.status_code == 200, r.text
    assert r.json()["parley"]["dropped_messages"] > 0
    # answers that came once the heavy request had surely reached the server (it takes a second or more to
    # build and cut; on the event loop, that second was one long stall)
    during = [t for t in answered if outcome["start"] + 0.3 < t < outcome["end"]]
    took = outcome["end"] - outcome["start"]
    assert len(during) >= 3, f"/health answered {len(during)} times during the {took:.1f} s heavy request"
