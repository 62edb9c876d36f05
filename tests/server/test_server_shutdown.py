"""Graceful stop of `parley serve` (a subprocess, as users run it). SIGTERM while 8 streams and a waiting
request run: new requests get 503 naming the shutdown, running replies are ended after the grace period with
finish_reason "cancelled" and their proper last event (the closing chunk and `data: [DONE]`; JSON for the
waiting one, never a plain-text 500), the KV cache is saved, the process exits on its own, and its log holds no
traceback."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time

import httpx
import pytest
from srvutil import start_serve

GRACE = 2.0
STREAMS = 8
# ignore_eos and 1,500 tokens: none of these replies can end by itself within the grace period
COUNT = "Continue counting: 1, 2, 3, 4, 5, 6, 7, 8,"
BODY = {"messages": [{"role": "user", "content": COUNT}], "max_tokens": 1500, "temperature": 0, "ignore_eos": True}


class StreamReader(threading.Thread):
    """One streaming chat request, read to its end; `started` is set once two events came."""

    def __init__(self, url: str, i: int):
        super().__init__(daemon=True)
        self.url, self.i = url, i
        self.events: list[str] = []
        self.error: BaseException | None = None
        self.started = threading.Event()

    def run(self) -> None:
        body = {**BODY, "stream": True, "messages": [{"role": "user", "content": f"{COUNT} (list {self.i})"}]}
        try:
            with httpx.stream("POST", self.url + "/v1/chat/completions", json=body, timeout=120) as r:
                assert r.status_code == 200, r.read()
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(line[6:])
                        if len(self.events) >= 2:
                            self.started.set()
        except BaseException as e:  # a broken chunked read is what this test is about
            self.error = e
        finally:
            self.started.set()


class Waiter(threading.Thread):
    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.response: httpx.Response | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            body = {"prompt": f"{COUNT} (waiting)", "max_tokens": 1500, "temperature": 0, "ignore_eos": True}
            self.response = httpx.post(self.url + "/v1/completions", json=body, timeout=120)
        except BaseException as e:
            self.error = e


def generating(url: str) -> int:
    for line in httpx.get(url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("parley_http_requests_generating "):
            return int(float(line.split()[1]))
    raise AssertionError("no parley_http_requests_generating in /metrics")


def test_sigterm_lets_replies_end_properly(tmp_path):
    proc, url = start_serve(tmp_path, "--disk-cache-mb", "64", "--shutdown-grace", str(GRACE),
                            "--max-running", str(STREAMS + 1))
    try:
        streams = [StreamReader(url, i) for i in range(STREAMS)]
        for s in streams:
            s.start()
        for s in streams:
            assert s.started.wait(90), "a stream never started"
        waiter = Waiter(url)
        waiter.start()
        deadline = time.monotonic() + 30
        while generating(url) < STREAMS + 1:
            assert time.monotonic() < deadline, "the waiting request never started generating"
            time.sleep(0.05)
        assert all(s.error is None for s in streams), [s.error for s in streams]

        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = httpx.post(url + "/v1/chat/completions", json={**BODY, "max_tokens": 2}, timeout=30)
        assert refused.status_code == 503, refused.text
        err = refused.json()["error"]
        assert err["code"] == "shutting_down" and "shutting down" in err["message"] and "SIGTERM" in err["message"]
        assert httpx.get(url + "/health", timeout=30).status_code == 503

        for t in (*streams, waiter):
            t.join(60)
            assert not t.is_alive(), "a reply never ended"
        out, log = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()

    for s in streams:
        assert s.error is None, f"stream {s.i} broke: {s.error!r}"
        assert s.events[-1] == "[DONE]", s.events[-3:]
        closing = json.loads(s.events[-2])
        assert closing["choices"][0]["finish_reason"] == "cancelled", closing
        assert "shut down" in closing["parley"]["note"] and "shutdown_grace" in closing["parley"]["note"]
    assert waiter.error is None, repr(waiter.error)
    r = waiter.response
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json"), r.text
    assert r.json()["choices"][0]["finish_reason"] == "cancelled"
    assert r.json()["usage"]["completion_tokens"] > 0  # what was generated before the end is kept

    assert proc.returncode == 0, log
    assert took < GRACE + 30, f"exit took {took:.1f} s after SIGTERM"
    assert "Traceback" not in log and "CancelledError" not in log, log
    assert "saving the KV cache" in log
    assert any(p.is_file() for p in (tmp_path / "kv").rglob("*")), f"no KV state saved: {log}"


def test_second_signal_ends_the_grace_period_at_once(tmp_path):
    proc, url = start_serve(tmp_path, "--disk-cache-mb", "0", "--shutdown-grace", "600")
    try:
        stream = StreamReader(url, 99)
        stream.start()
        assert stream.started.wait(90)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert stream.is_alive(), "the stream ended before its 600 s grace period"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        stream.join(60)
        out, log = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("parley serve did not stop on a second Ctrl-C")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert stream.error is None and stream.events[-1] == "[DONE]"
    assert json.loads(stream.events[-2])["choices"][0]["finish_reason"] == "cancelled"
    assert proc.returncode == 0 and took < 30, (took, log)
    assert "Traceback" not in log, log
