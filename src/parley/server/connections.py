"""Connections: what uvicorn's h11 protocol does not bound, bounded (header read timeout, open connections).

uvicorn times out only idle keep-alive connections, and only after a first response: a socket that sends its
request line and headers one byte at a time (or nothing at all) is kept open forever, and its `limit_concurrency`
is checked only once a whole request has arrived. So `GuardedH11Protocol`:
  - closes a connection whose request line and headers have not all arrived `header_timeout` after it opened
    (or after the first byte of its next request on a kept-alive connection), answering 408 when a request had
    begun;
  - answers 503 and closes a connection opened beyond `max_connections` (idle keep-alive ones count).
The body has its own deadline, at the ASGI level (limits.BodyDeadline), where it can answer 408 in the OpenAI
error shape. `protocol_for(settings)` binds the limits into a class for `uvicorn.Config(http=...)`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from parley.server.errors import error_body

log = logging.getLogger("parley.server")


def raw_error(status: int, reason: str, message: str, code: str) -> bytes:
    """A whole HTTP/1.1 error response in the OpenAI shape, written before (or without) any parsed request."""
    body = json.dumps(error_body(message, type="invalid_request_error" if status < 500 else "server_error",
                                 code=code, status=status)).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n").encode()
    return head + body


class GuardedH11Protocol(H11Protocol):
    header_timeout: float = 10.0
    max_connections: int = 256

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        # h11 writes a response's head and body separately: without TCP_NODELAY, Nagle holds the body back
        # until the client's delayed ACK (40 ms on Linux) on every kept-alive request after the first
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._header_timer = None
        self._got_bytes = False
        if len(self.connections) > self.max_connections:
            log.warning("refused a connection: %d are open (max_connections)", len(self.connections) - 1)
            transport.write(raw_error(
                503, "Service Unavailable",
                f"{len(self.connections) - 1} connections are open, the most this server keeps "
                "(max_connections, `parley serve --max-connections`); retry shortly", "too_many_connections"))
            transport.close()
            return
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        waiting = self.conn.their_state is h11.IDLE
        if waiting and self._header_timer is None:
            self._arm_header_timer()   # the first byte of a request on a kept-alive connection starts the clock
        self._got_bytes = self._got_bytes or bool(data)
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:   # the request line and headers are in
            self._cancel_header_timer()
            self._got_bytes = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def timeout_keep_alive_handler(self) -> None:
        self._cancel_header_timer()
        super().timeout_keep_alive_handler()

    # ---- the header clock ----------------------------------------------------------------------------------
    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_header_timer(self) -> None:
        timer = getattr(self, "_header_timer", None)
        if timer is not None:
            timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._got_bytes:
            self.transport.write(raw_error(
                408, "Request Timeout",
                f"the request line and headers did not arrive within {self.header_timeout:g} s "
                "(header_timeout, `parley serve --header-timeout`)", "header_timeout"))
        self.transport.close()


def protocol_for(settings) -> type[GuardedH11Protocol]:
    """The protocol class for uvicorn.Config(http=...), with this server's limits."""
    return type("ParleyH11Protocol", (GuardedH11Protocol,),
                {"header_timeout": settings.header_timeout, "max_connections": settings.max_connections})
