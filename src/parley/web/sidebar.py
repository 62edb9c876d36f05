"""The sidebar: this browser's stored conversations, newest first, a page at a time; open one (its current branch,
its system prompt, persona and sampling defaults come back, the picker picks its model, and the next message
continues it, reusing its KV cache), rename, delete, export (the whole tree as the JSON `parley conversations import` and
POST /v1/conversations/import take)."""

from __future__ import annotations

import json
import re

import gradio as gr

from parley.web import controls, persona, view
from parley.web.picker import option_updates
from parley.web.state import PageState, handler, off

PAGE = 12

# the export reaches the browser as text and is saved from there (no file is written on the server)
DOWNLOAD_JS = """(text, name) => {
  if (!text) return;
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], {type: "application/json"}));
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
}"""


def refresh(state: PageState, ui, owner: str, anchors: list, current: str | None) -> dict:
    """The list at the page `anchors` points to (a stack of `before` ids: [] is the newest page)."""
    before = anchors[-1] if anchors else None
    page = state.conversations(owner).list(limit=PAGE, before=before)
    choices = [(view.conversation_label(c), c.id) for c in page.items]
    value = current if any(c.id == current for c in page.items) else None
    return {ui.conv_list: gr.Radio(choices=choices, value=value), ui.pages: anchors,
            ui.newer: gr.Button(interactive=bool(anchors)), ui.older: gr.Button(interactive=page.has_more),
            ui.older_anchor: page.next_before}


def file_name(title: str | None, cid: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", title or "").strip("-")[:60]
    return f"{stem or cid}.json"


class Sidebar:
    def __init__(self, state: PageState, ui):
        self.state = state
        self.ui = ui

    def listing(self, owner: str, anchors: list, current: str | None) -> dict:
        return refresh(self.state, self.ui, owner, anchors, current)

    @handler
    async def older(self, data: dict, request: gr.Request):
        ui = self.ui
        anchors = [*data[ui.pages], data[ui.older_anchor]] if data[ui.older_anchor] else data[ui.pages]
        return await off(refresh, self.state, ui, self.state.owner(request), anchors, data[ui.conv])

    @handler
    async def newer(self, data: dict, request: gr.Request):
        ui = self.ui
        return await off(refresh, self.state, ui, self.state.owner(request), data[ui.pages][:-1], data[ui.conv])

    @handler
    async def open(self, data: dict, request: gr.Request):
        ui, state = self.ui, self.state
        cid = data[ui.conv_list]
        if not cid:
            return {}
        if request.session_hash in state.live:
            raise gr.Error("Stop the reply being written before opening another conversation.")
        owner = state.owner(request)
        return await off(self.opened, owner, cid, data[ui.pages], listed=data[ui.model_choices])

    def opened(self, owner: str, cid: str, anchors: list, *, model: str | None = None,
               listed: list | None = None) -> dict:
        """Everything the page shows of conversation `cid` (also after Clear picks a persona). `model`: the
        model the page picked for it; None: the one it keeps, picked in the picker (`listed`: the page's
        choices, a model missing from them added), whose limit ends the max tokens slider."""
        ui, state = self.ui, self.state
        convs = state.conversations(owner)
        conv = convs.get(cid)
        shown, ids = view.chat_messages(conv.messages)
        p = convs.persona(cid) if conv.problem is None else None   # a row that does not read: shown, named
        names = state.parley.personas.names()
        picked = conv.persona if conv.persona in names else persona.NONE
        door = state.door(model) if model else state.door_of(conv.model)
        end = door.limits.max_tokens
        values = controls.option_values(conv.defaults, end)
        status = f"This conversation cannot be continued as stored: {conv.problem}" if conv.problem else ""
        update = {ui.chatbot: shown, ui.ids: ids, ui.conv: cid, ui.system: conv.system or "",
                  ui.title: conv.title or "", ui.status: status,
                  ui.persona: gr.Dropdown(choices=persona.choices(names), value=picked),
                  **dict(zip(ui.persona_fields, persona.field_values(p), strict=True)),
                  **option_updates(ui, values, end), ui.started: values,
                  **refresh(state, ui, owner, anchors, cid)}
        if not model:
            listed = list(listed or [])
            if door.name not in [name for _, name in listed]:   # offered since the page listed the models
                listed.append((door.name, door.name))
            update |= {ui.model: gr.Dropdown(choices=listed, value=door.name), ui.model_choices: listed}
        return update

    @handler
    async def rename(self, data: dict, request: gr.Request):
        ui, state = self.ui, self.state
        cid = data[ui.conv]
        if cid is None:
            gr.Warning("Send a message first: the conversation is stored with it.")
            return {}
        owner = state.owner(request)
        title = (data[ui.title] or "").strip() or None

        def rename():
            state.conversations(owner).update(cid, title=title)
            return refresh(state, ui, owner, data[ui.pages], cid)
        return await off(rename)

    @handler
    async def delete(self, data: dict, request: gr.Request):
        ui, state = self.ui, self.state
        cid = data[ui.conv]
        if cid is None:
            return {}
        owner = state.owner(request)

        def delete():
            state.conversations(owner).delete(cid)     # ends a reply still being written
            return refresh(state, ui, owner, [], None)
        update = await off(delete)
        return {**update, ui.chatbot: [], ui.ids: [], ui.conv: None, ui.title: "", ui.status: "Deleted."}

    @handler
    async def export(self, data: dict, request: gr.Request):
        ui, state = self.ui, self.state
        cid = data[ui.conv]
        if cid is None:
            gr.Warning("There is no stored conversation to export yet.")
            return {ui.export_json: "", ui.export_name: ""}
        owner = state.owner(request)

        def export():
            convs = state.conversations(owner)
            data = convs.export(cid)
            return json.dumps(data, ensure_ascii=False, indent=1), file_name(data["conversation"]["title"], cid)
        text, name = await off(export)
        return {ui.export_json: text, ui.export_name: name}
