"""The conversations service (`parley.conversations`): stored conversations, their branches and their turns,
as plain values (api/views.py) and Streams, for every edge.

    convs = parley.conversations                    # or parley.conversations.owned_by(owner): one browser's
    view = convs.create(system="Be brief.")
    stream = convs.send(view.id, "Hello", loop=loop)   # a Stream; stream.meta: ids, window, note
    convs.get(view.id).messages                        # the current branch, as recorded

Every call that reads or writes the store, tokenizes or waits for the scheduler blocks: an edge that serves an
event loop calls it in a worker thread (api/guard.py checks). Scoped to an owner, a conversation of another
owner looks like none at all (404), and what is created, imported or forked belongs to the owner. The rules
(what a setting may be, a turn's life) are the chat stage's: chat/conversations.py and chat/turns.py.

Which model: a conversation is created on its door's model and keeps the model it was last served with; a turn
with `model=` moves it to another (its history is read again for that model, and the reply's note says so). A
stored model this process does not offer (removed, or another server's) gives way to the door's.
"""

from __future__ import annotations

import asyncio
from typing import Any

from parley.api.guard import LoopGuard, blocking
from parley.api.views import SHOWN_META, ConversationList, ConversationView, MessageView, SearchHit
from parley.chat.conversations import Conversations
from parley.chat.personas import Persona
from parley.chat.tools import ToolPlan
from parley.chat.turns import Turns
from parley.errors import InvalidRequest, NotFound
from parley.sampling import SamplingParams
from parley.scheduler.stream import Stream
from parley.store import exchange
from parley.store.rows import Conversation, Message

MAX_PAGE = 200


def _check_page(limit) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be 1 to {MAX_PAGE}, got {limit!r}", param="limit")


def message_view(m: Message) -> MessageView:
    return MessageView(id=m.id, parent_id=m.parent_id, role=m.role, content=m.content, created=m.created,
                       partial=m.partial, finish_reason=m.finish_reason, stats=m.stats,
                       meta={k: v for k, v in m.meta.items() if k in SHOWN_META})


class ConversationsService:
    """`door`: the api.facade.Parley whose models this serves (None: the store alone, no turns: Library)."""

    def __init__(self, convs: Conversations, turns: Turns | None, guard: LoopGuard, door=None,
                 owner: str | None = None):
        self._convs = convs
        self._turns = turns
        self._guard = guard
        self._door = door
        self._owner = owner

    def owned_by(self, owner: str) -> ConversationsService:
        """The same service for one owner's conversations only (the web page: each browser its own)."""
        if not isinstance(owner, str) or not owner:
            raise InvalidRequest("owner must be a non-empty string", param="owner")
        return ConversationsService(self._convs, self._turns, self._guard, self._door, owner)

    # ---- reading -----------------------------------------------------------------------------------------
    @blocking
    def list(self, *, limit: int = 50, before: str | None = None) -> ConversationList:
        """Newest first, a page of `limit` (1 to 200) at a time; `before` pages on from a conversation id."""
        _check_page(limit)
        if before is not None:
            self._mine(before, "before")
        rows = self._store.list_conversations(limit=limit + 1, before=before, owner=self._owner)
        more = len(rows) > limit
        rows = rows[:limit]
        return ConversationList(tuple(self._view(c) for c in rows), rows[-1].id if more else None)

    @blocking
    def search(self, text: str, *, limit: int = 20) -> list[SearchHit]:
        _check_page(limit)
        return self._store.search(text, limit=limit, owner=self._owner)

    @blocking
    def get(self, conversation_id: str, *, tree: bool = False, messages: bool = True) -> ConversationView:
        """A conversation with its current branch (`tree`: every message of every branch; `messages=False`:
        none)."""
        conv = self._mine(conversation_id)
        return self._view(conv, messages=self._messages(conv, tree) if messages else None)

    @blocking
    def count(self) -> int:
        """How many conversations there are (the owner's, when scoped)."""
        return self._store.count_conversations(owner=self._owner)

    @blocking
    def export(self, conversation_id: str) -> dict:
        """The whole tree as the JSON document import takes (parley.store.exchange)."""
        self._mine(conversation_id)
        return exchange.export_conversation(self._store, conversation_id)

    def generating(self, conversation_id: str) -> bool:
        return self._turns is not None and self._turns.generating(conversation_id)

    @blocking
    def persona(self, conversation_id: str) -> Persona | None:
        """The conversation's persona as it is now (an edited narrative included), or None."""
        return self._convs.persona_of(self._mine(conversation_id))

    @blocking
    def branches(self, conversation_id: str) -> list[MessageView]:
        """The last message of every branch, oldest first."""
        self._mine(conversation_id)
        return [message_view(m) for m in self._convs.leaves(conversation_id)]

    # ---- writing -----------------------------------------------------------------------------------------
    @blocking
    def create(self, *, system: str | None = None, title: str | None = None,
               defaults: SamplingParams | None = None, overflow: str = "truncate", max_messages: int = 0,
               metadata: dict | None = None, persona: str | Persona | None = None, user_name: str | None = None,
               document_ids: list[str] | None = None) -> ConversationView:
        """A new conversation on this door's model (defaults: SamplingParams() unless given; a persona's greeting
        opens it; without a system prompt, the model's own, from its registry settings)."""
        with self._serving(None) as (loaded, _):
            conv = self._convs.create(system=system if system is not None else loaded.entry.preset.system,
                                      title=title, defaults=defaults, overflow=overflow,
                                      max_messages=max_messages, owner=self._owner, metadata=metadata,
                                      persona=persona, user_name=user_name, document_ids=document_ids,
                                      served=loaded.served)
        return self._view(conv, messages=self._messages(conv, False))

    @blocking
    def update(self, conversation_id: str, *, title: str | None = ..., system: str | None = ...,
               defaults: SamplingParams | dict | None = None, overflow: str | None = None,
               max_messages: int | None = None, metadata: dict | None = None, leaf_id: str | None = None,
               persona: Persona | None = None, document_ids: list[str] | None = None) -> ConversationView:
        """Change what is given (title/system: None clears them). `defaults` is the whole SamplingParams, or a
        dict of fields to change over the current ones; `leaf_id` switches the current branch; `persona`
        replaces its persona (an edited narrative); `document_ids` replaces its documents ([] for none)."""
        conv = self._mine(conversation_id)
        if persona is None and document_ids is None:       # nothing to measure against a model: none is loaded
            conv = self._convs.update(conversation_id, title=title, system=system, defaults=defaults,
                                      overflow=overflow, max_messages=max_messages, metadata=metadata,
                                      leaf_id=leaf_id)
        else:
            with self._serving(self._model_of(conv)) as (loaded, _):
                conv = self._convs.update(conversation_id, title=title, system=system, defaults=defaults,
                                          overflow=overflow, max_messages=max_messages, metadata=metadata,
                                          leaf_id=leaf_id, persona=persona, document_ids=document_ids,
                                          served=loaded.served)
        return self._view(conv, messages=self._messages(conv, False))

    @blocking
    def back(self, conversation_id: str, n: int = 2) -> int:
        """Go `n` messages back on the current branch (the next message continues from there, a new branch);
        returns how many messages the branch keeps."""
        conv = self._mine(conversation_id)
        branch = self._store.branch(conv.leaf_id)
        keep = max(0, len(branch) - max(0, n))
        self._convs.set_leaf(conversation_id, branch[keep - 1].id if keep else None)
        return keep

    @blocking
    def delete(self, conversation_id: str) -> None:
        """Delete it and every message (a reply being generated ends, recorded nowhere)."""
        self._mine(conversation_id)
        if self._turns is not None:
            self._turns.cancel(conversation_id)
        self._store.delete_conversation(conversation_id)

    @blocking
    def import_(self, data: Any) -> ConversationView:
        """An exported conversation as a new one (new ids): every field is checked before anything is written."""
        if self._door is None:
            conv = self._convs.import_(data, owner=self._owner)
        else:
            with self._serving(None) as (loaded, _):
                conv = self._convs.import_(data, owner=self._owner, served=loaded.served)
        return self._view(conv, messages=self._messages(conv, False))

    @blocking
    def fork(self, conversation_id: str, at: str) -> ConversationView:
        """A new conversation holding the branch from the root to message `at` (the same tokens: the same KV)."""
        self._mine(conversation_id)
        conv = self._convs.fork(conversation_id, at, owner=self._owner)
        return self._view(conv, messages=self._messages(conv, False))

    # ---- turns ---------------------------------------------------------------------------------------------
    @blocking
    def send(self, conversation_id: str, content: str, *, parent_id: str | None = None, params: dict | None = None,
             overflow: str | None = None, skill: str | None = None, skill_params: dict | None = None,
             speaker: str | None = None, model: str | None = None,
             loop: asyncio.AbstractEventLoop | None = None, tools: ToolPlan | None = None,
             tool_call_id: str | None = None) -> Stream:
        """A user message (under the leaf, or under `parent_id`) and its reply as it is generated. `params`:
        sampling fields over the conversation's defaults; `skill` wraps the message in a recipe; `speaker`
        picks who answers in a persona's group scene; `model`: another model to continue on (loaded on
        demand); `loop`: read the Stream with `async for` on it. `tools` (read_plan(read_tools(...), choice)):
        the functions the reply may call (its calls land in the reply's meta["tool_calls"]; a forced call's
        JSON is constrained only with params["grammar"] = tools.grammar()); `tool_call_id`: `content` is the
        result of that call."""
        conv = self._mine(conversation_id)
        with self._serving(model or self._model_of(conv)) as (loaded, limits):
            return self._turns_or_fail().send(conversation_id, content, served=loaded.served, limits=limits,
                                              parent_id=parent_id, params=params, overflow=overflow, skill=skill,
                                              skill_params=skill_params, speaker=speaker, loop=loop, tools=tools,
                                              tool_call_id=tool_call_id)

    @blocking
    def retry(self, conversation_id: str, *, message_id: str | None = None, params: dict | None = None,
              overflow: str | None = None, speaker: str | None = None, model: str | None = None,
              loop: asyncio.AbstractEventLoop | None = None, tools: ToolPlan | None = None) -> Stream:
        """A new reply beside the old ones (a branch) to a user message, or to the one a reply answers, else the
        leaf's; the prompt's KV is reused. `tools` as in send."""
        conv = self._mine(conversation_id)
        with self._serving(model or self._model_of(conv)) as (loaded, limits):
            return self._turns_or_fail().retry(conversation_id, served=loaded.served, limits=limits,
                                               message_id=message_id, params=params, overflow=overflow,
                                               speaker=speaker, loop=loop, tools=tools)

    @blocking
    def edit(self, conversation_id: str, message_id: str, content: str, *, params: dict | None = None,
             overflow: str | None = None, skill: str | None = None, skill_params: dict | None = None,
             model: str | None = None, loop: asyncio.AbstractEventLoop | None = None) -> Stream:
        """A user message said differently (a sibling under the same parent), and its reply."""
        conv = self._mine(conversation_id)
        with self._serving(model or self._model_of(conv)) as (loaded, limits):
            return self._turns_or_fail().edit(conversation_id, message_id, content, served=loaded.served,
                                              limits=limits, params=params, overflow=overflow, skill=skill,
                                              skill_params=skill_params, loop=loop)

    @blocking
    def preview(self, conversation_id: str, content: str, *, params: dict | None = None) -> list[int]:
        """The prompt token ids send(content) would use now (nothing is sent or stored)."""
        conv = self._mine(conversation_id)
        with self._serving(self._model_of(conv)) as (loaded, limits):
            return self._turns_or_fail().preview(conversation_id, content, served=loaded.served, limits=limits,
                                                 params=params)

    @blocking
    def held_tokens(self, conversation_id: str) -> list[int]:
        """The exact token ids the current branch's KV holds (its last prompt and reply); [] when unknown."""
        conv = self._mine(conversation_id)
        with self._serving(self._model_of(conv)) as (loaded, _):
            return self._turns_or_fail().held_tokens(conversation_id, loaded.served)

    # ---- internals ---------------------------------------------------------------------------------------
    @property
    def _store(self):
        return self._convs.store

    def _turns_or_fail(self) -> Turns:
        if self._turns is None:
            raise InvalidRequest("no model is loaded here: replies need parley.load()", param="model")
        return self._turns

    def _serving(self, model: str | None):
        """A context: the model `model` names (None: the door's), loaded and held while a turn is submitted,
        with the door's limits at its context."""
        if self._door is None:
            raise InvalidRequest("no model is loaded here: this needs parley.load()", param="model")
        return self._door._serving(model)

    def _model_of(self, conv: Conversation) -> str | None:
        """The model a conversation keeps, when this process offers it; else None (the door's)."""
        if self._door is None or not conv.model:
            return None
        return conv.model if self._door._offers(conv.model) else None

    def _mine(self, conversation_id: str, param: str = "conversation_id") -> Conversation:
        if not isinstance(conversation_id, str):
            raise InvalidRequest(f"{param} must be a string", param=param)
        try:
            conv = self._store.get_conversation(conversation_id)
        except NotFound:
            if param == "conversation_id":
                raise
            raise NotFound(f"no conversation {conversation_id[:64]} to page from ({param})", param=param) from None
        if self._owner is not None and conv.owner != self._owner:
            raise NotFound(f"no conversation {conversation_id[:64]} here", param=param)
        return conv

    def _messages(self, conv: Conversation, tree: bool) -> tuple[MessageView, ...]:
        rows = self._store.messages(conv.id) if tree else self._store.branch(conv.leaf_id)
        return tuple(message_view(m) for m in rows)

    def _view(self, conv: Conversation, *, messages: tuple[MessageView, ...] | None = None) -> ConversationView:
        read = self._convs.read(conv)
        s = read.settings
        character = None
        if s.persona is not None:
            data = s.persona["card"].get("data")
            character = data.get("name") if isinstance(data, dict) and isinstance(data.get("name"), str) else None
        return ConversationView(
            id=conv.id, created=conv.created, updated=conv.updated, title=conv.title, metadata=dict(conv.metadata),
            system=conv.system, overflow=s.overflow, max_messages=s.max_messages, persona=s.persona_name,
            character=character, document_ids=s.documents, defaults=read.defaults,
            message_count=conv.message_count, leaf_id=conv.leaf_id, model=conv.model, owner=conv.owner,
            generating=self.generating(conv.id), problem=read.problem, messages=messages)
