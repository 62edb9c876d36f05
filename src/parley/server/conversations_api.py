"""Conversations over HTTP, kept in the store (SQLite) with every branch and their KV cache: clients send only
the new message.

    POST   /v1/conversations                      {system, persona, overflow, max_messages, title, sampling...}
    GET    /v1/conversations?limit=&before=       newest first, paged, without message bodies; ?q= searches
    POST   /v1/conversations/import               an exported document -> a new conversation
    GET    /v1/conversations/{id}                 with its current branch (?tree=true: every message)
    PATCH  /v1/conversations/{id}                 {title, system, overflow, max_messages, metadata, leaf_id,
                                                   defaults}
    DELETE /v1/conversations/{id}                 (ends a reply being generated)
    POST   /v1/conversations/{id}/messages        {content, parent_id, skill, skill_params, stream, ...}
    POST   /v1/conversations/{id}/retry           {message_id}: a new reply beside the old one
    POST   /v1/conversations/{id}/edit            {message_id, content}: the message said differently, and a reply
    POST   /v1/conversations/{id}/fork            {at}: a new conversation holding the branch up to `at`
    GET    /v1/conversations/{id}/export          the whole tree as JSON

Replies have the chat.completion shape (SSE chunks when streaming) plus `parley.conversation_id` and the ids of
the user message and the reply. One reply at a time per conversation (409). The turn itself (prompt, store
writes, recording) is the facade's (parley.conversations): these handlers only translate.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from parley.api import Prompt
from parley.errors import InvalidRequest, LimitExceeded
from parley.server import params as P
from parley.server.bounds import BoundedRoute, off_loop
from parley.server.responses import chat_completion, chat_events, finished, new_id
from parley.server.schemas import (
    ConversationCreate,
    ConversationEdit,
    ConversationFork,
    ConversationMessage,
    ConversationPatch,
    ConversationRetry,
    SamplingFields,
)
from parley.server.state import ServerState, State
from parley.server.streaming import Generation, SSEResponse

router = APIRouter(tags=["Conversations"], route_class=BoundedRoute)
MAX_PAGE = 200


def message_view(m) -> dict:
    return {"id": m.id, "object": "conversation.message", "parent_id": m.parent_id, "role": m.role,
            "content": m.content, "created": m.created, "partial": m.partial, "finish_reason": m.finish_reason,
            "stats": m.stats.as_dict() if m.role == "assistant" else None,
            "meta": {k: v for k, v in m.meta.items() if k in ("dropped", "note", "skill", "skill_params",
                                                                "speaker")}}


def conversation_view(state: ServerState, conv, *, messages: list | None = None) -> dict:
    sessions = state.parley.conversations
    out = {
        "id": conv.id,
        "object": "conversation",
        "created": conv.created,
        "updated": conv.updated,
        "title": conv.title,
        "metadata": conv.metadata,
        "system": conv.system,
        "overflow": conv.settings.get("overflow", "truncate"),
        "max_messages": conv.settings.get("max_messages", 0),
        "persona": (conv.settings.get("persona") or {}).get("name"),
        "document_ids": conv.settings.get("documents", []),
        "defaults": sessions.stored_defaults(sessions.defaults(conv)),
        "message_count": conv.message_count,
        "leaf_id": conv.leaf_id,
        "model": conv.model,
        "generating": sessions.generating(conv.id),
    }
    if messages is not None:
        out["messages"] = [message_view(m) for m in messages]
    return out


def _sampling(state: ServerState, body: SamplingFields, base) -> dict:
    """The sampling fields a body sets, checked against the server's caps (errors name the body's field)."""
    changes, names = P.openai_changes(body, max_tokens=body.max_tokens)
    if getattr(body, "ignore_eos", None) is not None:
        changes["ignore_eos"] = body.ignore_eos
    sent = {k: v for k, v in changes.items() if v is not None}
    if not sent:
        return {}
    params = P.build(base, changes, names, settings=state.settings, context_size=state.parley.context_size)
    return {k: getattr(params, k) for k in sent}


@router.post("/v1/conversations", summary="Create a conversation")
async def create(body: ConversationCreate, state: State):
    parley = state.parley
    changes, names = P.openai_changes(body, max_tokens=body.max_tokens)
    params = P.build(state.settings.sampling, changes, names, settings=state.settings,
                     context_size=parley.context_size)  # max_tokens within the server's cap, sent or not
    conv = await off_loop(parley.conversations.create, system=body.system, title=body.title, defaults=params,
                          overflow=body.overflow, max_messages=body.max_messages or 0, metadata=body.metadata,
                          persona=body.persona, user_name=body.user_name, document_ids=body.document_ids)
    return conversation_view(state, conv, messages=parley.conversations.store.branch(conv.leaf_id))


@router.get("/v1/conversations", summary="List conversations (newest first), or search every message (?q=)")
async def list_all(state: State, limit: int = 50, before: str | None = None, q: str | None = None):
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be 1 to {MAX_PAGE}, got {limit}", param="limit")
    store = state.parley.conversations.store
    if q is not None:
        hits = await off_loop(store.search, q, limit=limit)
        return {"object": "list", "query": q, "data": [
            {"object": "conversation.search_hit", "conversation_id": h.conversation_id,
             "title": h.conversation_title, "message_id": h.message_id, "role": h.role, "snippet": h.snippet,
             "created": h.created} for h in hits]}
    convs = await off_loop(store.list_conversations, limit=limit, before=before)
    return {"object": "list", "data": [conversation_view(state, c) for c in convs],
            "has_more": len(convs) == limit, "next_before": convs[-1].id if len(convs) == limit else None}


@router.post("/v1/conversations/import", summary="Import an exported conversation (a new one, new ids)")
async def import_(body: dict[str, Any], state: State):
    conv = await off_loop(state.parley.conversations.import_, body)
    return conversation_view(state, conv, messages=state.parley.conversations.store.branch(conv.leaf_id))


@router.get("/v1/conversations/{conversation_id}", summary="A conversation with its current branch (or tree)")
async def get_one(conversation_id: str, state: State, tree: bool = False):
    store = state.parley.conversations.store
    conv = store.get_conversation(conversation_id)
    msgs = store.messages(conv.id) if tree else store.branch(conv.leaf_id)
    return conversation_view(state, conv, messages=msgs)


@router.patch("/v1/conversations/{conversation_id}", summary="Change a conversation (title, system, branch, ...)")
async def patch(conversation_id: str, body: ConversationPatch, state: State):
    sessions = state.parley.conversations
    conv = sessions.store.get_conversation(conversation_id)
    sent = body.model_fields_set
    changes: dict[str, Any] = {k: getattr(body, k) for k in ("title", "system") if k in sent}
    for k in ("overflow", "max_messages", "metadata"):
        if getattr(body, k) is not None:
            changes[k] = getattr(body, k)
    if body.defaults is not None:
        base = sessions.defaults(conv)
        changes["defaults"] = base.replace(**_sampling(state, body.defaults, base))
    if body.leaf_id is not None:
        changes["leaf_id"] = body.leaf_id
    conv = await off_loop(sessions.update, conversation_id, **changes)
    return conversation_view(state, conv, messages=sessions.store.branch(conv.leaf_id))


@router.delete("/v1/conversations/{conversation_id}", summary="Delete a conversation and every message")
async def delete(conversation_id: str, state: State):
    for gen in list(state.generations):
        if getattr(gen.stream, "conversation_id", None) == conversation_id:
            gen.cancel(f"conversation {conversation_id} was deleted")
    await off_loop(state.parley.conversations.delete, conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/v1/conversations/{conversation_id}/export", summary="The whole conversation tree as JSON")
async def export(conversation_id: str, state: State):
    return await off_loop(state.parley.conversations.export, conversation_id)


@router.post("/v1/conversations/{conversation_id}/fork", summary="A new conversation from a branch up to a message")
async def fork(conversation_id: str, body: ConversationFork, state: State):
    sessions = state.parley.conversations
    conv = await off_loop(sessions.fork, conversation_id, body.at)
    return conversation_view(state, conv, messages=sessions.store.branch(conv.leaf_id))


async def _reply(state: ServerState, request: Request, conversation_id: str, body, begin):
    """Start the turn (`begin(sessions, overrides, overflow, prompt_limit, loop)` in a worker thread) and answer
    with it."""
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("stream_options is only allowed with \"stream\": true", param="stream_options")
    sessions = state.parley.conversations
    conv = sessions.store.get_conversation(conversation_id)
    overrides = _sampling(state, body, sessions.defaults(conv))
    cap = state.settings.tokens_cap(state.parley.context_size)
    if overrides.get("max_tokens", 0) > cap:
        raise LimitExceeded(f"max_tokens is {overrides['max_tokens']}; this server generates at most {cap}",
                            param="max_tokens", code="max_tokens_exceeded")
    overflow = None if body.truncate is None else ("truncate" if body.truncate else "error")
    limit = state.settings.prompt_limit(state.parley.context_size)
    gen = await Generation.start(state, lambda loop: begin(sessions, overrides or None, overflow, limit, loop))
    reply = gen.stream
    prompt = Prompt(reply.turn.tokens, reply.turn.dropped, reply.turn.note)
    extra = {"conversation_id": conversation_id, "message_id": reply.message_id,
             "user_message_id": reply.user_message_id}
    model = state.parley.name
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return SSEResponse(chat_events(gen, model=model, prompt=prompt, include_usage=include, **extra), gen.close)
    result = await finished(gen, request)
    if isinstance(result, Response):
        return result
    return chat_completion(new_id("chatcmpl"), model, gen, result, prompt, **extra)


@router.post("/v1/conversations/{conversation_id}/messages", summary="Send a message; get (or stream) the reply")
async def send_message(conversation_id: str, body: ConversationMessage, request: Request, state: State):
    def begin(sessions, params, overflow, limit, loop):
        return sessions.send(conversation_id, body.content, parent_id=body.parent_id, params=params,
                             overflow=overflow, skill=body.skill, skill_params=body.skill_params,
                             speaker=body.speaker, prompt_limit=limit, loop=loop)
    return await _reply(state, request, conversation_id, body, begin)


@router.post("/v1/conversations/{conversation_id}/retry", summary="A new reply to a user message (a branch)")
async def retry(conversation_id: str, request: Request, state: State, body: ConversationRetry | None = None):
    body = body or ConversationRetry()

    def begin(sessions, params, overflow, limit, loop):
        return sessions.retry(conversation_id, message_id=body.message_id, params=params, overflow=overflow,
                              prompt_limit=limit, loop=loop)
    return await _reply(state, request, conversation_id, body, begin)


@router.post("/v1/conversations/{conversation_id}/edit", summary="Say a user message differently, and reply")
async def edit(conversation_id: str, body: ConversationEdit, request: Request, state: State):
    def begin(sessions, params, overflow, limit, loop):
        return sessions.edit(conversation_id, body.message_id, body.content, params=params, overflow=overflow,
                             prompt_limit=limit, loop=loop)
    return await _reply(state, request, conversation_id, body, begin)



