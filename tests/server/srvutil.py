"""Helpers for the server tests (imported by the test modules; fixtures live in conftest.py)."""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from parley.server import ServerSettings, create_app
from parley.server.lifecycle import make_server

API_KEY = "test-key-0123456789"
CORS_ORIGIN = "http://localhost:5173"  # the keyed server lets pages from here call it
_fresh = itertools.count(1)


class LiveServer:
    """create_app(...) served on 127.0.0.1:<free port> in a daemon thread, as `parley serve` serves it
    (server/lifecycle.py: the same connection limits and timeouts). `app`: one the test built with create_app
    and changed (a route or middleware of its own) before it is served."""

    def __init__(self, parley, settings: ServerSettings, app=None):
        self.parley = parley
        self.app = app or create_app(parley, settings)
        self.state = self.app.state.parley_server
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        sock.listen(256)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = make_server(self.app, settings, log_level="warning", lifespan="on",
                                  timeout_graceful_shutdown=2)
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
        if s.running == 0 and s.waiting == 0:
            return s
        if time.monotonic() > deadline:
            raise AssertionError(f"the scheduler is still busy: {s}")
        time.sleep(0.01)


def assert_error(response: httpx.Response, status: int | tuple[int, ...], *words: str) -> dict:
    """An error with the status, whose message names each of `words`: the OpenAI shape, or on Ollama's routes
    (/api/...) Ollama's `{"error": message}` with type, param and code beside it. Returns it as the OpenAI
    shape's inner object."""
    statuses = (status,) if isinstance(status, int) else status
    assert response.status_code in statuses, (response.status_code, response.text)
    body = response.json()
    err = body["error"]
    if isinstance(err, str):
        assert response.request.url.path.startswith("/api/"), body
        err = {"message": err, **{k: body[k] for k in ("type", "param", "code")}}
    assert set(err) >= {"message", "type", "param", "code"}, body
    message = err["message"]
    assert isinstance(message, str) and message
    for w in words:
        assert w in message, (w, message)
    return err


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


# ---- `parley serve` as a subprocess ------------------------------------------------------------------------
# Until the core's `parley bench` lands, parley.cli.main cannot import it: stand in an empty `bench` module so
# the real `parley` entry point (main -> serve) runs.
_SHIM = """
import sys, types
import parley.cli
bench = types.ModuleType("parley.cli.bench")
bench.add_parser = lambda sub: None
sys.modules["parley.cli.bench"] = parley.cli.bench = bench
from parley.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def parley_command() -> list[str]:
    if importlib.util.find_spec("parley.cli.bench") is None:
        return [sys.executable, "-c", _SHIM]
    script = Path(sys.executable).parent / "parley"
    return [str(script)] if script.exists() else [shutil.which("parley") or "parley"]


def start_serve(home, *flags: str, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`parley serve --port 0 -t 1 FLAGS` with PARLEY_HOME=home; returns the process and its URL (from the line
    it prints once it listens)."""
    cmd = [*parley_command(), "serve", "--port", "0", "-t", "1", *flags]
    proc = subprocess.Popen(cmd, env={**os.environ, "PARLEY_HOME": str(home), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timer = threading.Timer(90, proc.kill)
    timer.start()
    try:
        line = proc.stdout.readline()
    finally:
        timer.cancel()
    m = re.search(r"serving (\S+) on (http://127\.0\.0\.1:\d+) \(OpenAI: \2/v1, TGI: \2/generate", line)
    if not m:
        proc.kill()
        raise AssertionError(f"no URL line: {line!r} {proc.stderr.read()}")
    return proc, m.group(2)


# ---- raw sockets -------------------------------------------------------------------------------------------
def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def drip_until_closed(sock: socket.socket, data: bytes, *, every: float = 0.2, within: float = 10.0) -> bytes | None:
    """Send `data` one byte every `every` seconds (repeating it) until the server closes the connection; returns
    what the server sent before closing, or None if it was still open after `within` seconds."""
    received = b""
    deadline = time.monotonic() + within
    i = 0
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], every)
        if readable:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, OSError):
                return received
            if not chunk:
                return received
            received += chunk
            continue
        try:
            sock.sendall(data[i % len(data):i % len(data) + 1])
        except (BrokenPipeError, ConnectionResetError, OSError):
            return received
        i += 1
    return None
