"""Stream: one request's output, read by a blocking consumer (`for chunk in stream`) or an asyncio one
(`async for chunk in stream`), from the same object. Every generation parley hands out is one: a raw completion,
a conversation's reply, a question about a document.

The scheduler thread calls `put()` (the request's sink) with Chunks and, last, the Result. Consumers get the
chunks in order; `result` is set when the Result arrives. Leaving an iteration before the end (break, an
exception, Ctrl-C, a client that went away) cancels the request; its KV so far stays cached.

`meta` is what the stage that made the stream says about it (chat/meta.py: a raw completion's Prompt, a
conversation reply's ids and window, a document answer's sources); None for the scheduler's own streams.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from parley.scheduler.request import Chunk, Result


class Stream:
    def __init__(self, cancel: Callable[[], None], loop: asyncio.AbstractEventLoop | None = None,
                 meta: Any = None):
        self._cancel = cancel
        self.meta = meta
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._loop = loop
        self._wake = asyncio.Event() if loop is not None else None
        self.result: Result | None = None
        self.request = None     # the scheduler's Request, once submitted

    def progress(self) -> tuple[int, int]:
        """(prompt tokens read so far, prompt tokens): what a page shows while a long prompt is read. Read from
        another thread without a lock: two ints, at worst a step old."""
        r = self.request
        if r is None:
            return 0, 0
        return min(r.n_past, len(r.prompt)), len(r.prompt)

    # ---- producer side (any thread) ----------------------------------------------------------------------
    def put(self, event: Chunk | Result) -> None:
        self._q.put(event)
        if self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                self._cancel()

    # ---- consumer side -----------------------------------------------------------------------------------
    def _take(self, event) -> bool:
        """True when `event` ends the stream."""
        if isinstance(event, Result):
            self.result = event
            return True
        return False

    def __iter__(self) -> Iterator[Chunk]:
        if self.result is not None:
            return
        try:
            while True:
                event = self._q.get()
                if self._take(event):
                    return
                yield event
        finally:
            if self.result is None:
                self.cancel()

    def __aiter__(self) -> AsyncIterator[Chunk]:
        return self._agen()

    async def _agen(self) -> AsyncIterator[Chunk]:
        if self._wake is None:
            raise RuntimeError("this stream was made without an event loop: iterate it with a plain for")
        if self.result is not None:
            return
        try:
            while True:
                try:
                    event = self._q.get_nowait()
                except queue.Empty:
                    await self._wake.wait()
                    self._wake.clear()
                    continue
                if self._take(event):
                    return
                yield event
        finally:
            if self.result is None:
                self.cancel()

    def cancel(self) -> None:
        """Stop the request within one scheduler step (from any thread, or a signal handler)."""
        if self.result is None:
            self._cancel()

    def wait(self) -> Result:
        """Block until the Result (reading and dropping the chunks)."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result

    async def finished(self) -> Result:
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    def text(self) -> Iterator[str]:
        """The reply's text, chunk by chunk (blocking)."""
        for chunk in self:
            if chunk.text:
                yield chunk.text


class Streams:
    """stream() and generate() over a scheduler's submit(): the local Scheduler's and the remote ones' alike."""

    def stream(self, prompt, params, *, loop: asyncio.AbstractEventLoop | None = None, param: str = "prompt",
               meta: Any = None) -> Stream:
        """Submit and return the request's Stream: iterate it with `for` (blocking), or with `async for` when
        `loop` (the running event loop) is given. `meta`: what the caller says about it (Stream.meta)."""
        return submitted(self, prompt, params, loop=loop, param=param, meta=meta)

    def generate(self, prompt, params) -> Result:
        return self.stream(prompt, params).wait()


def submitted(scheduler, prompt, params, *, loop: asyncio.AbstractEventLoop | None = None, param: str = "prompt",
              meta: Any = None) -> Stream:
    """`scheduler.submit` a request with a new Stream as its sink (any scheduler: scheduler/scheduler.py's, or
    upstream/engine.py's): the Stream cancels it when its consumer leaves early."""
    holder: list = []
    stream = Stream(lambda: scheduler.cancel(holder[0]) if holder else None, loop, meta)
    holder.append(scheduler.submit(prompt, params, stream.put, param=param))
    stream.request = holder[0]
    return stream
