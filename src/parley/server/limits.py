"""Request-size, request-time and concurrency limits.

BodyDeadline (ASGI middleware, outside every layer that reads a body) gives the whole body body_timeout from
the moment the headers arrived: a client dripping its body one byte at a time gets a 408 naming the setting and
the connection is closed. Once the body is complete, waiting for the client to leave is not timed.

BodyLimit (ASGI middleware) reads the request body before any parsing and refuses one over max_body_bytes with
a 413 that names the limit. An oversized body is still read to its end (and thrown away, up to DRAIN_MAX) so the
client, which is usually still sending, gets the 413 instead of a broken connection. Holding the whole body, it
also refuses a JSON body nested deeper than json_depth.MAX_JSON_DEPTH (400), before json.loads and pydantic,
which recurse once per level, see it: every JSON route, the web page's included, is covered here once.

ConcurrencyGate counts HTTP requests that are generating; the one past max_concurrent gets a 429.
"""

from __future__ import annotations

import asyncio

from parley.errors import Overloaded
from parley.server.errors import error_body
from parley.server.json_depth import MAX_JSON_DEPTH, json_depth

DRAIN_MAX = 64 << 20  # read at most this much of a refused body before closing the connection


async def drain(receive, limit: int = DRAIN_MAX) -> bool:
    """Read and discard the rest of the request body. False when the client left or sent more than `limit`."""
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        total += len(message.get("body", b""))
        if not message.get("more_body", False):
            return True
        if total > limit:
            return False


async def send_json(send, status: int, body: dict, *, headers: list[tuple[bytes, bytes]] = (), close: bool = False):
    import json

    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()), *headers]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data, "more_body": False})


def header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return value
    return None


def _json(scope) -> bool:
    """A body the app may parse as JSON: one that says so (application/json, ...+json), or says nothing (a lenient
    route such as Gradio's reads any body with request.json())."""
    kind = header(scope, b"content-type")
    return kind is None or b"json" in kind.lower()


class BodyTimeout(Exception):
    """Raised by BodyDeadline's receive() when the body is late; BodyDeadline answers it."""


class BodyDeadline:
    def __init__(self, app, seconds: float):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.seconds
        body_done = False
        started = False

        async def timed_receive():
            nonlocal body_done
            if body_done:
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise BodyTimeout from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, timed_receive, tracking_send)
        except BodyTimeout:
            if started:  # an answer is already on its way: nothing more can be said, the connection just ends
                return
            message = (f"the request body did not arrive within {self.seconds:g} s of the headers "
                       "(body_timeout, `parley serve --body-timeout`)")
            body = error_body(message, code="body_timeout", status=408, path=scope["path"])
            await send_json(send, 408, body, close=True)


class BodyLimit:
    """`uploads` maps path prefixes (document uploads) to their own, larger limit, named in their errors."""

    def __init__(self, app, max_bytes: int, uploads: dict[str, tuple[int, str]] | None = None):
        self.app = app
        self.max_bytes = max_bytes
        self.uploads = uploads or {}

    def _limit(self, path: str) -> tuple[int, str]:
        for prefix, (limit, name) in self.uploads.items():
            if path.startswith(prefix):
                return limit, name
        return self.max_bytes, "max_body_bytes, `parley serve --max-body-bytes`"

    def _message(self, size: int | None, limit: int, name: str) -> str:
        got = f"is {size} bytes" if size is not None else "is larger than that"
        return f"the request body {got}; this server accepts at most {limit} bytes here ({name})"

    async def _refuse(self, scope, receive, send, status: int, message: str, code: str,
                      declared: int | None = None) -> None:
        # read what the client is still sending (so it sees the answer, not a reset), unless it announced more
        # than is worth reading: then answer at once and close
        complete = False if declared is not None and declared > DRAIN_MAX else await drain(receive)
        body = error_body(message, param=None, code=code, status=status, path=scope["path"])
        await send_json(send, status, body, close=not complete)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, name = self._limit(scope["path"])
        length = header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                return await self._refuse(scope, receive, send, 400,
                                          f"the Content-Length header is not a number: {length[:40]!r}",
                                          "invalid_header")
            if declared > limit:
                return await self._refuse(scope, receive, send, 413, self._message(declared, limit, name),
                                          "request_too_large", declared)
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its request
            data = message.get("body", b"")
            total += len(data)
            if total > limit:
                return await self._refuse(scope, receive, send, 413, self._message(None, limit, name),
                                          "request_too_large")
            chunks.append(data)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if _json(scope) and (depth := json_depth(body)) > MAX_JSON_DEPTH:
            message = (f"the JSON body is nested {depth} levels deep; this server takes at most {MAX_JSON_DEPTH} "
                       "levels of arrays and objects")
            return await send_json(send, 400, error_body(message, code="json_too_deep", path=scope["path"]))
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only http.disconnect comes

        await self.app(scope, replay, send)


class ConcurrencyGate:
    """HTTP requests generating at once (max_concurrent). Single event loop: no lock needed."""

    def __init__(self, limit: int):
        self.limit = limit
        self.active = 0

    def acquire(self) -> None:
        if self.active >= self.limit:
            raise Overloaded(f"{self.active} requests are generating, the most this server runs at once "
                             f"(max_concurrent, `parley serve --max-concurrent`); retry shortly")
        self.active += 1

    def release(self) -> None:
        self.active = max(0, self.active - 1)
