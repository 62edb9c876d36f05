"""The page's layout and its events: which control calls which handler (chat.py, sidebar.py, persona.py), with
what, into what.

    sidebar        New conversation; this browser's conversations (paged); rename, export, delete
    header         the picked model, its context and device, what its scheduler is doing (replies running and
                   waiting, the cache: live KV / RAM / disk); the page's replies carry it as they stream, a timer
                   shows what other clients do (header.py); beside it the model picker: the models the server
                   offers with their states; new conversations and the next message go to the picked one
                   (picker.py)
    chat           the replies (Markdown, highlighted code, copy buttons; edit a message, retry a reply); the
                   status line (prompt reading progress, notes); the message box (Enter sends, Shift+Enter is a
                   new line); Send, Stop, Retry
    right column   skill and its parameters and examples; persona, system instructions, narrative and
                   characters, card import; advanced options (sampling); documents (upload, ask, sources)

Replies stream under one concurrency limit shared by every page (the server's --max-concurrent), so two pages
streaming at once are batched by the engine instead of waiting for each other.
"""

from __future__ import annotations

import asyncio
import html
from types import SimpleNamespace

import gradio as gr

from parley import __version__
from parley.api import Parley
from parley.web import controls, documents, persona, view
from parley.web.chat import Chat
from parley.web.documents import DocumentsPanel
from parley.web.header import TIMER_S, Feed, follow
from parley.web.persona import PersonaPanel
from parley.web.picker import Models, Picker, choices
from parley.web.sidebar import DOWNLOAD_JS, Sidebar
from parley.web.state import PageState, handler, off

CSS = f"""
.{view.STATS_CLASS} {{ font-size: 0.78em; opacity: 0.65; margin-top: 0.5em; }}
#parley-status {{ min-height: 1.5em; font-size: 0.9em; }}
#parley-header p {{ margin: 0; }}
"""


def build(parley: Parley, settings) -> tuple[gr.Blocks, PageState]:
    """The page over the server's door and settings (mount.mount_page says which of them the page reads)."""
    state = PageState(parley, settings)
    max_tokens = parley.limits.max_tokens
    feed = Feed(parley)                   # the header's stats, shared by the timer and every reply
    models = Models(parley)               # the picker's list, shared the same way
    ui = SimpleNamespace()
    info = parley.info
    listed = choices(parley.models.list())   # before the server serves: the first page load refreshes it
    start = controls.option_values(state.sampling(None), max_tokens)   # a new conversation's on the default
    skill_names = parley.skills.names()
    first_skill = "chat" if "chat" in skill_names else (skill_names[0] if skill_names else None)

    with gr.Blocks(title=f"parley: {info.name}", analytics_enabled=False, delete_cache=(3600, 3600)) as demo:
        ui.conv = gr.State(None)          # the conversation this page shows (None: not stored yet)
        ui.ids = gr.State([])             # the stored message id of each message shown
        ui.pages = gr.State([])           # the sidebar's page: a stack of `before` ids
        ui.older_anchor = gr.State(None)  # the `before` id of the next older page
        ui.model_choices = gr.State(listed)   # the picker's choices as this page shows them
        ui.started = gr.State(start)      # where the options began: those still there were not moved

        with gr.Sidebar(label="Conversations", open=True):
            ui.new = gr.Button("New conversation", variant="primary", elem_id="parley-new")
            ui.conv_list = gr.Radio(label="Your conversations", choices=[], elem_id="parley-conversations")
            with gr.Row():
                ui.newer = gr.Button("Newer", size="sm", interactive=False, elem_id="parley-newer")
                ui.older = gr.Button("Older", size="sm", interactive=False, elem_id="parley-older")
            ui.title = gr.Textbox(label="Title", max_lines=1, elem_id="parley-title")
            with gr.Row():
                ui.rename = gr.Button("Rename", size="sm", elem_id="parley-rename")
                ui.export = gr.Button("Export JSON", size="sm", elem_id="parley-export")
                ui.delete = gr.Button("Delete", size="sm", variant="stop", elem_id="parley-delete")
            ui.export_json = gr.Textbox(visible="hidden")
            ui.export_name = gr.Textbox(visible="hidden")

        links = '<a href="/docs">API docs</a>' + (' · <a href="/logout">log out</a>' if settings.api_key else "")
        with gr.Row(equal_height=False):
            with gr.Column(scale=5):
                ui.header = gr.Markdown(f"**{html.escape(info.name)}** · context {info.context_size:,} tokens",
                                        elem_id="parley-header")
            with gr.Column(scale=2, min_width=280):
                ui.model = gr.Dropdown(choices=listed, value=parley.name, label="Model", elem_id="parley-model")
            with gr.Column(scale=1, min_width=240):
                gr.HTML(f'<div style="text-align:right">parley {__version__} · {links}</div>')
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                ui.chatbot = gr.Chatbot(label="Chat", height=560, editable="user", buttons=["copy", "copy_all"],
                                        placeholder="Say something to the model. Replies stream in as they are "
                                                    "written.", elem_id="parley-chat")
                ui.status = gr.Markdown("", elem_id="parley-status")
                ui.text = gr.Textbox(show_label=False, lines=1, max_lines=10, autofocus=True,
                                     placeholder="Message (Enter sends, Shift+Enter: new line)",
                                     elem_id="parley-input")
                with gr.Row():
                    ui.send = gr.Button("Send", variant="primary", size="md", elem_id="parley-send")
                    ui.stop = gr.Button("Stop", variant="stop", size="md", elem_id="parley-stop")
                    ui.retry = gr.Button("Retry", size="md", elem_id="parley-retry")
            with gr.Column(scale=2):
                with gr.Accordion("Skill", open=True):
                    ui.skill = gr.Dropdown(label="Skill", choices=skill_names, value=first_skill,
                                           elem_id="parley-skill")
                    ui.skill_info = gr.Markdown("")
                    ui.slots = [gr.Textbox(label=f"parameter {i + 1}", visible=False, max_lines=1,
                                           elem_id=f"parley-param-{i}") for i in range(controls.SKILL_SLOTS)]
                    ui.examples = gr.Dataset(label="Examples (click one)", components=[ui.text], samples=[],
                                             type="index", elem_id="parley-examples")
                with gr.Accordion("Persona and instructions", open=False, elem_id="parley-persona-box"):
                    ui.persona = gr.Dropdown(label="Persona", choices=persona.choices(parley.personas.names()),
                                             value=persona.NONE, elem_id="parley-persona")
                    ui.system = gr.Textbox(label="System instructions", lines=2, max_lines=8,
                                           elem_id="parley-system")
                    ui.persona_fields = [
                        gr.Textbox(label="Narrative (the persona's description)", lines=3, max_lines=12),
                        gr.Textbox(label="Personality", lines=1, max_lines=4),
                        gr.Textbox(label="Scenario", lines=1, max_lines=6),
                        gr.Textbox(label="Other characters (one per line: Name: description)", lines=2,
                                   max_lines=8)]
                    ui.apply = gr.Button("Apply to this conversation", size="sm", elem_id="parley-apply")
                    ui.card = gr.File(label="Import a character card (JSON or PNG)", file_types=[".json", ".png"],
                                      type="filepath", height=110, elem_id="parley-card")
                with gr.Accordion("Advanced options", open=False, elem_id="parley-options"):
                    ui.options = [
                        gr.Slider(0, 2, value=start[0], step=0.05, label="Temperature (0: always the likeliest)"),
                        gr.Slider(0.01, 1, value=start[1], step=0.01, label="Top-p"),
                        gr.Slider(0, 200, value=start[2], step=1, label="Top-k (0: off)"),
                        gr.Slider(0, 1, value=start[3], step=0.01, label="Min-p (0: off)"),
                        gr.Slider(0.5, 2, value=start[4], step=0.01, label="Repetition penalty (1: off)"),
                        gr.Slider(1, max_tokens, value=start[5], step=1, label="Max tokens",
                                  elem_id="parley-max-tokens"),
                        gr.Number(value=start[6], precision=0, minimum=0, label="Seed (empty: random)"),
                        gr.Textbox(value=start[7], label="Stop strings (one per line)", lines=2, max_lines=6)]
                with gr.Accordion("Documents", open=False, elem_id="parley-documents"):
                    ui.doc_files = gr.File(label="Upload documents (text, Markdown, HTML, PDF, code, archives)",
                                           file_count="multiple", type="filepath", height=110,
                                           elem_id="parley-doc-files")
                    ui.doc_list = gr.Markdown(documents.listing([]), elem_id="parley-doc-list")
                    ui.doc_pick = gr.CheckboxGroup(label="Ask about", choices=[], elem_id="parley-doc-pick")
                    ui.doc_question = gr.Textbox(label="Question", lines=1, max_lines=4,
                                                 placeholder="Ask about the ticked documents (Enter asks)",
                                                 elem_id="parley-doc-question")
                    with gr.Row():
                        ui.doc_ask = gr.Button("Ask", variant="primary", size="sm", elem_id="parley-doc-ask")
                        ui.doc_delete = gr.Button("Remove ticked", size="sm", variant="stop",
                                                  elem_id="parley-doc-delete")
                    ui.doc_status = gr.Markdown("", elem_id="parley-doc-status")
                    ui.doc_answer = gr.Markdown("", elem_id="parley-doc-answer")

        picker = Picker(state, ui, models, feed)
        chat = Chat(state, ui, picker)
        side = Sidebar(state, ui)
        personas = PersonaPanel(state, ui, side)
        docs = DocumentsPanel(state, ui, models)

        sidebar_out = [ui.conv_list, ui.pages, ui.newer, ui.older, ui.older_anchor]
        view_out = [ui.chatbot, ui.ids, ui.conv, ui.status, ui.title]
        picker_out = [ui.model, ui.model_choices]
        open_out = [*view_out, ui.system, ui.persona, *ui.persona_fields, *ui.options, ui.started, *sidebar_out,
                    *picker_out]
        stream_out = [*view_out, ui.text, *sidebar_out, ui.header, *picker_out]
        turn_in = {ui.text, ui.conv, ui.ids, ui.skill, *ui.slots, ui.system, *ui.options, *picker_out}

        # ---- replies --------------------------------------------------------------------------------------
        replies = {"show_progress": "hidden", "concurrency_id": "replies",
                   "concurrency_limit": settings.max_concurrent}     # one limit over every kind of reply

        def picked(data, *_, **__):       # the model an event's inputs picked: its reply runs there
            return data.get(ui.model)

        def live(fn, model=picked):       # the reply's updates carry the header (header.py says why)
            return handler(follow(feed, ui.header, fn, model))

        def asked(question, selected, model, *_, **__):
            return model
        ask_out = [ui.doc_answer, ui.doc_status, ui.header]
        streams = [
            ui.text.submit(live(chat.send), turn_in, stream_out, **replies),
            ui.send.click(live(chat.send), turn_in, stream_out, **replies),
            ui.retry.click(live(chat.retry), turn_in, stream_out, **replies),
            ui.chatbot.retry(live(chat.retry_at), turn_in, stream_out, **replies),
            ui.chatbot.edit(live(chat.edit), turn_in, stream_out, **replies),
            *(trigger(live(docs.ask, asked), [ui.doc_question, ui.doc_pick, ui.model], ask_out, **replies)
              for trigger in (ui.doc_ask.click, ui.doc_question.submit)),
        ]
        ui.stop.click(live(chat.stop), {ui.conv, ui.model}, [ui.chatbot, ui.ids, ui.status, ui.header],
                      cancels=streams, show_progress="hidden")
        demo.unload(chat.closed)

        # ---- new conversation, persona ----------------------------------------------------------------------
        start_in = {ui.persona, ui.system, ui.pages, ui.model}
        for trigger in (ui.new.click, ui.chatbot.clear, ui.persona.select):
            trigger(personas.start, start_in, open_out, cancels=streams)
        ui.apply.click(personas.apply, {ui.conv, ui.persona, ui.system, ui.pages, ui.model, *ui.persona_fields},
                       open_out)
        ui.card.upload(personas.import_card, {ui.card, ui.system, ui.model}, [*open_out, ui.card])

        # ---- the model picker -----------------------------------------------------------------------------
        header = handler(feed.handler())
        ui.model.input(picker.picked, {ui.model, ui.conv, *ui.options, ui.started},
                       [*ui.options, ui.started, ui.status, ui.header], show_progress="hidden")

        # ---- sidebar --------------------------------------------------------------------------------------
        ui.conv_list.input(side.open, {ui.conv_list, ui.conv, ui.pages, ui.model_choices}, open_out).then(
            header, ui.model, ui.header, show_progress="hidden")     # the conversation's model: its numbers
        ui.older.click(side.older, {ui.pages, ui.older_anchor, ui.conv}, sidebar_out)
        ui.newer.click(side.newer, {ui.pages, ui.conv}, sidebar_out)
        for trigger in (ui.rename.click, ui.title.submit):
            trigger(side.rename, {ui.conv, ui.title, ui.pages}, sidebar_out)
        ui.delete.click(side.delete, {ui.conv}, [*view_out, *sidebar_out], cancels=streams)
        ui.export.click(side.export, {ui.conv}, [ui.export_json, ui.export_name]).then(
            None, [ui.export_json, ui.export_name], None, js=DOWNLOAD_JS)

        # ---- documents ------------------------------------------------------------------------------------
        doc_out = [ui.doc_list, ui.doc_pick]
        ui.doc_files.upload(docs.upload, [ui.doc_files, ui.doc_pick], [*doc_out, ui.doc_files])
        ui.doc_delete.click(docs.delete, ui.doc_pick, doc_out)

        # ---- skill ----------------------------------------------------------------------------------------
        def skill_shown(name: str | None) -> dict:
            if not name:
                return {ui.skill_info: "", ui.examples: gr.Dataset(samples=[]),
                        **{s: gr.Textbox(visible=False, value="") for s in ui.slots}}
            v = controls.skill_view(parley.skills.get(name))
            boxes = {}
            for i, s in enumerate(ui.slots):
                if i < len(v.params):
                    pname, about, default = v.params[i]
                    boxes[s] = gr.Textbox(label=pname, info=about, value=default, visible=True)
                else:
                    boxes[s] = gr.Textbox(visible=False, value="")
            return {ui.skill_info: v.description, ui.examples: gr.Dataset(samples=[[row[0]] for row in v.examples]),
                    **boxes}

        @handler
        async def skill_changed(name):
            return await off(skill_shown, name)

        @handler
        async def example_picked(name, index):
            v = await off(lambda: controls.skill_view(parley.skills.get(name)))
            if index is None or not 0 <= index < len(v.examples):
                return {}
            row = v.examples[index]
            return {ui.text: row[0], **{s: value for s, value in zip(ui.slots, row[1:], strict=False) if value}}

        skill_out = [ui.skill_info, ui.examples, *ui.slots]
        ui.skill.change(skill_changed, ui.skill, skill_out)
        ui.examples.click(example_picked, [ui.skill, ui.examples], [ui.text, *ui.slots])

        # ---- header and first load -------------------------------------------------------------------------
        ui.timer = gr.Timer(TIMER_S)      # what other clients do: the page's own replies refresh it themselves
        ui.timer.tick(picker.tick, [ui.model, ui.model_choices], [ui.header, *picker_out], show_progress="hidden",
                      queue=False)

        @handler
        async def loaded(name, model, request: gr.Request):
            owner = state.owner(request)
            listing = await off(side.listing, owner, [], None)
            names = await off(parley.personas.names)
            personas_now = gr.Dropdown(choices=persona.choices(names), value=persona.NONE)
            models_now, model = await picker.listed(model, [], asyncio.get_running_loop().time())
            return {**listing, ui.persona: personas_now, ui.header: await header(model), **models_now,
                    **(await off(skill_shown, name)), **(await off(docs.shown, owner))}

        demo.load(loaded, [ui.skill, ui.model], [*sidebar_out, ui.persona, ui.header, *picker_out, *skill_out,
                                                 *doc_out], show_progress="hidden")
    demo.queue(default_concurrency_limit=settings.max_concurrent, api_open=False)
    quiet_queue(demo._queue)
    return demo, state


# Gradio's queue looks for work every 1 ms and for progress every 10 ms (its Linux defaults), on the server's event
# loop, page open or not: measured on 2 cores, 1.0 s of CPU in 17 s of one API stream, and the stream 8% slower,
# since that core is one of llama.cpp's. Every 20 ms (100 ms for progress) costs a page event at most 20 ms more
# before it starts; its replies then stream as they come.
QUEUE_POLL_S = 0.02
PROGRESS_POLL_S = 0.1


def quiet_queue(queue) -> None:
    if not (hasattr(queue, "sleep_when_free") and hasattr(queue, "progress_update_sleep_when_free")):
        raise RuntimeError("gradio's Queue no longer has sleep_when_free: see parley.web.page.quiet_queue")
    queue.sleep_when_free = QUEUE_POLL_S
    queue.progress_update_sleep_when_free = PROGRESS_POLL_S
