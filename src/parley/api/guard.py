"""Blocking facade calls never run on an event loop's thread.

Most of what the facade does blocks: SQLite reads and writes, tokenizing, reading files, waiting for the
scheduler thread. An edge that serves an event loop (the HTTP server, the web page) must call those in a worker
thread, or one slow call stalls every stream and /health. `Parley.guard_event_loop(loop)` names such a loop
(the server does, when its app starts on it); from then on a blocking call made while that loop runs on the
calling thread raises at once, naming the call, so a reach onto the loop fails the first test that takes that
path instead of slowing production. Other loops are left alone: a notebook runs its cells inside an event loop,
and a Python user blocking there is fine.
"""

from __future__ import annotations

import asyncio
import functools
import weakref


class LoopGuard:
    def __init__(self) -> None:
        self._loops: weakref.WeakSet = weakref.WeakSet()

    def guard(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loops.add(loop)

    def release(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loops.discard(loop)

    def check(self, what: str) -> None:
        if not self._loops:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop not in self._loops:
            return
        raise RuntimeError(f"{what} blocks and was called on the event loop's thread: run it in a worker "
                           "thread (asyncio.to_thread)")


def blocking(fn):
    """Mark a facade method that blocks: it checks its object's `_guard` (a LoopGuard) first."""
    @functools.wraps(fn)
    def call(self, *args, **kwargs):
        self._guard.check(fn.__qualname__)
        return fn(self, *args, **kwargs)
    return call
