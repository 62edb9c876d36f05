"""Documents on the page: upload files (this browser's own), see each loaded (tokens, whole in the context or by
retrieval, what loading skipped), tick the ones to ask about, ask, and read the answer as it streams with the
cited sources under it; the picked model answers (picker.py).

Everything goes through the facade's `parley.documents`, scoped to this browser: an upload is add_bytes (text,
Markdown, HTML, PDF, code, archives; the same limits and refusals as `POST /v1/documents`), a question is ask,
so the document's KV is read once, pinned, and shared by every question from any page (and by `parley ask`).
While a document is first read the status line says so; Stop ends the answer like a reply.
"""

from __future__ import annotations

import asyncio
import html
from contextlib import aclosing
from pathlib import Path

import gradio as gr

from parley.web import view
from parley.web.chat import TICK_S, chunks
from parley.web.state import PageState, handler, off

PUSH_S = 0.05


def choices(docs) -> list[tuple[str, str]]:
    return [(f"{d.name} ({d.tokens:,} tokens)", d.id) for d in docs]


def listing(docs) -> str:
    """The loaded documents, one line each: name, size, tokens, how it is read, what loading skipped."""
    if not docs:
        return "No documents yet: upload text, Markdown, HTML, PDF, code or an archive of them."
    lines = []
    for d in docs:
        how = "whole in the context" if d.fits else "too long for the context: answers use the best passages"
        parts = f", {len(d.parts)} files" if len(d.parts) > 1 else ""
        lines.append(f"- **{html.escape(d.name)}** · {view.size(d.size_bytes)}{parts} · {d.tokens:,} tokens · {how}")
        lines += [f"  - skipped: {html.escape(n)}" for n in d.notes[:5]]
    return "\n".join(lines)


def answer_footer(answer, result=None) -> str:
    """Under the answer (a Stream whose meta is an AnswerMeta): its sources (cited as file, page or lines) and,
    once done, its numbers."""
    out = []
    sources = answer.meta.sources
    if sources:
        given = [s for s in sources if s.given]
        label = "Passages given with the question" if given else "Where the document says it"
        cites = "; ".join(html.escape(s.cite) for s in (given or sources))
        out.append(f"**Sources** ({label.lower()}): {cites}")
    if result is not None:
        parts = [f"{result.generated_tokens} tokens",
                 f"{result.cached_tokens} of {result.prompt_tokens} prompt tokens cached",
                 f"first token {result.ttft_s:.2f} s"]
        if result.decode_tps:
            parts.append(f"{result.decode_tps:.1f} tokens/s")
        if result.finish_reason == "cancelled":
            parts.append("stopped")
        out.append(f'<div class="parley-stats">{" · ".join(parts)}</div>')
    return "\n\n".join(out)


def _cancel_answer(asking: asyncio.Future) -> None:
    if not asking.cancelled() and asking.exception() is None:
        asking.result().cancel()


class DocumentsPanel:
    def __init__(self, state: PageState, ui, models):
        self.state = state
        self.ui = ui
        self.models = models          # picker.Models: a model's load, while a question waits for it

    def shown(self, owner: str, selected: list[str] | None = None) -> dict:
        ui = self.ui
        docs = self.state.documents(owner).list()
        ids = {d.id for d in docs}
        keep = [i for i in (selected or []) if i in ids]
        return {ui.doc_list: listing(docs), ui.doc_pick: gr.CheckboxGroup(choices=choices(docs), value=keep)}

    @handler
    async def refresh(self, request: gr.Request):
        return await off(self.shown, self.state.owner(request))

    @handler
    async def upload(self, files, selected, request: gr.Request):
        """Each uploaded file becomes a document of this browser (the same file again: the same document)."""
        owner = self.state.owner(request)
        paths = [files] if isinstance(files, str) else list(files or [])
        picked = list(selected or [])

        def add(path: str):
            data = Path(path).read_bytes()
            return self.state.documents(owner).add_bytes(Path(path).name, data)
        for path in paths:
            info = await off(add, path)
            if info.id not in picked:
                picked.append(info.id)
        return {**(await off(self.shown, owner, picked)), self.ui.doc_files: None}

    @handler
    async def delete(self, selected, request: gr.Request):
        owner = self.state.owner(request)
        docs = self.state.documents(owner)
        mine = {d.id for d in await off(docs.list)}
        for doc_id in selected or []:
            if doc_id in mine:
                await off(docs.delete, doc_id)
        return await off(self.shown, owner, [])

    @handler
    async def ask(self, question, selected, model, request: gr.Request):
        """A question about the ticked documents, answered by the picked model (its first question loads it;
        the status line counts the load, then the document's first read on that model)."""
        ui, state = self.ui, self.state
        question = (question or "").strip()
        if not question:
            gr.Warning("Type a question about the documents first.")
            return
        owner = state.owner(request)
        docs = await off(state.documents, owner, model)      # the model's door: a registry read
        mine = {d.id: d for d in await off(state.documents(owner).list)}
        ids = [i for i in (selected or []) if i in mine]
        if not ids:
            gr.Warning("Tick at least one document to ask about (upload one first).")
            return
        yield {ui.doc_answer: "", ui.doc_status: ""}
        loop = asyncio.get_running_loop()
        reading: list = []          # the document's first read, if this question starts one
        asking = asyncio.ensure_future(off(docs.ask, ids, question, loop=loop, watch=reading.append))
        try:
            while not asking.done():    # a document read for the first time: count its tokens as they are read
                await asyncio.wait({asking}, timeout=TICK_S)
                if reading and not asking.done():
                    read, total = reading[0].progress()
                    yield {ui.doc_status: view.progress(read, total, "the documents once (later questions "
                                                                     "reuse them)")}
                elif not asking.done():     # nothing read yet: the model may be loading
                    m = await self.models.loading(model)
                    if m is not None:
                        yield {ui.doc_status: view.loading(m.name, m.progress)}
        finally:
            if not asking.done():       # stopped while the document was read: the read goes on (it is kept for
                asking.add_done_callback(_cancel_answer)   # the next question), the answer does not
        answer = asking.result()
        session = request.session_hash
        state.live[session] = answer
        try:
            text, pushed = "", 0.0
            yield {ui.doc_status: "", ui.doc_answer: answer_footer(answer)}
            async with aclosing(chunks(answer)) as stream:
                async for chunk in stream:
                    if chunk is None:
                        continue
                    text += chunk.text
                    if loop.time() - pushed >= PUSH_S:
                        pushed = loop.time()
                        yield {ui.doc_answer: view.with_footer(text, answer_footer(answer))}
            result = await off(answer.wait)
            yield {ui.doc_answer: view.with_footer(result.text or text, answer_footer(answer, result))}
        finally:
            if state.live.get(session) is answer:
                del state.live[session]
            answer.cancel()
