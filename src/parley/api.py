"""The one door into parley. The terminal, the HTTP server and the web page call this module and nothing below.

    p = parley.load()                            # or load("model.gguf", kv_size=8192, deterministic=True)
    chat = p.chat(system="You are terse.", temperature=0)     # a conversation kept in $PARLEY_HOME/parley.db
    for text in chat.send("Hello"):              # text as it is generated
        print(text, end="")
    chat.last.result.stats                       # prompt/cached tokens, time to first token, tokens/s
    p.chat(resume=True)                          # the latest conversation again, with its KV cache

What a loaded Parley offers:
    settings, info                               what runs, how (parley.settings.Settings, ModelInfo)
    tokenize / detokenize / token_text / check_tokens
    generate(prompt, params, loop=None)          raw completion -> Stream (iterate with for, or async for)
    chat_prompt(messages, ...)                   a stateless chat request's prompt, windowed to fit -> Prompt
    conversations                                stored conversations and their turns (chat.session.Sessions)
    documents                                    files loaded once into model memory, asked many questions
    personas, skills                             registries of bundled and the user's personas and skills
    stats(), on_finish(callback)                 what the scheduler is doing; a hook per finished request
    close()                                      stop, record what is running, save the KV cache to disk
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from parley.chat.documents import Answer, DocumentInfo, Documents, Source
from parley.chat.personas import Persona, Personas
from parley.chat.personas import load_card as load_card  # the web page: a character card uploaded as bytes
from parley.chat.personas import read_file as read_persona_file
from parley.chat.prompt import PromptBuilder
from parley.chat.session import Model, Reply, Sessions, fork_rows
from parley.chat.skills import Skills, parse_params
from parley.chat.window import PER_MESSAGE_TOKENS, PromptTooLong, WindowPolicy, fit
from parley.engine.interrupt import deferred_sigint
from parley.engine.llamacpp import EngineConfig, LlamaCppEngine
from parley.errors import InvalidRequest
from parley.sampling import CHAT_PRESET, SamplingParams
from parley.scheduler.request import Chunk, Result
from parley.scheduler.scheduler import Scheduler
from parley.scheduler.stats import SchedulerStats
from parley.scheduler.stream import Stream
from parley.settings import Settings
from parley.store import Store, exchange
from parley.text.template import resolve_template, validate_messages

__all__ = ["Answer", "Chat", "Chunk", "DocumentInfo", "Library", "ModelInfo", "Parley", "Persona", "Prompt",
           "Registries", "registries",
           "PromptTooLong", "Reply", "Result", "Source", "Stream", "load", "parse_params", "read_persona_file",
           "validate_messages"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    path: str
    context_size: int              # most tokens one conversation may hold
    kv_size: int                   # KV cells shared by every conversation
    kv_bytes_per_cell: int
    device: str                    # "cpu" or "gpu (N of M layers)"
    threads: int
    chat_format: str               # "model" (the file's own template) or a named format
    max_running: int
    deterministic: bool


@dataclass
class Prompt:
    """A stateless request's prompt, as it will be sent."""

    tokens: list[int]
    dropped: int = 0        # earlier messages left out to fit the context
    note: str = ""          # said in the response when something was left out


@dataclass
class LastReply:
    """What Chat.last holds once a reply has ended."""

    text: str
    result: Result
    dropped: int = 0        # earlier messages outside the window
    note: str = ""          # what a user can act on about this reply ("" when nothing)
    message_id: str = ""


class Parley:
    """One loaded model with its scheduler thread and its store. Thread-safe: many conversations at once."""

    def __init__(self, model: str | os.PathLike | None = None, *, settings: Settings | None = None, **options):
        base = settings or Settings.from_env()
        if model is not None:
            options["model"] = str(model)
        self.settings = s = base.replace(**options) if options else base
        with deferred_sigint() as interrupt:  # Ctrl-C while loading: one KeyboardInterrupt after, nothing left
            self._load(s)
            if interrupt.requested:
                self._close_parts(save=False)
        self.name = self.engine.name
        self.context_size = self.scheduler.context_size

    def _load(self, s: Settings) -> None:
        self.engine = LlamaCppEngine(EngineConfig.from_settings(s.engine, batch_tokens=s.scheduler.batch_tokens))
        try:
            engine = self.engine
            self.template = resolve_template(engine.chat_template, s.template.chat_format, bos_token=engine.bos_text,
                                             eos_token=engine.eos_text)
            self.builder = PromptBuilder(self.template, engine.tokenize, bos_text=engine.bos_text,
                                         add_bos=engine.add_bos)
            self.scheduler = Scheduler(engine, s.scheduler,
                                       cache_dir=s.data_dir if s.scheduler.disk_cache_mb > 0 else None)
            self.store = Store(s.data_dir / "parley.db") if s.store else Store()
            key = hashlib.sha256((engine.vocab_fingerprint() + self.template.source).encode()).hexdigest()[:16]
            self.personas = Personas(s.data_dir / "personas")
            self.skills = Skills(s.data_dir / "skills")
            model = Model(self.builder, self.scheduler, self.scheduler.context_size, key, self.template.stops,
                          label=f"{engine.name}:{key}", kv_cells=self.scheduler.cache.kv_budget)
            self.documents = Documents(model, self.store, s.documents.limits)
            self.conversations = Sessions(model, self.store, personas=self.personas, skills=self.skills,
                                          documents=self.documents)
        except BaseException:
            self._close_parts(save=False)
            raise

    # ---- what runs ---------------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        e = self.engine
        return ModelInfo(name=e.name, path=str(e.model_path), context_size=self.context_size, kv_size=e.n_ctx,
                         kv_bytes_per_cell=e.kv_bytes_per_cell, device=e.device, threads=e.n_threads,
                         chat_format=self.template.name, max_running=self.settings.scheduler.max_running,
                         deterministic=self.settings.engine.deterministic)

    @property
    def chat_stops(self) -> tuple[str, ...]:
        """End-of-turn strings the chat format needs as stop strings (none for a model's own template)."""
        return self.template.stops

    @property
    def eos_id(self) -> int:
        return self.engine.eos_id

    @property
    def end_of_turn_ids(self) -> frozenset[int]:
        """Every token id that ends a turn (EOS, EOT, <|im_end|>, ...)."""
        return self.engine.eog_ids

    def forget_idle(self, *, save: bool = False) -> int:
        """Drop every idle, unpinned sequence from the KV cache (saved first when `save`); pinned documents stay.
        Returns how many were dropped (benchmarks use it for a cold cache)."""
        return self.scheduler.drop_cached(save=save)

    # ---- text and tokens ---------------------------------------------------------------------------------
    def tokenize(self, text: str) -> list[int]:
        """A raw prompt's token ids: control tokens written in it are parsed, BOS added when the model wants it."""
        return self.builder.tokenize_prompt(text)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.engine.detokenize(tokens)

    def token_text(self, token: int) -> str:
        """One token's text, special tokens spelled out (TGI's details)."""
        return self.engine.piece(token).decode("utf-8", "replace") or self.engine.special_text(token)

    def check_tokens(self, tokens: Sequence[int], param: str = "tokens") -> None:
        self.engine.check_tokens(tokens, param)

    # ---- generation --------------------------------------------------------------------------------------
    def generate(self, prompt: str | Sequence[int], params: SamplingParams | None = None, *,
                 loop: asyncio.AbstractEventLoop | None = None, param: str = "prompt") -> Stream:
        """A raw completion (no chat template) of text or token ids. `params` default: SamplingParams(), every
        stage off at temperature 1, as the HTTP completions API does."""
        if isinstance(prompt, str):
            if not prompt:
                raise InvalidRequest("the prompt is empty", param=param)
            tokens = self.tokenize(prompt)
        else:
            tokens = list(prompt)
            self.check_tokens(tokens, param)
        return self.scheduler.stream(tokens, params or SamplingParams(), loop=loop, param=param)

    def complete(self, prompt: str, **sampling) -> Stream:
        """generate(prompt, SamplingParams(**sampling)): iterate the Stream for Chunks."""
        return self.generate(prompt, SamplingParams().replace(**sampling))

    def chat_prompt(self, messages: list[dict], *, max_tokens: int, truncate: bool = False,
                    prompt_limit: int = 0) -> Prompt:
        """A stateless chat request's prompt. With `truncate`, old turns leave in blocks at the same boundaries
        a stored conversation uses (chat/window.py), so a client that resends its growing history keeps hitting
        the cache; without it, a prompt that does not fit is a LimitExceeded saying by how much."""
        messages = validate_messages(messages)
        pinned_n = 0
        while pinned_n < len(messages) - 1 and messages[pinned_n]["role"] == "system":
            pinned_n += 1
        pinned, history, new = messages[:pinned_n], messages[pinned_n:-1], messages[-1]
        ctx = self.context_size
        limit = min(prompt_limit or ctx - 1, ctx - 1)
        budget = min(limit, ctx - min(max_tokens, max(1, ctx // 4))) if truncate else limit
        count = self.builder.tokenize_text
        fitted = fit(lambda start, _ex: self.builder.build(pinned + history[start:] + [new]),
                     sizes=[len(count(m["content"])) + PER_MESSAGE_TOKENS for m in history],
                     roles=[m["role"] for m in history], budget=budget,
                     policy=WindowPolicy(overflow="truncate" if truncate else "error"),
                     pinned_tokens=sum(len(count(m["content"])) + PER_MESSAGE_TOKENS for m in pinned))
        note = f"{fitted.start} oldest messages were dropped to fit the context" if fitted.start else ""
        return Prompt(fitted.built.tokens, fitted.start, note)

    # ---- conversations -----------------------------------------------------------------------------------
    def chat(self, system: str | None = None, *, resume: bool | str = False, title: str | None = None,
             overflow: str = "truncate", max_messages: int = 0, persona=None, user_name: str | None = None,
             document_ids: list[str] | None = None, **sampling) -> Chat:
        """A conversation to talk to: a new one (its sampling defaults: the chat preset, parley.sampling.
        CHAT_PRESET, with `sampling` over it; `persona`: a registry name or a Persona), or `resume`: True for
        the most recently used one, or an id."""
        convs = self.conversations
        if resume:
            if resume is True:
                latest = convs.store.list_conversations(limit=1)
                if not latest:
                    raise InvalidRequest("there is no conversation to resume yet", param="resume")
                return Chat(self, latest[0].id)
            convs.store.get_conversation(resume)
            return Chat(self, str(resume))
        params = CHAT_PRESET.replace(**sampling) if sampling else CHAT_PRESET
        conv = convs.create(system=system, title=title, defaults=params, overflow=overflow,
                            max_messages=max_messages, persona=persona, user_name=user_name,
                            document_ids=document_ids)
        return Chat(self, conv.id)

    # ---- monitoring --------------------------------------------------------------------------------------
    def stats(self, timeout: float | None = 30.0) -> SchedulerStats:
        return self.scheduler.stats(timeout)

    def on_finish(self, callback: Callable[[object, Result], None]) -> Callable[[], None]:
        """Call `callback(request, result)` on the scheduler thread for every finished request (parley's own
        read-ahead excluded); returns the function that removes it."""
        observers = self.scheduler.observers
        observers.append(callback)

        def remove() -> None:
            if callback in observers:
                observers.remove(callback)
        return remove

    # ---- lifetime ----------------------------------------------------------------------------------------
    def close(self, *, save: bool = True) -> None:
        """Stop the scheduler (replies still running end as cancelled and are recorded), save idle
        conversations' KV to disk when `save`, close the store, free the model."""
        self._close_parts(save=save)

    def _close_parts(self, *, save: bool) -> None:
        sched = getattr(self, "scheduler", None)
        if sched is not None:
            sched.close(save=save)
        convs = getattr(self, "conversations", None)
        if convs is not None:
            convs.close()
        store = getattr(self, "store", None)
        if store is not None:
            store.close()
        self.engine.close()

    def __enter__(self) -> Parley:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Chat:
    """One stored conversation, talked to from Python or the terminal. send() and retry() yield text as it is
    generated; `last` holds the finished reply. Every message is in the store as it happens."""

    def __init__(self, parley: Parley, conversation_id: str):
        self.parley = parley
        self.id = conversation_id
        self.last: LastReply | None = None
        self._reply: Reply | None = None

    @property
    def _sessions(self) -> Sessions:
        return self.parley.conversations

    @property
    def conversation(self):
        return self._sessions.store.get_conversation(self.id)

    @property
    def messages(self) -> list[dict]:
        """The current branch as {"role", "content"} dicts (the system prompt first)."""
        conv = self.conversation
        out = [{"role": "system", "content": conv.system}] if conv.system else []
        return out + [{"role": m.role, "content": m.content} for m in self._sessions.store.branch(conv.leaf_id)]

    @property
    def params(self) -> SamplingParams:
        return self._sessions.defaults(self.conversation)

    def send(self, text: str, *, skill: str | None = None, skill_params: dict | None = None,
             speaker: str | None = None, **sampling) -> Iterator[str]:
        """Your message, and the reply as it is generated. `skill` wraps the message in a recipe (translate,
        summarize, ...); `speaker` picks who answers in a persona's group scene."""
        return self._run(lambda: self._sessions.send(self.id, text, params=sampling or None, skill=skill,
                                                     skill_params=skill_params, speaker=speaker))

    def retry(self, *, speaker: str | None = None, **sampling) -> Iterator[str]:
        """A new reply to the last user message, kept beside the old one (a branch); its prompt's KV is reused."""
        return self._run(lambda: self._sessions.retry(self.id, params=sampling or None, speaker=speaker))

    def ask(self, text: str, **sampling) -> str:
        """send() and return the whole reply."""
        return "".join(self.send(text, **sampling))

    def stop(self) -> None:
        """Stop the reply being generated (from any thread, or a signal handler); what was said is kept."""
        reply = self._reply
        if reply is not None:
            reply.cancel()

    def clear(self) -> Chat:
        """Start over: a new conversation with this one's system prompt and defaults (this one stays stored)."""
        conv = self.conversation
        new = self._sessions.create(system=conv.system, defaults=self.params,
                                    overflow=conv.settings.get("overflow", "truncate"),
                                    max_messages=int(conv.settings.get("max_messages", 0)))
        self.id, self.last = new.id, None
        return self

    def prompt_for(self, text: str, **sampling) -> list[int]:
        """The prompt token ids send(text) would use now (nothing is sent or stored)."""
        return self._sessions.preview(self.id, text, params=sampling or None)

    def held_tokens(self) -> list[int]:
        """The exact token ids the current branch's KV holds (its last prompt and reply); [] when unknown."""
        return self._sessions.held_tokens(self.id)

    def back(self, n: int = 2) -> int:
        """Go `n` messages back on the current branch: the next message continues from there (a new branch).
        Returns how many messages the branch keeps."""
        branch = self._sessions.store.branch(self.conversation.leaf_id)
        keep = max(0, len(branch) - max(0, n))
        self._sessions.set_leaf(self.id, branch[keep - 1].id if keep else None)
        return keep

    def branches(self) -> list[tuple[str, str, bool]]:
        """Every branch as (its last message id, a one-line preview, whether it is the current one)."""
        leaf = self.conversation.leaf_id
        out = []
        for m in self._sessions.leaves(self.id):
            text = " ".join(m.content.split())
            out.append((m.id, f"{m.role}: {text[:70]}{'...' if len(text) > 70 else ''}", m.id == leaf))
        return out

    def switch(self, message_id: str) -> None:
        """Make the branch ending at `message_id` the current one."""
        self._sessions.update(self.id, leaf_id=message_id)

    def set_system(self, text: str | None) -> None:
        self._sessions.update(self.id, system=text or None)

    def set_title(self, title: str) -> None:
        self._sessions.update(self.id, title=title)

    def _run(self, start: Callable[[], Reply]) -> Iterator[str]:
        reply = start()  # raises here (bad input, a full context) before anything is yielded
        return self._consume(reply)

    def _consume(self, reply: Reply) -> Iterator[str]:
        self._reply = reply
        try:
            yield from reply.text()
        finally:
            if reply.result is None:  # stopped early (Ctrl-C, break): keep what was said, as it was said
                reply.cancel()
                reply.wait()
            self._reply = None
            r = reply.result
            self.last = LastReply(r.text, r, reply.turn.dropped, reply.note, reply.message_id)


class Library:
    """The stored conversations without loading a model (what `parley conversations` uses): list, read, search,
    export, import, delete and fork them."""

    def __init__(self, home: str | os.PathLike | None = None):
        s = Settings.from_env(**({"home": str(home)} if home else {}))
        self.store = Store(s.data_dir / "parley.db")

    def list(self, limit: int = 50, before: str | None = None):
        return self.store.list_conversations(limit=limit, before=before)

    def get(self, conversation_id: str):
        return self.store.get_conversation(conversation_id)

    def messages(self, conversation_id: str, *, tree: bool = False):
        """The current branch, root first (tree: every message of every branch)."""
        conv = self.store.get_conversation(conversation_id)
        return self.store.messages(conv.id) if tree else self.store.branch(conv.leaf_id)

    def search(self, text: str, limit: int = 20):
        return self.store.search(text, limit=limit)

    def export(self, conversation_id: str) -> dict:
        return exchange.export_conversation(self.store, conversation_id)

    def import_(self, data):
        return exchange.import_conversation(self.store, data)

    def delete(self, conversation_id: str) -> None:
        self.store.delete_conversation(conversation_id)

    def fork(self, conversation_id: str, at: str):
        return fork_rows(self.store, conversation_id, at)

    def close(self) -> None:
        self.store.close()


@dataclass(frozen=True, slots=True)
class Registries:
    personas: Personas     # bundled + $PARLEY_HOME/personas: list, view, import_card, export_card, delete
    skills: Skills         # bundled + $PARLEY_HOME/skills: list, view, get(name).apply(text, params)


def registries(home: str | os.PathLike | None = None) -> Registries:
    """The personas and skills registries without loading a model (what `parley personas` / `parley skills`
    use); a loaded Parley has the same as `.personas` and `.skills`."""
    s = Settings.from_env(**({"home": str(home)} if home else {}))
    return Registries(Personas(s.data_dir / "personas"), Skills(s.data_dir / "skills"))


def load(model: str | os.PathLike | None = None, **options) -> Parley:
    """Load a GGUF model (default: the embedded SmolLM2-135M-Instruct). Options: parley.settings.Settings."""
    return Parley(model, **options)


def default_home() -> Path:
    return Settings.from_env().data_dir
