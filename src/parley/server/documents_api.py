"""Documents over HTTP: load once into model memory, ask many independent questions.

    POST   /v1/documents?name=paper.pdf     the file's bytes as the body (Content-Type application/octet-stream;
                                            archives too), or JSON {"path": ..., "name": ...} for a file under
                                            `parley serve --docs-root`
    GET    /v1/documents                    newest first
    GET    /v1/documents/{id}               its size, tokens, whether it fits whole, its files, notes
    DELETE /v1/documents/{id}
    POST   /v1/documents/{id}/ask           {question, stream, sampling...}: a chat.completion (SSE when
                                            streaming) whose `parley.sources` name the parts used

Conversations take `document_ids` at creation (POST /v1/conversations, or PATCH later): the documents are pinned
in their prompt, and a document a conversation pins cannot be deleted (409 naming the conversations). Loading
runs in a worker thread; a document is read into the cache (and its KV written to disk) once.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.responses import Response

from parley.errors import InvalidRequest
from parley.server import params as P
from parley.server.bounds import BoundedRoute, off_loop
from parley.server.responses import chat_completion, chat_events, finished, new_id
from parley.server.schemas import SamplingFields, StreamOptions, Strict, Text
from parley.server.state import ServerState, State
from parley.server.streaming import Generation, SSEResponse

router = APIRouter(tags=["Documents"], route_class=BoundedRoute)
UPLOAD_TYPES = ("application/octet-stream", "application/pdf", "application/zip", "application/x-tar",
                "application/gzip", "application/x-gzip")


class DocumentPath(Strict):
    path: Text = Field(description="A file, directory or archive under the server's --docs-root.")
    name: Text | None = None


class DocumentQuestion(SamplingFields):
    question: Text
    model: Text | None = Field(None, description="The model that answers (default: the default one); each model "
                                                 "reads a document once and keeps it pinned.")
    stream: bool = False
    stream_options: StreamOptions | None = None


def document_view(info) -> dict:
    return {"id": info.id, "object": "document", "name": info.name, "content_hash": info.content_hash,
            "size_bytes": info.size_bytes, "chars": info.chars, "tokens": info.tokens, "fits": info.fits,
            "mode": info.mode, "parts": list(info.parts), "notes": list(info.notes), "created": info.created}


def _inside_root(state: ServerState, raw: str) -> Path:
    root = state.settings.docs_root
    if "\x00" in raw:
        raise InvalidRequest("path holds a NUL character; send a file name", param="path")
    if root is None:
        raise InvalidRequest("this server loads no server-side files: start it with --docs-root DIR, or upload "
                             "the file's bytes (Content-Type: application/octet-stream)", param="path")
    base = Path(root).expanduser().resolve()
    path = (base / raw).resolve() if not Path(raw).is_absolute() else Path(raw).resolve()
    if not path.is_relative_to(base):
        raise InvalidRequest(f"path {raw!r} is outside the documents root (--docs-root)", param="path")
    return path


@router.post("/v1/documents", summary="Load a document (an upload, or a file under --docs-root)")
async def add(request: Request, state: State, name: str | None = None):
    docs = state.parley.documents
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        try:
            body = DocumentPath.model_validate_json(await request.body())
        except ValueError as e:
            raise InvalidRequest(f"the body must be {{\"path\": ..., \"name\": ...}}: {e}", param="path") from None
        path = _inside_root(state, body.path)
        root = Path(state.settings.docs_root).expanduser().resolve()
        info = await off_loop(docs.add, [path], name=body.name, root=root)
    elif kind in UPLOAD_TYPES:
        if not name:
            raise InvalidRequest("name the uploaded file: POST /v1/documents?name=paper.pdf", param="name")
        info = await off_loop(docs.add_bytes, name, await request.body())
    else:
        raise InvalidRequest(f"send the file's bytes with Content-Type: application/octet-stream (got "
                             f"{kind or 'none'!r}), or JSON {{\"path\": ...}}", param="content-type")
    await off_loop(docs.warm, [info.id])  # read once now (or restored from disk): every question forks it
    return document_view(info)


@router.get("/v1/documents", summary="Documents, newest first")
async def list_all(state: State):
    infos = await off_loop(state.parley.documents.list)
    return {"object": "list", "data": [document_view(i) for i in infos]}


@router.get("/v1/documents/{document_id}", summary="One document")
async def get_one(document_id: str, state: State):
    return document_view(await off_loop(state.parley.documents.get, document_id))


@router.delete("/v1/documents/{document_id}", summary="Forget a document (and unpin its KV)")
async def delete(document_id: str, state: State):
    await off_loop(state.parley.documents.delete, document_id)
    return {"id": document_id, "object": "document.deleted", "deleted": True}


@router.post("/v1/documents/{document_id}/ask", summary="Ask a question about a document (streams)")
async def ask(document_id: str, body: DocumentQuestion, request: Request, state: State):
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("stream_options is only allowed with \"stream\": true", param="stream_options")
    changes, names = P.openai_changes(body, max_tokens=body.max_tokens)
    base = state.settings.sampling.replace(temperature=0.0) if body.temperature is None else state.settings.sampling
    door = await off_loop(state.parley.using, body.model)
    params = P.build(door.sampling_over(base), changes, names, limits=door.limits)
    docs = door.documents
    gen = await Generation.start(state, lambda loop: docs.ask([document_id], body.question, params=params,
                                                              loop=loop))
    prompt = gen.stream.meta
    extra = {"document_id": document_id, "mode": prompt.mode, "sources": [s.as_dict() for s in prompt.sources]}
    model = door.name
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return SSEResponse(chat_events(gen, model=model, prompt=prompt, include_usage=include, **extra), gen.close)
    result = await finished(gen, request)
    if isinstance(result, Response):
        return result
    return chat_completion(new_id("chatcmpl"), model, gen, result, prompt, **extra)
