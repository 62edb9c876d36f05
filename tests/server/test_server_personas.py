"""Personas and skills over HTTP: listing, reading, importing and exporting character cards (V2 JSON, V2 PNG, V3
PNG, made at test time), deleting, malformed cards as 400s naming the field, skills and their errors; and
transcript conversations on the base Gemma 3 270M, whose replies stop at a newline or at another character's
"Name:" without the stop text, streamed or not, with the speaker the client names."""

from __future__ import annotations

import base64
import json

import httpx
import pytest
from srvutil import LiveServer, assert_error

from parley.chat import cards
from parley.chat.personas import Persona, card_json, card_png, load_card
from parley.server import ServerSettings
from tests.conftest import SCENE_OTHERS as OTHERS
from tests.conftest import lighthouse_scene

SCENE = lighthouse_scene("Wren")   # not the bundled lighthouse persona's Maren


def card(name: str, **fields) -> Persona:
    return Persona(name=name, description=f"{{{{char}}}} runs the ferry; {{{{user}}}} is late. {name}.",
                   creator_notes="For the reader: never in a prompt.", first_message="Hurry, {{user}}!",
                   extensions={"depth_prompt": {"depth": 4, "prompt": "stay brief"}, "other_app": [1, None]},
                   **fields)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def test_bundled_personas_are_listed_and_shown(client):
    listed = client.get("/v1/personas").json()
    byname = {p["name"]: p for p in listed["data"]}
    assert {"lighthouse", "night-train", "tutor"} <= byname.keys() and listed["warnings"] == []
    lh = byname["lighthouse"]
    assert (lh["characters"], lh["format"], lh["bundled"], lh["user_name"]) == \
        (["Maren", "Tobias", "Ines"], "transcript", True, "Traveller")
    assert lh["greeting"].startswith("Shut the hatch") and byname["tutor"]["format"] == "template"
    full = client.get("/v1/personas/lighthouse").json()
    assert full["object"] == "persona" and "Maren, the keeper" in full["narrative"] and "{{" not in full["narrative"]
    assert "{{char}}" in full["description"] and [c["name"] for c in full["group"]] == ["Tobias", "Ines"]
    err = assert_error(client.get("/v1/personas/pirate"), 404, "unknown persona 'pirate'; known:", "lighthouse")
    assert err["param"] == "name"


def test_json_card_imports_exports_and_deletes(client):
    persona = card("Ferrywoman Ada", tags=("ferry",), character_version="2")
    sent = card_json(persona, "v2")
    r = client.post("/v1/personas", json=sent)
    assert r.status_code == 200, r.text
    made = r.json()
    name = made["name"]
    assert (name, made["character"], made["bundled"], made["origin"]) == ("ferrywoman-ada", "Ferrywoman Ada", False,
                                                                          "user")
    assert made["creator_notes"] == "For the reader: never in a prompt." and "reader" not in made["narrative"]
    assert made["narrative"] == "Ferrywoman Ada runs the ferry; User is late. Ferrywoman Ada."
    assert name in [p["name"] for p in client.get("/v1/personas").json()["data"]]
    assert_error(client.post("/v1/personas", json=sent), 400, "exists")
    assert client.post("/v1/personas?overwrite=true", json=sent).status_code == 200

    v2 = client.get(f"/v1/personas/{name}/card")
    assert v2.headers["content-type"] == "application/json" and name in v2.headers["content-disposition"]
    assert v2.json() == sent                                         # every field and extension, as sent
    v3 = client.get(f"/v1/personas/{name}/card", params={"spec": "v3"}).json()
    assert v3["spec"] == "chara_card_v3" and v3["data"]["extensions"] == sent["data"]["extensions"]
    png = client.get(f"/v1/personas/{name}/card", params={"png": "true"})
    assert png.headers["content-type"] == "image/png" and load_card(png.content) == persona
    assert_error(client.get(f"/v1/personas/{name}/card", params={"spec": "v9"}), 400, "spec")

    conv = client.post("/v1/conversations", json={"persona": name}).json()
    assert conv["persona"] == name and conv["messages"][0]["content"] == "Hurry, User!"
    assert client.delete(f"/v1/personas/{name}").json() == {"name": name, "object": "persona.deleted",
                                                            "deleted": True, "bundled_again": False}
    assert_error(client.get(f"/v1/personas/{name}"), 404, name)
    assert_error(client.delete("/v1/personas/lighthouse"), 400, "bundled with parley and cannot be deleted")


def test_png_cards_v2_and_v3_round_trip_keeping_their_image(client):
    image = cards.placeholder_png("a picture of the ferry")
    pixels = [c for c in cards.png_chunks(image, "x") if c.type == b"IDAT"]
    v2 = card("Ferryman Bo")
    r = client.post("/v1/personas", json={"card_base64": b64(card_png(v2, "v2", image)), "filename": "bo.png"})
    assert r.status_code == 200, r.text
    out = client.get(f"/v1/personas/{r.json()['name']}/card", params={"png": "true"}).content
    assert load_card(out) == v2 and [c for c in cards.png_chunks(out, "x") if c.type == b"IDAT"] == pixels

    v3 = card("Ferryman Cy", nickname="Cy", source=("https://example.invalid/cy",), creation_date=1700000000)
    r = client.post("/v1/personas", json={"card_base64": b64(card_png(v3, "v3", image)), "filename": "cy.png"})
    assert r.status_code == 200, r.text
    name = r.json()["name"]
    out = client.get(f"/v1/personas/{name}/card", params={"png": "true", "spec": "v3"}).content
    assert load_card(out) == v3 and load_card(out).nickname == "Cy"   # ccv3 read first: V3's fields are there
    assert client.get(f"/v1/personas/{name}/card", params={"spec": "v3"}).json()["data"]["nickname"] == "Cy"
    for n in ("ferryman-bo", name):
        client.delete(f"/v1/personas/{n}")


def _png_with(keyword: bytes, text: bytes) -> bytes:
    base = cards.placeholder_png("x")
    chunk = cards.png_chunk(b"tEXt", keyword + b"\0" + text)
    return base[:-12] + chunk + base[-12:]     # before IEND


@pytest.mark.parametrize("body, status, words, param", [
    ({"card_base64": "not base64!"}, 400, ["card_base64 is not valid base64"], "card_base64"),
    ({"card_base64": ""}, 400, ["card_base64 is empty"], "card_base64"),
    ({"card_base64": b64(cards.placeholder_png("x")), "filename": "plain.png"}, 400,
     ["plain.png holds no character card", "'ccv3' or 'chara'"], "card"),
    ({"card_base64": b64(_png_with(b"chara", b"%%%")), "filename": "bad.png"}, 400,
     ["bad.png: the tEXt chunk 'chara' is not valid base64"], "card"),
    ({"card_base64": b64(_png_with(b"chara", base64.b64encode(b"{nope"))), "filename": "j.png"}, 400,
     ["invalid JSON"], "card"),
    ({"card_base64": b64(cards.placeholder_png("x")[:40]), "filename": "cut.png"}, 400, ["truncated"], "card"),
    ({"spec": "chara_card_v2", "spec_version": "2.0", "data": {"description": "no name"}}, 400,
     ["the request body: data.name is missing"], "name"),
    ({"spec": "chara_card_v2", "data": {"name": 5}}, 400, ["data.name must be a string, got a number"], "data.name"),
    ({"spec": "chara_card_v9", "data": {"name": "x"}}, 400, ["spec 'chara_card_v9'", "chara_card_v3"], "spec"),
    ({"card_base64": "eA==", "colour": "red"}, 400, ["unknown field 'colour' beside card_base64"], "colour"),
    ({"card_base64": 7}, 400, ["card_base64 must be a string"], "card_base64"),
])
def test_malformed_cards_get_clear_400s(client, body, status, words, param):
    err = assert_error(client.post("/v1/personas", json=body), status, *words)
    assert err["param"] == param


def test_oversized_and_non_object_uploads(client, server):
    assert_error(client.post("/v1/personas", json=["a", "list"]), 400, "object")
    big = b64(cards.placeholder_png("x") + b"\0" * (3 << 20))    # past the server's 2 MiB body limit
    assert_error(client.post("/v1/personas", json={"card_base64": big}), 413, "max_body_bytes")


def test_skills_are_listed_with_their_params_and_errors_list_what_exists(client):
    listed = client.get("/v1/skills").json()
    byname = {s["name"]: s for s in listed["data"]}
    assert {"chat", "translate", "summarize", "rewrite-code"} <= byname.keys() and listed["warnings"] == []
    assert byname["translate"]["params"]["to"] == {"default": None, "required": True,
                                                   "description": byname["translate"]["params"]["to"]["description"]}
    assert byname["summarize"]["params"]["sentences"]["default"] == "2" and byname["translate"]["examples"]
    one = client.get("/v1/skills/translate").json()
    assert one["object"] == "skill" and "{to}" in one["template"] and one["origin"] == "bundled"
    assert_error(client.get("/v1/skills/juggle"), 404, "unknown skill 'juggle'; known: chat, explain-code")

    cid = client.post("/v1/conversations", json={"temperature": 0, "max_tokens": 4}).json()["id"]
    url = f"/v1/conversations/{cid}/messages"
    err = assert_error(client.post(url, json={"content": "Hallo", "skill": "translate"}), 400,
                       "needs the parameter 'to'", "its parameters: to (required)")
    assert err["param"] == "skill_params"
    assert_error(client.post(url, json={"content": "x", "skill": "juggle"}), 400, "known: chat, explain-code")
    r = client.post(url, json={"content": "The ferry was late again today.", "skill": "summarize",
                               "skill_params": {"sentences": "1"}})
    assert r.status_code == 200, r.text
    user = client.get(f"/v1/conversations/{cid}").json()["messages"][0]
    assert user["content"] == "The ferry was late again today." and user["meta"]["skill_params"] == {"sentences": "1"}


def test_a_skill_on_a_stateless_chat_completion_wraps_only_the_last_message(client, server):
    """`skill` on /v1/chat/completions: the same prompt as sending the wrapped text yourself, the history before
    it untouched; errors name the field and list what exists."""
    history = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."}]
    asked = {"model": "parley", "temperature": 0, "max_tokens": 6}
    r = client.post("/v1/chat/completions", json={**asked, "skill": "translate", "skill_params": {"to": "German"},
                                                  "messages": [*history, {"role": "user", "content": "Good night"}]})
    assert r.status_code == 200, r.text
    wrapped = server.parley.skills.get("translate").wrap("Good night", {"to": "German"})
    assert "German" in wrapped and "Good night" in wrapped
    same = client.post("/v1/chat/completions", json={**asked, "messages": [
        *history, {"role": "user", "content": wrapped}]}).json()
    assert r.json()["usage"]["prompt_tokens"] == same["usage"]["prompt_tokens"]
    assert r.json()["choices"][0]["message"]["content"] == same["choices"][0]["message"]["content"]

    msgs = [{"role": "user", "content": "x"}]
    assert_error(client.post("/v1/chat/completions", json={**asked, "messages": msgs, "skill": "juggle"}), 400,
                 "unknown skill 'juggle'", "known: chat, explain-code")
    err = assert_error(client.post("/v1/chat/completions", json={**asked, "messages": msgs, "skill": "translate"}),
                       400, "needs the parameter 'to'")
    assert err["param"] == "skill_params"
    err = assert_error(client.post("/v1/chat/completions", json={**asked, "messages": msgs,
                                                                 "skill_params": {"to": "German"}}), 400,
                       "skill_params needs a skill")
    assert err["param"] == "skill_params"
    err = assert_error(client.post("/v1/chat/completions", json={**asked, "skill": "proofread", "messages": [
        *history]}), 400, "must be the user's")
    assert err["param"] == "skill"


# ---- transcript conversations on the base model -----------------------------------------------------------
@pytest.fixture(scope="module")
def gemma_server(gemma):
    s = LiveServer(gemma, ServerSettings(max_tokens_cap=64))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def scene(gemma_server):
    with httpx.Client(base_url=gemma_server.url, timeout=120) as c:
        r = c.post("/v1/personas?overwrite=true", json=card_json(SCENE, "v2"))
        assert r.status_code == 200, r.text
        yield c, r.json()["name"]
        c.delete(f"/v1/personas/{r.json()['name']}")


def _conversation(c, name: str) -> str:
    r = c.post("/v1/conversations", json={"persona": name, "temperature": 0, "repeat_penalty": 1.0,
                                          "max_tokens": 40})
    assert r.status_code == 200, r.text
    return r.json()["id"]


def _streamed(c, url: str, body: dict) -> tuple[str, dict]:
    chunks = []
    with c.stream("POST", url, json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    text = "".join(ch["choices"][0]["delta"].get("content") or "" for ch in chunks if ch["choices"])
    return text, chunks[-1]


def test_transcript_replies_over_http_stop_and_never_show_the_stop_text(scene):
    c, name = scene
    stops = {}
    for i, q in enumerate(("Who lives here?", "Is there any soup?", "Can I sleep here?", "What was that noise?")):
        cid = _conversation(c, name)
        url = f"/v1/conversations/{cid}/messages"
        if i % 2:
            text, last = _streamed(c, url, {"content": q})
            ext, finish = last["parley"], last["choices"][0]["finish_reason"]
        else:
            body = c.post(url, json={"content": q}).json()
            text, ext, finish = body["choices"][0]["message"]["content"], body["parley"], \
                body["choices"][0]["finish_reason"]
        assert finish == "stop" and ext["stop_string"] in ("\n", *OTHERS), (q, text, ext)
        assert "\n" not in text and not any(n in text for n in OTHERS), (q, text)
        stored = c.get(f"/v1/conversations/{cid}").json()["messages"][-1]
        assert stored["content"] == text and stored["meta"]["speaker"] == "Wren"
        stops.setdefault(ext["stop_string"], q)
    assert "\n" in stops and set(stops) & set(OTHERS), stops     # both endings, streamed or not


def test_the_client_names_who_speaks_in_a_group_scene(scene):
    c, name = scene
    cid = _conversation(c, name)
    url = f"/v1/conversations/{cid}/messages"
    assert c.post(url, json={"content": "Who is cooking?", "speaker": "Ines"}).status_code == 200
    assert c.post(url, json={"content": "And you, Wren?"}).status_code == 200          # named in the message
    err = assert_error(c.post(url, json={"content": "Hello?", "speaker": "Bob"}), 400, "unknown speaker 'Bob'",
                       "Wren, Tobias, Ines")
    assert err["param"] == "speaker"
    said = [m["meta"]["speaker"] for m in c.get(f"/v1/conversations/{cid}").json()["messages"]
            if m["role"] == "assistant"]
    assert said == ["Ines", "Wren"]


def test_persona_longer_than_the_context_is_a_400(scene, gemma):
    c, _ = scene
    big = Persona(name="Archivist Dee", format="transcript", description="The archive holds " + "old letters and " * 2000)
    r = c.post("/v1/personas", json=card_json(big, "v2"))
    assert r.status_code == 200, r.text
    try:
        err = assert_error(c.post("/v1/conversations", json={"persona": r.json()["name"]}), 400,
                           "the persona and system prompt are", f"the context holds {gemma.context_size}")
        assert err["param"] == "persona" and err["code"] == "context_length_exceeded"
    finally:
        c.delete(f"/v1/personas/{r.json()['name']}")


def test_a_card_with_a_lone_surrogate_is_a_400(client):
    r = client.post("/v1/personas", content=b'{"name": "Eve \\ud800"}', headers={"content-type": "application/json"})
    assert_error(r, 400, "surrogate")
