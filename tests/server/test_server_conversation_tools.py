"""Tools on the conversations API, on the real model: a stored conversation is an agent loop whose client sends
only the tool's result each round; calls are stored with the ids the client was shown, results name them, and
each round reads only its new tokens."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest
from srvutil import assert_error, fresh_prefix

ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two integers.",
    "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                   "required": ["a", "b"]}}}
FORCE = {"tools": [ADD], "tool_choice": {"type": "function", "function": {"name": "add"}}}


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=120) as c:
        yield c


def post(client, cid: str, path: str = "messages", **body) -> dict:
    r = client.post(f"/v1/conversations/{cid}/{path}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def conversation(client) -> str:
    r = client.post("/v1/conversations", json={"system": f"You are a calculator. Use the tool. {fresh_prefix()}",
                                               "temperature": 0, "max_tokens": 40})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def the_call(reply: dict) -> dict:
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "add"
    jsonschema.validate(json.loads(call["function"]["arguments"]), ADD["function"]["parameters"])
    return call


def test_an_agent_loop_sends_only_the_results_and_reads_only_them(client):
    cid = conversation(client)
    reply = post(client, cid, content="Add 1 and 2, then keep adding 3.", **FORCE)
    for round_ in range(3):
        call = the_call(reply)
        args = json.loads(call["function"]["arguments"])
        stored = client.get(f"/v1/conversations/{cid}").json()["messages"][-1]
        assert stored["role"] == "assistant" and stored["tool_calls"] == [call]    # the id the client saw
        assert stored["finish_reason"] == "tool_calls" and stored["id"] == reply["parley"]["message_id"]
        before = reply["usage"]
        reply = post(client, cid, role="tool", tool_call_id=call["id"],
                     content=json.dumps({"sum": args["a"] + args["b"]}), **FORCE)
        u = reply["usage"]
        # the previous prompt and the call the model wrote come from the cache, token for token (all but its last
        # token, which was sampled and never decoded); only the result and the markup around it are read (42 here)
        held = before["prompt_tokens"] + before["completion_tokens"] - 1
        assert u["prompt_tokens_details"]["cached_tokens"] >= held, (round_, u)
        assert u["prompt_tokens"] - u["prompt_tokens_details"]["cached_tokens"] <= 60, (round_, u)
    messages = client.get(f"/v1/conversations/{cid}").json()["messages"]
    assert [m["role"] for m in messages] == ["user"] + ["assistant", "tool"] * 3 + ["assistant"]
    assert all(m["tool_call_id"] == a["tool_calls"][0]["id"] for a, m in zip(messages[1::2], messages[2::2],
                                                                             strict=False))


def test_streamed_call_deltas_carry_the_stored_id(client):
    cid = conversation(client)
    deltas, finish = [], None
    with client.stream("POST", f"/v1/conversations/{cid}/messages",
                       json={"content": "Add 7 and 5.", "stream": True, **FORCE}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:])["choices"]:
                    deltas += choice["delta"].get("tool_calls") or []
                    finish = choice.get("finish_reason") or finish
    stored = client.get(f"/v1/conversations/{cid}").json()["messages"][-1]["tool_calls"][0]
    assert deltas[0]["id"] == stored["id"] and finish == "tool_calls"
    assert "".join(d["function"]["arguments"] for d in deltas) == stored["function"]["arguments"]


def test_auto_offers_the_tools_and_none_offers_nothing(client):
    cid = conversation(client)
    plain = post(client, cid, content="Say hi.", max_tokens=4)
    offered = post(client, cid, "retry", tools=[ADD], max_tokens=4)      # the same turn, the tool offered
    assert offered["usage"]["prompt_tokens"] > plain["usage"]["prompt_tokens"] + 40
    hidden = post(client, cid, "retry", tools=[ADD], tool_choice="none", max_tokens=4)
    assert hidden["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


def test_bad_tool_turns_name_the_field(client):
    cid = conversation(client)
    url = f"/v1/conversations/{cid}/messages"
    assert_error(client.post(url, json={"role": "tool", "content": "3"}), 400, "tool_call_id")
    assert_error(client.post(url, json={"content": "3", "tool_call_id": "call_x"}), 400, "role")
    assert_error(client.post(url, json={"role": "tool", "content": "3", "tool_call_id": "call_x"}), 400,
                 "call_x", "waiting: none")
    assert_error(client.post(url, json={"content": "Hi", "tools": [ADD],
                                        "response_format": {"type": "json_object"}}), 400, "response_format")
    assert_error(client.post(url, json={"content": "Hi", "tools": [{"type": "function", "function": {}}]}), 400,
                 "tools[0].function.name")
    assert client.get(f"/v1/conversations/{cid}").json()["messages"] == []      # nothing was stored
