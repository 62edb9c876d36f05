"""Conversations: stored conversations and their rules, everything about them but the turns (chat/turns.py).

    convs.create(system=..., persona="maren", document_ids=[...])   checked, then one row (+ a greeting)
    convs.update(cid, max_messages=10, document_ids=[])              checked, then written
    convs.settings_of(conv), convs.defaults(conv)                    a stored row read back as typed values
    convs.frame(conv, branch, speaker)                               how its prompts look (chat/frames.py)

What a conversation row keeps besides its messages: `settings` (the window policy, a persona as a V3 card, the
ids of its documents) and `defaults` (its sampling defaults). Both are checked field by field before anything is
written, by create, update and import alike, so a stored row always reads back; an error names the field
(`settings.max_messages`, `defaults.stop`). A row that is bad anyway (written by an older parley, or edited by
hand) never breaks a listing: `read()` reports what is wrong instead of raising (`problem`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from parley.chat import history as H
from parley.chat.frames import Frame, next_speaker, persona_frame
from parley.chat.model import Served
from parley.chat.personas import Persona, Personas, card_json, load_card
from parley.chat.window import WindowPolicy, reply_room
from parley.errors import Conflict, InvalidRequest, LimitExceeded, NotFound, ParleyError
from parley.sampling import SamplingParams
from parley.store import Message, NewMessage, Store, exchange, new_id
from parley.store.rows import Conversation

TITLE_MAX = exchange.TITLE_MAX
SAMPLING_FIELDS = {f.name: f for f in dataclasses.fields(SamplingParams)}
_TUPLES = ("stop",)


@dataclass(frozen=True, slots=True)
class Settings:
    """A conversation's settings, as stored (JSON) and read back typed."""

    overflow: str = "truncate"
    max_messages: int = 0
    persona: dict | None = None                # {"name": registry name, "card": a V3 card as JSON}
    documents: tuple[str, ...] = ()

    def stored(self) -> dict[str, Any]:
        out: dict[str, Any] = {"overflow": self.overflow, "max_messages": self.max_messages}
        if self.persona is not None:
            out["persona"] = self.persona
        if self.documents:
            out["documents"] = list(self.documents)
        return out

    @property
    def policy(self) -> WindowPolicy:
        return WindowPolicy(overflow=self.overflow, max_messages=self.max_messages)

    @property
    def persona_name(self) -> str | None:
        return self.persona["name"] if self.persona else None

    def card(self) -> Persona | None:
        return load_card(json.dumps(self.persona["card"]).encode(), "the conversation's persona") \
            if self.persona else None


def read_settings(raw: Any, where: str = "settings", *, check_card: bool = False) -> Settings:
    """Stored or imported settings -> Settings; an InvalidRequest naming the first bad field. `check_card` also
    reads the persona's card whole (what arrives from outside: an import); a stored row was checked when it was
    written, so reading it back only checks its shape (a listing reads 200 rows, a turn reads one several
    times)."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be an object, got {type(raw).__name__}", param=where)
    overflow = raw.get("overflow", "truncate")
    max_messages = raw.get("max_messages", 0)
    if not isinstance(overflow, str):
        raise InvalidRequest(f"{where}.overflow must be a string, got {type(overflow).__name__}",
                             param=f"{where}.overflow")
    if isinstance(max_messages, bool) or not isinstance(max_messages, int):
        raise InvalidRequest(f"{where}.max_messages must be an integer, got {type(max_messages).__name__}",
                             param=f"{where}.max_messages")
    try:
        WindowPolicy(overflow=overflow, max_messages=max_messages)
    except InvalidRequest as e:
        raise InvalidRequest(f"{where}.{e.message}", param=f"{where}.{e.param}") from None
    persona = raw.get("persona")
    if persona is not None:
        if not isinstance(persona, dict) or not isinstance(persona.get("name"), str) \
                or not isinstance(persona.get("card"), dict):
            raise InvalidRequest(f"{where}.persona must be an object with a name (a string) and a card (a "
                                 "character card's JSON object)", param=f"{where}.persona")
        if check_card:
            try:
                load_card(json.dumps(persona["card"]).encode(), f"{where}.persona.card")
            except ParleyError as e:
                raise InvalidRequest(f"{where}.persona.card is not a character card: {e.message}",
                                     param=f"{where}.persona.card") from None
        persona = {"name": persona["name"], "card": persona["card"]}
    docs = raw.get("documents", [])
    if not isinstance(docs, list) or not all(isinstance(d, str) and d for d in docs):
        raise InvalidRequest(f"{where}.documents must be a list of document ids", param=f"{where}.documents")
    return Settings(overflow, max_messages, persona, tuple(dict.fromkeys(docs)))


def read_defaults(raw: Any, where: str = "defaults") -> SamplingParams:
    """Stored or imported sampling defaults -> SamplingParams (unknown keys are ignored: a newer parley's); an
    InvalidRequest naming the first bad field."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where} must be an object, got {type(raw).__name__}", param=where)
    known: dict[str, Any] = {}
    for k, v in raw.items():
        if k not in SAMPLING_FIELDS or v is None:
            continue
        if k in _TUPLES:
            if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise InvalidRequest(f"{where}.{k} must be a list of strings, got {type(v).__name__}",
                                     param=f"{where}.{k}")
            v = tuple(v)
        elif isinstance(v, float) and not math.isfinite(v):
            raise InvalidRequest(f"{where}.{k} must be a finite number, got {v}", param=f"{where}.{k}")
        known[k] = v
    try:
        return SamplingParams(**known)
    except InvalidRequest as e:
        raise InvalidRequest(f"{where}.{e.message}", param=f"{where}.{e.param}") from None
    except TypeError as e:  # pragma: no cover - a field SamplingParams takes by another name
        raise InvalidRequest(f"{where} is not valid: {e}", param=where) from None


def check_title(title: str | None) -> None:
    if title is not None and (not isinstance(title, str) or len(title) > TITLE_MAX):
        n = len(title) if isinstance(title, str) else None
        raise LimitExceeded(f"title is {n} characters; at most {TITLE_MAX}" if n is not None else
                            "title must be a string", param="title")


@dataclass(frozen=True, slots=True)
class Read:
    """A stored row read back: its settings and defaults, or, for a row that does not read, what is wrong (the
    row is still listed, with defaults and settings at their start values, and every turn refused)."""

    conversation: Conversation
    settings: Settings
    defaults: SamplingParams            # as the user set them (the chat format's stop strings left out)
    problem: str | None = None


class Conversations:
    """Over the store. A call about prompts takes `served` (chat.model.Served: the model a conversation is served
    with, and its documents), which persona and document checks measure against; None where no model is loaded
    (`parley conversations` opens the store alone)."""

    def __init__(self, store: Store, *, personas: Personas | None = None):
        self.store = store
        self.personas = personas

    # ---- reading -----------------------------------------------------------------------------------------
    def read(self, conv: Conversation) -> Read:
        """Settings and defaults read back each on its own: what does not read is named in `problem` and shown
        at its start values; what does is shown as stored."""
        problems: list[str] = []
        try:
            settings = read_settings(conv.settings)
        except InvalidRequest as e:
            settings = Settings()
            problems.append(e.message)
        try:
            defaults = read_defaults(conv.defaults)
        except InvalidRequest as e:
            defaults = SamplingParams()
            problems.append(e.message)
        return Read(conv, settings, defaults, "; ".join(problems) or None)

    def settings_of(self, conv: Conversation) -> Settings:
        """The settings of a conversation about to be used: a row that does not read is refused by name."""
        r = self.read(conv)
        if r.problem is not None:
            raise Conflict(f"conversation {conv.id} cannot be used as stored: {r.problem}; change it with PATCH "
                           "(or delete it)", param="conversation_id", code="conversation_invalid")
        return r.settings

    def defaults(self, conv: Conversation, served: Served | None = None) -> SamplingParams:
        """The conversation's sampling defaults, with the chat format's end-of-turn strings of `served`."""
        self.settings_of(conv)
        params = read_defaults(conv.defaults)
        return params.with_stops(served.model.stops) if served is not None else params

    @staticmethod
    def stored_defaults(params: SamplingParams, served: Served | None = None) -> dict:
        """SamplingParams as stored: without the chat format's own stop strings (what a user set)."""
        out = dataclasses.asdict(params.without_stops(served.model.stops) if served is not None else params)
        out["stop"] = list(out["stop"])
        return out

    def persona_of(self, conv: Conversation) -> Persona | None:
        return self.settings_of(conv).card()

    def leaves(self, conversation_id: str) -> list[Message]:
        """The last message of every branch, oldest first."""
        msgs = self.store.messages(conversation_id)
        parents = {m.parent_id for m in msgs}
        return [m for m in msgs if m.id not in parents]

    # ---- writing -----------------------------------------------------------------------------------------
    def create(self, *, system: str | None = None, title: str | None = None, defaults: SamplingParams | None = None,
               overflow: str = "truncate", max_messages: int = 0, owner: str | None = None,
               metadata: dict | None = None, persona: str | Persona | None = None,
               user_name: str | None = None, document_ids: list[str] | None = None,
               served: Served | None = None) -> Conversation:
        """A new conversation (served with `served`'s model). With a persona (a registry name, or a Persona), its narrative is pinned first,
        the model speaks as its characters and its greeting opens the conversation. With documents, their text
        is pinned after the system prompt (or, for long ones, their beginning: each message brings the
        passages it needs)."""
        check_title(title)
        WindowPolicy(overflow=overflow, max_messages=max_messages)
        settings = Settings(overflow, max_messages, documents=self._documents(document_ids, owner, served))
        greeting: list[NewMessage] = []
        if persona is not None:
            p = self._persona(persona)
            if user_name:
                p = p.with_changes(user_name=user_name)
            settings = dataclasses.replace(settings, persona={
                "name": persona if isinstance(persona, str) else p.name, "card": card_json(p, "v3")})
            greetings = p.greetings()
            if greetings:
                greeting = [NewMessage("assistant", greetings[0], finish_reason="stop", id=new_id("msg"),
                                       meta={H.SPEAKER: p.name} if p.format == "transcript" else {})]
        if persona is not None:
            self.check_pinned(settings, system or None, served)
        return self.store.create_conversation(
            title=title, system=system or None, defaults=self.stored_defaults(defaults or SamplingParams(), served),
            settings=settings.stored(), owner=owner, metadata=metadata or {},
            model=served.name if served is not None else None, messages=greeting,
            leaf_id=greeting[0].id if greeting else None)

    def update(self, conversation_id: str, *, title: str | None = ..., system: str | None = ...,
               defaults: SamplingParams | dict | None = None, overflow: str | None = None,
               max_messages: int | None = None, metadata: dict | None = None, leaf_id: str | None = None,
               persona: Persona | None = None, document_ids: list[str] | None = None,
               served: Served | None = None) -> Conversation:
        """Change a conversation (`served`: the model its checks measure against). `defaults`: the whole SamplingParams, or a dict of fields over the stored ones;
        `leaf_id` switches the current branch (the next message continues from there; the KV of the shared
        prefix is reused); `persona` replaces its persona (an edited narrative); `document_ids` replaces its
        documents ([]: none)."""
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
        if isinstance(defaults, dict):   # over what is stored, so a PATCH never resets the fields it leaves out
            raw_defaults = dict(conv.defaults) if isinstance(conv.defaults, dict) else {}
            raw_defaults.update({k: list(v) if isinstance(v, tuple) else v for k, v in defaults.items()})
            defaults = read_defaults(raw_defaults)
        if defaults is not None:
            fields["defaults"] = self.stored_defaults(defaults, served)
        # the stored dict with the changes over it, read back as a whole: a row that did not read (a bad
        # max_messages, say) is fixed by the PATCH that sets it, and keeps the rest of what it holds
        raw = dict(conv.settings) if isinstance(conv.settings, dict) else {}
        if overflow is not None:
            raw["overflow"] = overflow
        if max_messages is not None:
            raw["max_messages"] = max_messages
        if persona is not None:
            kept = raw.get("persona")
            name = kept.get("name") if isinstance(kept, dict) and isinstance(kept.get("name"), str) else None
            raw["persona"] = {"name": name or persona.name, "card": card_json(persona, "v3")}
        if document_ids is not None:
            raw["documents"] = list(self._documents(document_ids, conv.owner, served))
        if raw != conv.settings:
            try:
                fields["settings"] = read_settings(raw).stored()
            except InvalidRequest as e:  # name the field as the caller sent it (max_messages, not settings.)
                raise InvalidRequest(e.message.removeprefix("settings."),
                                     param=(e.param or "").removeprefix("settings.")) from None
        if persona is not None:
            self.check_pinned(read_settings(fields.get("settings", raw)), fields.get("system", conv.system), served)
        return self.store.update_conversation(conversation_id, **fields) if fields else conv

    def set_leaf(self, conversation_id: str, leaf_id: str | None) -> None:
        """Move the current branch's end (None: before the first message)."""
        if leaf_id is not None:
            self.store.message_of(conversation_id, leaf_id, "leaf_id")
        self.store.update_conversation(conversation_id, leaf_id=leaf_id)

    def import_(self, data: Any, *, owner: str | None = None, served: Served | None = None) -> Conversation:
        """An exported conversation as a new one. Every field is checked before anything is written: the store's
        own checks (exchange.parse), then the settings and defaults as this stage reads them."""
        conv, msgs = exchange.parse(data)
        settings = read_settings(conv.get("settings") or {}, "conversation.settings", check_card=True)
        read_defaults(conv.get("defaults") or {}, "conversation.defaults")
        self.check_pinned(settings, conv.get("system"), served)
        for i, d in enumerate(settings.documents):
            if not self._has_document(d):
                raise InvalidRequest(f"conversation.settings.documents[{i}] names document {d!r}, which is not "
                                     "loaded here: load it first (POST /v1/documents) or leave it out of the file",
                                     param=f"conversation.settings.documents[{i}]")
        return exchange.import_conversation(self.store, (conv, msgs), owner=owner)

    def fork(self, conversation_id: str, at: str, *, owner: str | None = None) -> Conversation:
        """Copy the branch from the root to message `at` into a new conversation (new ids, the same token ids,
        so its prompts hit the same KV)."""
        conv = self.store.get_conversation(conversation_id)
        self.store.message_of(conversation_id, at, "at")
        branch = self.store.branch(at)
        ids = {m.id: new_id("msg") for m in branch}
        rows = [NewMessage(role=m.role, content=m.content, id=ids[m.id],
                           parent_id=ids[m.parent_id] if m.parent_id else None, meta=m.meta, partial=m.partial,
                           finish_reason=m.finish_reason, stats=m.stats, tokens=m.tokens,
                           tokens_text=m.tokens_text, tokens_key=m.tokens_key, created=m.created)
                for m in branch]
        title = f"{conv.title} (fork)" if conv.title else None
        return self.store.create_conversation(
            title=title[:TITLE_MAX] if title else None, system=conv.system, defaults=conv.defaults,
            settings=conv.settings, model=conv.model, owner=owner if owner is not None else conv.owner,
            metadata=conv.metadata, messages=rows, leaf_id=ids[at])

    # ---- how its prompts look ----------------------------------------------------------------------------
    def frame(self, conv: Conversation, branch: list[Message], speaker: str | None, said: str,
              served: Served) -> Frame:
        """Its persona (if any) and, in a group scene, who speaks."""
        settings = self.settings_of(conv)
        persona = settings.card()
        if persona is None:
            return self.frame_for(settings, conv.system, None, served)
        speakers = persona.speakers()
        if speaker is not None and speaker not in speakers:
            raise InvalidRequest(f"unknown speaker {speaker!r}; this scene's characters: {', '.join(speakers)}",
                                 param="speaker")
        return self.frame_for(settings, conv.system, speaker or next_speaker(persona, branch, said), served)

    def frame_for(self, settings: Settings, system: str | None, speaker: str | None, served: Served) -> Frame:
        m = served.model
        if settings.documents:
            system = "\n\n".join(t for t in (system, served.documents.pinned_text(settings.documents)) if t)
        p = settings.card()
        if p is None:
            pinned = [{"role": "system", "content": system}] if system else []
            return Frame(builder=m.builder, pinned=(pinned, pinned), stops=m.stops, key=m.tokens_key)
        return persona_frame(p, system, speaker or p.name, m)

    def check_pinned(self, settings: Settings, system: str | None, served: Served | None) -> None:
        """A persona (with the system prompt and documents) must leave a quarter of the context for the turns
        and the reply: refused when it is set, not at the first message. One far too long is refused from its
        size, before it is tokenized."""
        if served is None or settings.persona is None:
            return
        ctx = served.model.context_size
        budget = ctx - reply_room(ctx)
        frame = self.frame_for(settings, system, None, served)
        least = served.model.surely_over([m["content"] for m in frame.pinned[1]], budget)
        n = least or len(frame.builder.build(frame.pinned[1] + [{"role": "user", "content": "?"}]).tokens)
        if n > budget:
            raise LimitExceeded(f"the persona and system prompt are {'at least ' if least else ''}{n} tokens; the "
                                f"context holds {ctx}, and a quarter of it stays for the turns and the reply",
                                param="persona", code="context_length_exceeded")

    # ---- internals ---------------------------------------------------------------------------------------
    def _persona(self, persona: str | Persona) -> Persona:
        if isinstance(persona, Persona):
            return persona
        if self.personas is None:
            raise InvalidRequest(f"unknown persona {persona!r}: no personas here", param="persona")
        return self.personas.get(persona)

    def _has_document(self, document_id: str) -> bool:
        try:
            self.store.get_document(document_id)
        except NotFound:
            return False
        return True

    def _documents(self, document_ids: list[str] | None, owner: str | None, served: Served | None
                   ) -> tuple[str, ...]:
        """The documents a conversation of `owner` may pin: its owner's, or anyone's (no owner)."""
        if not document_ids:
            return ()
        if served is None:
            raise InvalidRequest("documents need a loaded model (parley.load())", param="document_ids")
        out = []
        for d in dict.fromkeys(document_ids):
            info = served.documents.info(d)
            if owner is not None and info.owner not in (None, owner):
                raise NotFound(f"no document {str(d)[:64]} here", param="document_ids")
            out.append(info.id)
        return tuple(out)

