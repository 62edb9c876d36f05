"""Sessions: a turn's whole life, written once, for every edge (terminal, Python, HTTP, web page).

    reply = sessions.send(conversation_id, "Hello")      # prepare -> commit the user message -> generate
    for chunk in reply: ...                              # (or `async for`, with loop=...)
    reply.result                                         # recorded in the store before it is handed over

prepare: load the branch the message continues (the conversation's leaf, or any `parent_id`), rebuild the exact
tokens its KV holds (chat/history.py), render pinned blocks + the window of turns + the new message
(chat/window.py), commit the user message and an empty, partial reply row in one transaction.
generate: the scheduler streams the reply; every second or so the text so far is saved, so a crash keeps it.
record: on the chat worker thread (never the scheduler's, never an event loop): the reply row gets its text,
how it ended, its numbers and its token ids, then the Result reaches the consumer (its text as stored and shown:
without the space a transcript line starts with), then the next turn's fixed
header is read into the cache while the user types (prefetch).

Branches: retry adds a sibling reply under the same user message, edit a sibling user message under the same
parent, `parent_id` continues from any message; the conversation's leaf follows. One reply at a time per
conversation (409 otherwise). A reply that fails is removed (its user message stays, so it can be retried); one
cut short (cancelled, shutdown, a dead process) stays, marked partial.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from parley.chat import history as H
from parley.chat.frames import Frame, next_speaker, persona_frame
from parley.chat.personas import Persona, Personas, card_json, load_card
from parley.chat.prompt import Built, Prefix, PromptBuilder
from parley.chat.skills import Skills
from parley.chat.window import PER_MESSAGE_TOKENS, WindowPolicy, fit
from parley.errors import InvalidRequest, LimitExceeded, ParleyError
from parley.sampling import SamplingParams
from parley.scheduler.request import Chunk, Result
from parley.scheduler.stream import Stream
from parley.store import Message, MessageStats, NewMessage, Store, exchange
from parley.store.rows import Conversation

log = logging.getLogger("parley.chat")

TITLE_MAX = exchange.TITLE_MAX
SAVE_EVERY_S = 1.0          # how often a reply in progress is written to the store
SAMPLING_FIELDS = tuple(f.name for f in dataclasses.fields(SamplingParams))


WRITER = "writer"           # meta key of a reply being written: the process writing it ("pid:start time")


def _process_tag(pid: int) -> str:
    """pid plus the process's start time, so a reused pid is not taken for the process that wrote a row."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            start = f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return f"{pid}:?"
    return f"{pid}:{start}"


MY_TAG = _process_tag(os.getpid())


def _alive(tag: str) -> bool:
    """Whether the process that tagged a reply still runs (then the reply is still being written)."""
    pid, _, _ = tag.partition(":")
    if not pid.isdigit():
        return False
    return _process_tag(int(pid)) == tag


class Conflict(ParleyError):
    status = 409
    code = "conversation_busy"


@dataclass(frozen=True, slots=True)
class Model:
    """What the chat stage needs of the loaded model."""

    builder: PromptBuilder
    scheduler: Any                     # parley.scheduler.Scheduler
    context_size: int
    tokens_key: str                    # model file + template: which stored token ids are valid here
    stops: tuple[str, ...] = ()        # end-of-turn strings the chat format needs as stop strings
    prompt_limit: int = 0              # most prompt tokens (0: the context less one token for the reply)
    label: str = ""                    # stored with each conversation: the model it was last served with
    kv_cells: int = 0                  # KV cells shared by every sequence (what pinned prefixes may hold)

    def count(self, text: str) -> int:
        return len(self.builder.tokenize_text(text))


@dataclass
class Turn:
    """A prepared generation: the prompt, and what to tell the user about it."""

    conversation_id: str
    user: Message                      # the message being answered
    reply_id: str                      # the (partial) reply row
    built: Built
    params: SamplingParams
    messages: list[dict]               # what the prompt rendered (for the next turn's read-ahead)
    dropped: int = 0                   # earlier history messages the prompt left out
    note: str = ""                     # what a user can act on about this prompt ("" when nothing)
    frame: Frame | None = None         # how the prompt was shaped (persona, speaker, stop strings)
    superseded: tuple[int, ...] = ()   # the previous window's tokens, when this prompt's window moved past them

    @property
    def tokens(self) -> list[int]:
        return self.built.tokens


class Reply:
    """A turn being generated: iterate it (sync or async) for Chunks; `result` once it is recorded."""

    def __init__(self, turn: Turn, stream: Stream):
        self.turn = turn
        self.stream = stream
        self._started = False

    conversation_id = property(lambda self: self.turn.conversation_id)
    message_id = property(lambda self: self.turn.reply_id)
    user_message_id = property(lambda self: self.turn.user.id)
    result = property(lambda self: self.stream.result)

    def _shown(self, chunk: Chunk) -> Chunk:
        """The first text as the reply is stored and shown (a transcript line's leading space goes)."""
        if self._started or not chunk.text:
            return chunk
        self._started = True
        clean = self.turn.frame.clean if self.turn.frame is not None else None
        return Chunk(clean(chunk.text), chunk.token_ids) if clean is not None else chunk

    def __iter__(self) -> Iterator[Chunk]:
        for chunk in self.stream:
            yield self._shown(chunk)

    async def __aiter__(self) -> AsyncIterator[Chunk]:
        async for chunk in self.stream:
            yield self._shown(chunk)

    def text(self) -> Iterator[str]:
        for chunk in self:
            if chunk.text:
                yield chunk.text

    def cancel(self) -> None:
        self.stream.cancel()

    def wait(self) -> Result:
        return self.stream.wait()

    @property
    def note(self) -> str:
        """The prompt's note and, once finished, what the cache could not give back (only what a user can act on)."""
        r = self.result
        return self.turn.note or (cache_note(self.turn, r) if r is not None else "")


def cache_note(turn: Turn, r: Result) -> str:
    reusable = turn.built.reused
    if reusable and r.cached_tokens < reusable - 1:
        return (f"{reusable - r.cached_tokens} tokens of this conversation's memory were evicted and read again "
                "(raise --kv-size, --ram-cache-mb or --disk-cache-mb to keep more)")
    return ""


def _stats(r: Result) -> MessageStats:
    return MessageStats(prompt_tokens=r.prompt_tokens, cached_tokens=r.cached_tokens,
                        prefilled_tokens=r.prefilled_tokens, generated_tokens=r.generated_tokens,
                        ttft_s=round(r.ttft_s, 4), tokens_per_s=round(r.decode_tps, 2))


def check_title(title: str | None) -> None:
    if title is not None and len(title) > TITLE_MAX:
        raise LimitExceeded(f"title is {len(title)} characters; at most {TITLE_MAX}", param="title")


@dataclass
class _Live:
    """Book-keeping of one reply being generated (scheduler thread appends, worker thread saves)."""

    turn: Turn
    stream: Stream
    request: Any = None
    text: list[str] = field(default_factory=list)
    saved_at: float = field(default_factory=time.monotonic)


def fork_rows(store: Store, conversation_id: str, at: str, *, owner: str | None = None) -> Conversation:
    """Copy the branch from the root to message `at` into a new conversation (new ids, the same token ids, so
    its prompts hit the same KV)."""
    from parley.store import new_id

    conv = store.get_conversation(conversation_id)
    store.message_of(conversation_id, at, "at")
    branch = store.branch(at)
    ids = {m.id: new_id("msg") for m in branch}
    rows = [NewMessage(role=m.role, content=m.content, id=ids[m.id], parent_id=ids[m.parent_id] if m.parent_id
                       else None, meta=m.meta, partial=m.partial, finish_reason=m.finish_reason, stats=m.stats,
                       tokens=m.tokens, tokens_text=m.tokens_text, tokens_key=m.tokens_key, created=m.created)
            for m in branch]
    title = f"{conv.title} (fork)" if conv.title else None
    return store.create_conversation(
        title=title[:TITLE_MAX] if title else None, system=conv.system, defaults=conv.defaults,
        settings=conv.settings, model=conv.model, owner=owner if owner is not None else conv.owner,
        metadata=conv.metadata, messages=rows, leaf_id=ids[at])


class Sessions:
    def __init__(self, model: Model, store: Store, *, personas: Personas | None = None,
                 skills: Skills | None = None, documents=None):
        self.model = model
        self.store = store
        self.personas = personas
        self.skills = skills
        self.documents = documents          # chat.documents.Documents: a conversation's pinned documents
        self._busy: dict[str, _Live | None] = {}
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="parley-chat")
        self._closed = False
        dead = [m.id for m in store.unfinished_replies() if not _alive(m.meta.get(WRITER, ""))]
        if dead and store.mark_interrupted(dead):
            log.warning("%d replies were cut short when parley last stopped; they are kept, marked partial",
                        len(dead))

    # ---- conversations -----------------------------------------------------------------------------------
    def create(self, *, system: str | None = None, title: str | None = None, defaults: SamplingParams | None = None,
               overflow: str = "truncate", max_messages: int = 0, owner: str | None = None,
               metadata: dict | None = None, persona: str | Persona | None = None,
               user_name: str | None = None, document_ids: list[str] | None = None) -> Conversation:
        """A new conversation. With a persona (a registry name, or a Persona), its narrative is pinned first,
        the model speaks as its characters and its greeting opens the conversation. With documents, their text
        is pinned after the system prompt (or, for long ones, their beginning: each message brings the
        passages it needs)."""
        check_title(title)
        WindowPolicy(overflow=overflow, max_messages=max_messages)
        params = defaults or SamplingParams()
        settings: dict[str, Any] = {"overflow": overflow, "max_messages": max_messages}
        if document_ids:
            if self.documents is None:
                raise InvalidRequest("documents are not available here", param="document_ids")
            settings["documents"] = [self.documents.info(d).id for d in dict.fromkeys(document_ids)]
        greeting: list[NewMessage] = []
        if persona is not None:
            p = self._persona(persona)
            if user_name:
                p = p.with_changes(user_name=user_name)
            settings["persona"] = {"name": persona if isinstance(persona, str) else p.name,
                                   "card": card_json(p, "v3")}
            greetings = p.greetings()
            if greetings:
                greeting = [NewMessage("assistant", greetings[0], finish_reason="stop",
                                       meta={H.SPEAKER: p.name} if p.format == "transcript" else {})]
            frame = self._frame_for(settings, system or None, p.name)
            self._check_pinned(frame)
        rows, leaf = [], None
        if greeting:
            leaf = self.store_id()
            rows = [dataclasses.replace(greeting[0], id=leaf)]
        return self.store.create_conversation(
            title=title, system=system or None, defaults=self.stored_defaults(params), settings=settings,
            owner=owner, metadata=metadata or {}, model=self.model.label or self.model.tokens_key, messages=rows,
            leaf_id=leaf)

    def _persona(self, persona: str | Persona) -> Persona:
        if isinstance(persona, Persona):
            return persona
        if self.personas is None:
            raise InvalidRequest(f"unknown persona {persona!r}: no personas here", param="persona")
        return self.personas.get(persona)

    def persona_of(self, conv: Conversation) -> Persona | None:
        stored = conv.settings.get("persona")
        if not stored:
            return None
        return load_card(json.dumps(stored["card"]).encode(), "the conversation's persona")

    def update(self, conversation_id: str, *, title: str | None = ..., system: str | None = ...,
               defaults: SamplingParams | None = None, overflow: str | None = None,
               max_messages: int | None = None, metadata: dict | None = None, leaf_id: str | None = None,
               persona: Persona | None = None) -> Conversation:
        """Change a conversation. `leaf_id` switches the current branch (the next message continues from there;
        the KV of the shared prefix is reused); `persona` replaces its persona (an edited narrative)."""
        conv = self.store.get_conversation(conversation_id)
        fields: dict[str, Any] = {}
        if leaf_id is not None:
            self.store.message_of(conversation_id, leaf_id, "leaf_id")
            fields["leaf_id"] = leaf_id
        if title is not ...:
            check_title(title)
            fields["title"] = title
        if system is not ...:
            fields["system"] = system or None
        if defaults is not None:
            fields["defaults"] = self.stored_defaults(defaults)
        if overflow is not None or max_messages is not None:
            settings = dict(conv.settings)
            if overflow is not None:
                settings["overflow"] = overflow
            if max_messages is not None:
                settings["max_messages"] = max_messages
            WindowPolicy(overflow=settings.get("overflow", "truncate"), max_messages=settings.get("max_messages", 0))
            fields["settings"] = settings
        if metadata is not None:
            fields["metadata"] = metadata
        if persona is not None:
            settings = dict(fields.get("settings", conv.settings))
            settings["persona"] = {"name": (conv.settings.get("persona") or {}).get("name", persona.name),
                                   "card": card_json(persona, "v3")}
            self._check_pinned(self._frame_for(settings, conv.system, persona.name))
            fields["settings"] = settings
        return self.store.update_conversation(conversation_id, **fields) if fields else conv

    def set_leaf(self, conversation_id: str, leaf_id: str | None) -> None:
        """Move the current branch's end (None: before the first message)."""
        if leaf_id is not None:
            self.store.message_of(conversation_id, leaf_id, "leaf_id")
        self.store.update_conversation(conversation_id, leaf_id=leaf_id)

    def held_tokens(self, conversation_id: str) -> list[int]:
        """The exact tokens the current branch's KV holds (chat/history.py), [] when they are not known."""
        conv = self.store.get_conversation(conversation_id)
        branch = self.store.branch(conv.leaf_id)
        frame = self._frame_for(conv.settings, conv.system, None)
        prefix = H.chain(branch, frame.key).prefix
        return list(prefix.tokens) if prefix is not None else []

    def leaves(self, conversation_id: str) -> list[Message]:
        """The last message of every branch, oldest first."""
        msgs = self.store.messages(conversation_id)
        parents = {m.parent_id for m in msgs}
        return [m for m in msgs if m.id not in parents]

    def delete(self, conversation_id: str) -> None:
        self.store.get_conversation(conversation_id)
        with self._lock:
            live = self._busy.get(conversation_id)
        if live is not None:
            live.stream.cancel()
        self.store.delete_conversation(conversation_id)

    def generating(self, conversation_id: str) -> bool:
        with self._lock:
            return conversation_id in self._busy

    def defaults(self, conv: Conversation) -> SamplingParams:
        """The conversation's sampling defaults, with the chat format's end-of-turn strings."""
        known = {k: v for k, v in conv.defaults.items() if k in SAMPLING_FIELDS}
        if "stop" in known:
            known["stop"] = tuple(known["stop"])
        return self._with_stops(SamplingParams(**known))

    def stored_defaults(self, params: SamplingParams) -> dict:
        """SamplingParams as stored with a conversation (the chat format's own stop strings left out)."""
        out = dataclasses.asdict(params)
        out["stop"] = [s for s in params.stop if s not in self.model.stops]
        return out

    def _with_stops(self, params: SamplingParams) -> SamplingParams:
        stops = self.model.stops
        if not stops:
            return params
        merged = tuple(dict.fromkeys((*params.stop, *stops)))
        return params.replace(stop=merged) if merged != params.stop else params

    def export(self, conversation_id: str) -> dict:
        return exchange.export_conversation(self.store, conversation_id)

    def import_(self, data: Any, *, owner: str | None = None) -> Conversation:
        return exchange.import_conversation(self.store, data, owner=owner)

    def fork(self, conversation_id: str, at: str, *, owner: str | None = None) -> Conversation:
        """A new conversation holding the branch from the root to message `at` (same tokens: same KV)."""
        return fork_rows(self.store, conversation_id, at, owner=owner)

    @staticmethod
    def store_id() -> str:
        from parley.store import new_id
        return new_id("msg")

    # ---- turns -------------------------------------------------------------------------------------------
    def send(self, conversation_id: str, content: str, *, parent_id: str | None = None,
             params: dict | None = None, overflow: str | None = None, skill: str | None = None,
             skill_params: dict | None = None, speaker: str | None = None, prompt_limit: int = 0,
             loop: asyncio.AbstractEventLoop | None = None, at_root: bool = False) -> Reply:
        """A new user message (under the leaf, or under `parent_id`, or with `at_root` as a new first message)
        and its reply. `skill` wraps the new message in a recipe (the history before it stays byte-identical);
        `speaker` picks who answers in a persona's group scene."""
        if not isinstance(content, str) or not content.strip():
            raise InvalidRequest("the message is empty", param="content")
        with self._claim(conversation_id):
            conv = self.store.get_conversation(conversation_id)
            parent = None if at_root else parent_id if parent_id is not None else conv.leaf_id
            if parent_id is not None:
                self.store.message_of(conversation_id, parent_id, "parent_id")
            branch = self.store.branch(parent)
            user_meta: dict[str, Any] = {}
            shown, extra = content, {}
            if skill is not None:
                recipe = self._skill(skill)
                shown = recipe.wrap(content, skill_params or {})
                extra = dict(recipe.sampling)
                user_meta.update({"skill": recipe.name, "skill_params": dict(skill_params or {})})
            elif skill_params:
                raise InvalidRequest("skill_params needs a skill", param="skill_params")
            frame = self._frame(conv, branch, speaker, content)
            docs = tuple(conv.settings.get("documents") or ())
            if docs and self.documents is not None:  # long documents: the passages this message needs
                block, sources = self.documents.excerpts(docs, shown)
                if block:
                    shown = block
                    user_meta["sources"] = [x.as_dict() for x in sources]
            shown = frame.wrap(shown)
            if shown != content:
                user_meta[H.PROMPT_CONTENT] = shown
            new = {"role": "user", "content": shown}
            if frame.user_name:
                new["name"] = frame.user_name
            turn_params = self._params(conv, {**extra, **(params or {})}, frame)
            plan = self._plan(conv, frame, branch, new, turn_params, overflow, prompt_limit)
            built, start, prev, _ = plan
            user_meta[H.WINDOW] = start
            tokens, text, base = self._delta(built, prev)
            user_meta[H.TOKENS_BASE] = base
            user, reply_row = self.store.add_messages(conversation_id, [
                NewMessage("user", content, parent_id=parent, meta=user_meta, tokens=tokens, tokens_text=text,
                           tokens_key=frame.key),
                NewMessage("assistant", "", partial=True, meta=self._reply_meta(start, frame))])
            turn = self._turn(conv, frame, user, reply_row.id, plan, new, branch, turn_params)
            return self._start(turn, loop)

    def preview(self, conversation_id: str, content: str, *, params: dict | None = None) -> list[int]:
        """The prompt token ids send(content) would use now, without sending or storing anything (benchmarks
        give the very same ids to their baselines)."""
        conv = self.store.get_conversation(conversation_id)
        branch = self.store.branch(conv.leaf_id)
        frame = self._frame(conv, branch, None, content)
        new = frame.named({"role": "user", "content": frame.wrap(content)})
        built = self._plan(conv, frame, branch, new, self._params(conv, params, frame), None)[0]
        return list(built.tokens)

    def retry(self, conversation_id: str, *, message_id: str | None = None, params: dict | None = None,
              overflow: str | None = None, speaker: str | None = None, prompt_limit: int = 0,
              loop: asyncio.AbstractEventLoop | None = None) -> Reply:
        """A new reply, beside the old ones, to a user message: the one `message_id` names (or the user message
        an assistant `message_id` answers), else the one the leaf answers."""
        with self._claim(conversation_id):
            conv = self.store.get_conversation(conversation_id)
            target = message_id or conv.leaf_id
            if target is None:
                raise InvalidRequest("there is no user message to retry", param="message_id")
            msg = self.store.message_of(conversation_id, target, "message_id")
            if msg.role == "assistant":
                if msg.parent_id is None:
                    raise InvalidRequest("that reply answers no user message", param="message_id")
                if speaker is None:
                    speaker = msg.meta.get(H.SPEAKER)
                msg = self.store.get_message(msg.parent_id)
            if msg.role != "user":
                raise InvalidRequest(f"message {msg.id} is a {msg.role} message; retry takes a user message or "
                                     "a reply", param="message_id")
            branch = self.store.branch(msg.parent_id)
            frame = self._frame(conv, branch, speaker, msg.content)
            new = H.prompt_message(msg)
            turn_params = self._params(conv, params, frame)
            plan = self._plan(conv, frame, branch, new, turn_params, overflow, prompt_limit)
            (reply_row,) = self.store.add_messages(conversation_id, [
                NewMessage("assistant", "", parent_id=msg.id, partial=True, meta=self._reply_meta(plan[1], frame))])
            turn = self._turn(conv, frame, msg, reply_row.id, plan, new, branch, turn_params)
            return self._start(turn, loop)

    def edit(self, conversation_id: str, message_id: str, content: str, **kw) -> Reply:
        """A user message said differently: a sibling under the same parent, and its reply."""
        msg = self.store.message_of(conversation_id, message_id, "message_id")
        if msg.role != "user":
            raise InvalidRequest(f"message {msg.id} is a {msg.role} message; only user messages are edited "
                                 "(retry makes a new reply)", param="message_id")
        # the first message said differently is a new first message: the conversation keeps its leaf until the
        # new branch is committed (readers never see it empty, and a refused edit leaves it as it was)
        return self.send(conversation_id, content, parent_id=msg.parent_id, at_root=msg.parent_id is None, **kw)

    # ---- internals ---------------------------------------------------------------------------------------
    class _Claim:
        def __init__(self, sessions: Sessions, cid: str):
            self.s, self.cid = sessions, cid

        def __enter__(self):
            with self.s._lock:
                if self.s._closed:
                    raise ParleyError("parley is shutting down; no new replies", code="shutting_down")
                if self.cid in self.s._busy:
                    raise Conflict(f"conversation {self.cid} is still generating its previous reply; wait for it "
                                   "to finish (or stop it) and send again", param="conversation_id")
                self.s._busy[self.cid] = None
            return self

        def __exit__(self, exc_type, exc, tb):
            with self.s._lock:  # no reply started (an error, or nothing to generate): free the conversation
                if self.cid in self.s._busy and self.s._busy[self.cid] is None:
                    del self.s._busy[self.cid]
            return False

    def _claim(self, conversation_id: str) -> _Claim:
        return Sessions._Claim(self, conversation_id)

    def _skill(self, name: str):
        if self.skills is None:
            raise InvalidRequest(f"unknown skill {name!r}: no skills here", param="skill")
        return self.skills.get(name)

    def _params(self, conv: Conversation, overrides: dict | None, frame: Frame) -> SamplingParams:
        base = self.defaults(conv)
        params = base.replace(**overrides) if overrides else base
        stops = tuple(dict.fromkeys((*params.stop, *frame.stops)))
        return params.replace(stop=stops) if stops != params.stop else params

    def _policy(self, conv: Conversation, overflow: str | None) -> WindowPolicy:
        s = conv.settings
        return WindowPolicy(overflow=overflow or s.get("overflow", "truncate"),
                            max_messages=int(s.get("max_messages", 0)))

    @staticmethod
    def _reply_meta(start: int, frame: Frame) -> dict:
        meta = {"dropped": start, WRITER: MY_TAG}
        if frame.speaker:
            meta[H.SPEAKER] = frame.speaker
        return meta

    def _frame(self, conv: Conversation, branch: list[Message], speaker: str | None, said: str = "") -> Frame:
        """How this conversation's prompts look: its persona (if any) and, in a group scene, who speaks."""
        persona = self.persona_of(conv)
        if persona is None:
            return self._frame_for(conv.settings, conv.system, None)
        speakers = persona.speakers()
        if speaker is not None and speaker not in speakers:
            raise InvalidRequest(f"unknown speaker {speaker!r}; this scene's characters: {', '.join(speakers)}",
                                 param="speaker")
        return self._frame_for(conv.settings, conv.system, speaker or next_speaker(persona, branch, said))

    def _frame_for(self, settings: dict, system: str | None, speaker: str | None) -> Frame:
        m = self.model
        docs = tuple(settings.get("documents") or ())
        if docs and self.documents is not None:
            system = "\n\n".join(t for t in (system, self.documents.pinned_text(docs)) if t)
        stored = settings.get("persona")
        if not stored:
            pinned = [{"role": "system", "content": system}] if system else []
            return Frame(builder=m.builder, pinned=(pinned, pinned), stops=m.stops, key=m.tokens_key)
        p = load_card(json.dumps(stored["card"]).encode(), "the conversation's persona")
        return persona_frame(p, system, speaker or p.name, m)

    def _check_pinned(self, frame: Frame) -> None:
        """A persona (with the system prompt) longer than the context is refused when it is set."""
        n = len(frame.builder.build(frame.pinned[1] + [{"role": "user", "content": "?"}]).tokens)
        budget = self.model.context_size - max(1, self.model.context_size // 4)
        if n > budget:
            raise LimitExceeded(f"the persona and system prompt are {n} tokens; the context holds "
                                f"{self.model.context_size}, and a quarter of it stays for the turns and the reply",
                                param="persona", code="context_length_exceeded")

    def _plan(self, conv: Conversation, frame: Frame, branch: list[Message], new: dict, params: SamplingParams,
              overflow: str | None, prompt_limit: int = 0) -> tuple[Built, int, Prefix | None, tuple[int, ...]]:
        """The prompt: pinned blocks + the window of turns + the new message; `prompt_limit` (0: the context
        less one token) bounds it further (a server's max_prompt_tokens). Also the previous turn's tokens when
        the window moved on past them (their sequence can leave the context), else ()."""
        model = self.model
        policy = self._policy(conv, overflow)
        history = [frame.named(m) for m in H.prompt_messages(branch)]
        ch = H.chain(branch, frame.key)
        ctx = model.context_size
        reserve = 1 if policy.overflow == "error" else min(params.max_tokens, max(1, ctx // 4))
        budget = min(ctx - reserve, prompt_limit or model.prompt_limit or ctx - 1)

        def build(start: int, examples: bool) -> Built:
            prev = ch.prefix if start == ch.window_start else None
            return frame.builder.build(frame.pinned[1 if examples else 0] + history[start:] + [new], prev)

        sizes = [model.count(m["content"]) + PER_MESSAGE_TOKENS for m in history]
        pinned_tokens = sum(model.count(m["content"]) + PER_MESSAGE_TOKENS for m in frame.pinned[1])
        fitted = fit(build, sizes=sizes, roles=[m["role"] for m in history], budget=budget, policy=policy,
                     has_examples=frame.pinned[1] != frame.pinned[0], pinned_tokens=pinned_tokens,
                     min_start=min(ch.window_start, len(history)))
        prev = ch.prefix if fitted.start == ch.window_start else None
        moved = fitted.start > ch.window_start and ch.prefix is not None
        return fitted.built, fitted.start, prev, (ch.prefix.tokens if moved else ())

    @staticmethod
    def _delta(built: Built, prev: Prefix | None) -> tuple[list[int], str, str]:
        """The tokens this turn adds after the previous reply ("prev"), or the whole prompt ("full")."""
        if prev is not None and built.reused == len(prev.tokens) and built.text.startswith(prev.text):
            return built.tokens[len(prev.tokens):], built.text[len(prev.text):], "prev"
        return list(built.tokens), built.text, "full"

    def _turn(self, conv: Conversation, frame: Frame, user: Message, reply_id: str, plan, new: dict,
              branch: list[Message], params: SamplingParams) -> Turn:
        built, start, prev, superseded = plan
        history = [frame.named(m) for m in H.prompt_messages(branch)]
        notes = []
        if start:
            notes.append(f"{start} earlier messages are outside the window (context {self.model.context_size} "
                         "tokens)")
        if built.note and prev is not None:
            notes.append(built.note)
        return Turn(conversation_id=conv.id, user=user, reply_id=reply_id, built=built, params=params,
                    messages=frame.pinned[1] + history[start:] + [new], dropped=start, note="; ".join(notes),
                    frame=frame, superseded=superseded)

    def _start(self, turn: Turn, loop) -> Reply:
        sched = self.model.scheduler
        holder: list = []
        stream = Stream(lambda: sched.cancel(holder[0]) if holder else None, loop)
        live = _Live(turn, stream)

        def sink(event) -> None:  # the scheduler thread
            if isinstance(event, Result):
                self._worker.submit(self._finish, live, event)
                return
            live.text.append(event.text)
            stream.put(event)
            now = time.monotonic()
            if now - live.saved_at >= SAVE_EVERY_S:
                live.saved_at = now
                self._worker.submit(self._save_partial, turn.reply_id, "".join(live.text))

        with self._lock:  # before submitting: the reply may be recorded (and the conversation freed) at once
            self._busy[turn.conversation_id] = live
        try:
            req = sched.submit(turn.tokens, turn.params, sink, param="messages")
        except BaseException:
            with self._lock:
                self._busy[turn.conversation_id] = None  # the claim frees it
            self.store.delete_message(turn.reply_id, leaf_id=turn.user.id)
            raise
        holder.append(req)
        stream.request = req
        live.request = req
        return Reply(turn, stream)

    def _save_partial(self, reply_id: str, text: str) -> None:
        try:
            self.store.save_partial(reply_id, text)
        except Exception:
            log.exception("saving a reply in progress failed")

    def _finish(self, live: _Live, r: Result) -> None:
        """The chat worker thread: record the reply, then hand the Result over, then read ahead."""
        turn = live.turn
        try:
            if r.finish_reason == "error":
                self.store.delete_message(turn.reply_id, leaf_id=turn.user.id)
            else:
                usable = r.finish_reason in ("stop", "length") and r.stop_string is None
                meta = {"dropped": turn.dropped}
                note = turn.note or cache_note(turn, r)
                if note:
                    meta["note"] = note
                if turn.frame.speaker:
                    meta[H.SPEAKER] = turn.frame.speaker
                self.store.finish_message(
                    turn.reply_id, content=turn.frame.clean(r.text), finish_reason=r.finish_reason,
                    partial=r.finish_reason not in ("stop", "length"), stats=_stats(r),
                    tokens=list(r.token_ids) if usable else None, tokens_text=r.text if usable else None,
                    tokens_key=turn.frame.key if usable else None, meta=meta)
        except Exception:
            log.exception("recording a reply failed")
        finally:
            with self._lock:
                self._busy.pop(turn.conversation_id, None)
            live.stream.put(dataclasses.replace(r, text=turn.frame.clean(r.text)))   # the text as shown
        if turn.superseded:  # the window moved: the previous window's sequence will not be continued
            self.model.scheduler.retire(turn.superseded)
        if r.finish_reason in ("stop", "length"):
            try:
                self._read_ahead(turn, r)
            except Exception:
                log.exception("reading the next turn's header ahead failed")

    def _read_ahead(self, turn: Turn, r: Result) -> None:
        """Prefill the tokens the next prompt starts with whatever the user writes (the reply's closing and the
        next user header) while the user types."""
        if r.stop_string is not None:
            return
        frame = turn.frame
        prev = Prefix(turn.built.text + r.text, tuple(turn.tokens) + tuple(r.token_ids))
        done = turn.messages + [frame.named({"role": "assistant", "content": frame.clean(r.text)})]
        probes = [frame.builder.build(done + [frame.named({"role": "user", "content": c})], prev).tokens
                  for c in ("a", "b")]
        n = len(prev.tokens)
        while n < min(len(probes[0]), len(probes[1])) and probes[0][n] == probes[1][n]:
            n += 1
        if n > len(prev.tokens):
            self.model.scheduler.prefetch(probes[0][:n])

    def close(self) -> None:
        """After the scheduler has stopped (every reply got its Result): finish recording."""
        with self._lock:
            self._closed = True
        self._worker.shutdown(wait=True)
