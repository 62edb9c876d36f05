"""Documents over HTTP: upload (bytes, or a path under --docs-root), list, get, delete, ask (streamed and not)
with the sources named, conversations that pin a document, and the refusals (a traversal archive, binary data,
a path outside the root, a body over the documents' limit, a wrong content type)."""

from __future__ import annotations

import io
import json
import zipfile

import httpx
import pytest
from srvutil import LiveServer, assert_error

from parley.server import ServerSettings

TEXT = ("# Field notes\n\nThe expedition was led by Captain Ines Moreau.\n\nWe camped by the blue lake for "
        "three nights.\n")
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture(scope="module")
def docs_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs-root")
    (root / "notes.md").write_text(TEXT)
    return root


@pytest.fixture(scope="module")
def docs_server(parley, docs_root):
    s = LiveServer(parley, ServerSettings(max_tokens_cap=16, docs_root=str(docs_root)))
    yield s
    s.stop()


@pytest.fixture()
def client(docs_server):
    with httpx.Client(base_url=docs_server.url, timeout=120) as c:
        yield c


def upload(client, name: str, data: bytes) -> httpx.Response:
    return client.post("/v1/documents", params={"name": name}, content=data, headers=OCTET)


def test_upload_ask_list_delete(client):
    r = upload(client, "notes.md", TEXT.encode())
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["fits"] and doc["mode"] == "whole" and doc["parts"] == ["notes.md"] and doc["tokens"] > 20
    ask = client.post(f"/v1/documents/{doc['id']}/ask", json={"question": "Who led the expedition?"})
    assert ask.status_code == 200, ask.text
    body = ask.json()
    ext = body["parley"]
    assert ext["document_id"] == doc["id"] and ext["mode"] == "whole" and ext["sources"]
    assert "notes.md" in ext["sources"][0]["cite"]
    assert body["usage"]["prompt_tokens_details"]["cached_tokens"] >= doc["tokens"]  # read once, at upload
    chunks = []
    with client.stream("POST", f"/v1/documents/{doc['id']}/ask",
                       json={"question": "Where did they camp?", "stream": True}) as s:
        for line in s.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length") and chunks[-1]["parley"]["sources"]
    assert doc["id"] in [d["id"] for d in client.get("/v1/documents").json()["data"]]
    assert client.get(f"/v1/documents/{doc['id']}").json()["content_hash"] == doc["content_hash"]
    assert client.delete(f"/v1/documents/{doc['id']}").json()["deleted"] is True
    assert_error(client.get(f"/v1/documents/{doc['id']}"), 404, doc["id"])


def test_a_path_under_the_docs_root(client, docs_root):
    r = client.post("/v1/documents", json={"path": "notes.md"})
    assert r.status_code == 200, r.text
    assert r.json()["parts"] == ["notes.md"]
    assert_error(client.post("/v1/documents", json={"path": "../../etc/passwd"}), 400, "outside the documents root")


def test_a_conversation_pins_its_document(client):
    doc = upload(client, "notes.md", TEXT.encode()).json()
    conv = client.post("/v1/conversations", json={"document_ids": [doc["id"]], "temperature": 0,
                                                   "max_tokens": 8}).json()
    assert conv["document_ids"] == [doc["id"]]
    reply = client.post(f"/v1/conversations/{conv['id']}/messages", json={"content": "Who led it?"}).json()
    assert reply["usage"]["prompt_tokens_details"]["cached_tokens"] >= doc["tokens"] - 8
    assert_error(client.post("/v1/conversations", json={"document_ids": ["doc_nope"]}), 404, "doc_nope")


def test_refusals(client, parley):
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("../evil.txt", "escape")
    assert_error(upload(client, "evil.zip", bad.getvalue()), 400, "evil.zip", "..")
    assert_error(upload(client, "blob.bin", b"\x00\x01\x02" * 1000), 400, "blob.bin")
    assert_error(client.post("/v1/documents", params={"name": "x.txt"}, content=b"hello",
                             headers={"Content-Type": "text/plain"}), 400, "application/octet-stream")
    assert_error(client.post("/v1/documents", content=b"hello", headers=OCTET), 400, "name")
    assert_error(client.post("/v1/documents/doc_nope/ask", json={"question": "hi"}), 404, "doc_nope")
    assert_error(client.post("/v1/documents/doc_nope/ask", json={"question": "hi", "tempo": 1}), 400, "tempo")


def test_an_upload_over_the_documents_limit(parley):
    """The declared size alone refuses it (413 naming the limit), before a byte of the body is read."""
    from srvutil import connect

    big = parley.settings.documents.limits.max_total_bytes + 1
    s = LiveServer(parley, ServerSettings())
    try:
        sock = connect(s.url)
        host = s.url.removeprefix("http://")
        sock.sendall(f"POST /v1/documents?name=big.txt HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                     f"application/octet-stream\r\nContent-Length: {big}\r\n\r\nxxxx".encode())
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            answer += data
        sock.close()
        assert answer.startswith(b"HTTP/1.1 413") and b"docs_max_mb" in answer, answer[:400]
    finally:
        s.stop()


def test_a_pinned_document_is_not_deleted_until_no_conversation_pins_it(client):
    """Deleting a document a conversation pins used to break the conversation for good (every later message a
    404, nothing able to unpin it): the delete is refused by name, PATCH changes document_ids, then it goes."""
    doc = upload(client, "pinned.md", (TEXT + "\nThe camp was at the third lake.").encode()).json()
    conv = client.post("/v1/conversations", json={"document_ids": [doc["id"]], "temperature": 0,
                                                   "max_tokens": 4}).json()
    err = assert_error(client.delete(f"/v1/documents/{doc['id']}"), 409, conv["id"], "document_ids")
    assert err["code"] == "document_in_use" and err["param"] == "document_id"
    assert client.get(f"/v1/documents/{doc['id']}").status_code == 200          # still there
    ok = client.post(f"/v1/conversations/{conv['id']}/messages", json={"content": "Where was the camp?"})
    assert ok.status_code == 200, ok.text

    patched = client.patch(f"/v1/conversations/{conv['id']}", json={"document_ids": []})
    assert patched.status_code == 200, patched.text
    assert patched.json()["document_ids"] == []
    assert client.delete(f"/v1/documents/{doc['id']}").json()["deleted"] is True
    after = client.post(f"/v1/conversations/{conv['id']}/messages", json={"content": "And then?"})
    assert after.status_code == 200, after.text                                # goes on without it
    assert_error(client.patch(f"/v1/conversations/{conv['id']}", json={"document_ids": ["doc_gone"]}), 404,
                 "doc_gone")


def test_a_nul_byte_in_a_path_is_a_400_naming_path(client):
    err = assert_error(client.post("/v1/documents", json={"path": "notes\u0000.md"}), 400, "NUL")
    assert err["param"] == "path"
