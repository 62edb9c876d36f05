"""Replies streamed into the page: send, retry, edit, and Stop.

Each handler is an async generator. The reply (a Stream) is made with the running loop and read with
`async for`, so the text flows as the scheduler makes it; when Gradio cancels the event (Stop, a closed tab)
the generator is closed, and closing it cancels the engine request within a step (the store keeps the reply,
marked partial and cancelled). Stop also cancels this page's reply itself, by the page's session hash, so
another page's reply never stops. While a long prompt is read the status line counts its tokens
(Stream.progress()); while the picked model loads (its first message) it counts the load (picker.py).

Every turn goes to the model the page picked (conversations.send/retry/edit(model=...)): a conversation moved to
another model has its history read again there, and the reply's note, shown in the status line, says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import aclosing

import gradio as gr

from parley.web import controls, sidebar, view
from parley.web.state import PageState, handler, off

TICK_S = 0.25          # how often the status line is refreshed while nothing new arrives
PUSH_S = 0.05          # the most often the chat is redrawn while text streams in
PROGRESS_MIN = 64      # prompts shorter than this are read too quickly to show a count
STOP_WAIT_S = 5.0      # how long Stop waits for the reply to be recorded


async def chunks(reply, every: float = TICK_S):
    """The reply's chunks, with None every `every` seconds while none arrives. Closing this generator (or
    cancelling the task reading it) cancels the request."""
    it = reply.__aiter__()
    nxt = None
    try:
        while True:
            if nxt is None:
                nxt = asyncio.ensure_future(it.__anext__())
            done, _ = await asyncio.wait({nxt}, timeout=every)
            if not done:
                yield None
                continue
            task, nxt = nxt, None
            try:
                chunk = task.result()
            except StopAsyncIteration:
                return
            yield chunk
    finally:
        reply.cancel()
        if nxt is not None:
            nxt.cancel()
            with contextlib.suppress(BaseException):
                await nxt
        else:
            await it.aclose()


def _cancel_started(starting: asyncio.Future) -> None:
    if not starting.cancelled() and starting.exception() is None:
        starting.result()[1].cancel()


class Chat:
    def __init__(self, state: PageState, ui, picker):
        self.state = state
        self.ui = ui
        self.picker = picker          # picker.Picker: the models' states, the load's progress

    # ---- starting a reply ----------------------------------------------------------------------------------
    def _turn_args(self, data: dict, conv) -> dict:
        """params, skill and skill_params from the controls (only the options the user moved; `conv`: the
        conversation's view, whose defaults the sliders started at)."""
        ui, parley = self.ui, self.state.parley
        params = controls.overrides(conv.defaults, [data[c] for c in ui.options])
        name = data[ui.skill] or None
        skill_params = {}
        if name is not None:
            skill_params = controls.skill_params(parley.skills.get(name), [data[s] for s in ui.slots])
        return {"params": params or None, "skill": name, "skill_params": skill_params or None}

    def _prepare(self, data: dict, owner: str):
        """The conversation to talk in (a new one on the picked model when the page has none yet: creating it
        loads that model), its system prompt as the box says."""
        ui, state = self.ui, self.state
        system = (data[ui.system] or "").strip() or None
        cid = data[ui.conv]
        if cid is None:
            return state.create(owner, system=system, model=data[ui.model])
        convs = state.conversations(owner)
        conv = convs.get(cid, messages=False)
        if system != conv.system:
            conv = convs.update(cid, system=system)
        return conv

    @handler
    async def send(self, data: dict, request: gr.Request):
        ui = self.ui
        text = data[ui.text] or ""
        if not text.strip():
            gr.Warning("Type a message first.")
            return
        owner = self.state.owner(request)
        created = data[ui.conv] is None
        convs = self.state.conversations(owner)
        stored = []

        def start(loop):   # the model loads in here when it is not loaded yet (_stream shows the load)
            conv = self._prepare(data, owner)
            stored.append(conv.id)
            try:
                return conv.id, convs.send(conv.id, text, model=data[ui.model], loop=loop,
                                           **self._turn_args(data, conv))
            except Exception:
                if created:   # refused (a bad option, a message too long): no empty conversation stays behind
                    convs.delete(conv.id)
                raise
        async with aclosing(self._stream(start, owner, data, request.session_hash, {ui.text: ""})) as updates:
            async for update in updates:
                yield update
        yield await off(sidebar.refresh, self.state, ui, owner, [], stored[0])

    @handler
    async def retry(self, data: dict, request: gr.Request):
        """The Retry button: a new reply to the last user message."""
        async with aclosing(self._retry(data, request, None)) as updates:
            async for update in updates:
                yield update

    @handler
    async def retry_at(self, data: dict, evt: gr.RetryData, request: gr.Request):
        """The chatbot's own retry icon, on a reply."""
        ids = data[self.ui.ids]
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        async with aclosing(self._retry(data, request, ids[index] if 0 <= index < len(ids) else None)) as updates:
            async for update in updates:
                yield update

    async def _retry(self, data: dict, request: gr.Request, message_id: str | None):
        ui = self.ui
        cid = data[ui.conv]
        if cid is None:
            gr.Warning("There is nothing to retry yet.")
            return
        owner = self.state.owner(request)
        convs = self.state.conversations(owner)
        conv = await off(convs.get, cid, messages=False)
        params = (await off(self._turn_args, data, conv))["params"]

        def start(loop):
            return cid, convs.retry(cid, message_id=message_id, params=params, model=data[ui.model], loop=loop)
        async with aclosing(self._stream(start, owner, data, request.session_hash, {})) as updates:
            async for update in updates:
                yield update

    @handler
    async def edit(self, data: dict, evt: gr.EditData, request: gr.Request):
        ui = self.ui
        cid, ids = data[ui.conv], data[ui.ids]
        index = evt.index if isinstance(evt.index, int) else evt.index[0]
        if cid is None or not 0 <= index < len(ids):
            raise gr.Error("That message is no longer in this conversation.")
        text = evt.value if isinstance(evt.value, str) else str(evt.value)
        owner = self.state.owner(request)
        convs = self.state.conversations(owner)
        conv = await off(convs.get, cid, messages=False)
        args = await off(self._turn_args, data, conv)

        def start(loop):
            return cid, convs.edit(cid, ids[index], text, model=data[ui.model], loop=loop, **args)
        async with aclosing(self._stream(start, owner, data, request.session_hash, {})) as updates:
            async for update in updates:
                yield update

    # ---- streaming -----------------------------------------------------------------------------------------
    async def _stream(self, start, owner: str, data: dict, session: str, first: dict):
        """`start(loop)` -> (conversation id, the reply's Stream), called in a worker thread: it raises before
        anything is shown (a full context, a busy chat). A model not loaded yet loads inside it: until it
        returns, the status line and the picker count the load."""
        ui, state = self.ui, self.state
        loop = asyncio.get_running_loop()
        convs = state.conversations(owner)
        model, listed = data[ui.model], data[ui.model_choices]
        starting = asyncio.ensure_future(off(start, loop))
        try:
            while not starting.done():
                await asyncio.wait({starting}, timeout=TICK_S)
                m = None if starting.done() else await self.picker.models.loading(model)
                if m is not None and not starting.done():
                    relabelled = self.picker.relabelled(listed, m)
                    listed = relabelled.get(ui.model_choices, listed)
                    yield {ui.status: view.loading(m.name, m.progress), **relabelled}
        finally:
            if not starting.done():      # closed while the model loads (Stop, a closed tab): the reply it
                starting.add_done_callback(_cancel_started)     # starts is ended as soon as it exists
        cid, reply = starting.result()
        started = loop.time()
        state.live[session] = reply
        try:
            shown, ids = view.chat_messages((await off(convs.get, cid)).messages)   # ..., user, reply ""
            yield {**first, ui.conv: cid, ui.chatbot: shown, ui.ids: ids, ui.status: ""}
            text, pushed, dirty, counting = "", 0.0, False, False
            async with aclosing(chunks(reply)) as stream:
                async for chunk in stream:
                    if chunk is not None:
                        text, dirty = text + chunk.text, True
                    elif not text:
                        read, total = reply.progress()
                        if total >= PROGRESS_MIN and read < total:
                            counting = True
                            yield {ui.status: view.progress(read, total)}
                    if dirty and (chunk is None or loop.time() - pushed >= PUSH_S):
                        pushed, dirty = loop.time(), False
                        shown = [*shown[:-1], {"role": "assistant", "content": text}]
                        yield {ui.chatbot: shown, **({ui.status: ""} if counting else {})}
                        counting = False
            shown, ids = view.chat_messages((await off(convs.get, cid)).messages)   # as recorded, with numbers
            yield {ui.chatbot: shown, ui.ids: ids, ui.status: reply.meta.note}
            # the model is loaded now (it may not have been when the page listed it): the picker says so
            picker, _ = await self.picker.listed(model, listed, started)
            if picker:
                yield picker
        finally:
            if state.live.get(session) is reply:
                del state.live[session]
            reply.cancel()

    # ---- Stop ----------------------------------------------------------------------------------------------
    @handler
    async def stop(self, data: dict, request: gr.Request):
        """End this page's reply (Gradio also cancels the streaming event), then show it as the store has it."""
        ui, state = self.ui, self.state
        cid = data[ui.conv]
        state.cancel_session(request.session_hash)
        if cid is None:
            return {}
        convs = state.conversations(state.owner(request))
        await off(convs.get, cid, messages=False)      # this browser's, or a 404
        deadline = asyncio.get_running_loop().time() + STOP_WAIT_S
        while convs.generating(cid) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        shown, ids = view.chat_messages((await off(convs.get, cid)).messages)
        return {ui.chatbot: shown, ui.ids: ids, ui.status: ""}

    async def closed(self, request: gr.Request):
        """The tab went away (Gradio's unload): its reply, if any, ends now."""
        self.state.cancel_session(request.session_hash)
