"""Conversations over HTTP: the server keeps the history and its KV cache (the second turn reuses the first
turn's tokens), replies stream like chat completions, retry, busy conversations, limits, overflow."""

from __future__ import annotations

import json

import httpx
import pytest
from srvutil import assert_error, fresh_prefix


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def create(client, **body) -> dict:
    r = client.post("/v1/conversations", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def stream_reply(client, url: str, body: dict) -> tuple[str, list[dict]]:
    chunks = []
    with client.stream("POST", url, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    return text, chunks


def test_lifecycle_and_kv_reuse(client, parley):
    system = f"You are a terse assistant. {fresh_prefix()}"
    conv = create(client, system=system, temperature=0, max_tokens=8, title="t")
    cid = conv["id"]
    assert conv["system"] == system and conv["messages"][0]["role"] == "system"
    assert conv["defaults"]["temperature"] == 0 and conv["defaults"]["max_tokens"] == 8
    assert conv["defaults"]["stop"] == []

    r1 = client.post(f"/v1/conversations/{cid}/messages", json={"content": "Name a colour."}).json()
    assert r1["object"] == "chat.completion" and r1["parley"]["conversation_id"] == cid
    assert r1["usage"]["completion_tokens"] <= 8
    text2, chunks = stream_reply(client, f"/v1/conversations/{cid}/messages", {"content": "Another one."})
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    # the second turn's prompt starts with the first turn's prompt and reply: all of it came from the cache
    prompt1 = r1["usage"]["prompt_tokens"] + r1["usage"]["completion_tokens"]
    assert final["parley"]["cached_tokens"] >= prompt1 - 1
    assert final["parley"]["cache_note"] == ""

    view = client.get(f"/v1/conversations/{cid}").json()
    assert [m["role"] for m in view["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert view["messages"][2]["content"] == r1["choices"][0]["message"]["content"]
    assert view["messages"][4]["content"] == text2
    assert view["last_reply"]["usage"]["completion_tokens"] >= 1

    listed = client.get("/v1/conversations").json()["data"]
    assert cid in [c["id"] for c in listed] and "messages" not in listed[0]

    retried = client.post(f"/v1/conversations/{cid}/retry", json={}).json()
    assert retried["parley"]["cached_tokens"] >= retried["usage"]["prompt_tokens"] - 1
    view = client.get(f"/v1/conversations/{cid}").json()
    assert len(view["messages"]) == 5  # the last reply was replaced, not added
    assert view["messages"][4]["content"] == retried["choices"][0]["message"]["content"]

    assert client.delete(f"/v1/conversations/{cid}").json() == {"id": cid, "object": "conversation.deleted",
                                                                  "deleted": True}
    assert_error(client.get(f"/v1/conversations/{cid}"), 404, cid)
    assert_error(client.post(f"/v1/conversations/{cid}/messages", json={"content": "hi"}), 404)


def test_overrides_and_stop(client):
    cid = create(client, temperature=0, max_tokens=16)["id"]
    r = client.post(f"/v1/conversations/{cid}/messages", json={"content": "Count from one to ten in words.",
                                                                "max_tokens": 3}).json()
    assert r["usage"]["completion_tokens"] <= 3
    r = client.post(f"/v1/conversations/{cid}/retry", json={"stop": ["o"], "max_tokens": 16}).json()
    assert "o" not in r["choices"][0]["message"]["content"]


def test_bad_requests(client):
    assert_error(client.post("/v1/conversations", json={"persona": "pirate"}), 400, "unknown persona 'pirate'")
    assert_error(client.post("/v1/conversations", json={"skill": "translate"}), 400, "unknown skill")
    assert_error(client.post("/v1/conversations", json={"overflow": "rotate"}), 400, "overflow")
    assert_error(client.post("/v1/conversations", json={"temperature": 9}), 400, "temperature")
    cid = create(client)["id"]
    assert_error(client.post(f"/v1/conversations/{cid}/messages", json={"content": "  "}), 400, "empty")
    assert_error(client.post(f"/v1/conversations/{cid}/messages", json={}), 400, "content is required")
    assert_error(client.post(f"/v1/conversations/{cid}/retry", json={}), 400, "no user message")


def test_one_reply_at_a_time(client, server):
    cid = create(client, temperature=0)["id"]
    url = f"/v1/conversations/{cid}/messages"
    with client.stream("POST", url, json={"content": "Count: 1, 2, 3, 4,", "stream": True, "max_tokens": 200}) as r:
        lines = r.iter_lines()
        next(lines)
        busy = client.post(url, json={"content": "hello"})
        err = assert_error(busy, 409, "still generating")
        assert err["param"] == "conversation_id"
        assert client.get(f"/v1/conversations/{cid}").json()["generating"] is True


def test_overflow_policies(small_server, parley):
    """small_server: max_prompt_tokens=64, max_conversations=3."""
    with httpx.Client(base_url=small_server.url, timeout=60) as client:
        for c in client.get("/v1/conversations").json()["data"]:
            client.delete(f"/v1/conversations/{c['id']}")
        strict = create(client, system="Be brief.", overflow="error", temperature=0)["id"]
        rolling = create(client, system="Be brief.", temperature=0)["id"]
        line = "Here is a fairly long message about nothing in particular."
        for _ in range(3):
            r = client.post(f"/v1/conversations/{rolling}/messages", json={"content": line})
            assert r.status_code == 200, r.text
        ext = r.json()["parley"]
        assert ext["dropped_messages"] > 0 and "dropped" in ext["note"]
        view = client.get(f"/v1/conversations/{rolling}").json()
        assert view["messages"][0] == {"role": "system", "content": "Be brief."}  # the system prompt stays
        for _ in range(6):
            r = client.post(f"/v1/conversations/{strict}/messages", json={"content": line})
            if r.status_code != 200:
                break
        assert_error(r, 400, "tokens too many")
        assert r.json()["error"]["code"] == "context_length_exceeded"
        r = client.post(f"/v1/conversations/{strict}/messages", json={"content": line, "truncate": True})
        assert r.status_code == 200 and r.json()["parley"]["dropped_messages"] > 0
        create(client)
        err = assert_error(client.post("/v1/conversations", json={}), 400, "at most 3 conversations")
        assert "max_conversations" in err["message"]
