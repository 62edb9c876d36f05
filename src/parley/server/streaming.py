"""One HTTP generation from submission to cleanup, streamed (SSE) or waited for, cancelled when the client leaves.

Handlers hand a `begin(loop)` to Generation.start(), which runs it in a worker thread (building a prompt and
writing a conversation's rows must not stall the event loop) and keeps the Stream it returns:
    gen = await Generation.start(state, lambda loop: parley.generate(tokens, params, loop=loop))
                                                 # 429 past max_concurrent, 503 while draining, 4xx from begin()
    result = await gen.result(request)           # not streaming: None if the client disconnected (cancelled)
    return SSEResponse(events(gen), gen.close)   # streaming: `async for chunk in gen.chunks()`, then gen.close()
A disconnect is noticed at once (a task waits for the ASGI `http.disconnect` message) and cancels the request
within one scheduler step. `close()` is idempotent and always runs, even when the response never started.

The server may end a generation itself (`cancel(note)`: a shutdown past its grace period, a deleted
conversation): the reply still gets its proper last event, with finish_reason "cancelled" and the note saying
why. A time limit (llama-server's `t_max_predict_ms`) ends it the same way, reported as "length".
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable

import anyio
from starlette.responses import Response, StreamingResponse

from parley.api import Chunk, Result
from parley.errors import ShuttingDown

log = logging.getLogger("parley.server")


def sse(data: dict | str) -> str:
    """One server-sent event. ASCII-only JSON: no character in it can be taken for a line break by a client."""
    return f"data: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def wait_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class Generation:
    """`stream`: the Stream begin() returned, or a list of them (n choices of one prompt: one HTTP request, one
    concurrency slot); `stream` is the first, `streams` all of them."""

    def __init__(self, state, stream, *, time_limit_s: float | None = None):
        self._state = state
        self._closed = False
        self.streams = list(stream) if isinstance(stream, (list, tuple)) else [stream]
        self.stream = self.streams[0]     # parley.api.Stream; its meta says what it is (chat/meta.py)
        self.client_gone = False
        self.note = ""                  # why the server ended it early ("" when it did not)
        self.time_limit_s = time_limit_s
        self.limit_hit = False
        self._first_at: float | None = None
        self._newline = False
        state.generations.add(self)

    @classmethod
    async def start(cls, state, begin: Callable, *, time_limit_s: float | None = None) -> Generation:
        """Take a concurrency slot, run `begin(loop)` off the event loop, and follow the Stream it returns."""
        if state.drain.active:
            raise ShuttingDown(state.drain.reason)
        state.gate.acquire()
        try:
            loop = asyncio.get_running_loop()
            stream = await asyncio.to_thread(begin, loop)
        except BaseException:
            state.gate.release()
            raise
        return cls(state, stream, time_limit_s=time_limit_s)

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The reply's chunks as they come (the time limit is checked on each)."""
        async for chunk in self.stream:
            self._watch(chunk)
            yield chunk

    def finish_reason(self, r: Result) -> str:
        """The finish reason to report: a reply the time limit ended is "length", as llama-server says."""
        return "length" if self.limit_hit and r.finish_reason == "cancelled" else r.finish_reason

    async def indexed(self) -> AsyncIterator[tuple[int, Chunk | None]]:
        """Every stream's chunks as they come, as (its index, chunk), and (index, None) when one ends: the n
        choices of one request, side by side."""
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(i: int, stream) -> None:
            try:
                async for chunk in stream:
                    self._watch(chunk)
                    await queue.put((i, chunk))
            finally:
                await queue.put((i, None))
        tasks = [asyncio.ensure_future(pump(i, st)) for i, st in enumerate(self.streams)]
        try:
            left = len(tasks)
            while left:
                item = await queue.get()
                if item[1] is None:
                    left -= 1
                yield item
        finally:
            for t in tasks:
                t.cancel()

    def cancel(self, note: str) -> None:
        """End the generation from the server's side; its reply ends with finish_reason "cancelled" and `note`."""
        if any(st.result is None for st in self.streams):
            self.note = self.note or note
            for st in self.streams:
                st.cancel()

    async def result(self, request, on_chunk: Callable[[Chunk], None] | None = None) -> Result | None:
        """The whole reply, or None when the client disconnected first (then the generation is cancelled).
        `on_chunk` sees each chunk as it comes (the TGI details list the tokens)."""
        waiter = asyncio.ensure_future(self._consume(on_chunk))
        watcher = asyncio.ensure_future(wait_disconnect(request.receive))
        try:
            await asyncio.wait({waiter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not waiter.done():
                waiter.cancel()
            self.close()
        if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
            return waiter.result()
        self.client_gone = watcher.done() and not watcher.cancelled()
        return None

    async def results(self, request) -> list[Result] | None:
        """Every choice's Result, or None when the client disconnected first (then all are cancelled)."""
        first = await self.result(request)
        return None if first is None else [st.result for st in self.streams]

    async def _consume(self, on_chunk) -> Result:
        if len(self.streams) > 1:
            async for _ in self.indexed():
                pass
            return self.stream.result
        async for chunk in self.chunks():
            if on_chunk is not None:
                on_chunk(chunk)
        return self.stream.result

    def _watch(self, chunk: Chunk) -> None:
        if self.time_limit_s is None or self.limit_hit:
            return
        now = time.monotonic()
        if self._first_at is None and chunk.token_ids:
            self._first_at = now
        self._newline = self._newline or "\n" in chunk.text
        if self._first_at is not None and self._newline and now - self._first_at > self.time_limit_s:
            self.limit_hit = True
            for st in self.streams:
                st.cancel()

    def close(self) -> None:
        """Release the concurrency slot; cancel the generation if it is still running."""
        if self._closed:
            return
        self._closed = True
        self._state.gate.release()
        self._state.generations.discard(self)
        for st in self.streams:
            if st.result is None:
                st.cancel()


def client_gone() -> Response:
    """The answer to a client that left (nobody reads it; /metrics counts it as 499, "client closed request")."""
    return Response(status_code=499)


class SSEResponse(StreamingResponse):
    """text/event-stream that always watches for the client leaving (whatever the ASGI server's spec version)
    and always runs `on_close`, even when the body generator never started."""

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]):
        super().__init__(content, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            async with anyio.create_task_group() as tg:

                async def stream_then_stop() -> None:
                    try:
                        await self.stream_response(send)
                    except OSError:  # the client went away mid-write
                        pass
                    tg.cancel_scope.cancel()

                tg.start_soon(stream_then_stop)
                await wait_disconnect(receive)
                tg.cancel_scope.cancel()
        finally:
            aclose = getattr(self.body_iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await aclose()
                    except Exception:
                        log.exception("closing a stream failed")
            self._on_close()
