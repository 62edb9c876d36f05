"""What every handler of the page shares: the facade, the page's options, the replies being streamed (one per
open page, keyed by Gradio's session hash, so one page's Stop ends only its own reply), and the checks every
handler makes (the conversation is this browser's; a facade error becomes a readable message).

Facade calls that touch SQLite or tokenize run off the event loop (asyncio.to_thread): the loop also streams
every other page's reply.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from dataclasses import dataclass, field

import gradio as gr

from parley.api import Parley, Reply
from parley.errors import NotFound, ParleyError
from parley.sampling import CHAT_PRESET
from parley.web.owner import owner_of

log = logging.getLogger("parley.web")


async def off(fn, *args, **kwargs):
    return await asyncio.to_thread(functools.partial(fn, *args, **kwargs))


def readable(e: BaseException) -> gr.Error:
    """A facade error as the message a person reads (never a stack trace)."""
    if isinstance(e, ParleyError):
        return gr.Error(e.message, title="parley")
    log.exception("the web page's handler failed", exc_info=e)
    return gr.Error(f"internal error ({type(e).__name__}); the server log has the details", title="parley")


def handler(fn):
    """Wrap an event handler (a coroutine function or an async generator function) so that every error reaches
    the page as a readable gr.Error."""
    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def gen(*args, **kwargs):
            updates = fn(*args, **kwargs)
            try:
                async for update in updates:
                    yield update
            except gr.Error:
                raise
            except Exception as e:
                raise readable(e) from None
            finally:  # closed early (Stop, a closed tab): the inner generator's own cleanup runs now, not at GC
                await updates.aclose()
        return gen

    @functools.wraps(fn)
    async def call(*args, **kwargs):
        try:
            return await fn(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as e:
            raise readable(e) from None
    return call


@dataclass
class PageState:
    parley: Parley
    options: object                                   # mount.PageOptions
    live: dict[str, Reply] = field(default_factory=dict)

    @property
    def sessions(self):
        return self.parley.conversations

    @property
    def store(self):
        return self.parley.conversations.store

    def owner(self, request: gr.Request) -> str:
        return owner_of(request)

    def conversation(self, cid: str, owner: str):
        """The conversation `cid` if it is this browser's (another browser's looks like none at all)."""
        conv = self.store.get_conversation(cid)
        if conv.owner != owner:
            raise NotFound(f"no conversation {cid} in this browser", param="conversation_id")
        return conv

    def branch(self, cid: str):
        return self.store.branch(self.store.get_conversation(cid).leaf_id)

    def defaults(self, conv):
        """The conversation's sampling defaults as the sliders show them (its own stop strings, not the chat
        format's)."""
        params = self.sessions.defaults(conv)
        return params.replace(stop=tuple(self.sessions.stored_defaults(params)["stop"]))

    def create(self, owner: str, *, system: str | None = None, persona=None):
        """A new conversation of this browser, with the chat preset's sampling (the sliders start there)."""
        return self.sessions.create(owner=owner, system=system or None, persona=persona, defaults=CHAT_PRESET)

    def cancel_session(self, session: str | None) -> bool:
        reply = self.live.get(session or "")
        if reply is None:
            return False
        reply.cancel()
        return True
