"""The header line kept current: the picked model (its name, context and device) and what its scheduler is doing
(replies running and waiting, cells in use, the RAM and disk tiers), refreshed two ways.

    feed = Feed(parley)
    timer.tick(feed.handler(), picker, header, queue=False)    # every few seconds: any client's work
    button.click(follow(feed, header, chat.send, model=picked), ..., [..., header])   # the page's own replies

Why both. Measured in a browser (tests/web/test_web_page.py), the timer's ticks do reach the server while a reply
streams (queue=False: they do not wait behind the streaming event), but the timer knows nothing of the page's own
events: a reply showed in the header only at the next tick, up to a whole period after its first words, and a
reply shorter than the period never showed at all. So a reply's own event carries the header: while the header
does not yet show a reply running past its prompt, each of the reply's updates asks for a fresh snapshot (the
first words are followed at once by "1 replying" and the cells they use); after that at most every FOLLOW_S;
and once more when the reply ends. The timer stays for what other clients do (an API request streaming while
this page is idle).

Every page and the timer share one Feed, a snapshot per model: one stats call at a time for a model, and a
caller asking for a snapshot taken no earlier than its own update reuses one taken since, so many pages
streaming at once cost about one call per scheduler step at worst, not one per page. Each model has its own
scheduler, so a page shows the numbers of the model it picked; a model not loaded shows "not loaded" (asking
never loads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math
from collections.abc import Callable
from typing import NamedTuple

import gradio as gr

from parley.errors import NotFound
from parley.web import view

TIMER_S = 3.0        # how often the timer refreshes the header (replies of other clients)
FOLLOW_S = 1.0       # how often a streaming reply refreshes it once the header shows the reply running
STATS_WAIT_S = 5.0   # how long to wait for the scheduler's answer before leaving the header as it is


class Snapshot(NamedTuple):
    info: object          # the model's ModelInfo (as it will run, when it is not loaded)
    stats: object         # its scheduler's SchedulerStats (zeros when it is not loaded)


class _Latest:
    def __init__(self):
        self.lock = asyncio.Lock()
        self.snapshot: Snapshot | None = None
        self.at = -math.inf


class Feed:
    """Each model's header facts (its info and its scheduler's stats), shared by every page of the server."""

    def __init__(self, parley):
        self.parley = parley
        self._latest: dict[str, _Latest] = {}      # by model name ("": the default): one per model offered

    def _take(self, model: str | None) -> Snapshot | None:
        try:
            door = self.parley.using(model or None, load=False)    # asking never loads a model
            return Snapshot(door.info, door.stats(STATS_WAIT_S))
        except NotFound:                  # removed from the registry since the page listed it
            return None

    async def snapshot(self, since: float, model: str | None = None) -> Snapshot | None:
        """`model`'s snapshot taken at or after `since` (the event loop's clock), or None when its scheduler
        did not answer (busy past STATS_WAIT_S, or stopped) or it is no longer offered."""
        latest = self._latest.setdefault(model or "", _Latest())
        async with latest.lock:
            if latest.snapshot is not None and latest.at >= since:
                return latest.snapshot
            at = asyncio.get_running_loop().time()
            try:
                snapshot = await asyncio.to_thread(self._take, model)
            except (TimeoutError, RuntimeError):
                return None
            if snapshot is not None:
                latest.snapshot, latest.at = snapshot, at
            return snapshot

    async def line(self, model: str | None = None) -> str | None:
        """The header of `model` as of now (None: its scheduler did not answer)."""
        snap = await self.snapshot(asyncio.get_running_loop().time(), model)
        return None if snap is None else view.header(snap.info, snap.stats)

    def handler(self):
        """An event handler taking the picked model: its header now, or left as it is."""
        async def header(model):
            line = await self.line(model)
            return gr.skip() if line is None else line
        return header


def shows_reply(snap: Snapshot | None) -> bool:
    """Whether a snapshot shows a reply past its prompt (running, nothing reading a prompt, cells in use): until
    one does, a streaming reply refreshes the header at every update."""
    if snap is None:
        return False
    stats = snap.stats
    return stats.running > 0 and not stats.prefilling and stats.kv_cells_used > 0


def follow(feed: Feed, header, fn, model: Callable[..., str | None]):
    """Wrap a page handler (an async generator of update dicts, or a coroutine returning one; `header` is among
    its event's outputs) so that it also refreshes `header`, as the module docstring says, with the numbers of
    the model `model(*args, **kwargs)` names (the one picked for the event: its reply runs there). The wrapper
    keeps fn's signature (Gradio reads it for gr.Request and event data) and ends fn when it is closed or
    cancelled (Stop)."""

    if not inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def call(*args, **kwargs):
            update = await fn(*args, **kwargs)
            if not isinstance(update, dict):
                return update
            snap = await feed.snapshot(asyncio.get_running_loop().time(), model(*args, **kwargs))
            return update if snap is None else {**update, header: view.header(snap.info, snap.stats)}
        return call

    @functools.wraps(fn)
    async def gen(*args, **kwargs):
        # The stats come from the scheduler thread between two steps, and a step reading a long prompt takes a
        # while: the reply's own updates (its reading progress, its words) never wait for them. A snapshot is
        # asked for beside the update that makes one due and shown as its own update when it comes.
        loop = asyncio.get_running_loop()
        picked = model(*args, **kwargs)
        updates = fn(*args, **kwargs)
        nxt = fetch = None
        shown, asked_at, wanted = None, -math.inf, None   # wanted: an update's time that found a fetch running

        def ask(since: float):
            nonlocal fetch, asked_at, wanted
            fetch, asked_at, wanted = asyncio.ensure_future(feed.snapshot(since, picked)), since, None
        try:
            while True:
                if nxt is None:
                    nxt = asyncio.ensure_future(updates.__anext__())
                await asyncio.wait({nxt} if fetch is None else {nxt, fetch}, return_when=asyncio.FIRST_COMPLETED)
                if fetch is not None and fetch.done():
                    snap, fetch = fetch.result(), None
                    if snap is not None:
                        shown = snap
                        yield {header: view.header(snap.info, snap.stats)}
                    since, wanted = wanted, None
                    if since is not None and not shows_reply(shown):
                        ask(since)                     # taken before that update: not yet what it shows
                if not nxt.done():
                    continue
                done, nxt = nxt, None
                try:
                    update = done.result()
                except StopAsyncIteration:
                    break
                now = loop.time()
                if isinstance(update, dict) and (not shows_reply(shown) or now - asked_at >= FOLLOW_S):
                    if fetch is None:
                        ask(now)
                    else:
                        wanted = now
                yield update
            if fetch is not None:
                fetch.cancel()
            snap = await feed.snapshot(loop.time(), picked)   # the reply is over: the header says so now, not at a tick
            if snap is not None:
                yield {header: view.header(snap.info, snap.stats)}
        finally:
            for task in (nxt, fetch):
                if task is not None and not task.done():
                    task.cancel()                    # nxt: the handler's own cleanup runs now (it ends the reply)
                    with contextlib.suppress(BaseException):
                        await task
            await updates.aclose()
    return gen
