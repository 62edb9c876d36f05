"""Conversations over HTTP: the server keeps the history and its KV cache; clients send only the new message.

    POST   /v1/conversations                   {system, overflow, sampling defaults...}  -> the conversation
    GET    /v1/conversations                   list (without messages)
    GET    /v1/conversations/{id}              with its messages
    DELETE /v1/conversations/{id}              (cancels a reply being generated)
    POST   /v1/conversations/{id}/messages     {content, stream, truncate, sampling overrides...} -> the reply
    POST   /v1/conversations/{id}/retry        the last reply again (same prompt: its KV is reused)

Replies have the chat.completion shape (SSE chunks when streaming) plus `parley.conversation_id`. One reply at a
time per conversation: a message sent while the previous reply is still generating gets 409 (no hidden queue;
the client decides whether to wait or cancel). A reply cut short by a disconnect is kept as far as it got;
a reply that failed is not recorded, so the message can be sent again. A conversation's sampling defaults start
from the server's (the protocol's unless `parley serve --temperature ...`). Turns are prepared (template,
tokenizer) in a worker thread; the conversation counts as busy from the moment its turn is being prepared.
"""

from __future__ import annotations

import dataclasses

from fastapi import APIRouter, Request
from starlette.responses import Response

from parley.chat.conversation import Conversation, Turn
from parley.errors import InvalidRequest
from parley.sampling import SamplingParams
from parley.server import params as P
from parley.server.bounds import BoundedRoute, off_loop
from parley.server.conversation_store import StoredConversation
from parley.server.errors import Conflict
from parley.server.prompts import Prompt
from parley.server.responses import chat_completion, chat_events, finished, new_id, usage
from parley.server.schemas import ConversationCreate, ConversationMessage, ConversationRetry
from parley.server.state import ServerState, State
from parley.server.streaming import Generation, SSEResponse

router = APIRouter(tags=["Conversations"], route_class=BoundedRoute)

PERSONAS: tuple[str, ...] = ()   # filled by the personas issue
SKILLS: tuple[str, ...] = ()     # filled by the skills issue


def _known(kind: str, name: str, known: tuple[str, ...]) -> InvalidRequest:
    listed = ", ".join(known) if known else "none yet (send \"system\" with the instructions instead)"
    return InvalidRequest(f"unknown {kind} {name!r}; known {kind}s: {listed}", param=kind)


def _defaults(params: SamplingParams, template_stops: tuple[str, ...]) -> dict:
    out = dataclasses.asdict(params)
    out["stop"] = [s for s in params.stop if s not in template_stops]
    return out


def _view(state: ServerState, entry: StoredConversation, *, messages: bool = True) -> dict:
    conv = entry.conversation
    out = {
        "id": entry.id,
        "object": "conversation",
        "created": entry.created,
        "title": entry.title,
        "metadata": entry.metadata,
        "system": conv.system,
        "overflow": conv.overflow,
        "defaults": _defaults(conv.params, state.parley.template.stops),
        "message_count": len(conv.messages),
        "generating": entry.busy,
        "last_reply": entry.last,
    }
    if messages:
        out["messages"] = conv.full_messages()
    return out


def _context_for(state: ServerState) -> int:
    """The context a conversation may fill: max_prompt_tokens (+1 for the reply) when that is smaller."""
    ctx = state.parley.context_size
    limit = state.settings.max_prompt_tokens
    return min(ctx, limit + 1) if limit else ctx


@router.post("/v1/conversations", summary="Create a conversation")
async def create(body: ConversationCreate, state: State):
    if body.persona is not None:
        raise _known("persona", body.persona, PERSONAS)
    if body.skill is not None:
        raise _known("skill", body.skill, SKILLS)
    changes, names = P.openai_changes(body, max_tokens=body.max_tokens)
    params = P.build(state.settings.sampling, changes, names, settings=state.settings,
                     context_size=state.parley.context_size, template_stops=state.parley.template.stops)
    system = body.system if body.system and body.system.strip() else None
    conv = Conversation(state.parley.builder, _context_for(state), params=params, system=system,
                        overflow=body.overflow)
    entry = state.conversations.create(conv, title=body.title, metadata=body.metadata)
    return _view(state, entry)


@router.get("/v1/conversations", summary="List conversations")
async def list_all(state: State):
    return {"object": "list", "data": [_view(state, e, messages=False) for e in state.conversations.list()]}


@router.get("/v1/conversations/{conversation_id}", summary="A conversation with its messages")
async def get_one(conversation_id: str, state: State):
    return _view(state, state.conversations.get(conversation_id))


@router.delete("/v1/conversations/{conversation_id}", summary="Delete a conversation")
async def delete(conversation_id: str, state: State):
    entry = state.conversations.delete(conversation_id)
    if entry.generation is not None:
        entry.generation.cancel(f"conversation {entry.id} was deleted")
    return {"id": entry.id, "object": "conversation.deleted", "deleted": True}


def prepare_turn(conv: Conversation, body, params: SamplingParams, retry: bool) -> Turn:
    """The turn's prompt, with this turn's overflow policy (on a copy: the conversation itself is not changed,
    so this may run in a worker thread while other requests read it)."""
    if body.truncate is not None:
        conv = dataclasses.replace(conv, overflow="truncate" if body.truncate else "error")
    return conv.prepare_retry(params) if retry else conv.prepare(body.content, params)


async def _prepared(state: ServerState, entry: StoredConversation, body, retry: bool) -> Turn:
    if entry.busy:
        raise Conflict(f"conversation {entry.id} is still generating its previous reply; wait for it to finish "
                       "(or close that request) and send again", param="conversation_id", code="conversation_busy")
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("stream_options is only allowed with \"stream\": true", param="stream_options")
    conv = entry.conversation
    changes, names = P.openai_changes(body, max_tokens=body.max_tokens)
    params = P.build(conv.params, changes, names, settings=state.settings,
                     context_size=state.parley.context_size, template_stops=state.parley.template.stops)
    entry.preparing = True
    try:
        turn = await off_loop(prepare_turn, conv, body, params, retry)
    finally:
        entry.preparing = False
    state.conversations.get(entry.id)  # 404 if it was deleted meanwhile
    return turn


async def _reply(state: ServerState, request: Request, entry: StoredConversation, body, retry: bool):
    turn = await _prepared(state, entry, body, retry)
    conv = entry.conversation
    prompt = Prompt(turn.tokens, turn.dropped, turn.built.note)

    def done(result) -> None:
        entry.generation = None
        if result is None or result.finish_reason == "error":
            return  # not recorded: the message can be sent again
        conv.record(turn, result)
        if result.finish_reason in ("stop", "length"):  # read the next turn's header while the user types
            state.parley.scheduler.prefetch(conv.next_prefix())
        entry.last = {"usage": usage(result), "finish_reason": result.finish_reason,
                      "dropped_messages": turn.dropped, "cache_note": result.cache_note}
        state.conversations.save(entry)

    gen = Generation(state, turn.tokens, turn.params, on_done=done)
    entry.generation = gen
    model = state.parley.name
    if body.stream:
        include = bool(body.stream_options and body.stream_options.include_usage)
        return SSEResponse(chat_events(gen, model=model, prompt=prompt, include_usage=include,
                                       conversation_id=entry.id), gen.close)
    result = await finished(gen, request)
    if isinstance(result, Response):
        return result
    return chat_completion(new_id("chatcmpl"), model, gen, result, prompt, conversation_id=entry.id)


@router.post("/v1/conversations/{conversation_id}/messages", summary="Send a message; get (or stream) the reply")
async def send_message(conversation_id: str, body: ConversationMessage, request: Request,
                       state: State):
    return await _reply(state, request, state.conversations.get(conversation_id), body, retry=False)


@router.post("/v1/conversations/{conversation_id}/retry", summary="Generate the last reply again")
async def retry(conversation_id: str, request: Request, state: State, body: ConversationRetry | None = None):
    return await _reply(state, request, state.conversations.get(conversation_id), body or ConversationRetry(),
                        retry=True)
