"""Slow clients cannot hold connections: raw sockets that drip their headers or body one byte at a time, or send
nothing, are closed after header_timeout / body_timeout (408 when a request had begun), even forty at once
while the server keeps answering; a connection past max_connections gets 503 and is closed."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from srvutil import LiveServer, connect, drip_until_closed

from parley.errors import InvalidRequest
from parley.server import ServerSettings

HEAD = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"


@pytest.fixture(scope="module")
def slow_guard(parley):
    """Short timeouts (1 s), room for many connections."""
    s = LiveServer(parley, ServerSettings(header_timeout=1, body_timeout=1))
    yield s
    s.stop()


def error_of(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


def test_dripped_headers_are_cut_off(slow_guard):
    with connect(slow_guard.url) as sock:
        sock.sendall(HEAD)
        got = drip_until_closed(sock, b"X-Slow: yes\r\n")
    assert got is not None, "a client dripping its headers was never disconnected"
    status, err = error_of(got)
    assert status == 408 and "header_timeout" in err["message"] and "--header-timeout" in err["message"]


def test_a_silent_connection_is_closed(slow_guard):
    with connect(slow_guard.url) as sock:
        sock.settimeout(10)
        started = time.monotonic()
        assert sock.recv(100) == b""  # closed without a word: no request ever began
        assert time.monotonic() - started < 9


def test_dripping_the_next_request_on_a_kept_alive_connection(slow_guard):
    with connect(slow_guard.url) as sock:
        sock.sendall(HEAD + b"\r\n")
        first = b""
        while b"\r\n\r\n" not in first or not first.endswith(b"}"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200")
        got = drip_until_closed(sock, HEAD)
    assert got is not None and got.startswith(b"HTTP/1.1 408"), got


def test_dripped_body_gets_408(slow_guard):
    head = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n")
    with connect(slow_guard.url) as sock:
        sock.sendall(head)
        got = drip_until_closed(sock, b'{"messages": ')
    assert got is not None, "a client dripping its body was never disconnected"
    status, err = error_of(got)
    assert status == 408 and err["code"] == "body_timeout"
    assert "body_timeout" in err["message"] and "--body-timeout" in err["message"]


def test_forty_drippers_are_all_closed_while_the_server_answers(slow_guard):
    socks = [connect(slow_guard.url) for _ in range(40)]
    try:
        for s in socks:
            s.sendall(HEAD)
            s.setblocking(False)
        deadline = time.monotonic() + 15
        open_ = set(range(40))
        while open_ and time.monotonic() < deadline:
            assert httpx.get(slow_guard.url + "/health", timeout=10).status_code == 200
            for i in list(open_):
                try:
                    socks[i].send(b"X")
                    if socks[i].recv(65536) == b"":
                        open_.discard(i)
                except BlockingIOError:
                    pass
                except OSError:  # reset or broken pipe: closed by the server
                    open_.discard(i)
            time.sleep(0.2)
        assert not open_, f"{len(open_)} of 40 dripping connections still open"
    finally:
        for s in socks:
            s.close()


def test_connections_past_the_cap_get_503(parley):
    s = LiveServer(parley, ServerSettings(max_connections=4, header_timeout=60))
    idle = [connect(s.url) for _ in range(4)]
    try:
        with connect(s.url) as extra:
            extra.settimeout(10)
            raw = b""
            while chunk := extra.recv(65536):
                raw += chunk
        status, err = error_of(raw)
        assert status == 503 and err["code"] == "too_many_connections"
        assert "max_connections" in err["message"] and "--max-connections" in err["message"]
    finally:
        for sock in idle:
            sock.close()
    try:
        deadline = time.monotonic() + 10
        while True:  # the closed ones are counted out again
            try:
                if httpx.get(s.url + "/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server never took connections again"
            time.sleep(0.1)
    finally:
        s.stop()


def test_timeouts_must_be_positive():
    for name in ("header_timeout", "body_timeout", "keep_alive"):
        with pytest.raises(InvalidRequest, match=name):
            ServerSettings(**{name: 0})
    with pytest.raises(InvalidRequest, match="max_connections"):
        ServerSettings(max_connections=0)



def test_accepted_connections_have_nodelay(slow_guard):
    """h11 writes a response's head and body separately: without TCP_NODELAY every kept-alive request after the
    first waits for the client's delayed ACK (40 ms on Linux). Read off the server's own accepted sockets."""
    import socket

    with httpx.Client(base_url=slow_guard.url) as client:
        assert client.get("/health").status_code == 200
        conns = [c for c in slow_guard.server.server_state.connections if c.transport is not None]
        assert conns
        socks = [c.transport.get_extra_info("socket") for c in conns]
        assert all(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) for s in socks)
        assert client.get("/health").status_code == 200
