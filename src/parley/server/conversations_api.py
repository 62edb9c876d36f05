"""Conversations over HTTP, kept in the store (SQLite) with every branch and their KV cache: clients send only
the new message.

    POST   /v1/conversations                      {system, persona, overflow, max_messages, title, sampling...}
    GET    /v1/conversations?limit=&before=       newest first, paged, without message bodies; ?q= searches
    POST   /v1/conversations/import               an exported document -> a new conversation
    GET    /v1/conversations/{id}                 with its current branch (?tree=true: every message)
    PATCH  /v1/conversations/{id}                 {title, system, overflow, max_messages, metadata, leaf_id,
                                                   defaults, document_ids}
    DELETE /v1/conversations/{id}                 (ends a reply being generated)
    POST   /v1/conversations/{id}/messages        {content, parent_id, skill, skill_params, stream, tools, ...}
                                                   ({role: "tool", tool_call_id, content}: a call's result)
    POST   /v1/conversations/{id}/retry           {message_id}: a new reply beside the old one
    POST   /v1/conversations/{id}/edit            {message_id, content}: the message said differently, and a reply
    POST   /v1/conversations/{id}/fork            {at}: a new conversation holding the branch up to `at`
    GET    /v1/conversations/{id}/export          the whole tree as JSON

Replies have the chat.completion shape (SSE chunks when streaming) plus `parley.conversation_id` and the ids of
the user message and the reply. `response_format` (messages, retry, edit: json_object or json_schema, as on
/v1/chat/completions) constrains that turn's reply alone; the history's KV stays cached from turn to turn, so
schema-constrained extraction turn after turn reads only each new message. `tools` / `tool_choice` /
`parallel_tool_calls` (messages, retry) offer functions to that turn's reply, as on /v1/chat/completions; its
calls are stored on the reply (`tool_calls`, ids made from the reply's id, the same ones the response showed)
and a message `{"role": "tool", "tool_call_id": ..., "content": result}` answers one, so an agent loop sends
only each result and reads only it and the markup around it. One reply at a time per
conversation (409). A stored conversation that does not
read as it is (`problem` in its JSON) is listed anyway and refuses turns with a 409 until PATCH fixes it.
Everything here is the facade's conversations service (`parley.conversations`, api/conversations.py), called
in a worker thread; these handlers only translate JSON to its arguments and its plain views back to JSON.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from parley.api import ConversationView, MessageView, call_ids
from parley.errors import InvalidRequest
from parley.sampling import SamplingParams
from parley.server import params as P
from parley.server import structured
from parley.server.bounds import BoundedRoute, off_loop
from parley.server.errors import NotSupported
from parley.server.prompts import tool_plan
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


def message_json(m: MessageView) -> dict:
    out = {"id": m.id, "object": "conversation.message", "parent_id": m.parent_id,
           "role": "tool" if "tool_call_id" in m.meta else m.role, "content": m.content, "created": m.created,
           "partial": m.partial, "finish_reason": m.finish_reason,
           "stats": m.stats.as_dict() if m.role == "assistant" else None, "meta": m.meta}
    if m.meta.get("tool_calls"):       # as OpenAI's assistant messages carry them
        out["tool_calls"] = m.meta["tool_calls"]
        out["finish_reason"] = "tool_calls" if m.finish_reason == "stop" else m.finish_reason
    if "tool_call_id" in m.meta:
        out["tool_call_id"] = m.meta["tool_call_id"]
    return out


def conversation_json(v: ConversationView) -> dict:
    defaults = dataclasses.asdict(v.defaults)
    defaults["stop"] = list(defaults["stop"])
    out = {
        "id": v.id,
        "object": "conversation",
        "created": v.created,
        "updated": v.updated,
        "title": v.title,
        "metadata": v.metadata,
        "system": v.system,
        "overflow": v.overflow,
        "max_messages": v.max_messages,
        "persona": v.persona,
        "document_ids": list(v.document_ids),
        "defaults": defaults,
        "message_count": v.message_count,
        "leaf_id": v.leaf_id,
        "model": v.model,
        "generating": v.generating,
    }
    if v.problem is not None:
        out["problem"] = v.problem
    if v.messages is not None:
        out["messages"] = [message_json(m) for m in v.messages]
    return out


def _sampling(state: ServerState, body: SamplingFields) -> dict:
    """The sampling fields a body sets, checked against the server's limits (errors name the body's field)."""
    changes, names = P.openai_changes(body, max_tokens=body.max_tokens)
    if getattr(body, "ignore_eos", None) is not None:
        changes["ignore_eos"] = body.ignore_eos
    sent = {k: v for k, v in changes.items() if v is not None}
    if not sent:
        return {}
    params = P.build(SamplingParams(), changes, names, limits=state.parley.limits)
    return {k: getattr(params, k) for k in sent}


@router.post("/v1/conversations", summary="Create a conversation")
async def create(body: ConversationCreate, state: State):
    door = await off_loop(state.parley.using, body.model)
    changes, names = P.openai_changes(body, max_tokens=body.max_tokens)
    params = P.build(door.sampling_over(state.settings.sampling), changes, names, limits=door.limits)
    view = await off_loop(door.conversations.create, system=body.system, title=body.title,
                          defaults=params, overflow=body.overflow, max_messages=body.max_messages or 0,
                          metadata=body.metadata, persona=body.persona, user_name=body.user_name,
                          document_ids=body.document_ids)
    return conversation_json(view)


@router.get("/v1/conversations", summary="List conversations (newest first), or search every message (?q=)")
async def list_all(state: State, limit: int = 50, before: str | None = None, q: str | None = None):
    convs = state.parley.conversations
    if q is not None:
        hits = await off_loop(convs.search, q, limit=limit)
        return {"object": "list", "query": q, "data": [
            {"object": "conversation.search_hit", "conversation_id": h.conversation_id,
             "title": h.conversation_title, "message_id": h.message_id, "role": h.role, "snippet": h.snippet,
             "created": h.created} for h in hits]}
    page = await off_loop(convs.list, limit=limit, before=before)
    return {"object": "list", "data": [conversation_json(v) for v in page.items], "has_more": page.has_more,
            "next_before": page.next_before}


@router.post("/v1/conversations/import", summary="Import an exported conversation (a new one, new ids)")
async def import_(body: dict[str, Any], state: State):
    return conversation_json(await off_loop(state.parley.conversations.import_, body))


@router.get("/v1/conversations/{conversation_id}", summary="A conversation with its current branch (or tree)")
async def get_one(conversation_id: str, state: State, tree: bool = False):
    return conversation_json(await off_loop(state.parley.conversations.get, conversation_id, tree=tree))


@router.patch("/v1/conversations/{conversation_id}", summary="Change a conversation (title, system, branch, ...)")
async def patch(conversation_id: str, body: ConversationPatch, state: State):
    sent = body.model_fields_set
    changes: dict[str, Any] = {k: getattr(body, k) for k in ("title", "system") if k in sent}
    for k in ("overflow", "max_messages", "metadata", "leaf_id", "document_ids"):
        if getattr(body, k) is not None:
            changes[k] = getattr(body, k)
    if body.defaults is not None:
        changes["defaults"] = _sampling(state, body.defaults)   # the fields to change, over the current ones
    return conversation_json(await off_loop(state.parley.conversations.update, conversation_id, **changes))


@router.delete("/v1/conversations/{conversation_id}", summary="Delete a conversation and every message")
async def delete(conversation_id: str, state: State):
    for gen in list(state.generations):
        if getattr(gen.stream.meta, "conversation_id", None) == conversation_id:
            gen.cancel(f"conversation {conversation_id} was deleted")
    await off_loop(state.parley.conversations.delete, conversation_id)
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


@router.get("/v1/conversations/{conversation_id}/export", summary="The whole conversation tree as JSON")
async def export(conversation_id: str, state: State):
    return await off_loop(state.parley.conversations.export, conversation_id)


@router.post("/v1/conversations/{conversation_id}/fork", summary="A new conversation from a branch up to a message")
async def fork(conversation_id: str, body: ConversationFork, state: State):
    return conversation_json(await off_loop(state.parley.conversations.fork, conversation_id, body.at))


async def _reply(state: ServerState, request: Request, conversation_id: str, body, begin):
    """Start the turn (`begin(conversations, params, overflow, plan, loop)` in a worker thread) and answer with
    it."""
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("stream_options is only allowed with \"stream\": true", param="stream_options")
    params = _sampling(state, body)
    asked = structured.response_format(body.response_format)
    plan = tool_plan(body) if hasattr(body, "tools") else None
    if asked is not None and plan is not None:
        raise NotSupported("response_format beside tools is not supported by parley: a reply either matches the "
                           "format or may call a tool; send one of them", param="response_format")
    if asked is not None:             # this turn's reply only: the conversation's defaults are not changed
        params["grammar"] = asked.grammar
    if plan is not None and plan.forced:   # the call's JSON: the function's name, then its parameters' schema
        params["grammar"] = plan.grammar()
    overflow = None if body.truncate is None else ("truncate" if body.truncate else "error")
    convs = state.parley.conversations
    view = await off_loop(convs.get, conversation_id, messages=False)   # a 404 before a slot is taken

    def started(loop):
        with structured.grammar_errors(asked.param) if asked is not None else nullcontext():
            return begin(convs, params or None, overflow, plan, loop)
    gen = await Generation.start(state, started)
    meta = gen.stream.meta
    extra = {"conversation_id": conversation_id, "message_id": meta.message_id,
             "user_message_id": meta.user_message_id}
    model = meta.model or view.model or state.parley.name
    ids = call_ids(meta.message_id)       # the ids the stored reply keeps for its calls
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return SSEResponse(chat_events(gen, model=model, prompt=meta, include_usage=include, plan=plan,
                                       call_ids=ids, **extra), gen.close)
    result = await finished(gen, request)
    if isinstance(result, Response):
        return result
    return chat_completion(new_id("chatcmpl"), model, gen, result, meta, plan=plan, call_ids=ids, **extra)


@router.post("/v1/conversations/{conversation_id}/messages", summary="Send a message; get (or stream) the reply")
async def send_message(conversation_id: str, body: ConversationMessage, request: Request, state: State):
    if (body.role == "tool") != (body.tool_call_id is not None):
        raise InvalidRequest("a tool's result is a message with role \"tool\" and the tool_call_id it answers; "
                             "send both or neither", param="tool_call_id" if body.role == "tool" else "role")

    def begin(convs, params, overflow, plan, loop):
        return convs.send(conversation_id, body.content, parent_id=body.parent_id, params=params, overflow=overflow,
                          skill=body.skill, skill_params=body.skill_params, speaker=body.speaker,
                          model=body.model, loop=loop, tools=plan, tool_call_id=body.tool_call_id)
    return await _reply(state, request, conversation_id, body, begin)


@router.post("/v1/conversations/{conversation_id}/retry", summary="A new reply to a user message (a branch)")
async def retry(conversation_id: str, request: Request, state: State, body: ConversationRetry | None = None):
    body = body or ConversationRetry()

    def begin(convs, params, overflow, plan, loop):
        return convs.retry(conversation_id, message_id=body.message_id, params=params, overflow=overflow,
                           model=body.model, loop=loop, tools=plan)
    return await _reply(state, request, conversation_id, body, begin)


@router.post("/v1/conversations/{conversation_id}/edit", summary="Say a user message differently, and reply")
async def edit(conversation_id: str, body: ConversationEdit, request: Request, state: State):
    def begin(convs, params, overflow, _plan, loop):
        return convs.edit(conversation_id, body.message_id, body.content, params=params, overflow=overflow,
                          model=body.model, loop=loop)
    return await _reply(state, request, conversation_id, body, begin)
