"""Helpers for the server tests (imported by the test modules; fixtures live in conftest.py)."""

from __future__ import annotations

import itertools
import socket
import threading
import time

import httpx
import uvicorn

from parley.server import ServerSettings, create_app

API_KEY = "test-key-0123456789"
CORS_ORIGIN = "http://localhost:5173"  # the keyed server lets pages from here call it
_fresh = itertools.count(1)


class LiveServer:
    """create_app(...) served by uvicorn on 127.0.0.1:<free port> in a daemon thread."""

    def __init__(self, parley, settings: ServerSettings):
        self.parley = parley
        self.app = create_app(parley, settings)
        self.state = self.app.state.parley_server
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(256)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=2))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name=f"uvicorn-{self.port}")
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self._sock.close()


def fresh_prefix() -> str:
    """Text no earlier request started with: tests that compare generations put it first, then warm() the whole
    prompt once, so every compared request forks the same cached KV and prefills only its last token. Belt and
    braces for parley's deterministic mode, which currently breaks once every sequence id is in use (see the
    parley fixture in conftest.py): the comparisons then test the server, not the cache's history.
    """
    return f"Session {next(_fresh)}-{time.monotonic_ns() % 100_000}:"


def stats(parley) -> dict:
    return parley.scheduler.stats()


def wait_idle(parley, timeout: float = 10.0) -> dict:
    """Wait until the scheduler runs nothing; returns its stats."""
    deadline = time.monotonic() + timeout
    while True:
        s = stats(parley)
        if s["running"] == 0 and s["waiting"] == 0:
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"the scheduler is still busy: {s}")
        time.sleep(0.01)


def assert_error(response: httpx.Response, status: int | tuple[int, ...], *words: str) -> dict:
    """An OpenAI-shaped error with the status, whose message names each of `words`."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}, body
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    for w in words:
        assert w in message, (w, message)
    return body["error"]


def pick_stop(text: str) -> str:
    """A stop string from the middle of `text`, spanning a word boundary, such that the text before it does not
    end with any beginning of it (so a leaked partial stop string would show)."""
    for start in range(len(text) // 3, len(text) - 6):
        stop = text[start:start + 6]
        if " " in stop.strip() and not leaks(text[: text.index(stop)], stop):
            return stop
    raise AssertionError(f"no usable stop string in {text!r}")


def leaks(text: str, stop: str) -> bool:
    """The stop string, or any beginning of it at the end of `text`."""
    return stop in text or any(text.endswith(stop[:k]) for k in range(1, len(stop) + 1))


def warm(url: str, *, messages: list[dict] | None = None, prompt: str | None = None) -> None:
    """Compute (and cache) a prompt's KV with a one-token request (see fresh_prefix)."""
    if messages is not None:
        body = {"messages": messages, "max_tokens": 1, "temperature": 0}
        r = httpx.post(url + "/v1/chat/completions", json=body, timeout=60)
    else:
        r = httpx.post(url + "/v1/completions", json={"prompt": prompt, "max_tokens": 1}, timeout=60)
    r.raise_for_status()
