"""Personas on the page: pick one (bundled or imported) to start a conversation with it (its greeting opens it),
edit the narrative and the characters of the conversation's persona (conversations.update(persona=Persona.
with_changes(...))), import a character card (SillyTavern JSON or PNG, read by the facade's load_card and saved with the
user's personas, so every page lists it)."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from parley.api import load_card
from parley.errors import ParleyError
from parley.web.state import PageState, handler, off

NONE = "(no persona)"
FIELDS = ("description", "personality", "scenario", "characters")


def choices(names: list[str]) -> list[str]:
    return [NONE, *names]


def field_values(p) -> list[str]:
    """The editor's boxes for a Persona (or None: empty)."""
    if p is None:
        return ["", "", "", ""]
    chars = "\n".join(f"{c.name}: {c.description}" if c.description else c.name for c in p.characters)
    return [p.description, p.personality, p.scenario, chars]


def changes(values: list[str]) -> dict:
    """Persona.with_changes arguments from the editor's boxes ("Name: description" per character line)."""
    description, personality, scenario, chars = (v or "" for v in values)
    characters = []
    for line in chars.splitlines():
        name, _, about = line.partition(":")
        if name.strip():
            characters.append({"name": name.strip(), "description": about.strip()})
    return {"description": description, "personality": personality, "scenario": scenario,
            "characters": characters}


class PersonaPanel:
    def __init__(self, state: PageState, ui, sidebar):
        self.state = state
        self.ui = ui
        self.sidebar = sidebar

    def _start(self, owner: str, name: str, system: str | None, anchors: list, model: str | None) -> dict:
        """A new conversation on the picked `model`: with the persona `name` (stored at once, its greeting
        shown), or an empty page (stored with its first message)."""
        ui, state = self.ui, self.state
        if name and name != NONE:
            conv = state.create(owner, system=system, persona=name, model=model)
            return self.sidebar.opened(owner, conv.id, [], model=conv.model or model)
        return {ui.chatbot: [], ui.ids: [], ui.conv: None, ui.title: "", ui.status: "",
                ui.persona: gr.Dropdown(choices=choices(state.parley.personas.names()), value=NONE),
                **dict(zip(ui.persona_fields, field_values(None), strict=True))}

    @handler
    async def start(self, data: dict, request: gr.Request):
        """New / Clear, and picking a persona: this page's reply (if any) ends, a new conversation begins."""
        ui, state = self.ui, self.state
        state.cancel_session(request.session_hash)
        owner = state.owner(request)
        system = (data[ui.system] or "").strip() or None
        update = await off(self._start, owner, data[ui.persona], system, data[ui.pages], data[ui.model])
        if ui.conv_list not in update:
            update.update(await off(self.sidebar.listing, owner, [], None))
        return update

    @handler
    async def apply(self, data: dict, request: gr.Request):
        """The edited narrative and characters become the conversation's persona (the next reply reads them)."""
        ui, state = self.ui, self.state
        owner = state.owner(request)
        cid, name = data[ui.conv], data[ui.persona]
        edits = changes([data[f] for f in ui.persona_fields])
        system = (data[ui.system] or "").strip() or None

        def apply():
            convs = state.conversations(owner)
            current = convs.persona(cid) if cid else None
            if current is None:
                if not name or name == NONE:
                    raise gr.Error("Pick a persona first: its narrative and characters are what you edit here.")
                current = state.parley.personas.get(name)
            edited = current.with_changes(**edits)
            if not cid:
                cid_now = state.create(owner, system=system, persona=edited, model=data[ui.model]).id
            else:
                cid_now = convs.update(cid, persona=edited).id
            return self.sidebar.opened(owner, cid_now, data[ui.pages], model=data[ui.model])
        update = await off(apply)
        gr.Info("The persona is updated: the next reply reads it.")
        return update

    @handler
    async def import_card(self, data: dict, request: gr.Request):
        """A card file (JSON or PNG): saved with the user's personas, then a conversation starts with it."""
        ui, state = self.ui, self.state
        path = data[ui.card]
        if not path:
            return {}
        owner = state.owner(request)
        system = (data[ui.system] or "").strip() or None

        def load():
            file = Path(path)
            p = load_card(file.read_bytes(), file.name)
            registry = state.parley.personas
            try:
                name = registry.save(p)
            except ParleyError:
                existing = [n for n in registry.names() if registry.get(n) == p]
                if not existing:
                    raise
                name = existing[0]               # the same card again: use the one saved before
            return {**self._start(owner, name, system, [], data[ui.model]), ui.card: None}
        update = await off(load)
        gr.Info("The card is imported; the conversation starts with its greeting.")
        return update
