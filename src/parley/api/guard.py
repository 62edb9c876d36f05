"""Blocking facade calls never run on an event loop's thread.

Most of what the facade does blocks: SQLite reads and writes, tokenizing, reading files, waiting for the
scheduler thread. An edge that serves an event loop (the HTTP server, the web page) must call those in a worker
thread, or one slow call stalls every stream and /health. `Parley.guard_event_loop()` switches the check on for
one loaded model; from then on a blocking call made on a thread that runs an event loop raises at once, naming
the call, so a reach onto the loop fails the first test that takes that path instead of slowing production.
It stays off for the Python API (a notebook runs its cells inside an event loop, and blocking there is fine).
"""

from __future__ import annotations

import asyncio
import functools


class LoopGuard:
    def __init__(self) -> None:
        self.on = False

    def check(self, what: str) -> None:
        if not self.on:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
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
