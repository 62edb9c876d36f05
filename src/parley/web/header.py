"""The header line kept current: what the server is doing (replies running and waiting, cells in use, the RAM
and disk tiers), refreshed two ways.

    feed = Feed(parley)
    timer.tick(feed.handler(), None, header, queue=False)      # every few seconds: any client's work
    button.click(follow(feed, header, chat.send), ..., [..., header])   # the page's own replies carry it

Why both. Measured in a browser (tests/web/test_web_page.py), the timer's ticks do reach the server while a reply
streams (queue=False: they do not wait behind the streaming event), but the timer knows nothing of the page's own
events: a reply showed in the header only at the next tick, up to a whole period after its first words, and a
reply shorter than the period never showed at all. So a reply's own event carries the header: while the header
does not yet show a reply running past its prompt, each of the reply's updates asks for a fresh snapshot (the
first words are followed at once by "1 replying" and the cells they use); after that at most every FOLLOW_S;
and once more when the reply ends. The timer stays for what other clients do (an API request streaming while
this page is idle).

Every page and the timer share one Feed: one stats call at a time, and a caller asking for a snapshot taken no
earlier than its own update reuses one taken since, so many pages streaming at once cost about one call per
scheduler step at worst, not one per page.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import math

import gradio as gr

from parley.web import view

TIMER_S = 3.0        # how often the timer refreshes the header (replies of other clients)
FOLLOW_S = 1.0       # how often a streaming reply refreshes it once the header shows the reply running
STATS_WAIT_S = 5.0   # how long to wait for the scheduler's answer before leaving the header as it is


class Feed:
    """Scheduler stats for the header, shared by every page of the server."""

    def __init__(self, parley):
        self.parley = parley
        self._lock = asyncio.Lock()
        self._stats = None
        self._at = -math.inf

    async def stats(self, since: float):
        """A snapshot taken at or after `since` (the event loop's clock), or None when the scheduler did not
        answer (busy past STATS_WAIT_S, or stopped)."""
        async with self._lock:
            if self._stats is not None and self._at >= since:
                return self._stats
            at = asyncio.get_running_loop().time()
            try:
                stats = await asyncio.to_thread(self.parley.stats, STATS_WAIT_S)
            except (TimeoutError, RuntimeError):
                return None
            self._stats, self._at = stats, at
            return stats

    async def line(self) -> str | None:
        """The header as of now (None: the scheduler did not answer)."""
        stats = await self.stats(asyncio.get_running_loop().time())
        return None if stats is None else view.header(self.parley.info, stats)

    def handler(self):
        """The timer's event handler: the header now, or left as it is."""
        async def header():
            line = await self.line()
            return gr.skip() if line is None else line
        return header


def shows_reply(stats) -> bool:
    """Whether a snapshot shows a reply past its prompt (running, nothing reading a prompt, cells in use): until
    one does, a streaming reply refreshes the header at every update."""
    return stats is not None and stats.running > 0 and not stats.prefilling and stats.kv_cells_used > 0


def follow(feed: Feed, header, fn):
    """Wrap a page handler (an async generator of update dicts, or a coroutine returning one; `header` is among
    its event's outputs) so that it also refreshes `header`, as the module docstring says. The wrapper keeps fn's signature
    (Gradio reads it for gr.Request and event data) and ends fn when it is closed or cancelled (Stop)."""
    info = feed.parley.info

    if not inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def call(*args, **kwargs):
            update = await fn(*args, **kwargs)
            if not isinstance(update, dict):
                return update
            stats = await feed.stats(asyncio.get_running_loop().time())
            return update if stats is None else {**update, header: view.header(info, stats)}
        return call

    @functools.wraps(fn)
    async def gen(*args, **kwargs):
        # The stats come from the scheduler thread between two steps, and a step reading a long prompt takes a
        # while: the reply's own updates (its reading progress, its words) never wait for them. A snapshot is
        # asked for beside the update that makes one due and shown as its own update when it comes.
        loop = asyncio.get_running_loop()
        updates = fn(*args, **kwargs)
        nxt = fetch = None
        shown, asked_at, wanted = None, -math.inf, None   # wanted: an update's time that found a fetch running

        def ask(since: float):
            nonlocal fetch, asked_at, wanted
            fetch, asked_at, wanted = asyncio.ensure_future(feed.stats(since)), since, None
        try:
            while True:
                if nxt is None:
                    nxt = asyncio.ensure_future(updates.__anext__())
                await asyncio.wait({nxt} if fetch is None else {nxt, fetch}, return_when=asyncio.FIRST_COMPLETED)
                if fetch is not None and fetch.done():
                    stats, fetch = fetch.result(), None
                    if stats is not None:
                        shown = stats
                        yield {header: view.header(info, stats)}
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
            stats = await feed.stats(loop.time())    # the reply is over: the header says so now, not at a tick
            if stats is not None:
                yield {header: view.header(info, stats)}
        finally:
            for task in (nxt, fetch):
                if task is not None and not task.done():
                    task.cancel()                    # nxt: the handler's own cleanup runs now (it ends the reply)
                    with contextlib.suppress(BaseException):
                        await task
            await updates.aclose()
    return gen
