"""What every handler of the page shares: the facade, the server's settings, the replies being streamed (one per
open page, keyed by Gradio's session hash, so one page's Stop ends only its own reply), this browser's scope of
the conversations and documents services (another browser's look like none), the door of the model a page picked
(never loading it: a model loads with its first message), and how a facade error reaches the page (a readable
message).

Every facade call runs off the event loop (`off`: asyncio.to_thread), the loop also streams every other page's
reply; the facade refuses a blocking call made on it (api/guard.py).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
from dataclasses import dataclass, field

import gradio as gr

from parley.api import Parley, Stream
from parley.errors import NotFound, ParleyError
from parley.sampling import CHAT_PRESET, SamplingParams
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
    parley: Parley                                    # the server's door (its limits, its event-loop guard)
    settings: object                                  # the server's (parley.server.ServerSettings)
    live: dict[str, Stream] = field(default_factory=dict)

    def owner(self, request: gr.Request) -> str:
        return owner_of(request)

    def conversations(self, owner: str):
        """The conversations service scoped to one browser: another browser's conversation looks like none."""
        return self.parley.conversations.owned_by(owner)

    def documents(self, owner: str, model: str | None = None):
        """This browser's documents; questions about them are answered by `model` (None: the default)."""
        door = self.parley if model is None else self.door(model)
        return door.documents.owned_by(owner)

    def door(self, model: str | None):
        """The server's door speaking to `model` (None: the default one), with the server's limits; nothing is
        loaded (a model loads with its first request). An unknown name is a 404 naming the models offered."""
        return self.parley.using(model or None, load=False)

    def door_of(self, stored: str | None):
        """The door of the model a stored conversation keeps, or the default one's when this server does not
        offer it (removed, or another server's): the model its next message goes to."""
        try:
            return self.door(stored)
        except NotFound:
            return self.door(None)

    def sampling(self, model: str | None) -> SamplingParams:
        """A new conversation's defaults on `model`: the chat preset with the model's own sampling over it."""
        return self.door(model).sampling_over(CHAT_PRESET)

    def create(self, owner: str, *, system: str | None = None, persona=None, model: str | None = None):
        """A new conversation of this browser on `model` (None: the default), with the chat preset's sampling
        and the model's own over it (the sliders start there)."""
        door = self.door(model)
        return door.conversations.owned_by(owner).create(system=system or None, persona=persona,
                                                         defaults=door.sampling_over(CHAT_PRESET))

    def cancel_session(self, session: str | None) -> bool:
        reply = self.live.get(session or "")
        if reply is None:
            return False
        reply.cancel()
        return True
