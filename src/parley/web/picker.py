"""The model picker: the models this server offers, each with its state ("loaded", "not loaded", "loading 40%")
and, once loaded, where it runs; the default one is picked when a page opens.

What the pick decides: a new conversation is created on the picked model; the next message of an open one goes
to it (conversations.send(model=...): a conversation moved to another model has its history read again there,
and the reply's note says so); opening a stored conversation picks its model (sidebar.py). The header shows the
picked model's numbers (header.py) and the max tokens slider ends at its limit. Picking loads nothing: a model
loads with its first message, inside the facade call that starts the reply (a worker thread), and while the
reply waits for it the handler polls models.show() beside that call: the status line says "Loading NAME: 40%"
and the picker says "loading 40%".

Every page shares one Models: models.list() reads each model's GGUF header (tens of milliseconds each), so the
timer's refresh reuses a list any page took in the last TIMER_S, and a page's own events ask for one taken no
earlier than they need.
"""

from __future__ import annotations

import asyncio
import math

import gradio as gr

from parley.web import controls, view
from parley.web.header import TIMER_S, Feed
from parley.web.state import PageState, handler, off


def choices(views) -> list[tuple[str, str]]:
    """The picker's (label, model name) pairs for ModelViews: the default first, the others in the facade's
    order (models.list() keeps the registry's order, where the default can be anywhere)."""
    return [(view.model_label(m), m.name) for m in sorted(views, key=lambda m: not m.default)]


class Models:
    """The models this server offers as the picker shows them, shared by every page of the server."""

    def __init__(self, parley):
        self.parley = parley
        self._lock = asyncio.Lock()
        self._views: list | None = None
        self._at = -math.inf

    async def views(self, since: float) -> list:
        """models.list() as taken at or after `since` (the event loop's clock): one call at a time."""
        async with self._lock:
            if self._views is not None and self._at >= since:
                return self._views
            at = asyncio.get_running_loop().time()
            views = await off(self.parley.models.list)
            self._views, self._at = views, at
            return views

    async def loading(self, model: str | None):
        """The model's ModelView while it loads; None when it is not loading (loaded, or not yet started)."""
        m = await off(self.parley.models.show, model or self.parley.name)
        return m if m.state == "loading" else None


class Picker:
    def __init__(self, state: PageState, ui, models: Models, feed: Feed):
        self.state = state
        self.ui = ui
        self.models = models
        self.feed = feed

    # ---- the choices -----------------------------------------------------------------------------------------
    async def listed(self, picked: str | None, shown: list, since: float) -> tuple[dict, str | None]:
        """The picker's update when the models' states differ from what the page lists (`shown`; {} when they do
        not), and the model picked after it: one no longer offered gives way to the default (an event would
        refuse a value that is not among the choices)."""
        now = choices(await self.models.views(since))
        names = [name for _, name in now]
        if picked not in names:
            default = self.state.parley.name
            return {self.ui.model: gr.Dropdown(choices=now, value=default), self.ui.model_choices: now}, default
        if now == list(shown or []):
            return {}, picked
        return {self.ui.model: gr.Dropdown(choices=now), self.ui.model_choices: now}, picked

    def relabelled(self, shown: list, m) -> dict:
        """The picker with one model's label as `m` (a fresh ModelView) says, the others as they are shown."""
        if not shown:                 # the page has not listed the models yet: nothing to relabel
            return {}
        now = [(view.model_label(m) if name == m.name else label, name) for label, name in shown]
        return {self.ui.model: gr.Dropdown(choices=now), self.ui.model_choices: now}

    # ---- events ----------------------------------------------------------------------------------------------
    @handler
    async def tick(self, picked, shown):
        """The timer: the picked model's header and the models' states, as any client left them."""
        update, picked = await self.listed(picked, shown, asyncio.get_running_loop().time() - TIMER_S)
        line = await self.feed.line(picked)
        if line is not None:
            update[self.ui.header] = line
        return update or gr.skip()

    @handler
    async def picked(self, data: dict, request: gr.Request):
        """Another model picked: the header shows it, the max tokens slider ends at its limit, and the options
        the user did not move start at the defaults the next message will use there (an open conversation's
        own; on an empty page, the chat preset with the model's sampling over it)."""
        ui, state = self.ui, self.state
        model, cid = data[ui.model], data[ui.conv]
        owner = state.owner(request)

        def facts():
            door = state.door(model)
            conv = state.conversations(owner).get(cid, messages=False) if cid else None
            defaults = conv.defaults if conv is not None else state.sampling(door.name)
            return door.name, door.limits.max_tokens, defaults, conv
        name, end, defaults, conv = await off(facts)
        fresh = controls.option_values(defaults, end)
        values = controls.kept_options([data[c] for c in ui.options], data[ui.started] or fresh, fresh, end)
        note = ""
        if conv is not None and conv.message_count and conv.model and conv.model != name:
            note = (f"The next message goes to {name}: this conversation was on {conv.model}, so its history "
                    f"is read again for {name}.")
        line = await self.feed.line(name)
        return {**option_updates(ui, values, end), ui.started: fresh, ui.status: note,
                **({ui.header: line} if line is not None else {})}


def option_updates(ui, values: list, end: int) -> dict:
    """The advanced options showing `values` (controls.OPTIONS order), the max tokens slider ending at `end`
    (the model's limit)."""
    update = dict(zip(ui.options, values, strict=True))
    slider = ui.options[controls.MAX_TOKENS]
    update[slider] = gr.Slider(maximum=end, value=values[controls.MAX_TOKENS])
    return update
