"""Conversations over HTTP, kept in the store: the history and its KV cache stay on the server (the second turn
reuses the first turn's tokens), replies stream like chat completions, branches (retry, edit, continue from any
message), export / import, search, paging, busy conversations, limits, overflow."""

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


def send(client, cid: str, content: str, **body) -> dict:
    r = client.post(f"/v1/conversations/{cid}/messages", json={"content": content, **body})
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
    assert conv["system"] == system and conv["messages"] == [] and conv["title"] == "t"
    assert conv["defaults"]["temperature"] == 0 and conv["defaults"]["max_tokens"] == 8
    assert conv["defaults"]["stop"] == []

    r1 = send(client, cid, "Name a colour.")
    ext = r1["parley"]
    assert r1["object"] == "chat.completion" and ext["conversation_id"] == cid
    assert ext["message_id"].startswith("msg_") and ext["user_message_id"].startswith("msg_")
    assert r1["usage"]["completion_tokens"] <= 8
    text2, chunks = stream_reply(client, f"/v1/conversations/{cid}/messages", {"content": "Another one."})
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] in ("stop", "length")
    # the second turn's prompt starts with the first turn's prompt and reply: all of it came from the cache
    prompt1 = r1["usage"]["prompt_tokens"] + r1["usage"]["completion_tokens"]
    assert final["parley"]["cached_tokens"] >= prompt1 - 1
    assert final["parley"]["cache_note"] == "" and "note" not in final["parley"]

    view = client.get(f"/v1/conversations/{cid}").json()
    assert [m["role"] for m in view["messages"]] == ["user", "assistant", "user", "assistant"]
    assert view["messages"][1]["content"] == r1["choices"][0]["message"]["content"]
    assert view["messages"][3]["content"] == text2 and view["messages"][3]["id"] == view["leaf_id"]
    assert view["messages"][3]["stats"]["generated_tokens"] >= 1 and not view["messages"][3]["partial"]
    assert view["title"] == "t" and view["message_count"] == 4

    listed = client.get("/v1/conversations").json()["data"]
    assert cid in [c["id"] for c in listed] and "messages" not in listed[0]

    assert client.delete(f"/v1/conversations/{cid}").json() == {"id": cid, "object": "conversation.deleted",
                                                                  "deleted": True}
    assert_error(client.get(f"/v1/conversations/{cid}"), 404, cid)
    assert_error(client.post(f"/v1/conversations/{cid}/messages", json={"content": "hi"}), 404)


def test_branches_retry_edit_continue_export_import(client):
    """Retry twice and edit: siblings, every one kept; continue from the first reply; the exported tree
    imports as an identical tree (new ids)."""
    cid = create(client, system=f"Be brief. {fresh_prefix()}", temperature=0.9, seed=3, max_tokens=6)["id"]
    first = send(client, cid, "Invent a name for a cat.")
    user_id, reply1 = first["parley"]["user_message_id"], first["parley"]["message_id"]
    r2 = client.post(f"/v1/conversations/{cid}/retry", json={"seed": 4}).json()
    r3 = client.post(f"/v1/conversations/{cid}/retry", json={"message_id": reply1, "seed": 5}).json()
    for r in (r2, r3):
        assert r["parley"]["user_message_id"] == user_id  # siblings under the same user message
        assert r["parley"]["cached_tokens"] >= r["usage"]["prompt_tokens"] - 1  # the prompt's KV is reused
    tree = client.get(f"/v1/conversations/{cid}", params={"tree": True}).json()["messages"]
    replies = [m for m in tree if m["parent_id"] == user_id]
    assert [m["id"] for m in replies] == [reply1, r2["parley"]["message_id"], r3["parley"]["message_id"]]
    # continue from the first reply: a new branch; the leaf follows it
    cont = send(client, cid, "Now a dog.", parent_id=reply1)
    view = client.get(f"/v1/conversations/{cid}").json()
    assert [m["id"] for m in view["messages"]][:2] == [user_id, reply1]
    assert view["leaf_id"] == cont["parley"]["message_id"]
    assert cont["parley"]["cached_tokens"] >= first["usage"]["prompt_tokens"]  # the shared prefix's KV
    edited = client.post(f"/v1/conversations/{cid}/edit", json={"message_id": user_id,
                                                                "content": "Invent a name for a fish."}).json()
    tree = client.get(f"/v1/conversations/{cid}", params={"tree": True}).json()["messages"]
    roots = [m for m in tree if m["parent_id"] is None]
    assert [m["content"] for m in roots] == ["Invent a name for a cat.", "Invent a name for a fish."]
    assert edited["parley"]["user_message_id"] == roots[1]["id"]
    # switch back to a branch by its leaf
    back = client.patch(f"/v1/conversations/{cid}", json={"leaf_id": r2["parley"]["message_id"]}).json()
    assert [m["id"] for m in back["messages"]] == [user_id, r2["parley"]["message_id"]]

    exported = client.get(f"/v1/conversations/{cid}/export").json()
    assert exported["format"] == "parley.conversation" and len(exported["messages"]) == len(tree)
    imported = client.post("/v1/conversations/import", json=exported).json()
    assert imported["id"] != cid
    new_tree = client.get(f"/v1/conversations/{imported['id']}", params={"tree": True}).json()["messages"]

    def shape(msgs):
        by_id = {m["id"]: m for m in msgs}
        return sorted((m["role"], m["content"], by_id[m["parent_id"]]["content"] if m["parent_id"] else None)
                      for m in msgs)
    assert shape(new_tree) == shape(tree)
    assert [m["content"] for m in imported["messages"]] == [m["content"] for m in back["messages"]]

    forked = client.post(f"/v1/conversations/{cid}/fork", json={"at": reply1}).json()
    assert [m["content"] for m in forked["messages"]] == ["Invent a name for a cat.",
                                                          first["choices"][0]["message"]["content"]]


def test_search_and_paging(client):
    word = f"zebracorn{fresh_prefix().split()[1].strip(':').replace('-', '')}"
    ids = [create(client, temperature=0, max_tokens=2)["id"] for _ in range(3)]
    send(client, ids[1], f"Tell me about the {word} please.")
    hits = client.get("/v1/conversations", params={"q": word}).json()["data"]
    assert [h["conversation_id"] for h in hits] == [ids[1]] and f"[{word}]" in hits[0]["snippet"]
    page = client.get("/v1/conversations", params={"limit": 2}).json()
    assert len(page["data"]) == 2 and page["has_more"]
    nxt = client.get("/v1/conversations", params={"limit": 2, "before": page["next_before"]}).json()
    assert not {c["id"] for c in page["data"]} & {c["id"] for c in nxt["data"]}


def test_overrides_and_stop(client):
    cid = create(client, temperature=0, max_tokens=16)["id"]
    r = send(client, cid, "Count from one to ten in words.", max_tokens=3)
    assert r["usage"]["completion_tokens"] <= 3
    r = client.post(f"/v1/conversations/{cid}/retry", json={"stop": ["o"], "max_tokens": 16}).json()
    assert "o" not in r["choices"][0]["message"]["content"]
    view = client.get(f"/v1/conversations/{cid}").json()
    assert "o" not in view["messages"][-1]["content"]  # stored as streamed: the stop string never appears


def test_patch(client):
    cid = create(client, temperature=0)["id"]
    out = client.patch(f"/v1/conversations/{cid}", json={"title": "Renamed", "system": "Be kind.",
                                                         "defaults": {"max_tokens": 5}}).json()
    assert (out["title"], out["system"], out["defaults"]["max_tokens"], out["defaults"]["temperature"]) == \
        ("Renamed", "Be kind.", 5, 0)
    assert_error(client.patch(f"/v1/conversations/{cid}", json={"title": "x" * 100_000}), 400, "title")
    assert client.get(f"/v1/conversations/{cid}").json()["title"] == "Renamed"  # nothing written
    assert_error(client.patch(f"/v1/conversations/{cid}", json={"leaf_id": "msg_nope"}), 404, "msg_nope")


def test_bad_requests(client):
    assert_error(client.post("/v1/conversations", json={"persona": "pirate"}), 400, "unknown persona 'pirate'")
    assert_error(client.post("/v1/conversations", json={"overflow": "rotate"}), 400, "overflow")
    assert_error(client.post("/v1/conversations", json={"temperature": 9}), 400, "temperature")
    cid = create(client)["id"]
    other = create(client)["id"]
    assert_error(client.post(f"/v1/conversations/{cid}/messages", json={"content": "  "}), 400, "empty")
    assert_error(client.post(f"/v1/conversations/{cid}/messages", json={}), 400, "content is required")
    assert_error(client.post(f"/v1/conversations/{cid}/retry", json={}), 400, "no user message")
    reply = send(client, other, "hi", max_tokens=2)["parley"]["message_id"]
    assert_error(client.post(f"/v1/conversations/{cid}/messages", json={"content": "x", "parent_id": reply}),
                 400, "another conversation")
    assert_error(client.post(f"/v1/conversations/{cid}/messages", json={"content": "x", "parent_id": "msg_x"}),
                 404, "msg_x")
    assert_error(client.post(f"/v1/conversations/{cid}/messages",
                             json={"content": "x", "skill": "juggle"}), 400, "unknown skill 'juggle'; known:")
    assert_error(client.post("/v1/conversations/import", json={"format": "x"}), 400, "format")
    assert_error(client.post("/v1/conversations", json={"title": "t" * 100_000}), 400, "title")
    assert client.get(f"/v1/conversations/{cid}").json()["message_count"] == 0  # nothing was written


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


def test_skill_wraps_only_the_new_message(client):
    cid = create(client, temperature=0, max_tokens=8)["id"]
    first = send(client, cid, "Good morning.", skill="translate", skill_params={"to": "German"})
    second = send(client, cid, "And good night.")
    # the first turn's prompt and reply are reused as they were: the wrapper did not change the history
    assert second["parley"]["cached_tokens"] >= first["usage"]["prompt_tokens"] + \
        first["usage"]["completion_tokens"] - 1
    view = client.get(f"/v1/conversations/{cid}").json()
    user = view["messages"][0]
    assert user["content"] == "Good morning." and user["meta"]["skill"] == "translate"
    assert user["meta"]["skill_params"] == {"to": "German"}
    err = assert_error(client.post(f"/v1/conversations/{cid}/messages",
                                   json={"content": "x", "skill": "translate"}), 400, "to")
    assert err["param"] == "skill_params"


def test_overflow_policies(small_server, parley):
    """small_server: max_prompt_tokens=64."""
    with httpx.Client(base_url=small_server.url, timeout=60) as client:
        strict = create(client, system="Be brief.", overflow="error", temperature=0)["id"]
        rolling = create(client, system="Be brief.", temperature=0)["id"]
        line = "Here is a fairly long message about nothing in particular."
        for _ in range(3):
            r = client.post(f"/v1/conversations/{rolling}/messages", json={"content": line})
            assert r.status_code == 200, r.text
        ext = r.json()["parley"]
        assert ext["dropped_messages"] > 0 and "outside the window" in ext["note"]
        view = client.get(f"/v1/conversations/{rolling}").json()
        assert view["system"] == "Be brief." and len(view["messages"]) == 6  # stored whole; the prompt windows
        for _ in range(6):
            r = client.post(f"/v1/conversations/{strict}/messages", json={"content": line})
            if r.status_code != 200:
                break
        assert_error(r, 400, "tokens too many")
        assert r.json()["error"]["code"] == "context_length_exceeded"
        r = client.post(f"/v1/conversations/{strict}/messages", json={"content": line, "truncate": True})
        assert r.status_code == 200 and r.json()["parley"]["dropped_messages"] > 0


def exported(conversation: dict, messages: list | None = None) -> dict:
    return {"format": "parley.conversation", "version": 1, "conversation": {"title": "imported", **conversation},
            "messages": messages if messages is not None else [
                {"id": "m1", "parent_id": None, "role": "user", "content": "Hi."},
                {"id": "m2", "parent_id": "m1", "role": "assistant", "content": "Hello."}]}


@pytest.mark.parametrize("conversation,messages,field", [
    ({"settings": {"persona": "x"}}, None, "conversation.settings.persona"),
    ({"settings": {"persona": {"name": "x", "card": {"spec": "chara_card_v2"}}}}, None,
     "conversation.settings.persona.card"),
    ({"defaults": {"stop": 5}}, None, "conversation.defaults.stop"),
    ({"defaults": {"stop": "abc"}}, None, "conversation.defaults.stop"),
    ({"defaults": {"temperature": "hot"}}, None, "conversation.defaults.temperature"),
    ({"settings": {"max_messages": "x"}}, None, "conversation.settings.max_messages"),
    ({"settings": {"max_messages": 10**12}}, None, "conversation.settings.max_messages"),
    ({"settings": {"overflow": "sideways"}}, None, "conversation.settings.overflow"),
    ({"settings": {"documents": ["doc_elsewhere"]}}, None, "conversation.settings.documents[0]"),
    ({}, [{"id": "m1", "role": "user", "content": "Hi.", "created": float("nan")}], "messages[0].created"),
])
def test_a_bad_import_is_a_400_naming_the_field_and_writes_nothing(client, parley_home, conversation, messages,
                                                                     field):
    """An import used to write the row first and check its settings after: a 500, a row that broke every
    listing from then on, or a conversation whose every message was a 500 (and "abc" became three stop
    strings). Every field is checked first; nothing is written unless all of it is good."""
    before = client.get("/v1/conversations", params={"limit": 200}).json()["data"]
    body = json.dumps(exported(conversation, messages), allow_nan=True)
    r = client.post("/v1/conversations/import", content=body, headers={"Content-Type": "application/json"})
    err = assert_error(r, 400, field)
    assert err["param"] == field
    assert parley_home not in err["message"]                     # never the store's path
    listing = client.get("/v1/conversations", params={"limit": 200})
    assert listing.status_code == 200 and listing.json()["data"] == before


def test_a_stored_row_that_does_not_read_is_listed_marked_and_can_be_fixed(client, parley):
    """A row written by hand (or an older parley) whose settings do not read never breaks a listing: it is
    listed with the problem named, its turns are refused (409) until a PATCH fixes the field."""
    row = parley.store.create_conversation(settings={"overflow": "truncate", "max_messages": "x"},
                                           defaults={"temperature": 0, "max_tokens": 4})
    try:
        listing = client.get("/v1/conversations", params={"limit": 200})
        assert listing.status_code == 200, listing.text
        mine = next(c for c in listing.json()["data"] if c["id"] == row.id)
        assert "max_messages" in mine["problem"]
        assert "max_messages" in client.get(f"/v1/conversations/{row.id}").json()["problem"]
        err = assert_error(client.post(f"/v1/conversations/{row.id}/messages", json={"content": "Hi."}), 409,
                           "max_messages", "PATCH")
        assert err["code"] == "conversation_invalid"
        kept = client.patch(f"/v1/conversations/{row.id}", json={"defaults": {"max_tokens": 6}})
        assert kept.status_code == 200 and kept.json()["defaults"]["temperature"] == 0   # the rest stays stored
        fixed = client.patch(f"/v1/conversations/{row.id}", json={"max_messages": 4})
        assert fixed.status_code == 200 and "problem" not in fixed.json() and fixed.json()["max_messages"] == 4
        assert send(client, row.id, "Hi.")["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        client.delete(f"/v1/conversations/{row.id}")


def test_max_messages_has_an_upper_bound(client):
    assert_error(client.post("/v1/conversations", json={"max_messages": 10**9}), 400, "max_messages", "100000")
    cid = create(client)["id"]
    assert_error(client.patch(f"/v1/conversations/{cid}", json={"max_messages": 10**9}), 400, "max_messages")
