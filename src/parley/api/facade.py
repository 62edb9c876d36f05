"""Parley: one loaded model behind one door. What the edges (terminal, HTTP server, web page) and Python users
call, and nothing below it.

    p = parley.load()                                  # or Parley("model.gguf", kv_size=8192)
    p.info, p.limits                                   # what runs; how much a request may ask for
    p.generate(prompt, params, loop=None) -> Stream    # a raw completion; p.chat_prompt(messages) -> Prompt
    p.conversations, p.documents, p.personas, p.skills # the services (api/conversations.py, ...)
    p.stats(), p.on_finish(callback)                   # what the scheduler is doing; a hook per finished request
    p.with_limits(Limits(...))                         # the same model behind a door with tighter limits
    p.close()

Loading makes the parts once, in order: the engine (llama.cpp), the chat template and the prompt builder, the
scheduler thread (the one owner of the engine), the store, the registries, and the chat stage over them
(chat.Conversations, chat.Turns, chat.Documents). They are held by a `_Core` that the door never hands out.
`engine`, `scheduler` and `store` stay reachable as attributes for tests and benchmarks; the edges may not
touch them (tests/test_layers.py reads their source and fails on a reach-through).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from parley.api.conversations import ConversationsService
from parley.api.documents import DocumentsService
from parley.api.guard import LoopGuard, blocking
from parley.api.registries import PersonasService, SkillsService
from parley.chat.conversations import Conversations
from parley.chat.documents import Documents
from parley.chat.limits import Limits
from parley.chat.meta import Prompt
from parley.chat.model import Model
from parley.chat.personas import Personas
from parley.chat.prompt import PromptBuilder
from parley.chat.skills import Skills
from parley.chat.turns import Turns
from parley.chat.window import PromptTooLong, WindowPolicy, fit, message_sizes, reply_room
from parley.engine.interrupt import deferred_sigint
from parley.engine.llamacpp import EngineConfig, LlamaCppEngine
from parley.errors import InvalidRequest
from parley.sampling import SamplingParams
from parley.scheduler.request import Result
from parley.scheduler.scheduler import Scheduler
from parley.scheduler.stats import SchedulerStats
from parley.scheduler.stream import Stream
from parley.settings import Settings
from parley.store import Store
from parley.text.template import resolve_template, validate_messages


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


class _Core:
    """The loaded parts, made once and shared by every door over them."""

    def __init__(self, s: Settings):
        self.settings = s
        self.guard = LoopGuard()
        self.engine = engine = LlamaCppEngine(EngineConfig.from_settings(s.engine,
                                                                         batch_tokens=s.scheduler.batch_tokens))
        self.scheduler = self.store = self.turns = None
        try:
            self.template = resolve_template(engine.chat_template, s.template.chat_format,
                                             bos_token=engine.bos_text, eos_token=engine.eos_text)
            self.builder = PromptBuilder(self.template, engine.tokenize, bos_text=engine.bos_text,
                                         add_bos=engine.add_bos)
            self.scheduler = Scheduler(engine, s.scheduler,
                                       cache_dir=s.data_dir if s.scheduler.disk_cache_mb > 0 else None)
            self.store = Store(s.data_dir / "parley.db") if s.store else Store()
            key = hashlib.sha256((engine.vocab_fingerprint() + self.template.source).encode()).hexdigest()[:16]
            self.personas = Personas(s.data_dir / "personas")
            self.skills = Skills(s.data_dir / "skills")
            self.model = Model(self.builder, self.scheduler, self.scheduler.context_size, key, self.template.stops,
                               label=f"{engine.name}:{key}", kv_cells=self.scheduler.cache.kv_budget,
                               token_bytes=lambda: max(len(engine.piece(t)) for t in range(engine.n_vocab)))
            self.documents = Documents(self.model, self.store, s.documents.limits)
            self.conversations = Conversations(self.store, self.model, personas=self.personas,
                                               documents=self.documents)
            self.turns = Turns(self.conversations, skills=self.skills)
        except BaseException:
            self.close(save=False)
            raise

    def close(self, *, save: bool) -> None:
        if self.scheduler is not None:
            self.scheduler.close(save=save)
        if self.turns is not None:
            self.turns.close()
        if self.store is not None:
            self.store.close()
        self.engine.close()


class Parley:
    """One loaded model with its scheduler thread and its store. Thread-safe: many conversations at once."""

    def __init__(self, model: str | os.PathLike | None = None, *, settings: Settings | None = None, **options):
        base = settings or Settings.from_env()
        if model is not None:
            options["model"] = str(model)
        s = base.replace(**options) if options else base
        with deferred_sigint() as interrupt:  # Ctrl-C while loading: one KeyboardInterrupt after, nothing left
            core = _Core(s)
            if interrupt.requested:
                core.close(save=False)
        self._open(core, Limits(core.scheduler.context_size))

    def _open(self, core: _Core, limits: Limits) -> None:
        self._core = core
        self._guard = core.guard
        self.limits = limits
        self.settings = core.settings
        self.name = core.engine.name
        self.context_size = core.scheduler.context_size
        self.conversations = ConversationsService(core.conversations, core.turns, lambda: self.limits, core.guard)
        self.documents = DocumentsService(core.documents, lambda: self.limits, core.guard)
        self.personas = PersonasService(core.personas, core.guard)
        self.skills = SkillsService(core.skills, core.guard)

    def with_limits(self, limits: Limits) -> Parley:
        """The same model (engine, scheduler, store, caches) behind a door whose requests `limits` bounds: what
        a server with --max-prompt-tokens / --max-tokens-cap builds once at its start."""
        if limits.context_size != self.context_size:
            raise InvalidRequest(f"limits are for a context of {limits.context_size} tokens; this model's is "
                                 f"{self.context_size}", param="limits")
        door = object.__new__(Parley)
        door._open(self._core, limits)
        return door

    def guard_event_loop(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """From now on a blocking call made on `loop` (while it runs) raises (api/guard.py): what an edge that
        serves an event loop switches on when it starts, for every door over this model. Returns the function
        that lifts it (when the loop stops)."""
        self._guard.guard(loop)
        return lambda: self._guard.release(loop)

    # ---- what runs ---------------------------------------------------------------------------------------
    @property
    def info(self) -> ModelInfo:
        e, s = self._core.engine, self.settings
        return ModelInfo(name=e.name, path=str(e.model_path), context_size=self.context_size, kv_size=e.n_ctx,
                         kv_bytes_per_cell=e.kv_bytes_per_cell, device=e.device, threads=e.n_threads,
                         chat_format=self._core.template.name, max_running=s.scheduler.max_running,
                         deterministic=s.engine.deterministic)

    @property
    def chat_stops(self) -> tuple[str, ...]:
        """End-of-turn strings the chat format needs as stop strings (none for a model's own template)."""
        return self._core.template.stops

    @property
    def eos_id(self) -> int:
        return self._core.engine.eos_id

    # below the door: for tests and benchmarks, never for the edges (tests/test_layers.py)
    engine = property(lambda self: self._core.engine)
    scheduler = property(lambda self: self._core.scheduler)
    store = property(lambda self: self._core.store)
    template = property(lambda self: self._core.template)
    builder = property(lambda self: self._core.builder)

    # ---- text and tokens ---------------------------------------------------------------------------------
    @blocking
    def tokenize(self, text: str) -> list[int]:
        """A raw prompt's token ids: control tokens written in it are parsed, BOS added when the model wants it."""
        return self._core.builder.tokenize_prompt(text)

    @blocking
    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._core.engine.detokenize(tokens)

    def token_text(self, token: int) -> str:
        """One token's text, special tokens spelled out (TGI's details)."""
        e = self._core.engine
        return e.piece(token).decode("utf-8", "replace") or e.special_text(token)

    def check_tokens(self, tokens: Sequence[int], param: str = "tokens") -> None:
        self._core.engine.check_tokens(tokens, param)

    # ---- generation --------------------------------------------------------------------------------------
    @blocking
    def generate(self, prompt: str | Sequence[int] | Prompt, params: SamplingParams | None = None, *,
                 loop: asyncio.AbstractEventLoop | None = None, param: str = "prompt") -> Stream:
        """A raw completion (no chat template) of text, token ids or a Prompt (chat_prompt's), within the door's
        limits. `params` default: SamplingParams(), every stage off at temperature 1, as the HTTP completions API
        does. The Stream's meta is the Prompt."""
        if isinstance(prompt, Prompt):
            meta = prompt
        elif isinstance(prompt, str):
            if not prompt:
                raise InvalidRequest("the prompt is empty", param=param)
            meta = Prompt(self.tokenize(prompt))
        else:
            meta = Prompt(list(prompt))
            self.check_tokens(meta.tokens, param)
        self.limits.check_prompt(len(meta.tokens), param=param)
        params = params or SamplingParams()
        if params.max_tokens > self.limits.max_tokens:
            params = params.replace(max_tokens=self.limits.max_tokens)
        return self._core.scheduler.stream(meta.tokens, params, loop=loop, param=param, meta=meta)

    def complete(self, prompt: str, **sampling) -> Stream:
        """generate(prompt, SamplingParams(**sampling)): iterate the Stream for Chunks."""
        return self.generate(prompt, SamplingParams().replace(**sampling))

    @blocking
    def chat_prompt(self, messages: list[dict], *, max_tokens: int, truncate: bool = False,
                    param: str = "messages", hint: str = "") -> Prompt:
        """A stateless chat request's prompt. With `truncate`, old turns leave in blocks at the same boundaries
        a stored conversation uses (chat/window.py), so a client that resends its growing history keeps hitting
        the cache; without it, a prompt that does not fit is a LimitExceeded saying by how much (`hint`: what
        the request can do about it)."""
        messages = validate_messages(messages)
        pinned_n = 0
        while pinned_n < len(messages) - 1 and messages[pinned_n]["role"] == "system":
            pinned_n += 1
        pinned, history, new = messages[:pinned_n], messages[pinned_n:-1], messages[-1]
        ctx, builder = self.context_size, self._core.builder
        overflow = "truncate" if truncate else "error"
        budget = min(self.limits.prompt_tokens, ctx - reply_room(ctx, max_tokens, overflow))
        count = self._core.model.count
        try:
            fitted = fit(lambda start, _ex: builder.build(pinned + history[start:] + [new]),
                         sizes=message_sizes(count, history), roles=[m["role"] for m in history], budget=budget,
                         policy=WindowPolicy(overflow=overflow), pinned_tokens=sum(message_sizes(count, pinned)),
                         total_param=param)
        except PromptTooLong as e:
            if truncate:
                raise
            raise self.limits.too_long(e.tokens, param=param, hint=hint) from None
        note = f"{fitted.start} oldest messages were dropped to fit the context" if fitted.start else ""
        return Prompt(fitted.built.tokens, fitted.start, note)

    # ---- conversations -----------------------------------------------------------------------------------
    def chat(self, system: str | None = None, *, resume: bool | str = False, title: str | None = None,
             overflow: str = "truncate", max_messages: int = 0, persona=None, user_name: str | None = None,
             document_ids: list[str] | None = None, **sampling):
        """A conversation to talk to (api/chat.py's Chat): a new one (its sampling defaults: the chat preset,
        parley.sampling.CHAT_PRESET, with `sampling` over it; `persona`: a registry name or a Persona), or
        `resume`: True for the most recently used one, or an id."""
        from parley.api.chat import Chat
        from parley.sampling import CHAT_PRESET

        if resume:
            if resume is True:
                latest = self.conversations.list(limit=1).items
                if not latest:
                    raise InvalidRequest("there is no conversation to resume yet", param="resume")
                return Chat(self, latest[0].id)
            return Chat(self, self.conversations.get(str(resume), messages=False).id)
        params = CHAT_PRESET.replace(**sampling) if sampling else CHAT_PRESET
        view = self.conversations.create(system=system, title=title, defaults=params, overflow=overflow,
                                         max_messages=max_messages, persona=persona, user_name=user_name,
                                         document_ids=document_ids)
        return Chat(self, view.id)

    # ---- monitoring --------------------------------------------------------------------------------------
    @blocking
    def stats(self, timeout: float | None = 30.0) -> SchedulerStats:
        return self._core.scheduler.stats(timeout)

    def on_finish(self, callback: Callable[[object, Result], None]) -> Callable[[], None]:
        """Call `callback(request, result)` on the scheduler thread for every finished request (parley's own
        read-ahead excluded); returns the function that removes it."""
        observers = self._core.scheduler.observers
        observers.append(callback)

        def remove() -> None:
            if callback in observers:
                observers.remove(callback)
        return remove

    # ---- lifetime ----------------------------------------------------------------------------------------
    def close(self, *, save: bool = True) -> None:
        """Stop the scheduler (replies still running end as cancelled and are recorded), save idle
        conversations' KV to disk when `save`, close the store, free the model (every door over it closes)."""
        self._core.close(save=save)

    def __enter__(self) -> Parley:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load(model: str | os.PathLike | None = None, **options) -> Parley:
    """Load a GGUF model (default: the embedded SmolLM2-135M-Instruct). Options: parley.settings.Settings."""
    return Parley(model, **options)
