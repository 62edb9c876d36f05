"""Conversations that outlive the process, with a real `parley serve` and a real SQLite file in a temporary
PARLEY_HOME: a restart continues a conversation with its KV from the disk tier; a SIGKILL mid-reply leaves every
committed message in place and the interrupted reply marked partial; a store that cannot be opened is one line."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import httpx
from srvutil import parley_command, start_serve

FLAGS = ("--disk-cache-mb", "256", "--kv-size", "4096", "--temperature", "0")


def post(url: str, path: str, body: dict) -> dict:
    r = httpx.post(url + path, json=body, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()


def stop(proc) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 0


def test_restart_continues_with_the_kv_from_disk(tmp_path):
    proc, url = start_serve(tmp_path, *FLAGS)
    try:
        system = "You are a patient teacher. " + "Explain every step with care. " * 20
        cid = post(url, "/v1/conversations", {"system": system, "max_tokens": 12})["id"]
        first = post(url, f"/v1/conversations/{cid}/messages", {"content": "What is a prime number?"})
        post(url, f"/v1/conversations/{cid}/messages", {"content": "Give an example."})
    finally:
        stop(proc)  # the idle conversation's KV goes to the disk tier
    proc, url = start_serve(tmp_path, *FLAGS)
    try:
        view = httpx.get(url + f"/v1/conversations/{cid}", timeout=30).json()
        assert [m["role"] for m in view["messages"]] == ["user", "assistant", "user", "assistant"]
        assert view["messages"][1]["content"] == first["choices"][0]["message"]["content"]
        nxt = post(url, f"/v1/conversations/{cid}/messages", {"content": "And another one?"})
        usage, ext = nxt["usage"], nxt["parley"]
        # everything but the new message (a dozen tokens with its markup) came back from disk: the exact tokens
        # the KV was saved under
        assert usage["prompt_tokens_details"]["cached_tokens"] >= usage["prompt_tokens"] - 16, nxt
        assert ext["cache_source"] == "disk", ext
    finally:
        stop(proc)


def test_sigkill_mid_reply_keeps_what_was_committed(tmp_path):
    proc, url = start_serve(tmp_path, *FLAGS)
    try:
        cid = post(url, "/v1/conversations", {"system": "You are verbose."})["id"]
        done = post(url, f"/v1/conversations/{cid}/messages", {"content": "Hello.", "max_tokens": 4})
        with httpx.stream("POST", url + f"/v1/conversations/{cid}/messages", timeout=60,
                          json={"content": "Tell me a very long story.", "stream": True, "max_tokens": 4000,
                                "ignore_eos": True}) as r:
            first = None
            for line in r.iter_lines():
                if line.startswith("data: ") and '"content"' in line and first is None:
                    first = time.monotonic()
                if first is not None and time.monotonic() - first > 2.5:  # the text so far was saved (every 1 s)
                    proc.kill()
                    break
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    db = sqlite3.connect(tmp_path / "parley.db")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    proc, url = start_serve(tmp_path, *FLAGS)
    try:
        view = httpx.get(url + f"/v1/conversations/{cid}", timeout=30).json()
        msgs = view["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
        assert msgs[1]["content"] == done["choices"][0]["message"]["content"] and not msgs[1]["partial"]
        assert msgs[2]["content"] == "Tell me a very long story."
        cut = msgs[3]
        assert cut["partial"] and cut["finish_reason"] == "cancelled" and cut["content"], cut
        again = post(url, f"/v1/conversations/{cid}/messages", {"content": "Go on.", "max_tokens": 4})
        assert again["choices"][0]["finish_reason"] in ("stop", "length")
    finally:
        stop(proc)


def test_a_store_that_cannot_be_opened_is_one_line(tmp_path):
    (tmp_path / "parley.db").write_text("not a database, just a text file that happens to be here\n" * 50)
    out = subprocess.run([*parley_command(), "serve", "--port", "0", "-t", "1", "--disk-cache-mb", "0"],
                         env={**os.environ, "PARLEY_HOME": str(tmp_path)}, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(tmp_path / "parley.db") in lines[0] and "Traceback" not in out.stderr


def test_two_front_ends_share_one_postgresql_store(tmp_path, pg_url):
    """Two `parley serve` processes on one PostgreSQL database (each its own PARLEY_HOME and KV): a conversation
    made through one is listed and continued through the other, and while one writes its reply the other
    refuses a second writer with the same 409, decided by the database."""
    a, url_a = start_serve(tmp_path / "a", *FLAGS, "--db-url", pg_url)
    b, url_b = start_serve(tmp_path / "b", *FLAGS, env={"PARLEY_DB_URL": pg_url})
    try:
        cid = post(url_a, "/v1/conversations", {"max_tokens": 8})["id"]
        assert cid in [c["id"] for c in httpx.get(url_b + "/v1/conversations").json()["data"]]
        path = f"/v1/conversations/{cid}/messages"
        with httpx.stream("POST", url_a + path, json={"content": "Count: 1, 2, 3, 4,", "stream": True,
                                                      "max_tokens": 200}, timeout=120) as r:
            lines = r.iter_lines()
            next(lines)
            busy = httpx.post(url_b + path, json={"content": "hello"}, timeout=60)
            assert busy.status_code == 409, busy.text
            err = busy.json()["error"]
            assert "another parley" in err["message"] and err["param"] == "conversation_id"
            for _ in lines:
                pass
        second = post(url_b, path, {"content": "And then?"})        # free again, and the history is shared
        assert second["parley"]["message_id"]
        msgs = httpx.get(url_a + f"/v1/conversations/{cid}").json()["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
        # personas live in the shared store too: imported through one, listed and served by the other
        card = {"name": "Ada Shared", "description": "A kind engineer.", "first_mes": "Hello there."}
        assert post(url_a, "/v1/personas", card)["name"] == "ada-shared"
        assert "ada-shared" in [p["name"] for p in httpx.get(url_b + "/v1/personas").json()["data"]]
        again = httpx.post(url_b + "/v1/personas", json=card, timeout=60)
        assert again.status_code in (400, 409) and "exists" in again.json()["error"]["message"]
        conv = post(url_b, "/v1/conversations", {"persona": "ada-shared", "max_tokens": 4})
        assert httpx.get(url_a + f"/v1/conversations/{conv['id']}").json()["messages"][0]["content"] == "Hello there."
    finally:
        stop(a)
        stop(b)
